"""CPython's cyclic garbage collector tuned for a service's hot loop (ingest, processor).

Both hot loops allocate a few tracked containers per record (tags, decoded records, rows)
while many long-lived ones stay alive (channels, working copies, pending batches). At the
default thresholds (700, 10, 10) a young collection runs every few records and the older
ones walk every live object, including all that was imported at start. Freezing what exists
at start and collecting the youngest generation far less often saves several microseconds of
CPU per record (``bench/ingest.py``, ``bench/processor.py``); the garbage is the same, since
reference counting frees all acyclic objects at once and only cycles wait for the rarer passes.
"""

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["rarer_collections"]


class _Tuning:
    users = 0
    saved: tuple[int, int, int] = (700, 10, 10)


@contextlib.contextmanager
def rarer_collections(
    gen0: int, gen1: int | None = None, gen2: int | None = None
) -> Iterator[None]:
    """While the block runs: what exists now is frozen out of collections, and the youngest
    generation is collected every ``gen0`` allocations (the older generations' thresholds as
    given, else left as they are).

    Nests (several services in one process, as in tests): the first to enter tunes, inner
    ones leave the tuning as it is, the last to leave restores the thresholds and unfreezes.
    """
    if _Tuning.users == 0:
        saved = _Tuning.saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(
            gen0, saved[1] if gen1 is None else gen1, saved[2] if gen2 is None else gen2
        )
    _Tuning.users += 1
    try:
        yield
    finally:
        _Tuning.users -= 1
        if _Tuning.users == 0:
            gc.set_threshold(*_Tuning.saved)
            gc.unfreeze()
