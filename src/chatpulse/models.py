"""Records on the wire: what goes through Kafka topics, as msgspec structs.

msgspec decodes and validates JSON in one pass (several times faster than pydantic on the
processor's hot path); the API's response models are separate pydantic classes.
Unknown fields are accepted so producers can add fields without breaking consumers.
"""

from typing import Annotated, Any

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "ChatEvent",
    "ChatMessage",
    "ChatSpike",
    "Emote",
    "TopChatter",
    "TopEmote",
    "TrackedChannel",
    "WindowStats",
    "decode_chat_event",
    "decode_chat_message",
    "encode",
    "history_login",
    "normalize_channel",
]

SCHEMA_VERSION = 1

# Epoch milliseconds from 1970 to the end of year 9999: what a CQL timestamp, a Python
# datetime and the window arithmetic all take. A record outside it is dead-lettered at
# decode instead of failing every Cassandra write of its checkpoint, replay after replay.
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]


class Emote(msgspec.Struct, frozen=True):
    """One emote occurrence: code-point indices into ``text``, ``end`` inclusive."""

    id: str
    start: int
    end: int


class ChatMessage(msgspec.Struct, frozen=True):
    """One PRIVMSG, the value of a ``twitch-chat-messages`` record."""

    id: str
    channel: str
    user_id: str
    user_login: str
    text: str
    sent_at: EpochMs
    v: int = SCHEMA_VERSION
    channel_id: str = ""
    display_name: str = ""
    is_action: bool = False
    emotes: list[Emote] = msgspec.field(default_factory=list)
    bits: int = 0
    badges: dict[str, str] = msgspec.field(default_factory=dict)
    reply_parent_msg_id: str | None = None

    def emote_name(self, emote: Emote) -> str:
        """The text an emote covers (indices clamped: Twitch sometimes sends them off by one)."""
        return self.text[max(emote.start, 0) : max(emote.end + 1, 0)]


class ChatEvent(msgspec.Struct, frozen=True):
    """A USERNOTICE, CLEARCHAT or CLEARMSG, the value of a ``twitch-chat-events`` record.

    ``type`` is subscription, resub, subgift, raid, announcement, ... for USERNOTICE (the
    ``msg-id`` tag, unknown ones kept as they come), timeout, ban or clear for CLEARCHAT,
    message_deleted for CLEARMSG.
    """

    type: str
    channel: str
    sent_at: EpochMs
    v: int = SCHEMA_VERSION
    id: str = ""
    channel_id: str = ""
    user_id: str = ""
    user_login: str = ""
    text: str = ""
    system_msg: str = ""
    target_msg_id: str = ""
    duration_s: int | None = None
    params: dict[str, str] = msgspec.field(default_factory=dict)


class TopEmote(msgspec.Struct, frozen=True):
    id: str
    name: str
    count: int


class TopChatter(msgspec.Struct, frozen=True):
    """One of a window's chatters with the most messages (see
    :mod:`chatpulse.processor.topchatters` for when ``count`` is exact)."""

    login: str
    count: int


class WindowStats(msgspec.Struct, frozen=True):
    """Statistics of one channel in one tumbling window, the value of ``channel-stats``.

    ``window_start``/``window_end`` are epoch milliseconds on the wire; ``closed`` is False for
    live updates of a window still open.
    """

    channel: str
    window: str
    window_start: int
    window_end: int
    messages: int
    unique_chatters: int
    top_emotes: list[TopEmote] = msgspec.field(default_factory=list)
    closed: bool = True
    top_chatters: list[TopChatter] = msgspec.field(default_factory=list)
    v: int = SCHEMA_VERSION
    # moderation in the window (by the time of the moderator's action): CLEARMSG (one
    # message deleted), CLEARCHAT with a duration (a timeout) and without (a ban)
    deleted_messages: int = 0
    timeouts: int = 0
    bans: int = 0
    # chatter sessions (per channel and user, see chatpulse.processor.sessions): started in
    # the window, ended in it (at last message + CHATPULSE_SESSION_GAP), and the ended ones'
    # mean and p90 length in seconds (None when none ended)
    sessions_started: int = 0
    sessions_ended: int = 0
    session_mean_s: float | None = None
    session_p90_s: int | None = None


class ChatSpike(msgspec.Struct, frozen=True):
    """A chat spike, also a value of ``channel-stats`` (told apart from a WindowStats by
    ``type``): the closed window ``[window_start, window_end)`` had ``messages``, more than
    ``factor`` x ``baseline_median`` (the median count of the channel's windows before it)
    and at least the floor; see :mod:`chatpulse.processor.spikes`."""

    channel: str
    window: str
    window_start: int
    window_end: int
    messages: int
    baseline_median: float
    factor: float
    type: str = "spike"
    v: int = SCHEMA_VERSION


class TrackedChannel(msgspec.Struct, frozen=True):
    """Value of a ``tracked-channels`` record; a tombstone (null value) untracks."""

    channel: str
    tracked: bool = True


_chat_decoder = msgspec.json.Decoder(ChatMessage)
_event_decoder = msgspec.json.Decoder(ChatEvent)
_encoder = msgspec.json.Encoder()


def decode_chat_message(data: bytes) -> ChatMessage:
    """Decode and validate one ChatMessage; raises ``msgspec.ValidationError``/``DecodeError``."""
    return _chat_decoder.decode(data)


def decode_chat_event(data: bytes) -> ChatEvent:
    """Decode and validate one ChatEvent; raises ``msgspec.ValidationError``/``DecodeError``."""
    return _event_decoder.decode(data)


def encode(record: msgspec.Struct | dict[str, Any]) -> bytes:
    """JSON bytes of any wire record."""
    return _encoder.encode(record)


_CHANNEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def history_login(login: str) -> str | None:
    """A user login as the user-history table keys it (lowercase), or None when it is not a
    Twitch login (1-25 of [a-z0-9_]): such a message is kept in the channel's history only."""
    login = login.lower()
    if 1 <= len(login) <= 25 and _CHANNEL_CHARS.issuperset(login):
        return login
    return None


def normalize_channel(name: str) -> str:
    """Lowercase a login, dropping a leading ``#``; ValueError unless 1-25 of [a-z0-9_]."""
    login = name.strip().removeprefix("#").lower()
    if not 1 <= len(login) <= 25 or not _CHANNEL_CHARS.issuperset(login):
        raise ValueError(f"not a Twitch channel name: {name!r} (1-25 of a-z, 0-9, _)")
    return login
