"""The per-channel counting step: de-duplication, tumbling windows and channel totals.

One function over one key-value store (the channel's slice of the Quix state store, the
record key being the channel) does all three, for these reasons:
- one state store and one changelog topic instead of one per window size, so a checkpoint
  produces one changelog batch and recovery replays one topic;
- a message yields both the open windows it changed (for the live view and Cassandra's
  current minute) and the windows it closed, which Quix's built-in windows give only by
  running ``current()`` and ``final()`` side by side;
- the per-message cost stays two state reads and writes: the channel's record (totals and
  open windows together) and the message's de-duplication bucket.

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
from chatpulse.processor.aggregate import AggregateTuple, WindowAggregate, to_window_stats

__all__ = ["ChannelCounter", "ChannelUpdate", "KeyValueStore", "dedup_bucket_ms"]

_pack_q = struct.Struct(">q").pack
_DECODED_CACHE_SIZE = 20_000
_CHANNEL = b"c"
_BUCKETS = b"b"
_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(
    tuple[int, int, int, list[tuple[int, int, AggregateTuple]]]
)


@dataclass(slots=True)
class _ChannelRecord:
    """One channel's state record: totals and its open windows."""

    total: int
    first_seen: int
    last_seen: int
    windows: dict[tuple[int, int], WindowAggregate]


class KeyValueStore(Protocol):
    """The slice of ``quixstreams.State`` used here (bytes in, bytes out)."""

    def get_bytes(self, key: bytes) -> bytes | None: ...

    def set_bytes(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


@dataclass(slots=True)
class ChannelUpdate:
    """What one counted message changed: the sinks and the output topic read this."""

    message: ChatMessage
    total_messages: int
    first_seen: int
    last_seen: int
    # (size_ms, window_start, aggregate after this message) of each window it entered
    windows: list[tuple[int, int, WindowAggregate]] = field(default_factory=list)
    # windows this message closed, final
    closed: list[WindowStats] = field(default_factory=list)
    # window sizes for which this message came too late
    late_sizes: list[int] = field(default_factory=list)


def dedup_bucket_ms(horizon_ms: int) -> int:
    """Bucket width: 1 s, or wider so that a horizon holds at most ~3,600 buckets."""
    return max(1_000, horizon_ms // 3_600)


def _id_token(message_id: str) -> bytes:
    raw = message_id.encode()
    if b"\n" in raw:  # the separator of a bucket's id list; never in Twitch's UUIDs
        raw = b"#" + hashlib.blake2b(raw, digest_size=16).hexdigest().encode()
    return raw


class ChannelCounter:
    """Counts one channel's messages into a :class:`KeyValueStore` (the channel's state)."""

    def __init__(self, window_sizes_ms: list[int], grace_ms: int, dedup_horizon_ms: int) -> None:
        self._sizes = sorted(set(window_sizes_ms))
        self._grace_ms = grace_ms
        self._horizon_ms = dedup_horizon_ms
        self._bucket_ms = dedup_bucket_ms(dedup_horizon_ms)
        # Decoded channel records by channel, with the exact bytes object each was last
        # stored as. The state returns that very object while the checkpoint's transaction
        # holds it, so an identity match proves the decoded copy is current and saves
        # decoding large chatter bitmaps per message; after a commit or a rewind the state
        # hands out new bytes and the record is decoded again.
        self._decoded: dict[str, tuple[bytes, _ChannelRecord]] = {}

    def process(self, message: ChatMessage, store: KeyValueStore) -> ChannelUpdate | None:
        """Count ``message``; None when it is a duplicate within the horizon."""
        sent_at = message.sent_at
        channel = message.channel
        record = self._load(channel, store)
        if record is None:
            record = _ChannelRecord(0, sent_at, sent_at, {})
        latest = max(record.last_seen, sent_at)

        if self._is_duplicate(message, store, latest):
            return None

        record.total += 1
        record.first_seen = min(record.first_seen, sent_at)
        advanced = latest > record.last_seen or record.total == 1
        record.last_seen = latest
        update = ChannelUpdate(
            message=message,
            total_messages=record.total,
            first_seen=record.first_seen,
            last_seen=latest,
        )
        grace = self._grace_ms
        windows = record.windows
        for size in self._sizes:
            start = sent_at - sent_at % size
            if start + size + grace <= latest:
                update.late_sizes.append(size)
                continue
            aggregate = windows.get((size, start))
            if aggregate is None:
                aggregate = windows[(size, start)] = WindowAggregate()
            aggregate.add(message)
            update.windows.append((size, start, aggregate))

        if advanced:
            for size, start in list(windows):
                if start + size + grace <= latest:
                    closed = windows.pop((size, start))
                    update.closed.append(to_window_stats(channel, size, start, closed, closed=True))
        self._store(channel, record, store)
        return update

    def _load(self, channel: str, store: KeyValueStore) -> "_ChannelRecord | None":
        data = store.get_bytes(_CHANNEL)
        if data is None:
            return None
        cached = self._decoded.get(channel)
        if cached is not None and cached[0] is data:
            return cached[1]
        total, first_seen, last_seen, windows = _record_decoder.decode(data)
        return _ChannelRecord(
            total,
            first_seen,
            last_seen,
            {(size, start): WindowAggregate.from_tuple(agg) for size, start, agg in windows},
        )

    def _store(self, channel: str, record: "_ChannelRecord", store: KeyValueStore) -> None:
        windows = [(size, start, agg.to_tuple()) for (size, start), agg in record.windows.items()]
        data = _record_encoder.encode((record.total, record.first_seen, record.last_seen, windows))
        store.set_bytes(_CHANNEL, data)
        if len(self._decoded) >= _DECODED_CACHE_SIZE:
            self._decoded.clear()  # a crude bound: entries are rebuilt from the state
        self._decoded[channel] = (data, record)

    def _is_duplicate(self, message: ChatMessage, store: KeyValueStore, latest: int) -> bool:
        bucket = message.sent_at // self._bucket_ms
        key = b"d" + _pack_q(bucket)
        token = _id_token(message.id)
        ids = store.get_bytes(key)
        if ids is None:
            store.set_bytes(key, b"\n" + token + b"\n")
            self._track_bucket(bucket, store, latest)
            return False
        if b"\n" + token + b"\n" in ids:
            return True
        store.set_bytes(key, ids + token + b"\n")
        return False

    def _track_bucket(self, bucket: int, store: KeyValueStore, latest: int) -> None:
        """Remember a new bucket and drop those that fell out of the horizon."""
        buckets = array("q")
        data = store.get_bytes(_BUCKETS)
        if data is not None:
            buckets.frombytes(data)
        bisect.insort(buckets, bucket)
        cutoff = (latest - self._horizon_ms) // self._bucket_ms
        expired = bisect.bisect_left(buckets, cutoff)
        for old in buckets[:expired]:
            store.delete(b"d" + _pack_q(old))
        del buckets[:expired]
        store.set_bytes(_BUCKETS, buckets.tobytes())
