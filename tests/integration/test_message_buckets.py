"""Bucketed message storage and the statistics' TTL, on the real Cassandra.

Rows are written by the processor's own Cassandra write-back (``CassandraFlush`` over
``CassandraWriter``'s prepared statements) from updates of the processor's counter, and read
back through the real API over HTTP.
"""

import random
import time
from typing import Any

import httpx
import pytest
from api_support import running_api

from chatpulse.buckets import MAX_BUCKET_QUERIES, message_bucket
from chatpulse.models import ChatMessage, encode
from chatpulse.processor.cassandra_flush import CassandraFlush
from chatpulse.processor.channel import ChannelCounter
from chatpulse.processor.cql import CassandraWriter
from chatpulse.settings import Settings
from chatpulse.storage import connect

pytestmark = pytest.mark.timeout(300)

MIN = 60_000


class DictStore(dict[bytes, bytes]):
    """The counter's state store, in memory (the state is not under test here)."""

    def get_bytes(self, key: bytes) -> bytes | None:
        return self.get(key)

    def set_bytes(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        self.pop(key, None)


def _chat(channel: str, now_ms: int) -> list[ChatMessage]:
    """Two hours of one channel: a dense burst, then a quiet stretch of one message every one
    to three minutes (more buckets than one request reads), some messages in the same ms."""
    rng = random.Random(20261203)
    start = now_ms - now_ms % MIN - 120 * MIN
    times = [start + 7 * MIN + n * 150 for n in range(700)]  # 105 s at ~6.7 msg/s
    t = start + 20 * MIN
    while t < now_ms - 2 * MIN:
        times += [t] * rng.choice([1, 1, 1, 2])
        t += rng.randrange(MIN, 3 * MIN)
    return [
        ChatMessage(
            id=f"{rng.getrandbits(64):016x}",
            channel=channel,
            user_id=str(rng.randrange(1, 1_200_000_000)),
            user_login=f"viewer{n}",
            display_name=f"Viewer{n}",
            text=f"message number {n}",
            sent_at=sent_at,
        )
        for n, sent_at in enumerate(times)
    ]


def _write(settings: Settings, messages: list[ChatMessage]) -> None:
    """Count and write the messages as the processor does, a checkpoint per 200 messages."""
    counter = ChannelCounter(settings.window_sizes_ms, settings.grace_ms, settings.dedup_horizon_ms)
    store = DictStore()
    writer = CassandraWriter(settings)
    writer.setup()
    flush = CassandraFlush(writer)
    try:
        for n, message in enumerate(messages, 1):
            update = counter.process(message, store)
            assert update is not None
            update.record = encode(message)
            flush.keep(update, 0)
            if n % 200 == 0:
                flush.flush()
        flush.flush()
    finally:
        writer.close()


def _walk(api: httpx.Client, channel: str, limit: int) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(500):
        response = api.get(f"/api/v1/channels/{channel}/messages", params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
        params = {"limit": limit, "before": cursor}
    raise AssertionError("pagination does not end")


def test_messages_over_many_buckets_page_newest_first_exactly(settings: Settings) -> None:
    channel = "xqcow"
    messages = _chat(channel, int(time.time() * 1000))
    buckets = {message_bucket(m.sent_at) for m in messages}
    assert len(buckets) > MAX_BUCKET_QUERIES + 10  # the quiet stretch spans more than a page
    _write(settings, messages)
    expected = [m.id for m in sorted(messages, key=lambda m: (m.sent_at, m.id), reverse=True)]

    with running_api(settings) as api:
        by_50 = _walk(api, channel, 50)
        by_7 = _walk(api, channel, 7)

    for pages, limit in ((by_50, 50), (by_7, 7)):
        ids = [item["id"] for page in pages for item in page["items"]]
        assert ids == expected  # each message once, newest first, none missing
        assert all(len(page["items"]) <= limit for page in pages)
    # The quiet stretch needs more buckets than one request reads: such a page comes back
    # short (one message per bucket read), with a cursor that goes on before those buckets.
    short = [page for page in by_50 if page["next_cursor"] and len(page["items"]) < 50]
    assert short
    assert all(len(page["items"]) >= MAX_BUCKET_QUERIES for page in short)


def test_message_and_window_rows_carry_their_ttls(settings: Settings) -> None:
    own = settings.model_copy(update={"stats_ttl_days": 7, "message_ttl_days": 3})
    now = int(time.time() * 1000)
    messages = [
        ChatMessage(
            id=f"m{n}",
            channel="shroud",
            user_id=str(98_765_432 + n * 7_919),
            user_login=f"fan{n}",
            text="nice shot",
            sent_at=now - 30_000 + n * 100,
        )
        for n in range(20)
    ]
    _write(own, messages)

    ks = own.cassandra_keyspace
    cluster, session = connect(own)
    try:

        def ttls(query: str) -> list[int]:
            return [row[0] for row in session.execute(query, timeout=60)]

        window_ttls = ttls(f"SELECT TTL(messages) FROM {ks}.window_stats")
        board_ttls = ttls(f"SELECT TTL(messages) FROM {ks}.window_leaderboard")
        message_ttls = ttls(f"SELECT TTL(record) FROM {ks}.messages_bucketed")
    finally:
        cluster.shutdown()

    week, three_days = 7 * 86_400, 3 * 86_400
    assert len(window_ttls) == len(own.windows)  # one open window of each size
    assert len(board_ttls) == len(own.windows)
    assert all(week - 120 < ttl <= week for ttl in window_ttls + board_ttls), window_ttls
    assert len(message_ttls) == 20
    assert all(three_days - 120 < ttl <= three_days for ttl in message_ttls), message_ttls
