"""The live SSE stream on the real stack: produced stats reach every subscriber within 2 s."""

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from api_support import KnownStream, iso, running_api, write_rows
from confluent_kafka import Producer

from chatpulse.models import TopChatter, TopEmote, WindowStats, encode
from chatpulse.settings import Settings
from chatpulse.topics import Topics

pytestmark = pytest.mark.timeout(180)


@contextmanager
def sse_lines(base_url: str, path: str) -> Iterator["queue.Queue[tuple[float, str]]"]:
    """Lines of an SSE response, read in a thread, each with the time it arrived."""
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    client = httpx.Client(base_url=base_url, timeout=None)

    def read() -> None:
        try:
            with client.stream("GET", path) as response:
                lines.put((time.monotonic(), f"status {response.status_code}"))
                lines.put((time.monotonic(), response.headers["content-type"]))
                for line in response.iter_lines():
                    lines.put((time.monotonic(), line))
        except httpx.HTTPError:
            pass  # the test closed the connection

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        yield lines
    finally:
        client.close()  # drops the connection: the server must notice and unsubscribe
        thread.join(5)


def _next(
    lines: "queue.Queue[tuple[float, str]]", prefix: str, timeout: float = 10
) -> tuple[float, str]:
    deadline = time.monotonic() + timeout
    while True:
        at, line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        if line.startswith(prefix):
            return at, line


def _data(lines: "queue.Queue[tuple[float, str]]", timeout: float = 10) -> tuple[float, Any]:
    at, line = _next(lines, "data: ", timeout)
    return at, orjson.loads(line.removeprefix("data: "))


def _subscribers(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("chatpulse_api_live_subscribers "):
            return float(line.split()[1])
    raise AssertionError("no subscriber gauge")


def test_live_stream_delivers_updates_to_every_subscriber_within_2s(settings: Settings) -> None:
    write_rows(settings, KnownStream.build({"1m": 60_000}, {"alpha": 3, "beta": 3}))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topic = Topics.from_settings(settings).stats
    start = (int(time.time() * 1000) // 60_000) * 60_000
    with running_api(settings) as api:
        url = str(api.base_url)
        with (
            sse_lines(url, "/api/v1/channels/ALPHA/live") as first,
            sse_lines(url, "/api/v1/channels/alpha/live") as second,
            sse_lines(url, "/api/v1/channels/alpha/live?window=10m") as only_10m,
        ):
            for lines in (first, second, only_10m):
                assert _next(lines, "status")[1] == "status 200"
                assert _next(lines, "text/event-stream")[1].startswith("text/event-stream")
                _next(lines, ": connected")
            assert _subscribers(api) == 3

            other = WindowStats("beta", "1m", start, start + 60_000, 99, 9)
            update = WindowStats(
                "alpha",
                "1m",
                start,
                start + 60_000,
                7,
                3,
                top_emotes=[TopEmote("25", "Kappa", 4)],
                closed=False,
                top_chatters=[TopChatter("someviewer", 5), TopChatter("another_one", 2)],
                sessions_started=2,
                sessions_ended=1,
                session_mean_s=312.5,
                session_p90_s=312,
            )
            producer.produce(topic, key=b"beta", value=encode(other))
            producer.produce(topic, key=b"alpha", value=encode(update))
            producer.flush(10)
            produced_at = time.monotonic()

            expected = {
                "channel": "alpha",
                "window": "1m",
                "window_start": iso(start),
                "window_end": iso(start + 60_000),
                "messages": 7,
                "unique_chatters": 3,
                "top_emotes": [{"id": "25", "name": "Kappa", "count": 4}],
                "closed": False,
                "deleted_messages": 0,
                "timeouts": 0,
                "bans": 0,
                "top_chatters": [
                    {"login": "someviewer", "count": 5},
                    {"login": "another_one", "count": 2},
                ],
                "sessions_started": 2,
                "sessions_ended": 1,
                "session_mean_s": 312.5,
                "session_p90_s": 312,
            }
            for lines in (first, second):
                at, data = _data(lines)
                assert data == expected  # beta's update, produced first, never came here
                assert at - produced_at < 2.0

            ten = WindowStats("alpha", "10m", start, start + 600_000, 70, 5)
            producer.produce(topic, key=b"alpha", value=encode(ten))
            producer.flush(10)
            at, data = _data(only_10m)
            assert (data["window"], data["messages"]) == ("10m", 70)
            assert _data(first)[1]["window"] == "10m"

        deadline = time.monotonic() + 10
        while _subscribers(api) != 0:
            assert time.monotonic() < deadline, "subscribers were not cleaned up"
            time.sleep(0.1)
