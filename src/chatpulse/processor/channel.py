"""The per-channel counting step: de-duplication, tumbling windows and channel totals.

One function over one key-value store (the channel's slice of the Quix state store, the
record key being the channel) does all three, for these reasons:
- one state store and one changelog topic instead of one per window size, so a checkpoint
  produces one changelog batch and recovery replays one topic;
- a message yields both the open windows it changed (for the live view and Cassandra's
  current minute) and the windows it closed, which Quix's built-in windows give only by
  running ``current()`` and ``final()`` side by side.

The state is written back once per checkpoint, not once per message. A channel's record
(totals and open windows, with their chatter bitmaps) and the de-duplication buckets it
touches are worked on as Python objects; :meth:`ChannelCounter.flush` encodes each changed
one into its partition's state transaction just before Quix commits that transaction (the
processor calls it from the first sink Quix flushes at a checkpoint). Encoding a record per
message cost more than all the counting: a popular channel's bitmaps were serialised
thousands of times a second to keep only the last copy. The working copies are tied to the
transaction they were read in, so after a rewind (sink backpressure), an aborted checkpoint
or a rebalance, the next message of the channel reads the committed state again. A record
is only reused across checkpoints when the state holds exactly the bytes it was flushed as.

State layout (keys within the channel's slice of the store). Kafka refuses a changelog record
over 1 MB, so no record grows with the audience or the rate:
- ``c``: the channel record: totals, and each open window's message count, emotes (at most
  ``max_emotes`` distinct ones, ids and names of up to 64 characters, ~140 bytes each at
  worst), chatter bitmap and other chatters (ids that are not unsigned 32-bit numbers, never
  Twitch's: at most 1,000 of at most 32 ASCII characters, ~33 KB; a further one is not
  counted, see :meth:`WindowAggregate.add`). At most open windows x (``chunk_bytes // 8`` +
  ``max_emotes`` x 140 bytes + 33 KB): ~500 KB with the defaults (three window sizes, two
  open windows each at most with a 10 s grace), a few KiB as a rule. A window's
  chatter bitmap is kept inline while it serialises to at most ``chunk_bytes // 8``; past
  that (a large audience) the window is *chunked*: its bitmap lives in records
  ``x<size><start><first id>`` that each hold the ids of one range of user ids, and the
  channel record lists the ranges' first ids. Ranges are halved (down to 65,536
  ids, one roaring container, at most 8 KiB) until each serialises to at most
  ``chunk_bytes``; a flush rewrites only the ranges that gained chatters. A closed chunked
  window's records are deleted.
- ``t<size><start>``: an open window's top chatters (:mod:`.topchatters`): at most
  ``top_capacity`` counters of at most ~90 bytes each (~25 KB with the default 1,000 and
  Twitch's ids), written at a flush when the window gained messages, deleted when it
  closes; split into parts ``t<size><start><part>`` of at most ``chunk_bytes`` when larger
  (part 0 starts with the number of parts).
- ``s``: the channel's chat-spike baseline (:mod:`.spikes`, at most
  CHATPULSE_SPIKE_BASELINE_WINDOWS counts), written when a window of the spike size closes.
- ``b``: the sorted numbers of the de-duplication buckets; ``d<bucket>``: a bucket's ids
  (newline-separated), split into parts ``d<bucket><part>`` of at most ``chunk_bytes`` when
  a channel's rate makes one larger.

Semantics (see the counting rules of the interface spec):
- A message counts once per (channel, id) within ``dedup_horizon_ms`` (every time with
  ``dedup=False``: no ids are kept then). A redelivered message
  carries the same ``sent_at`` (it is the same PRIVMSG), so ids are kept in time buckets of
  ``sent_at`` and a message is looked up in its own bucket only; buckets older than the
  channel's latest ``sent_at`` minus the horizon are deleted.
- Windows close per channel (Quix's "key" closing strategy): the window ``[start, end)``
  is closed once the channel's latest ``sent_at`` reaches ``end + grace``. A message for a
  closed window is late: left out of that window, counted in the metrics and in the totals.
"""

import bisect
import struct
from array import array
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import msgspec
from pyroaring import BitMap

