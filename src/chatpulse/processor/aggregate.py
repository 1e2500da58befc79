"""Per-window aggregates: message count, exact distinct chatters, emote occurrences, top
chatters.

An aggregate is counted into as a Python object; :mod:`.channel` stores it in the state (as
its :meth:`~WindowAggregate.to_tuple`, inside the channel's msgpack record) once per
checkpoint, so the stored form is kept small rather than fast.
Distinct chatters are a roaring bitmap of the numeric Twitch user ids (compact, exact);
an id that is not a canonical unsigned 32-bit decimal goes to a small sorted fallback list,
so the count stays exact whatever the ids look like.
"""

import bisect
from dataclasses import dataclass, field

from pyroaring import BitMap

from chatpulse.models import ChatMessage, TopEmote, WindowStats
from chatpulse.processor.sessions import WindowSessions
from chatpulse.processor.topchatters import DEFAULT_CAPACITY, TopChatters
from chatpulse.windows import format_duration

__all__ = [
    "MAX_EMOTES",
    "MAX_OTHER_CHATTERS",
    "MAX_OTHER_CHATTER_ID",
    "TOP_EMOTES",
    "UNTRACKED_CHATTER",
    "AggregateTuple",
    "WindowAggregate",
    "numeric_user_id",
    "to_window_stats",
    "top_emotes",
]

TOP_EMOTES = 10
# distinct emotes tracked per window by default (CHATPULSE_MAX_EMOTES_PER_WINDOW)
MAX_EMOTES = 300
_MAX_EMOTE_TEXT = 64  # longest emote id tracked, longest name kept
# chatters per window whose id does not fit the bitmap (never a Twitch id today)
MAX_OTHER_CHATTERS = 1_000
# the longest such id kept (ASCII only): 1,000 of them stay under ~33 KB per window
MAX_OTHER_CHATTER_ID = 32
# added to add()'s result for a chatter left untracked (emote counts stay below it)
UNTRACKED_CHATTER = 1 << 32
_MAX_U32 = 2**32 - 1

_NO_SESSIONS = WindowSessions()

# (messages, serialized chatter bitmap, other chatters, emotes): the stored form
AggregateTuple = tuple[int, bytes, list[str], dict[str, tuple[int, str]]]


def numeric_user_id(user_id: str) -> int | None:
    """The id as an int when it is a canonical decimal that fits the bitmap, else None."""
    if user_id.isdigit() and user_id.isascii():
        number = int(user_id)
        if number <= _MAX_U32 and str(number) == user_id:
            return number
    return None


