"""The API's repeated warnings: one line per kind and interval, then the count held back."""

import logging

import httpx
import pytest
from fastapi import FastAPI

from chatpulse.api.log_limits import KindedLog
from chatpulse.api.problems import install_problem_handlers


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


async def test_a_repeated_bug_logs_one_traceback_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise ZeroDivisionError("a bug at 10.0.0.7:9042")

    # The app re-raises after answering (for the server's log): only the answer matters here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="chatpulse.api.problems"):
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            answers = [await client.get("/boom") for _ in range(50)]
    assert {a.status_code for a in answers} == {500}
    assert {a.json()["detail"] for a in answers} == {"An unexpected error occurred."}
    tracebacks = [r.getMessage() for r in caplog.records if "unhandled error" in r.getMessage()]
    assert len(tracebacks) == 1
    assert "ZeroDivisionError: a bug at 10.0.0.7:9042" in tracebacks[0]