from chatpulse.models import ChatEvent, ChatMessage, ChatSpike, WindowStats
from chatpulse.processor.aggregate import (
    MAX_EMOTES,
    UNTRACKED_CHATTER,
    AggregateTuple,
    WindowAggregate,
    numeric_user_id,
    to_window_stats,
)
from chatpulse.processor.buckets import (
    BUCKET_PARTS,
    MAX_TOKEN,
    KeyValueStore,
    delete_bucket,
    read_bucket,
    token_of,
    write_bucket,
)
from chatpulse.processor.metrics import Tally
from chatpulse.processor.moderation import (
    DELETED,
    MODERATION_TYPES,
    Actions,
    JoinIndex,
    Target,
    target_of,
    target_token,
)
from chatpulse.processor.quix_hooks import STATE_TRANSACTION, transaction_is_open
from chatpulse.processor.sessions import (
    OpenSessions,
    SessionRules,
    SessionsTuple,
    WindowSessions,
)
from chatpulse.processor.topchatters import DEFAULT_CAPACITY, TopChatters, TopChattersTuple

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ChannelCounter",
    "ChannelUpdate",
    "KeyValueStore",
    "ModerationUpdate",
    "dedup_bucket_ms",
]

_chunk_key = struct.Struct(">cqqI").pack  # b"x", window size, window start, first user id
_talkers_key = struct.Struct(">cqq").pack  # b"t", window size, window start
_ID_END = 2**32  # user ids in bitmaps are unsigned 32-bit
_CONTAINER_IDS = 2**16  # a range this small serialises to at most ~8 KiB
_EMOTE_COUNT = UNTRACKED_CHATTER - 1  # the emote part of WindowAggregate.add's result
_INLINE_SHARE = 8  # a bitmap inline in the channel record is at most chunk_bytes / this
DEFAULT_CHUNK_BYTES = 65_536
# Working copies kept between checkpoints (reused when the state still holds their bytes).
_WORKING_SET_LIMIT = 50_000
_CHANNEL = b"c"
_BUCKETS = b"b"
_DEDUP = b"d"  # a de-duplication bucket's key prefix
_JOIN = b"j"  # a join bucket's key prefix (messages the moderation join can find)
_JOIN_BUCKETS = b"J"  # the sorted numbers of the join buckets
_ACTIONS = b"a"  # the moderation actions of the join horizon
_record_encoder = msgspec.msgpack.Encoder()
# (total, first_seen, last_seen, [(size, start, aggregate, first ids of its chunks,
# (deleted_messages, timeouts, bans), sessions or None)]): a window with no chunks has its
# bitmap inline in the aggregate, else an empty one there
_record_decoder = msgspec.msgpack.Decoder(
    tuple[
        int,
        int,
        int,
        list[
            tuple[int, int, AggregateTuple, list[int], tuple[int, int, int], SessionsTuple | None]
        ],
    ]
)
# the layout before chatter sessions
_sessionless_decoder = msgspec.msgpack.Decoder(
    tuple[int, int, int, list[tuple[int, int, AggregateTuple, list[int], tuple[int, int, int]]]]
)
# the layout before moderation counts
_unmoderated_decoder = msgspec.msgpack.Decoder(
    tuple[int, int, int, list[tuple[int, int, AggregateTuple, list[int]]]]
)
_NO_MODERATION = (0, 0, 0)
# the layout before chunked windows: every bitmap inline
_legacy_decoder = msgspec.msgpack.Decoder(
    tuple[int, int, int, list[tuple[int, int, AggregateTuple]]]
)
_NO_CHUNKS: list[int] = []
_talkers_encoder = msgspec.msgpack.Encoder()
_talkers_decoder = msgspec.msgpack.Decoder(TopChattersTuple)


class _Keyed(Protocol):
    """What de-duplication reads of a record: its id and time."""

    @property
    def id(self) -> str: ...

    @property
    def sent_at(self) -> int: ...


class _EventKey(NamedTuple):
    """A moderation event as de-duplication sees it (its id kept apart from messages')."""

    id: str
    sent_at: int


@dataclass(slots=True)
class ChannelUpdate:
    """What one counted message changed: the Cassandra write-back and the output topic read this."""

    message: ChatMessage
    total_messages: int
    first_seen: int
    last_seen: int
    # (size_ms, window_start, aggregate after this message) of each window it entered;
    # the aggregate is the live working copy: read it by the next checkpoint at the latest
    windows: list[tuple[int, int, WindowAggregate]] = field(default_factory=list)
    # windows this message closed, final
    closed: list[WindowStats] = field(default_factory=list)
    # window sizes for which this message came too late
    late_sizes: list[int] = field(default_factory=list)
    # the consumed record's value (the sink stores it as the raw message), set by the caller
    record: bytes = b""
    # the channel's open windows after this message: the live working copy (the sink reads
    # the last update's of a checkpoint; read it by the next checkpoint at the latest)
    open_windows: dict[tuple[int, int], WindowAggregate] = field(default_factory=dict)
    # the closed windows that are chat spikes (set by the topology, see .spikes)
    spikes: list[ChatSpike] = field(default_factory=list)
    # a moderation action read before this message deletes it (see .moderation)
    deleted: bool = False


