"""One record on its way to Kafka, as the ingest producer queues it."""

import msgspec

from chatpulse.ingest.spill import Position

__all__ = ["Entry"]


class Entry(msgspec.Struct, frozen=True, gc=False):
    """A record and where it came from.

    ``origin`` is its spill position (acknowledged there once its transaction commits) or,
    for one sent directly, the spill slot it sorts before (see :meth:`Spill.append_before`).

    One is built per record on the hot path: a msgspec Struct is built in C (about 35 ns more
    than the bare tuple it replaced, where a NamedTuple costs about 300 ns more), and with
    ``gc=False`` the cyclic collector never tracks it (it holds only str, bytes, int and a
    Position: no cycles).
    """

    topic: str
    key: bytes | None
    value: bytes
    timestamp: int
    origin: Position | int
