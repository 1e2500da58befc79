"""One record on its way to Kafka, as the ingest producer queues it."""

from typing import NamedTuple

from chatpulse.ingest.spill import Position

__all__ = ["Entry"]


class Entry(NamedTuple):
    """A record and where it came from.

    ``origin`` is its spill position (acknowledged there once its transaction commits) or,
    for one sent directly, the spill slot it sorts before (see :meth:`Spill.append_before`).
    A tuple: one allocation per record, as cheap as the positional tuple it replaced.
    """

    topic: str
    key: bytes | None
    value: bytes
    timestamp: int
    origin: Position | int