@dataclass(slots=True)
class ModerationUpdate:
    """What one counted moderation event changed."""

    event: ChatEvent
    # the messages it deletes (found by the join; to mark in Cassandra)
    marks: list[Target]
    # window sizes for which it came too late
    late_sizes: list[int]
    # the channel's open windows after it (the live working copy, as ChannelUpdate's)
    open_windows: dict[tuple[int, int], WindowAggregate]
    # a CLEARMSG whose message was not found (kept to mark it if it is read later)
    unmatched: bool = False


@dataclass(slots=True)
class _Chunks:
    """Where a chunked window's bitmap is in the state: the first user id of each range
    (ascending, the first is 0; a range ends where the next begins), and each range's
    number of ids when it was last written (-1: to be written)."""

    starts: list[int]
    written: list[int]


@dataclass(slots=True)
class _ChannelRecord:
    """One channel's state record: totals and its open windows."""

    total: int
    first_seen: int
    last_seen: int
    windows: dict[tuple[int, int], WindowAggregate]
    # the earliest ``start + size + grace`` of the open windows, 0 when none (derived, not
    # stored): the windows are looked over for closing only once the channel's time reaches it
    next_close: int = 0
    # the windows whose bitmaps are in chunk records, by (size, start)
    chunked: dict[tuple[int, int], _Chunks] = field(default_factory=dict)
    # chunk records of closed windows, deleted at the next flush
    dropped: list[bytes] = field(default_factory=list)
    # the messages of the join horizon, read from the state when an event first needs them
    # and kept with the record (see .moderation)
    join: JoinIndex | None = None
    # the moderation actions of the join horizon (key ``a``)
    actions: Actions = field(default_factory=Actions)
    actions_dirty: bool = False

    def close(self, size: int, start: int) -> WindowAggregate:
        """Take a window out; its chunk and top-chatters records go at the next flush."""
        chunks = self.chunked.pop((size, start), None)
        if chunks is not None:
            self.dropped.extend(_chunk_key(b"x", size, start, lo) for lo in chunks.starts)
        window = self.windows.pop((size, start))
        key = _talkers_key(b"t", size, start)
        self.dropped.append(key)
        self.dropped.extend(key + BUCKET_PARTS.pack(n) for n in range(1, window.talkers.parts))
        return window

    @classmethod
    def decode(cls, data: bytes, store: KeyValueStore) -> "_ChannelRecord":
        """Read a record (and its windows' chunk records from ``store``)."""
        try:
            total, first_seen, last_seen, windows = _record_decoder.decode(data)
        except msgspec.ValidationError:
            try:
                total, first_seen, last_seen, sessionless = _sessionless_decoder.decode(data)
                windows = [(*entry, None) for entry in sessionless]
            except msgspec.ValidationError:
                try:
                    total, first_seen, last_seen, older = _unmoderated_decoder.decode(data)
                    windows = [(*entry, _NO_MODERATION, None) for entry in older]
                except msgspec.ValidationError:
                    total, first_seen, last_seen, legacy = _legacy_decoder.decode(data)
                    windows = [
                        (size, start, agg, _NO_CHUNKS, _NO_MODERATION, None)
                        for size, start, agg in legacy
                    ]
        aggregates: dict[tuple[int, int], WindowAggregate] = {}
        chunked: dict[tuple[int, int], _Chunks] = {}
        for size, start, agg, starts, moderation, sessions in windows:
            if starts:
                messages, _, others, emotes = agg
                aggregate = WindowAggregate(messages, BitMap(), others, emotes)
                chunked[(size, start)] = _read_chunks(store, size, start, starts, aggregate)
            else:
                aggregate = WindowAggregate.from_tuple(agg)
            aggregate.talkers = _read_talkers(store, _talkers_key(b"t", size, start))
            aggregate.deleted_messages, aggregate.timeouts, aggregate.bans = moderation
            if sessions is not None:
                aggregate.sessions = WindowSessions.from_tuple(sessions)
            aggregates[(size, start)] = aggregate
        actions = Actions.decode(store.get_bytes(_ACTIONS))
        return cls(total, first_seen, last_seen, aggregates, chunked=chunked, actions=actions)


