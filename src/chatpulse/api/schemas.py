"""Response and request models of the REST API (separate from Cassandra rows and wire records).

Times are ``datetime`` in UTC, serialised as ISO 8601 with a ``Z``.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from pydantic import BaseModel, Field, field_validator

from chatpulse.models import normalize_channel

__all__ = [
    "ChannelItem",
    "ChannelPage",
    "ChannelSummary",
    "Health",
    "LeaderboardEntry",
    "LeaderboardOut",
    "MessageItem",
    "MessagePage",
    "SpikeOut",
    "SpikePage",
    "StatsOut",
    "TopChatterOut",
    "TopEmoteOut",
    "TrackRequest",
    "TrackResult",
    "WindowStatsOut",
    "ms_to_datetime",
    "to_ms",
    "utc",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def utc(value: datetime) -> datetime:
    """The driver returns naive UTC datetimes; make them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of a datetime (naive means UTC), floored.

    Subtracting, not converting to UTC first: 0001-01-01T00:00+05:00 has no UTC datetime.
    """
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _MS


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


class TopEmoteOut(BaseModel):
    id: str
    name: str
    count: int


class TopChatterOut(BaseModel):
    login: str
    count: int = Field(
        description="messages in the window: exact while the window's distinct chatters fit "
        "CHATPULSE_TOP_CHATTERS_CAPACITY, past it at most messages / capacity too high"
    )


class WindowStatsOut(BaseModel):
    """Statistics of one channel in one tumbling window ``[window_start, window_end)``."""

    channel: str
    window: str
    window_start: datetime
    window_end: datetime
    messages: int
    unique_chatters: int
    top_emotes: list[TopEmoteOut]
    closed: bool = Field(description="false while the window is still open (live numbers)")
    top_chatters: list[TopChatterOut] = Field(
        description="the 10 chatters with the most messages, most first (ties by login)"
    )
    deleted_messages: int = Field(
        0, description="messages a moderator deleted one by one (CLEARMSG) in the window"
    )
    timeouts: int = Field(0, description="users timed out (CLEARCHAT with a duration)")
    bans: int = Field(0, description="users banned (CLEARCHAT without a duration)")
    sessions_started: int = Field(
        0,
        description="chatter sessions (a user's messages with no silence of "
        "CHATPULSE_SESSION_GAP, 10 min, between them) whose first message is in the window",
    )
    sessions_ended: int = Field(
        0,
        description="chatter sessions that ended in the window: their last message + the "
        "session gap falls in it (a window may count ended sessions and no message)",
    )
    session_mean_s: float | None = Field(
        None, description="mean length (last message - first) of the sessions ended, seconds"
    )
    session_p90_s: int | None = Field(
        None,
        description="p90 length of the sessions ended, whole seconds (above 256 s the lowest "
        "length of a histogram bucket under 1/32 wide)",
    )


_emotes_decoder = msgspec.json.Decoder(list[dict[str, Any]])


def decode_json_list(text: str | None) -> list[dict[str, Any]]:
    """A JSON list column (``top_emotes``, ``emotes``); empty when missing or unreadable."""
    if not text:
        return []
    try:
        return _emotes_decoder.decode(text)
    except msgspec.MsgspecError:
        return []


class SpikeOut(BaseModel):
    """A chat spike: the window ``[window_start, window_end)`` had ``messages``, more than
    ``factor`` x ``baseline_median`` and at least the floor (CHATPULSE_SPIKE_MIN_MESSAGES)."""

    channel: str
    window: str
    window_start: datetime
    window_end: datetime
    messages: int
    baseline_median: float = Field(
        description="the median message count of the channel's windows before it "
        "(CHATPULSE_SPIKE_BASELINE_WINDOWS of them; a window without messages counts 0)"
    )
    factor: float = Field(description="CHATPULSE_SPIKE_FACTOR when the spike was found")


class SpikePage(BaseModel):
    items: list[SpikeOut] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `before` for older spikes")


class ChannelItem(BaseModel):
    channel: str
    total_messages: int
    first_seen: datetime | None
    last_seen: datetime | None
    tracked: bool


class ChannelPage(BaseModel):
    items: list[ChannelItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")


class ChannelSummary(BaseModel):
    channel: str
    total_messages: int
    first_seen: datetime | None
    last_seen: datetime | None
    tracked: bool
    windows: dict[str, WindowStatsOut | None] = Field(
        description="the newest window of each configured size"
    )


class StatsOut(BaseModel):
    channel: str
    window: str
    items: list[WindowStatsOut] = Field(description="newest first")


class EmoteOut(BaseModel):
    id: str
    start: int
    end: int


class MessageItem(BaseModel):
    id: str
    channel: str
    user_id: str
    user_login: str
    display_name: str
    text: str
    is_action: bool
    sent_at: datetime
    emotes: list[EmoteOut]
    bits: int
    badges: dict[str, str]
    deleted: bool = Field(
        False,
        description="a moderator deleted it: a CLEARMSG of it, or a timeout or ban of its "
        "user, or a clear of the chat, at or after it was sent (Twitch hides it)",
    )


class MessagePage(BaseModel):
    items: list[MessageItem] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `before` for older messages")


class LeaderboardEntry(BaseModel):
    channel: str
    messages: int
    unique_chatters: int


class LeaderboardOut(BaseModel):
    window: str
    window_start: datetime | None = Field(description="null until a window was written")
    items: list[LeaderboardEntry] = Field(description="by messages, most first")


class TrackRequest(BaseModel):
    channel: str = Field(description="a Twitch login: 1-25 of a-z, 0-9, _ (case-insensitive)")

    @field_validator("channel")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_channel(value)


class TrackResult(BaseModel):
    channel: str
    tracked: bool


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
