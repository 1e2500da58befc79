"""The rate-limited log: once per interval, with the count of what it held back."""

import logging

import pytest

from chatpulse.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeats_within_the_interval_are_counted_and_reported_with_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("t.rate"), 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, "t.rate"):
        assert log.warning("bad line %d", 1)
        for n in range(2, 7):
            clock.now += 1.0
            assert not log.warning("bad line %d", n)
        assert log.suppressed == 5
        clock.now = 10.0
        assert log.warning("bad line %d", 7)
        clock.now = 25.0
        assert log.error("bad line %d", 8)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "bad line 1"),
        (logging.WARNING, "bad line 7 (and 5 more like it in the last 10s)"),
        (logging.ERROR, "bad line 8"),
    ]
    assert log.suppressed == 0


def test_separate_instances_limit_separately(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("t.rate2")
    first = RateLimitedLog(logger, 5.0, clock=clock)
    second = RateLimitedLog(logger, 5.0, clock=clock)
    with caplog.at_level(logging.WARNING, "t.rate2"):
        assert first.warning("a")
        assert second.warning("b")
        assert not first.warning("a")
    assert [r.getMessage() for r in caplog.records] == ["a", "b"]
