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

Semantics (see the counting rules of the interface spec):
- A message counts once per (channel, id) within ``dedup_horizon_ms``. A redelivered message
  carries the same ``sent_at`` (it is the same PRIVMSG), so ids are kept in time buckets of
  ``sent_at`` and a message is looked up in its own bucket only; buckets older than the
  channel's latest ``sent_at`` minus the horizon are deleted.
- Windows close per channel (Quix's "key" closing strategy): the window ``[start, end)``
  is closed once the channel's latest ``sent_at`` reaches ``end + grace``. A message for a
  closed window is late: left out of that window, counted in the metrics and in the totals.
"""

import bisect
import hashlib
import struct
from array import array
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from chatpulse.models import ChatMessage, WindowStats
from chatpulse.processor.aggregate import (
    AggregateTuple,
    WindowAggregate,
    numeric_user_id,
    to_window_stats,
)
from chatpulse.processor.quix_hooks import STATE_TRANSACTION, transaction_is_open

__all__ = ["ChannelCounter", "ChannelUpdate", "KeyValueStore", "dedup_bucket_ms"]

_pack_q = struct.Struct(">q").pack
# Working copies kept between checkpoints (reused when the state still holds their bytes).
_WORKING_SET_LIMIT = 50_000
_CHANNEL = b"c"
_BUCKETS = b"b"
_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(
    tuple[int, int, int, list[tuple[int, int, AggregateTuple]]]
)


class KeyValueStore(Protocol):
    """The slice of ``quixstreams.State`` used here (bytes in, bytes out)."""

    def get_bytes(self, key: bytes) -> bytes | None: ...

    def set_bytes(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


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

    def encode(self) -> bytes:
        windows = [(size, start, agg.to_tuple()) for (size, start), agg in self.windows.items()]
        return _record_encoder.encode((self.total, self.first_seen, self.last_seen, windows))

    @classmethod
    def decode(cls, data: bytes) -> "_ChannelRecord":
        total, first_seen, last_seen, windows = _record_decoder.decode(data)
        aggregates = {
            (size, start): WindowAggregate.from_tuple(agg) for size, start, agg in windows
        }
        return cls(total, first_seen, last_seen, aggregates)


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


def _id_token(message_id: str) -> bytes:
    raw = message_id.encode()
    if b"\n" in raw:  # the separator of a bucket's id list; never in Twitch's UUIDs
        raw = b"#" + hashlib.blake2b(raw, digest_size=16).hexdigest().encode()
    return raw


def _bucket_key(bucket: int) -> bytes:
    return b"d" + _pack_q(bucket)


def _transaction_of(store: KeyValueStore) -> object:
    """The state transaction a Quix ``State`` is bound to (a plain store is its own)."""
    return getattr(store, STATE_TRANSACTION, store)


class ChannelCounter:
    """Counts channels' messages into their :class:`KeyValueStore` (each channel's state)."""

    def __init__(self, window_sizes_ms: list[int], grace_ms: int, dedup_horizon_ms: int) -> None:
        self._sizes = sorted(set(window_sizes_ms))
        self._grace_ms = grace_ms
        self._horizon_ms = dedup_horizon_ms
        self._bucket_ms = dedup_bucket_ms(dedup_horizon_ms)
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
        None when it is a duplicate within the horizon."""
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

        if self._is_duplicate(message, work, latest):
            return None

        work.dirty = True
        self._pending[key] = work
        total = record.total = record.total + 1
        if sent_at < record.first_seen:  # noqa: PLR1730 - a call to min() costs more, per message
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
            aggregate.add(message, number)
            opened.append((size, start, aggregate))

        if record.next_close and latest >= record.next_close:
            next_close = 0
            for size, start in list(windows):
                ends = start + size + grace
                if ends <= latest:
                    final = windows.pop((size, start))
                    closed.append(to_window_stats(channel, size, start, final, closed=True))
                elif ends < next_close or not next_close:
                    next_close = ends
            record.next_close = next_close
        return update

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
                record = _ChannelRecord.decode(data)
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
            data = work.record.encode()
            store.set_bytes(_CHANNEL, data)
            work.stored = data
            work.dirty = False
        for bucket in work.dirty_buckets:
            ids = work.buckets.get(bucket)
            if ids is not None:
                store.set_bytes(_bucket_key(bucket), b"\n" + b"\n".join(ids) + b"\n")
        if work.index_dirty and work.index is not None:
            store.set_bytes(_BUCKETS, work.index.tobytes())
        work.dirty_buckets.clear()
        work.buckets.clear()
        work.index = None
        work.index_dirty = False
        # Let go of the transaction: Quix keeps a committed transaction's writes in memory,
        # and a quiet channel's copy would hold on to one per checkpoint it was active in.
        work.store = _DETACHED
        work.transaction = None

    def _is_duplicate(self, message: ChatMessage, work: _Working, latest: int) -> bool:
        bucket = message.sent_at // self._bucket_ms
        ids = work.buckets.get(bucket)
        if ids is None:
            index = self._index(work)
            position = bisect.bisect_left(index, bucket)
            if position < len(index) and index[position] == bucket:
                data = work.store.get_bytes(_bucket_key(bucket)) or b""
                ids = set(data.split(b"\n"))
                ids.discard(b"")
            else:
                cutoff = self._cutoff(latest)
                if bucket < cutoff:
                    return False  # older than the horizon: nothing to compare with
                ids = set()
                index.insert(position, bucket)
                self._expire(work, index, cutoff)
            work.buckets[bucket] = ids
        token = message.id.encode()
        if b"\n" in token:
            token = _id_token(message.id)
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
            work.store.delete(_bucket_key(old))
            work.buckets.pop(old, None)
            work.dirty_buckets.discard(old)
        del index[:expired]
        work.index_dirty = True
