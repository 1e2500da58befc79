"""The collector tuning of the services' hot loops: set by the first, undone by the last."""

import gc

from chatpulse.gc_tuning import rarer_collections
from chatpulse.processor.app import GC_THRESHOLDS


def test_tuning_nests_and_restores() -> None:
    before = gc.get_threshold()
    with rarer_collections(10_000):
        assert gc.get_threshold() == (10_000, before[1], before[2])
        assert gc.get_freeze_count() > 0  # the objects of start-up are left out of collections
        with rarer_collections(*GC_THRESHOLDS):  # a second service in the same process
            assert gc.get_threshold()[0] == 10_000  # the first one's tuning holds
        assert gc.get_threshold()[0] == 10_000  # the inner exit leaves it to the outer one
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_processor_sets_every_generation() -> None:
    before = gc.get_threshold()
    with rarer_collections(*GC_THRESHOLDS):
        assert gc.get_threshold() == (500_000, 100, 100)
    assert gc.get_threshold() == before