@dataclass(slots=True)
class WindowAggregate:
    """The running statistics of one channel in one window."""

    messages: int = 0
    chatters: BitMap = field(default_factory=BitMap)
    other_chatters: list[str] = field(default_factory=list)
    # emote id -> (occurrences, the text it covers at its first occurrence)
    emotes: dict[str, tuple[int, str]] = field(default_factory=dict)
    # the chatters with the most messages (bounded; stored apart from the channel record)
    talkers: TopChatters = field(default_factory=TopChatters)
    # moderation events in the window (chatpulse.processor.moderation)
    deleted_messages: int = 0
    timeouts: int = 0
    bans: int = 0
    # chatter sessions started and ended in the window (chatpulse.processor.sessions), None
    # while it has none
    sessions: WindowSessions | None = None

    @classmethod
    def from_tuple(cls, value: AggregateTuple) -> "WindowAggregate":
        messages, bitmap, others, emotes = value
        return cls(messages, BitMap.deserialize(bitmap), others, emotes)

    def moderation(self) -> tuple[int, int, int]:
        """(deleted_messages, timeouts, bans): stored next to :meth:`to_tuple`'s form."""
        return (self.deleted_messages, self.timeouts, self.bans)

    def count_event(self, event_type: str) -> None:
        """Count one moderation event (``message_deleted``, ``timeout`` or ``ban``)."""
        if event_type == "message_deleted":
            self.deleted_messages += 1
        elif event_type == "timeout":
            self.timeouts += 1
        elif event_type == "ban":
            self.bans += 1

    def to_tuple(self) -> AggregateTuple:
        """The msgpack-ready form (the bitmap in roaring's portable serialization)."""
        return (self.messages, self.chatters.serialize(), self.other_chatters, self.emotes)

    @property
    def unique_chatters(self) -> int:
        return len(self.chatters) + len(self.other_chatters)

    def add(
        self,
        message: ChatMessage,
        number: int | None,
        max_emotes: int = MAX_EMOTES,
        top_capacity: int = DEFAULT_CAPACITY,
    ) -> int:
        """Count one (already de-duplicated) message; ``number`` is its
        :func:`numeric_user_id`, worked out once for all of the message's windows.

        Returns the number of its emote occurrences left untracked, plus
        :data:`UNTRACKED_CHATTER` when its chatter was: a window tracks at most
        ``max_emotes`` distinct emotes (their counts live in the state's channel record), no
        emote id longer than 64 characters (a name is kept to 64 characters), and at most
        :data:`MAX_OTHER_CHATTERS` chatters whose id is not an unsigned 32-bit number (Twitch's
        are; the others are kept as a list in the channel record), of at most
        :data:`MAX_OTHER_CHATTER_ID` ASCII characters. Its chatter is counted in
        :attr:`talkers` (at most ``top_capacity`` counters, see
        :mod:`chatpulse.processor.topchatters`).
        """
        self.messages += 1
        self.talkers.add(message.user_id, message.user_login, top_capacity)
        untracked = 0
        if number is not None:
            self.chatters.add(number)
        else:
            user_id = message.user_id
            others = self.other_chatters
            position = bisect.bisect_left(others, user_id)
            if position == len(others) or others[position] != user_id:
                if (
                    len(others) < MAX_OTHER_CHATTERS
                    and len(user_id) <= MAX_OTHER_CHATTER_ID
                    and user_id.isascii()
                ):
                    others.insert(position, user_id)
                else:
                    untracked = UNTRACKED_CHATTER
        if message.emotes:
            emotes = self.emotes
            for emote in message.emotes:
                seen = emotes.get(emote.id)
                if seen is not None:
                    emotes[emote.id] = (seen[0] + 1, seen[1])
                elif len(emotes) < max_emotes and len(emote.id) <= _MAX_EMOTE_TEXT:
                    emotes[emote.id] = (1, message.emote_name(emote)[:_MAX_EMOTE_TEXT])
                else:
                    untracked += 1
        return untracked


def top_emotes(emotes: dict[str, tuple[int, str]], limit: int = TOP_EMOTES) -> list[TopEmote]:
    """The ``limit`` most used emotes: by occurrences, ties by emote id (deterministic)."""
    ranked = sorted(emotes.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
    return [TopEmote(id=emote_id, name=name, count=count) for emote_id, (count, name) in ranked]


def to_window_stats(
    channel: str, size_ms: int, start: int, aggregate: WindowAggregate, *, closed: bool
) -> WindowStats:
    """The wire form of one window's statistics."""
    sessions = aggregate.sessions or _NO_SESSIONS
    return WindowStats(
        channel=channel,
        window=format_duration(size_ms),
        window_start=start,
        window_end=start + size_ms,
        messages=aggregate.messages,
        unique_chatters=aggregate.unique_chatters,
        top_emotes=top_emotes(aggregate.emotes),
        closed=closed,
        top_chatters=aggregate.talkers.top(),
        deleted_messages=aggregate.deleted_messages,
        timeouts=aggregate.timeouts,
        bans=aggregate.bans,
        sessions_started=sessions.started,
        sessions_ended=sessions.ended,
        session_mean_s=sessions.mean_s,
        session_p90_s=sessions.p90_s,
    )
