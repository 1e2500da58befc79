"""The moderation join: CLEARMSG and CLEARCHAT events joined with the messages they target.

Both topics are keyed and partitioned by channel, and the processor reads them as one stream
(Quix's ``concat``, which also reads the two in timestamp order, partition by partition): a
channel's messages and its moderation events reach the same counting step and the same
state. The join is a windowed stream-stream join on the channel, with a condition on a
field of the value:

- a ``message_deleted`` event (CLEARMSG) targets the message whose id is its
  ``target_msg_id``;
- a ``timeout`` or ``ban`` (CLEARCHAT with a user) targets that user's messages sent at or
  before it;
- a ``clear`` (CLEARCHAT without a user) targets every message sent at or before it.

Each side is kept for the join horizon (``CHATPULSE_MODERATION_HORIZON``), measured on the
channel's time (its latest message ``sent_at``): messages in :class:`JoinIndex` (and the
state's join buckets, see :mod:`.channel`), actions in :class:`Actions`. Whichever side
comes second completes the match, so the outcome does not depend on which topic was read
first: a CLEARMSG read before its message (the two topics are read side by side) is kept as
a pending action and marks the message when it arrives; a message read after a ban that
came later in time is marked as it arrives. A target older than the horizon when its event
comes (or an event older than the horizon when its message comes) is not found: the event
still counts in its window, no row is marked (the processor's
``chatpulse_processor_moderation_unmatched`` counts such CLEARMSGs).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from chatpulse.models import ChatMessage

__all__ = [
    "CLEAR",
    "DELETED",
    "MAX_ACTIONS",
    "MODERATION_TYPES",
    "Actions",
    "JoinIndex",
    "Target",
    "target_of",
    "target_token",
]

DELETED = "message_deleted"
CLEAR = "clear"
# the ChatEvent types the join reads (other events are consumed and left alone)
MODERATION_TYPES = frozenset({DELETED, "timeout", "ban", CLEAR})
# actions kept per channel at most (a flood of bans in one horizon): past it the oldest
# tenth goes
MAX_ACTIONS = 10_000
_SEP = "\x1f"
_MAX_TOKEN = 256
_KIND_MESSAGE, _KIND_USER, _KIND_CLEAR = "m", "u", "c"
_actions_encoder = msgspec.msgpack.Encoder()
_actions_decoder = msgspec.msgpack.Decoder(list[tuple[int, str, str]])


@dataclass(frozen=True, slots=True)
class Target:
    """What marking a message needs: its Cassandra keys and who sent it."""

    id: str
    sent_at: int
    user_id: str
    login: str


def target_of(message: ChatMessage) -> Target:
    return Target(message.id, message.sent_at, message.user_id, message.user_login)


def target_token(message: ChatMessage) -> bytes | None:
    """The state's form of a message for the join (one line), or None when a field holds a
    separator or the line would be longer than 256 bytes (never a Twitch message: such a
    message cannot be joined)."""
    token = f"{message.id}{_SEP}{message.sent_at}{_SEP}{message.user_id}{_SEP}{message.user_login}"
    raw = token.encode()
    if len(raw) > _MAX_TOKEN or "\n" in token or token.count(_SEP) != 3:
        return None
    return raw


def parse_token(raw: bytes) -> Target:
    message_id, sent_at, user_id, login = raw.decode().split(_SEP)
    return Target(message_id, int(sent_at), user_id, login)


@dataclass(slots=True)
class JoinIndex:
    """A channel's messages of the join horizon, by id and by user, in time buckets."""

    by_id: dict[str, Target] = field(default_factory=dict)
    by_user: dict[str, list[Target]] = field(default_factory=dict)
    by_bucket: dict[int, list[Target]] = field(default_factory=dict)

    @classmethod
    def from_tokens(cls, buckets: Iterable[tuple[int, Iterable[bytes]]]) -> "JoinIndex":
        index = cls()
        for bucket, tokens in buckets:
            for raw in tokens:
                index.add(parse_token(raw), bucket)
        return index

    def add(self, target: Target, bucket: int) -> None:
        if target.id in self.by_id:
            return  # counted twice with de-duplication off: one entry is enough
        self.by_id[target.id] = target
        self.by_user.setdefault(target.user_id, []).append(target)
        self.by_bucket.setdefault(bucket, []).append(target)

    def expire(self, buckets: Iterable[int]) -> None:
        """Forget the messages of these buckets."""
        users: set[str] = set()
        for bucket in buckets:
            for target in self.by_bucket.pop(bucket, ()):
                self.by_id.pop(target.id, None)
                users.add(target.user_id)
        for user in users:
            kept = [t for t in self.by_user.get(user, ()) if t.id in self.by_id]
            if kept:
                self.by_user[user] = kept
            else:
                self.by_user.pop(user, None)

    def of_user(self, user_id: str, until: int) -> list[Target]:
        """The user's messages sent at or before ``until``."""
        return [t for t in self.by_user.get(user_id, ()) if t.sent_at <= until]

    def until(self, until: int) -> list[Target]:
        """Every message sent at or before ``until``."""
        return [t for t in self.by_id.values() if t.sent_at <= until]


