"""The API's repeated warnings: one line per kind and interval, then the count held back."""

import logging

import pytest

from chatpulse.api.log_limits import KindedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_and_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = KindedLog(logging.getLogger("t.kinded"), 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.kinded"):
        for i in range(500):
            limited.warning("storage-unavailable", "answered 503: %d", i)
            limited.warning("kafka-unavailable", "kafka %d", i)
        clock.now += 10.0
        limited.warning("storage-unavailable", "answered 503: %d", 500)
    assert [r.getMessage() for r in caplog.records] == [
        "answered 503: 0",
        "kafka 0",
        "answered 503: 500 (and 499 more like it in the last 10s)",
    ]


def test_kinds_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = KindedLog(logging.getLogger("t.bounded"), 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.bounded"):
        for i in range(10_000):
            limited.warning(f"kind-{i}", "line %d", i)
    # 256 kinds of their own, then one shared limiter for all the others.
    assert len(caplog.records) == 257
    assert len(limited._kinds) == 257
