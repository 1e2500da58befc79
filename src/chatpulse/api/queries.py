"""Data access: every read the API makes, as keyword-only functions over the gateway.

Each function answers with response models; Cassandra rows never leave this module. Walks over
day partitions are bounded by the channel's ``first_seen``/``last_seen`` (and the message TTL), so
no request touches more than a few dozen partitions; a page of messages reads at most
:data:`chatpulse.buckets.MAX_BUCKET_QUERIES` minute buckets.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import msgspec
from cassandra.murmur3 import murmur3

from chatpulse.api.db import CassandraGateway
from chatpulse.api.log_limits import KindedLog
from chatpulse.api.schemas import (
    ChannelItem,
    EmoteOut,
    LeaderboardEntry,
    LeaderboardOut,
    MessageItem,
    SpikeOut,
    TopChatterOut,
    TopEmoteOut,
    WindowStatsOut,
    decode_json_list,
    ms_to_datetime,
    to_ms,
    utc,
)
from chatpulse.buckets import USER_BUCKET_MS, Position, scan_newest_first, user_bucket
from chatpulse.models import ChatMessage, decode_chat_message
from chatpulse.windows import window_start
from chatpulse.words import MAX_QUERY_WORDS

__all__ = [
    "Totals",
    "channel_page",
    "channel_totals",
    "latest_windows",
    "leaderboard",
    "message_page",
    "spike_page",
    "user_message_page",
    "window_stats",
]

logger = logging.getLogger(__name__)
_log = KindedLog(logger)

DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Totals:
    """A channel's ``channel_totals`` row (times in epoch ms)."""

    channel: str
    total_messages: int
    first_seen_ms: int
    last_seen_ms: int

    @property
    def seen(self) -> bool:
        """False for a tracked channel with no message yet (times are then -1)."""
        return self.first_seen_ms >= 0