@dataclass(slots=True)
class Actions:
    """A channel's moderation actions of the join horizon, for messages read after them:
    ``(sent_at, kind, target)`` with kind ``m`` (a message id), ``u`` (a user id) or ``c``
    (the whole chat, no target)."""

    items: list[tuple[int, str, str]] = field(default_factory=list)
    # derived lookups
    _ids: set[str] = field(default_factory=set)
    _users: dict[str, int] = field(default_factory=dict)
    _clear: int = -1

    @classmethod
    def decode(cls, data: bytes | None) -> "Actions":
        actions = cls(_actions_decoder.decode(data) if data else [])
        actions._derive()
        return actions

    def encode(self) -> bytes:
        return _actions_encoder.encode(self.items)

    def add(self, sent_at: int, kind: str, target: str) -> None:
        self.items.append((sent_at, kind, target))
        if len(self.items) > MAX_ACTIONS:
            # past the bound the oldest tenth goes at once (the lookups are rebuilt)
            self.items.sort()
            del self.items[: len(self.items) - MAX_ACTIONS * 9 // 10]
            self._derive()
        elif kind == _KIND_MESSAGE:
            self._ids.add(target)
        elif kind == _KIND_USER:
            self._users[target] = max(self._users.get(target, sent_at), sent_at)
        else:
            self._clear = max(self._clear, sent_at)

    def prune(self, cutoff: int) -> bool:
        """Drop the actions before ``cutoff``; True when some went."""
        kept = [item for item in self.items if item[0] >= cutoff]
        if len(kept) == len(self.items):
            return False
        self.items = kept
        self._derive()
        return True

    def deletes(self, message: ChatMessage) -> bool:
        """Whether a kept action deletes ``message`` (its id deleted, its user timed out or
        banned, or the chat cleared, at or after it was sent)."""
        if message.id in self._ids or self._clear >= message.sent_at:
            return True
        until = self._users.get(message.user_id)
        return until is not None and until >= message.sent_at

    def __bool__(self) -> bool:
        return bool(self.items)

    def _derive(self) -> None:
        self._ids = {target for _, kind, target in self.items if kind == _KIND_MESSAGE}
        users: dict[str, int] = {}
        clear = -1
        for sent_at, kind, target in self.items:
            if kind == _KIND_USER:
                users[target] = max(users.get(target, sent_at), sent_at)
            elif kind == _KIND_CLEAR:
                clear = max(clear, sent_at)
        self._users, self._clear = users, clear

    @staticmethod
    def kind_of(event_type: str) -> str:
        if event_type == DELETED:
            return _KIND_MESSAGE
        if event_type == CLEAR:
            return _KIND_CLEAR
        return _KIND_USER