def _read_talkers(store: KeyValueStore, key: bytes) -> TopChatters:
    """A window's top-chatters summary: part 0 (``key``: part count, then bytes) and the
    parts after it (``key`` + part number)."""
    first = store.get_bytes(key)
    if first is None:  # a window in the state of an older chatpulse
        return TopChatters()
    (count,) = BUCKET_PARTS.unpack_from(first)
    data = first[2:] + b"".join(
        store.get_bytes(key + BUCKET_PARTS.pack(n)) or b"" for n in range(1, count)
    )
    talkers = TopChatters.from_tuple(_talkers_decoder.decode(data))
    talkers.parts = count
    return talkers


def _write_talkers(store: KeyValueStore, key: bytes, talkers: TopChatters, limit: int) -> None:
    """Write the summary in parts of at most ``limit`` bytes; drop parts it no longer has."""
    data = _talkers_encoder.encode(talkers.to_tuple())
    step = limit - 2
    pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    store.set_bytes(key, BUCKET_PARTS.pack(len(pieces)) + pieces[0])
    for n, piece in enumerate(pieces[1:], 1):
        store.set_bytes(key + BUCKET_PARTS.pack(n), piece)
    for n in range(len(pieces), talkers.parts):
        store.delete(key + BUCKET_PARTS.pack(n))
    talkers.parts = len(pieces)
    talkers.dirty = False


def _read_chunks(
    store: KeyValueStore, size: int, start: int, starts: list[int], aggregate: WindowAggregate
) -> _Chunks:
    """Load a chunked window's bitmap into ``aggregate``."""
    chatters = aggregate.chatters
    written: list[int] = []
    for lo in starts:
        data = store.get_bytes(_chunk_key(b"x", size, start, lo))
        if data is None:
            written.append(-1)
            continue
        piece = BitMap.deserialize(data)
        chatters |= piece
        written.append(len(piece))
    return _Chunks(list(starts), written)


@dataclass(slots=True)
class _Working:
    """A channel's state as worked on in memory during one state transaction."""

    store: KeyValueStore  # the channel's state, bound to ``transaction``
    transaction: object
    record: _ChannelRecord | None
    stored: bytes | None  # the record's bytes in the state (as read, or as last flushed)
    dirty: bool = False
    # de-duplication buckets read or created in this transaction: bucket -> ids
    buckets: dict[int, set[bytes]] = field(default_factory=dict)
    dirty_buckets: set[int] = field(default_factory=set)
    # the sorted ids of the buckets in the state, read when first needed
    index: "array[int] | None" = None
    index_dirty: bool = False
    # the join's buckets (messages for the moderation join) as the dedup ones above
    join_buckets: dict[int, set[bytes]] = field(default_factory=dict)
    join_dirty: set[int] = field(default_factory=set)
    join_index: "array[int] | None" = None
    join_index_dirty: bool = False
    # the channel's open chatter sessions, when sessions are counted
    sessions: OpenSessions | None = None


class _Detached:
    """The store of a working copy after its flush: the next message reads the state."""

    def get_bytes(self, key: bytes) -> bytes | None:
        raise RuntimeError("a flushed working copy has no store")

    def set_bytes(self, key: bytes, value: bytes) -> None:
        raise RuntimeError("a flushed working copy has no store")

    def delete(self, key: bytes) -> None:
        raise RuntimeError("a flushed working copy has no store")


_DETACHED = _Detached()