def _day(ms: int) -> date:
    return _EPOCH_DAY + timedelta(days=ms // DAY_MS)


def _token(channel: str) -> int:
    return int(murmur3(channel.encode("utf-8")))


def _stats_out(row: Any) -> WindowStatsOut:
    emotes = []
    for item in decode_json_list(row.top_emotes):
        try:
            emotes.append(TopEmoteOut.model_validate(item))
        except ValueError:
            continue
    chatters = []
    for item in decode_json_list(row.top_chatters):
        try:
            chatters.append(TopChatterOut.model_validate(item))
        except ValueError:
            continue
    return WindowStatsOut(
        channel=row.channel,
        window=row.window,
        window_start=utc(row.window_start),
        window_end=utc(row.window_end),
        messages=row.messages or 0,
        unique_chatters=row.unique_chatters or 0,
        top_emotes=emotes,
        closed=bool(row.closed),
        top_chatters=chatters,
        # (null in a row written before the moderation columns)
        deleted_messages=getattr(row, "deleted_messages", None) or 0,
        timeouts=getattr(row, "timeouts", None) or 0,
        bans=getattr(row, "bans", None) or 0,
        sessions_started=getattr(row, "sessions_started", None) or 0,
        sessions_ended=getattr(row, "sessions_ended", None) or 0,
        session_mean_s=getattr(row, "session_mean_s", None),
        session_p90_s=getattr(row, "session_p90_s", None),
    )


def _totals(row: Any) -> Totals:
    return Totals(row[0], row[1] or 0, to_ms(row[2]), to_ms(row[3]))


async def channel_totals(db: CassandraGateway, *, channel: str) -> Totals | None:
    """The channel's totals, or None when the processor never saw it."""
    rows = await db.execute("totals_one", (channel,))
    return _totals(rows[0]) if rows and rows[0].first_seen and rows[0].last_seen else None


async def channel_page(
    db: CassandraGateway, *, tracked: frozenset[str], after_token: int | None, limit: int
) -> tuple[list[ChannelItem], int | None]:
    """One page of channels in token order, tracked-but-unseen ones merged in; next token."""
    if after_token is None:
        rows = await db.execute("totals_first", (limit,))
    else:
        rows = await db.execute("totals_after", (after_token, limit))
    full = len(rows) == limit
    lower = after_token if after_token is not None else -(2**63) - 1
    upper = rows[-1][4] if full else 2**63
    page: list[tuple[int, ChannelItem]] = []
    for row in rows:
        first, last = row[2], row[3]
        item = ChannelItem(
            channel=row[0],
            total_messages=row[1] or 0,
            first_seen=utc(first) if first else None,
            last_seen=utc(last) if last else None,
            tracked=row[0] in tracked,
        )
        page.append((row[4], item))
    seen = {item.channel for _, item in page}
    for channel in tracked - seen:
        token = _token(channel)
        if lower < token <= upper:
            unseen = ChannelItem(
                channel=channel, total_messages=0, first_seen=None, last_seen=None, tracked=True
            )
            page.append((token, unseen))
    page.sort(key=lambda pair: pair[0])
    if len(page) > limit:
        page = page[:limit]
        return [item for _, item in page], page[-1][0]
    return [item for _, item in page], (upper if full else None)


async def latest_windows(
    db: CassandraGateway, *, totals: Totals, windows: dict[str, int]
) -> dict[str, WindowStatsOut | None]:
    """The newest window of each size (from the day partition of ``last_seen``).

    One query per distinct day (sizes dividing a day share one), ``PER PARTITION LIMIT 1``.
    """
    by_day: dict[date, list[str]] = {}
    for name, size_ms in windows.items():
        by_day.setdefault(_day(window_start(totals.last_seen_ms, size_ms)), []).append(name)
    found: dict[str, WindowStatsOut | None] = dict.fromkeys(windows)
    results = await asyncio.gather(
        *(
            db.execute("stats_latest_of", (totals.channel, names, day))
            for day, names in by_day.items()
        )
    )
    for rows in results:
        for row in rows:
            found[row.window] = _stats_out(row)

    async def day_before(name: str) -> None:
        # Not written yet for the day of last_seen (the processor is a moment behind).
        day = _day(window_start(totals.last_seen_ms, windows[name]))
        if day > _day(totals.first_seen_ms):
            rows = await db.execute("stats_latest", (totals.channel, name, day - timedelta(1)))
            found[name] = _stats_out(rows[0]) if rows else None

    await asyncio.gather(*(day_before(name) for name, stats in found.items() if stats is None))
    return {name: found[name] for name in windows}


async def window_stats(
    db: CassandraGateway,
    *,
    totals: Totals,
    window: str,
    size_ms: int,
    from_ms: int,
    to_ms: int,
    limit: int,
) -> list[WindowStatsOut]:
    """Windows starting in ``[from_ms, to_ms)``, newest first, at most ``limit``."""
    low = max(from_ms, window_start(totals.first_seen_ms, size_ms))
    high = min(to_ms, totals.last_seen_ms + 1)
    items: list[WindowStatsOut] = []
    if low >= high:
        return items
    day, first_day = _day(high - 1), _day(low)
    low_at, high_at = ms_to_datetime(low), ms_to_datetime(high)
    while day >= first_day and len(items) < limit:
        params = (totals.channel, window, day, low_at, high_at, limit - len(items))
        items.extend(_stats_out(row) for row in await db.execute("stats_range", params))
        day -= timedelta(days=1)
    return items


def _message(channel: str, row: Any) -> MessageItem:
    """A ``messages`` row: the key columns and the record the processor stored."""
    try:
        message = decode_chat_message(row.record or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # never written by the processor (it stores only records it validated)
        _log.warning(
            "undecodable", "undecodable record of message %s in %s: %s", row.id, channel, exc
        )
        message = ChatMessage(
            id=row.id, channel=channel, user_id="", user_login="", text="", sent_at=0
        )
    return MessageItem(
        id=row.id,
        channel=channel,
        user_id=message.user_id,
        user_login=message.user_login,
        display_name=message.display_name,
        text=message.text,
        is_action=message.is_action,
        sent_at=utc(row.sent_at),
        emotes=[EmoteOut(id=e.id, start=e.start, end=e.end) for e in message.emotes],
        bits=message.bits,
        badges=message.badges,
        deleted=bool(getattr(row, "deleted", False)),
    )


async def message_page(
    db: CassandraGateway,
    *,
    totals: Totals,
    before_ms: int | None,
    before_key: tuple[int, str] | None,
    limit: int,
    oldest_ms: int,
    words: list[str] | None = None,
) -> tuple[list[MessageItem], tuple[int, str] | None]:
    """Messages newest first, strictly before a time or a (sent_at, id) key; the next key.

    ``oldest_ms`` bounds the walk (messages older than the TTL are gone anyway). The next
    key is the last item's, or, when the page stopped at the bound on bucket queries
    (:data:`chatpulse.buckets.MAX_BUCKET_QUERIES`) before it was full, ``(bucket start, "")``:
    everything sent before that bucket is still to read. So a page may hold fewer than
    ``limit`` items and still have a next key.

    With ``words``, only the messages that hold every one of them (a search: the same walk,
    each bucket asked through the Storage-Attached Index on ``words``).
    """
    newest = totals.last_seen_ms + 1
    if before_key is not None:
        start = Position(min(before_key[0], newest), before_key[1])
    else:
        start = Position(min(before_ms, newest) if before_ms is not None else newest)
    channel = totals.channel

    async def list_buckets(newest_bucket: int, oldest_bucket: int, most: int) -> list[int]:
        params = (channel, newest_bucket, oldest_bucket, most)
        return [to_ms(row.bucket) for row in await db.execute("message_buckets", params)]

    # a search's words, padded to the statement's MAX_QUERY_WORDS with its first one
    asked = words or [""]
    terms = tuple(asked[i] if i < len(asked) else asked[0] for i in range(MAX_QUERY_WORDS))

    async def read_bucket(bucket: int, position: Position, most: int) -> list[Any]:
        if position.id and bucket == position.bucket:
            params: tuple[Any, ...] = (channel, bucket, position.sent_at_ms, position.id, most)
            if words:
                return await db.execute("search_before_key", (*params[:4], *terms, most))
            return await db.execute("messages_before_key", params)
        params = (channel, bucket, position.sent_at_ms, most)
        if words:
            return await db.execute("search_before_time", (*params[:3], *terms, most))
        return await db.execute("messages_before_time", params)

    scan = await scan_newest_first(
        list_buckets,
        read_bucket,
        start=start,
        oldest_ms=max(totals.first_seen_ms, oldest_ms),
        limit=limit,
    )
    items = [_message(channel, row) for row in scan.rows[:limit]]
    if len(scan.rows) > limit:
        return items, (to_ms(items[-1].sent_at), items[-1].id)
    if scan.resume_before is not None:
        return items, (scan.resume_before, "")
    return items, None


async def user_message_page(
    db: CassandraGateway,
    *,
    channel: str,
    login: str,
    start: Position,
    oldest_ms: int,
    limit: int,
) -> tuple[list[MessageItem], tuple[int, str] | None]:
    """A user's messages in a channel newest first, older than ``start`` and sent at or after
    ``oldest_ms``; the next key (as :func:`message_page`'s).

    The day buckets between are computed, not looked up (a user's days are few, and a page
    reads at most :data:`chatpulse.buckets.MAX_BUCKET_QUERIES` of them, empty ones included).
    """

    async def list_buckets(newest_bucket: int, oldest_bucket: int, most: int) -> list[int]:
        count = min(most, (newest_bucket - oldest_bucket) // USER_BUCKET_MS + 1)
        return [newest_bucket - n * USER_BUCKET_MS for n in range(count)]

    async def read_bucket(bucket: int, position: Position, most: int) -> list[Any]:
        if position.id and bucket == position.bucket_in(user_bucket):
            params: tuple[Any, ...] = (
                channel,
                login,
                bucket,
                position.sent_at_ms,
                position.id,
                oldest_ms,
                most,
            )
            return await db.execute("user_messages_before_key", params)
        params = (channel, login, bucket, position.sent_at_ms, oldest_ms, most)
        return await db.execute("user_messages_before_time", params)

    scan = await scan_newest_first(
        list_buckets,
        read_bucket,
        start=start,
        oldest_ms=oldest_ms,
        limit=limit,
        bucket_of=user_bucket,
    )
    items = [_message(channel, row) for row in scan.rows[:limit]]
    if len(scan.rows) > limit:
        return items, (to_ms(items[-1].sent_at), items[-1].id)
    if scan.resume_before is not None:
        return items, (scan.resume_before, "")
    return items, None


async def spike_page(
    db: CassandraGateway, *, channel: str, before_ms: int | None, limit: int
) -> tuple[list[SpikeOut], int | None]:
    """A channel's chat spikes newest first, starting before ``before_ms`` (all when None);
    the window start to go on before, when there are more."""
    if before_ms is None:
        rows = await db.execute("spikes_first", (channel, limit + 1))
    else:
        rows = await db.execute("spikes_before", (channel, ms_to_datetime(before_ms), limit + 1))
    items = [
        SpikeOut(
            channel=row.channel,
            window=row.window,
            window_start=utc(row.window_start),
            window_end=utc(row.window_end),
            messages=row.messages or 0,
            baseline_median=row.baseline_median or 0.0,
            factor=row.factor or 0.0,
        )
        for row in rows[:limit]
    ]
    next_ms = to_ms(items[-1].window_start) if len(rows) > limit else None
    return items, next_ms


async def leaderboard(db: CassandraGateway, *, window: str, limit: int) -> LeaderboardOut:
    """Channels of the newest window of ``window`` size, most messages first."""
    latest = await db.execute("latest_window", (window,))
    if not latest or latest[0].window_start is None:
        return LeaderboardOut(window=window, window_start=None, items=[])
    started: datetime = latest[0].window_start
    rows = await db.execute("leaderboard", (window, started))
    ranked = sorted(rows, key=lambda row: (-(row.messages or 0), row.channel))[:limit]
    return LeaderboardOut(
        window=window,
        window_start=utc(started),
        items=[
            LeaderboardEntry(
                channel=row.channel,
                messages=row.messages or 0,
                unique_chatters=row.unique_chatters or 0,
            )
            for row in ranked
        ],
    )
