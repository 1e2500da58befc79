"""The ingest service's collector tuning is undone when the last running service stops."""

import gc

from chatpulse.ingest.service import _young_collections_rarer


def test_gc_tuning_nests_and_restores() -> None:
    before = gc.get_threshold()
    with _young_collections_rarer():
        assert gc.get_threshold()[0] == 10_000
        assert gc.get_freeze_count() > 0  # the objects of start-up are left out of collections
        with _young_collections_rarer():  # a second service in the same process
            pass
        assert gc.get_threshold()[0] == 10_000  # the inner exit leaves it to the outer one
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