def dedup_bucket_ms(horizon_ms: int) -> int:
    """Bucket width: 1 s, or wider so that a horizon holds at most ~3,600 buckets."""
    return max(1_000, horizon_ms // 3_600)


def _transaction_of(store: KeyValueStore) -> object:
    """The state transaction a Quix ``State`` is bound to (a plain store is its own)."""
    return getattr(store, STATE_TRANSACTION, store)


class ChannelCounter:
    """Counts channels' messages into their :class:`KeyValueStore` (each channel's state)."""

    def __init__(
        self,
        window_sizes_ms: list[int],
        grace_ms: int,
        dedup_horizon_ms: int,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_emotes: int = MAX_EMOTES,
        *,
        dedup: bool = True,
        top_capacity: int = DEFAULT_CAPACITY,
        join_horizon_ms: int = 10 * 60_000,
        session_gap_ms: int = 0,
    ) -> None:
        if chunk_bytes < 2 * 8_192 + 64:
            raise ValueError("chunk_bytes must hold a full roaring container (16 KiB or more)")
        self._chunk_bytes = chunk_bytes
        self._max_emotes = max_emotes
        self._top_capacity = top_capacity
        # messages with an emote a window did not track (past max_emotes distinct ones)
        self.untracked_emotes = Tally()
        # chatters a window did not track (past MAX_OTHER_CHATTERS ids that are not numbers)
        self.untracked_chatters = Tally()
        self._inline_bytes = chunk_bytes // _INLINE_SHARE
        self._sizes = sorted(set(window_sizes_ms))
        self._grace_ms = grace_ms
        self._horizon_ms = dedup_horizon_ms
        self._dedup = dedup
        self._bucket_ms = dedup_bucket_ms(dedup_horizon_ms)
        # the moderation join keeps messages and actions this long (channel time)
        self._join_ms = join_horizon_ms
        self._join_bucket_ms = dedup_bucket_ms(join_horizon_ms)
        # CLEARMSGs whose message was not found when they were read
        self.unmatched = Tally()
        # chatter sessions (see .sessions), None when not counted (a gap of 0)
        self.sessions = SessionRules(session_gap_ms, grace_ms) if session_gap_ms else None
        # by (partition, channel): a partition's state is its own, even for a channel that
        # shows up on two partitions (a producer with another partitioner, or a topic whose
        # partition count was changed)
        self._working: dict[tuple[int, str], _Working] = {}
        # copies changed since the last flush
        self._pending: dict[tuple[int, str], _Working] = {}

    def process(
        self, message: ChatMessage, store: KeyValueStore, partition: int = 0
    ) -> ChannelUpdate | None:
        """Count ``message`` (read from ``partition``, whose state ``store`` is);
        None when it is a duplicate within the horizon (never with ``dedup=False``)."""
        sent_at = message.sent_at
        channel = message.channel
        key = (partition, channel)
        work = self._working.get(key)
        if work is None or work.transaction is not getattr(store, STATE_TRANSACTION, store):
            work = self._begin(key, store, work)
        record = work.record
        if record is None:
            record = work.record = _ChannelRecord(0, sent_at, sent_at, {}, 0)
        last_seen = record.last_seen
        latest = sent_at if sent_at > last_seen else last_seen

        if self._dedup and self._is_duplicate(message, work, latest):
            return None

        work.dirty = True
        self._pending[key] = work
        total = record.total = record.total + 1
        # (a record made by a moderation event has no messages and no first_seen yet)
        if sent_at < record.first_seen or total == 1:
            record.first_seen = sent_at
        record.last_seen = latest
        opened: list[tuple[int, int, WindowAggregate]] = []
        closed: list[WindowStats] = []
        late: list[int] = []
        windows = record.windows
        update = ChannelUpdate(
            message, total, record.first_seen, latest, opened, closed, late, b"", windows
        )
        grace = self._grace_ms
        number = numeric_user_id(message.user_id)
        untracked = 0
        for size in self._sizes:
            start = sent_at - sent_at % size
            ends = start + size + grace
            if ends <= latest:
                late.append(size)
                continue
            aggregate = windows.get((size, start))
            if aggregate is None:
                aggregate = windows[(size, start)] = WindowAggregate()
                if ends < record.next_close or not record.next_close:
                    record.next_close = ends
            untracked += aggregate.add(message, number, self._max_emotes, self._top_capacity)
            opened.append((size, start, aggregate))

        self.untracked_emotes.value += untracked & _EMOTE_COUNT
        self.untracked_chatters.value += untracked >> 32
        if self.sessions is not None:
            self._count_session(work, record, message, latest, bool(late))
        if record.next_close and latest >= record.next_close:
            self._close(record, channel, latest, closed)
        return self._remember(work, record, update, latest) if self._join_ms else update

    def _close(
        self, record: _ChannelRecord, channel: str, latest: int, closed: list[WindowStats]
    ) -> None:
        """Close the windows whose end + grace ``latest`` reached, into ``closed``."""
        next_close = 0
        grace = self._grace_ms
        for size, start in list(record.windows):
            ends = start + size + grace
            if ends <= latest:
                final = record.close(size, start)
                closed.append(to_window_stats(channel, size, start, final, closed=True))
            elif ends < next_close or not next_close:
                next_close = ends
        record.next_close = next_close

    def _count_session(
        self,
        work: _Working,
        record: _ChannelRecord,
        message: ChatMessage,
        latest: int,
        late: bool,
    ) -> None:
        """Expire the sessions over at ``latest`` (before any window closes at it), then
        count the message in its user's session unless it is late for a window."""
        rules = self.sessions
        assert rules is not None
        sessions = work.sessions
        if sessions is None:
            sessions = work.sessions = OpenSessions(work.store)

        def windows_at(time: int) -> list[WindowSessions]:
            return self._sessions_at(record, time)

        due = sessions.due(rules.gap_ms, rules.grace_ms)
        if due is not None and latest >= due:
            rules.expire(sessions, latest, windows_at)
        if not late:
            rules.message(sessions, token_of(message.user_id), message.sent_at, latest, windows_at)

    def _sessions_at(self, record: _ChannelRecord, time: int) -> list[WindowSessions]:
        """The session counts of the channel's windows holding ``time`` (made when the
        channel had no message there; never a closed one, see .sessions)."""
        found: list[WindowSessions] = []
        windows = record.windows
        for size in self._sizes:
            start = time - time % size
            aggregate = windows.get((size, start))
            if aggregate is None:
                aggregate = windows[(size, start)] = WindowAggregate()
                ends = start + size + self._grace_ms
                if ends < record.next_close or not record.next_close:
                    record.next_close = ends
            if aggregate.sessions is None:
                aggregate.sessions = WindowSessions()
            found.append(aggregate.sessions)
        return found

    def moderate(
        self, event: ChatEvent, store: KeyValueStore, partition: int = 0
    ) -> ModerationUpdate | None:
        """Count a moderation event (read from ``partition``) in its windows and join it
        with the messages it targets; None when it is a duplicate or not a moderation event.

        Events do not move the channel's time: a window closes when the channel's messages
        pass its end and grace, so a moderation event never makes a message late. An event
        for a window already closed is late (left out of it, ``late_sizes``).
        """
        if event.type not in MODERATION_TYPES:
            return None
        channel = event.channel
        key = (partition, channel)
        work = self._working.get(key)
        if work is None or work.transaction is not getattr(store, STATE_TRANSACTION, store):
            work = self._begin(key, store, work)
        record = work.record
        if record is None:
            # no message of the channel yet: no totals, the first message sets first_seen
            record = work.record = _ChannelRecord(0, 0, 0, {}, 0)
        latest = record.last_seen
        if self._dedup and self._is_duplicate(
            _EventKey("e:" + event.id, event.sent_at), work, latest
        ):
            return None
        work.dirty = True
        self._pending[key] = work
        sent_at = event.sent_at
        late: list[int] = []
        windows = record.windows
        grace = self._grace_ms
        for size in self._sizes:
            start = sent_at - sent_at % size
            ends = start + size + grace
            if ends <= latest:
                late.append(size)
                continue
            aggregate = windows.get((size, start))
            if aggregate is None:
                aggregate = windows[(size, start)] = WindowAggregate()
                if ends < record.next_close or not record.next_close:
                    record.next_close = ends
            aggregate.count_event(event.type)
        update = ModerationUpdate(event, [], late, windows)
        if self._join_ms:
            self._join_event(work, record, update)
        return update

    def _join_event(
        self, work: "_Working", record: "_ChannelRecord", update: ModerationUpdate
    ) -> None:
        """Find the messages the event deletes; keep it as an action for messages read
        after it."""
        event = update.event
        sent_at = event.sent_at
        index = self._join_index(work, record)
        kind = Actions.kind_of(event.type)
        if event.type == DELETED:
            found = index.by_id.get(event.target_msg_id)
            if found is not None:
                update.marks.append(found)
            else:
                update.unmatched = True
                self.unmatched.value += 1
                record.actions.add(sent_at, kind, event.target_msg_id)
        elif event.type == "clear":
            update.marks.extend(index.until(sent_at))
            record.actions.add(sent_at, kind, "")
        elif event.user_id:
            update.marks.extend(index.of_user(event.user_id, sent_at))
            record.actions.add(sent_at, kind, event.user_id)
        if record.last_seen:
            record.actions.prune(record.last_seen - self._join_ms)
        record.actions_dirty = True

    def _remember(
        self, work: "_Working", record: "_ChannelRecord", update: ChannelUpdate, latest: int
    ) -> ChannelUpdate:
        """Keep the update's message for the join (in its join bucket, and in the record's
        index when loaded); drop the buckets past the horizon when a new bucket starts. Marks
        the update deleted when an action read before it deletes it."""
        message = update.message
        update.deleted = bool(record.actions) and record.actions.deletes(message)
        sent_at = message.sent_at
        token = target_token(message)
        if token is None or sent_at < latest - self._join_ms:
            return update  # older than the horizon already, or cannot be kept
        bucket = sent_at // self._join_bucket_ms
        tokens = work.join_buckets.get(bucket)
        if tokens is None:
            index = self._join_buckets(work)
            position = bisect.bisect_left(index, bucket)
            if position < len(index) and index[position] == bucket:
                tokens = read_bucket(work.store, bucket, _JOIN)
            else:
                tokens = set()
                index.insert(position, bucket)
                self._expire_join(work, record, index, latest)
            work.join_buckets[bucket] = tokens
        tokens.add(token)
        work.join_dirty.add(bucket)
        if record.join is not None:
            record.join.add(target_of(message), bucket)
        return update

    def _join_buckets(self, work: "_Working") -> "array[int]":
        """The channel's join bucket numbers (sorted), read once per transaction."""
        if work.join_index is None:
            work.join_index = array("q")
            data = work.store.get_bytes(_JOIN_BUCKETS)
            if data is not None:
                work.join_index.frombytes(data)
        return work.join_index

    def _expire_join(
        self, work: "_Working", record: "_ChannelRecord", index: "array[int]", latest: int
    ) -> None:
        cutoff = (latest - self._join_ms) // self._join_bucket_ms
        expired = bisect.bisect_left(index, cutoff)
        old = list(index[:expired])
        for bucket in old:
            delete_bucket(work.store, bucket, _JOIN)
            work.join_buckets.pop(bucket, None)
            work.join_dirty.discard(bucket)
        del index[:expired]
        work.join_index_dirty = True
        if record.join is not None and old:
            record.join.expire(old)

    def _join_index(self, work: "_Working", record: "_ChannelRecord") -> JoinIndex:
        """The channel's join index, read from its join buckets the first time."""
        if record.join is None:
            record.join = JoinIndex.from_tokens(
                (
                    bucket,
                    work.join_buckets.get(bucket) or read_bucket(work.store, bucket, _JOIN),
                )
                for bucket in self._join_buckets(work)
            )
        return record.join

    def flush(self) -> int:
        """Write every changed record and bucket into its state; the number of channels.

        Call it before the state transactions are prepared for a commit.
        """
        # taken at once: on a revoke Quix may run this in a thread it then abandons
        pending, self._pending = self._pending, {}
        flushed = 0
        for key, work in pending.items():
            # (the first test is for stores whose transaction changes in place; a Quix
            # State is bound to one transaction for good)
            if work.transaction is not _transaction_of(work.store) or not transaction_is_open(
                work.transaction
            ):
                self._working.pop(key, None)
                continue
            self._write(work)
            flushed += 1
        if len(self._working) > _WORKING_SET_LIMIT:
            self._working.clear()  # a crude bound: copies are rebuilt from the state
        return flushed

    def discard(self) -> None:
        """Forget the changes since the last flush (the checkpoint is being dropped)."""
        pending, self._pending = self._pending, {}
        for key in pending:
            self._working.pop(key, None)

    def _begin(
        self, key: tuple[int, str], store: KeyValueStore, previous: _Working | None
    ) -> _Working:
        """The channel's working copy for the transaction ``store`` belongs to."""
        data = store.get_bytes(_CHANNEL)
        record: _ChannelRecord | None = None
        if data is not None:
            if (
                previous is not None
                and not previous.dirty
                and previous.record is not None
                and previous.stored == data
            ):
                record = previous.record  # the state holds what was flushed: no decode
            else:
                record = _ChannelRecord.decode(data, store)
                grace = self._grace_ms
                record.next_close = min(
                    (start + size + grace for size, start in record.windows), default=0
                )
        work = _Working(store, _transaction_of(store), record, data)
        self._working[key] = work
        self._pending.pop(key, None)  # changes in an abandoned transaction
        return work

    def _write(self, work: _Working) -> None:
        store = work.store
        if work.dirty and work.record is not None:
            data = self._encode(work.record, store)
            store.set_bytes(_CHANNEL, data)
            work.stored = data
            work.dirty = False
        for bucket in work.dirty_buckets:
            ids = work.buckets.get(bucket)
            if ids is not None:
                write_bucket(store, bucket, ids, _DEDUP, self._chunk_bytes)
        if work.index_dirty and work.index is not None:
            store.set_bytes(_BUCKETS, work.index.tobytes())
        work.dirty_buckets.clear()
        work.buckets.clear()
        work.index = None
        work.index_dirty = False
        for bucket in work.join_dirty:
            tokens = work.join_buckets.get(bucket)
            if tokens is not None:
                write_bucket(store, bucket, tokens, _JOIN, self._chunk_bytes)
        if work.join_index_dirty and work.join_index is not None:
            store.set_bytes(_JOIN_BUCKETS, work.join_index.tobytes())
        record = work.record
        if record is not None and record.actions_dirty:
            if record.actions:
                store.set_bytes(_ACTIONS, record.actions.encode())
            else:
                store.delete(_ACTIONS)
            record.actions_dirty = False
        work.join_dirty.clear()
        work.join_buckets.clear()
        work.join_index = None
        work.join_index_dirty = False
        if work.sessions is not None:
            work.sessions.write(self._chunk_bytes)
            work.sessions = None
        # Let go of the transaction: Quix keeps a committed transaction's writes in memory,
        # and a quiet channel's copy would hold on to one per checkpoint it was active in.
        work.store = _DETACHED
        work.transaction = None

    def _encode(self, record: _ChannelRecord, store: KeyValueStore) -> bytes:
        """The channel record's bytes; writes the changed chunks of chunked windows and
        deletes those of closed ones."""
        for key in record.dropped:
            store.delete(key)
        record.dropped.clear()
        entries: list[
            tuple[int, int, AggregateTuple, list[int], tuple[int, int, int], SessionsTuple | None]
        ] = []
        for (size, start), agg in record.windows.items():
            if agg.talkers.dirty:
                key = _talkers_key(b"t", size, start)
                _write_talkers(store, key, agg.talkers, self._chunk_bytes)
            chunks = record.chunked.get((size, start))
            if chunks is None:
                bitmap = agg.chatters.serialize()
                if len(bitmap) <= self._inline_bytes:
                    entries.append(
                        (
                            size,
                            start,
                            (agg.messages, bitmap, agg.other_chatters, agg.emotes),
                            [],
                            agg.moderation(),
                            None if agg.sessions is None else agg.sessions.to_tuple(),
                        )
                    )
                    continue
                chunks = record.chunked[(size, start)] = _Chunks([0], [-1])
            self._write_chunks(store, size, start, agg.chatters, chunks)
            entries.append(
                (
                    size,
                    start,
                    (agg.messages, b"", agg.other_chatters, agg.emotes),
                    chunks.starts,
                    agg.moderation(),
                    None if agg.sessions is None else agg.sessions.to_tuple(),
                )
            )
        return _record_encoder.encode((record.total, record.first_seen, record.last_seen, entries))

    def _write_chunks(
        self, store: KeyValueStore, size: int, start: int, chatters: BitMap, chunks: _Chunks
    ) -> None:
        """Write the ranges that gained ids (bitmaps only grow: a range whose count is the
        one written holds the ids written), halving any that serialises too large."""
        total = len(chatters)
        ends = [*chunks.starts[1:], _ID_END]
        todo = list(zip(chunks.starts, ends, chunks.written, strict=True))
        todo.reverse()
        starts: list[int] = []
        written: list[int] = []
        while todo:
            lo, hi, count = todo.pop()
            now = chatters.range_cardinality(lo, hi)
            if now != count:
                piece = chatters if now == total else chatters & BitMap(range(lo, hi))
                data = piece.serialize()
                if len(data) > self._chunk_bytes and hi - lo > _CONTAINER_IDS:
                    middle = lo + (hi - lo) // 2
                    todo.append((middle, hi, -1))
                    todo.append((lo, middle, -1))
                    continue
                store.set_bytes(_chunk_key(b"x", size, start, lo), data)
            starts.append(lo)
            written.append(now)
        chunks.starts, chunks.written = starts, written

    def _is_duplicate(self, message: "_Keyed", work: _Working, latest: int) -> bool:
        bucket = message.sent_at // self._bucket_ms
        ids = work.buckets.get(bucket)
        if ids is None:
            index = self._index(work)
            position = bisect.bisect_left(index, bucket)
            if position < len(index) and index[position] == bucket:
                ids = read_bucket(work.store, bucket, _DEDUP)
            else:
                cutoff = self._cutoff(latest)
                if bucket < cutoff:
                    return False  # older than the horizon: nothing to compare with
                ids = set()
                index.insert(position, bucket)
                self._expire(work, index, cutoff)
            work.buckets[bucket] = ids
        token = message.id.encode()
        if b"\n" in token or len(token) > MAX_TOKEN:
            token = token_of(message.id)
        if token in ids:
            return True
        ids.add(token)
        work.dirty_buckets.add(bucket)
        return False

    def _cutoff(self, latest: int) -> int:
        """The oldest bucket still inside the horizon of a channel at ``latest``."""
        return (latest - self._horizon_ms) // self._bucket_ms

    def _index(self, work: _Working) -> "array[int]":
        """The channel's bucket index (sorted bucket numbers), read once per transaction."""
        if work.index is None:
            work.index = array("q")
            data = work.store.get_bytes(_BUCKETS)
            if data is not None:
                work.index.frombytes(data)
        return work.index

    def _expire(self, work: _Working, index: "array[int]", cutoff: int) -> None:
        """Drop the buckets that fell out of the horizon (a new bucket changed the index)."""
        expired = bisect.bisect_left(index, cutoff)
        for old in index[:expired]:
            delete_bucket(work.store, old, _DEDUP)
            work.buckets.pop(old, None)
            work.dirty_buckets.discard(old)
        del index[:expired]
        work.index_dirty = True
