"""The checkpoint bound: none until a write fails; halved per failure (not under the floor);
grown by half per checkpoint written; lifted past the ceiling."""

from chatpulse.processor.checkpoint_bound import CheckpointBound


def hold(bound: CheckpointBound, messages: int) -> None:
    for _ in range(messages):
        bound.held += 1


def test_no_bound_until_a_checkpoint_fails() -> None:
    bound = CheckpointBound()
    hold(bound, 2_000_000)
    assert not bound.full()
    bound.written()
    assert (bound.limit, bound.held) == (None, 0)


def test_a_failed_checkpoint_halves_the_next_ones_and_written_ones_grow_them_back() -> None:
    bound = CheckpointBound(floor=500, ceiling=20_000, growth=1.5)
    hold(bound, 12_000)
    bound.failed()
    assert (bound.limit, bound.held) == (6_000, 0)
    hold(bound, 5_999)
    assert not bound.full()
    hold(bound, 1)
    assert bound.full()  # the processor commits this checkpoint now
    bound.failed()  # and it failed too: halved again
    assert bound.limit == 3_000
    bound.written()
    assert bound.limit == 4_500
    for _ in range(3):
        bound.written()
    assert bound.limit == 15_187
    bound.written()  # 22,780 > ceiling: lifted
    assert bound.limit is None


def test_the_bound_never_goes_under_its_floor_nor_grows_on_a_failure() -> None:
    bound = CheckpointBound(floor=500)
    hold(bound, 300)
    bound.failed()
    assert bound.limit == 500
    hold(bound, 2_000)
    bound.failed()  # half of 2,000 is above the current bound: it stays
    assert bound.limit == 500


def test_a_dropped_checkpoint_only_resets_the_count() -> None:
    bound = CheckpointBound()
    hold(bound, 10)
    bound.dropped()
    assert (bound.limit, bound.held) == (None, 0)
