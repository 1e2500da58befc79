"""Minute buckets of stored messages and the newest-first scan across them (no Cassandra: an
in-memory table that answers the two queries as Cassandra does)."""

import asyncio
import random
import time

import pytest

from chatpulse.buckets import (
    MAX_BUCKET_QUERIES,
    MESSAGE_BUCKET_MS,
    PageScan,
    Position,
    message_bucket,
    scan_newest_first,
    waves,
)

Key = tuple[int, str]  # (sent_at ms, id), the table's clustering key


def test_a_bucket_is_the_epoch_aligned_minute_of_sent_at() -> None:
    minute = 1_764_000_000_000 - 1_764_000_000_000 % 60_000
    assert MESSAGE_BUCKET_MS == 60_000
    assert message_bucket(minute) == minute
    assert message_bucket(minute + 59_999) == minute
    assert message_bucket(minute + 60_000) == minute + 60_000
    assert message_bucket(minute - 1) == minute - 60_000
    assert message_bucket(0) == 0


def test_a_position_starts_in_the_bucket_of_the_newest_row_it_admits() -> None:
    minute = 1_764_000_000_000 - 1_764_000_000_000 % 60_000
    # rows older than (minute, "m1") include (minute, "m0"): the bucket starting at minute
    assert Position(minute, "m1").bucket == minute
    # rows sent strictly before minute: the bucket before
    assert Position(minute).bucket == minute - 60_000
    assert Position(minute + 1).bucket == minute


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(0, []), (1, [1]), (3, [1, 2]), (7, [1, 2, 4]), (32, [1, 2, 4, 8, 8, 8, 1])],
)
def test_buckets_are_read_in_growing_waves(count: int, sizes: list[int]) -> None:
    assert waves(count) == sizes


class Table:
    """A channel's messages_bucketed and message_buckets rows, queried as Cassandra would."""

    def __init__(self, keys: list[Key]) -> None:
        self.buckets: dict[int, list[Key]] = {}
        for key in keys:
            self.buckets.setdefault(message_bucket(key[0]), []).append(key)
        for rows in self.buckets.values():
            rows.sort(reverse=True)
        self.index_queries = 0
        self.bucket_queries = 0

    async def list_buckets(self, newest: int, oldest: int, most: int) -> list[int]:
        self.index_queries += 1
        found = sorted((b for b in self.buckets if oldest <= b <= newest), reverse=True)
        return found[:most]

    async def read_bucket(self, bucket: int, position: Position, most: int) -> list[Key]:
        self.bucket_queries += 1
        if position.id and bucket == position.bucket:
            bound = (position.sent_at_ms, position.id)
            older = [key for key in self.buckets[bucket] if key < bound]
        else:
            older = [key for key in self.buckets[bucket] if key[0] < position.sent_at_ms]
        return older[:most]


def _scan(table: Table, start: Position, limit: int, max_queries: int) -> PageScan[Key]:
    return asyncio.run(
        scan_newest_first(
            table.list_buckets,
            table.read_bucket,
            start=start,
            oldest_ms=0,
            limit=limit,
            max_queries=max_queries,
        )
    )


def _page_through(table: Table, newest: int, limit: int, max_queries: int) -> list[list[Key]]:
    """Every page, following next positions as the API's cursor does."""
    pages: list[list[Key]] = []
    start = Position(newest + 1)
    while True:
        table.index_queries = table.bucket_queries = 0
        scan = _scan(table, start, limit, max_queries)
        assert table.index_queries == 1
        assert table.bucket_queries <= max_queries
        page = scan.rows[:limit]
        pages.append(page)
        if len(scan.rows) > limit:
            start = Position(*page[-1])
        elif scan.resume_before is not None:
            start = Position(scan.resume_before)
        else:
            return pages


def _chat(seed: int, now_ms: int) -> list[Key]:
    """A channel's hour: bursts, silent stretches, several messages in one millisecond."""
    rng = random.Random(seed)
    keys: list[Key] = []
    t = now_ms - 3_600_000
    while t < now_ms:
        burst = rng.random() < 0.2
        t += rng.randrange(0, 300) if burst else rng.randrange(1_000, 400_000)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            keys.append((t, f"{rng.getrandbits(64):016x}"))
    return keys


@pytest.mark.parametrize(("limit", "max_queries"), [(1, 32), (7, 32), (50, 32), (50, 3), (200, 1)])
def test_pages_newest_first_exactly_across_buckets(limit: int, max_queries: int) -> None:
    now_ms = int(time.time() * 1000)
    keys = _chat(limit * 100 + max_queries, now_ms)
    table = Table(keys)
    assert len(table.buckets) > 5  # the hour really spans many buckets

    pages = _page_through(table, max(k[0] for k in keys), limit, max_queries)

    flat = [key for page in pages for key in page]
    assert flat == sorted(keys, reverse=True)  # every message once, newest first
    assert all(len(page) <= limit for page in pages)


def test_a_quiet_channel_gets_a_short_page_and_a_position_past_the_query_bound() -> None:
    minute = 1_764_000_000_000 - 1_764_000_000_000 % 60_000
    # one message a minute for 100 minutes: a page of 50 spans 50 buckets
    keys = [(minute - n * 60_000 + 1_234, f"id{n}") for n in range(100)]
    table = Table(keys)

    scan = _scan(table, Position(minute + 60_000), limit=50, max_queries=MAX_BUCKET_QUERIES)

    assert table.bucket_queries == MAX_BUCKET_QUERIES
    assert scan.rows == keys[:MAX_BUCKET_QUERIES]
    # everything before the oldest bucket read is still to come
    assert scan.resume_before == minute - (MAX_BUCKET_QUERIES - 1) * 60_000


def test_a_busy_channel_fills_its_page_from_one_bucket() -> None:
    minute = 1_764_000_000_000 - 1_764_000_000_000 % 60_000
    keys = [(minute + n, f"id{n:05d}") for n in range(3_000)] + [(minute - 5, "older")]
    table = Table(keys)

    scan = _scan(table, Position(minute + 60_000), limit=200, max_queries=MAX_BUCKET_QUERIES)

    assert table.bucket_queries == 1
    assert scan.rows == sorted(keys, reverse=True)[:201]
    assert scan.resume_before is None


def test_nothing_before_the_oldest_bucket_is_asked_for() -> None:
    minute = 1_764_000_000_000 - 1_764_000_000_000 % 60_000
    table = Table([(minute + 5, "a")])

    scan = asyncio.run(
        scan_newest_first(
            table.list_buckets,
            table.read_bucket,
            start=Position(minute),
            oldest_ms=minute,
            limit=10,
        )
    )

    assert scan == PageScan([], None)
    assert table.index_queries == table.bucket_queries == 0
