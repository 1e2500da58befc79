"""Minute buckets of a channel's stored messages, and reading them newest first across buckets.

The ``messages_bucketed`` table is partitioned by (channel, bucket): the epoch-aligned minute
of a message's ``sent_at``. A partition therefore holds one minute of one channel, 60 times its
rate rows (3,000 at 50 msg/s, about 1.5 MB), instead of a day (4.3 million rows at 50 msg/s).
The bucket depends on the message alone, so a checkpoint written again after a crash lands
on the same rows.

Reading newest first over minute buckets would mean one query per minute, empty ones
included; ``message_buckets`` lists each channel's non-empty buckets (one small row per
bucket, newest first), so a reader asks it for the next buckets and queries only those. A
request reads at most :data:`MAX_BUCKET_QUERIES` buckets: a quiet channel whose page spans
more buckets gets a shorter page and a position to go on from (see :func:`scan_newest_first`).
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "MAX_BUCKET_QUERIES",
    "MESSAGE_BUCKET_MS",
    "USER_BUCKET_MS",
    "PageScan",
    "Position",
    "message_bucket",
    "scan_newest_first",
    "user_bucket",
    "waves",
]

MESSAGE_BUCKET_MS = 60_000
# A user's messages in a channel (``user_messages``) are partitioned by UTC day: a chatter
# sends a few messages an hour, so a minute would leave a page one row per query, while a day
# of the fastest Twitch allows (100 per 30 s) is ~290,000 rows (~130 MB at ~460 bytes each).
USER_BUCKET_MS = 86_400_000
# Bucket queries one page may make (besides its one query of the bucket index). A busy
# channel fills a page from one or two buckets; this bound matters for quiet channels only.
MAX_BUCKET_QUERIES = 32
# Buckets read in parallel after the first: 1, 2, 4, 8, 8, ... (a busy channel's first
# bucket usually fills the page alone, a quiet channel's page needs many small ones).
_WAVE_CAP = 8

Row = TypeVar("Row")


def message_bucket(sent_at_ms: int) -> int:
    """The bucket (its start, epoch milliseconds) of a message sent at ``sent_at_ms``."""
    return sent_at_ms - sent_at_ms % MESSAGE_BUCKET_MS


def user_bucket(sent_at_ms: int) -> int:
    """The ``user_messages`` bucket (the UTC day's start) of a message sent at ``sent_at_ms``."""
    return sent_at_ms - sent_at_ms % USER_BUCKET_MS


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page starts: the rows strictly older than (``sent_at_ms``, ``id``) in the
    table's order (``sent_at`` descending, then ``id`` descending). An empty ``id`` means
    every row sent strictly before ``sent_at_ms``."""

    sent_at_ms: int
    id: str = ""

    @property
    def bucket(self) -> int:
        """The newest bucket that can hold a row older than this position."""
        return self.bucket_in(message_bucket)

    def bucket_in(self, bucket_of: Callable[[int], int]) -> int:
        """The same for buckets of another width (``bucket_of`` maps a time to its bucket)."""
        return bucket_of(self.sent_at_ms if self.id else self.sent_at_ms - 1)


def waves(count: int, cap: int = _WAVE_CAP) -> list[int]:
    """Sizes of the successive parallel reads of ``count`` buckets: 1, 2, 4, ... ``cap``."""
    sizes: list[int] = []
    size = 1
    while count > 0:
        sizes.append(min(size, count))
        count -= sizes[-1]
        size = min(size * 2, cap)
    return sizes


@dataclass(frozen=True, slots=True)
class PageScan(Generic[Row]):
    """What :func:`scan_newest_first` found.

    ``rows``: up to ``limit + 1`` rows, newest first (one more than the page proves that more
    exist). ``resume_before``: set when the scan stopped at the query bound with fewer rows;
    the rows older than this bucket start were not looked at yet.
    """

    rows: list[Row]
    resume_before: int | None


async def scan_newest_first(
    list_buckets: Callable[[int, int, int], Awaitable[Sequence[int]]],
    read_bucket: Callable[[int, Position, int], Awaitable[Sequence[Row]]],
    *,
    start: Position,
    oldest_ms: int,
    limit: int,
    max_queries: int = MAX_BUCKET_QUERIES,
    bucket_of: Callable[[int], int] = message_bucket,
) -> PageScan[Row]:
    """Up to ``limit + 1`` rows older than ``start`` and sent at or after ``oldest_ms``.

    ``list_buckets(newest, oldest, n)`` answers at most ``n`` non-empty bucket starts in
    ``[oldest, newest]``, newest first; ``read_bucket(bucket, start, n)`` at most ``n`` rows
    of that bucket older than ``start``, newest first.

    Buckets never overlap in time, so their rows, each bucket newest first, concatenate in
    order. One index query, then at most ``max_queries`` bucket queries. ``bucket_of`` maps a
    time to its bucket (minutes by default).
    """
    newest, oldest = start.bucket_in(bucket_of), bucket_of(oldest_ms)
    if newest < oldest:
        return PageScan([], None)
    buckets = list(await list_buckets(newest, oldest, max_queries))
    rows: list[Row] = []
    done = 0
    for size in waves(len(buckets)):
        want = limit + 1 - len(rows)
        batch = buckets[done : done + size]
        done += size
        for found in await asyncio.gather(*(read_bucket(b, start, want) for b in batch)):
            rows.extend(found)
        if len(rows) > limit:
            return PageScan(rows[: limit + 1], None)
    # A full answer from the index may leave older buckets unread: say where to go on.
    more = len(buckets) >= max_queries
    return PageScan(rows, buckets[-1] if more and buckets else None)
