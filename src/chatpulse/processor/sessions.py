"""Chatter sessions: session windows per (channel, user), counted into the tumbling windows.

A session is a run of one user's messages in one channel with no silence of ``gap`` or more
(CHATPULSE_SESSION_GAP, 10 min) between them: Kafka Streams' session windows, keyed by
(channel, user). Its length is its last message's time minus its first's (0 for one
message); it *ends* at its last message + ``gap``, the moment it is known to be over. Each
tumbling window counts the sessions that started in it (``sessions_started``) and, of the
sessions that ended in it, how many (``sessions_ended``), their mean length and their p90
length (:class:`WindowSessions`).

Why not Quix's own session windows: they emit one result per session, and each result would
then have to be counted into the 1m/10m/1h windows of another stateful step (a repartition,
a second changelog, and windows closing on two different clocks). Here the sessions live in
the channel's slice of the same state store as its windows (:mod:`.channel`), are read and
written in the same state transaction, and are counted into windows that cannot have closed
yet, so they are exactly-once with everything else and need no second step.

Rules, per channel in the order its messages are read (``latest``: the channel's latest
``sent_at``; ``grace``: the windows' grace), applied to each counted message that is not late
for the smallest window (a late message is left out of sessions as it is of windows):
- a session is *over* once ``latest`` reaches its last message + ``gap`` + ``grace`` (no
  message within the grace can extend it any more);
- a message of a user with no session, or whose session is over, or more than ``gap`` after
  its session's last message, starts a new session (ending the old one at last + gap);
- a message within ``gap`` after the session's last message extends it; one before its first
  message but within ``gap`` of it (out of order, within the grace) moves its start (the
  start's windows are still open: the message is not late);
- a message more than ``gap`` before the session's first message (never, with a gap longer
  than the grace) is left out and counted in ``chatpulse_processor_session_skipped``.
An ended session is counted in the windows holding last + gap, all of them still open
(see :meth:`OpenSessions.due`), and creates them when the channel had no message there: a
window may count ended sessions and no message.

State (keys of the channel's slice, next to :mod:`.channel`'s):
- ``u<user token>``: the user's open session, (first, last), 16 bytes;
- ``g<bucket>``: the users whose session's last message falls in that second (the
  :mod:`.buckets` layout, split into parts past ``chunk_bytes``); ``G``: the sorted bucket
  numbers. A bucket is expired as a whole when ``latest`` reaches its end + gap + grace: its
  users whose session still ends in it are ended, the others moved on.
Bounded by the channel's chatters of the last gap + grace: one ``u`` record each and one
token per bucket they spoke in (~20 bytes). A window's lengths are kept in a histogram of
bounded size (:func:`length_bucket`).
"""

import bisect
import math
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chatpulse.processor.buckets import (
    KeyValueStore,
    delete_bucket,
    read_bucket,
    write_bucket,
)
from chatpulse.processor.metrics import Tally

__all__ = [
    "BUCKET_MS",
    "DEFAULT_GAP_MS",
    "OpenSessions",
    "SessionRules",
    "SessionsTuple",
    "WindowSessions",
    "length_bucket",
    "nearest_rank",
]

DEFAULT_GAP_MS = 10 * 60_000
# Width of an expiry bucket: it divides every window size and the gap (whole seconds), so a
# bucket is expired no later than the close of the windows its sessions end in.
BUCKET_MS = 1_000
_USER = b"u"
_EXPIRY = b"g"
_EXPIRY_INDEX = b"G"
_session = struct.Struct(">qq")
_EXACT_SECONDS = 256  # lengths below this are kept to the second
_SUB_BUCKETS_BITS = 5  # above, 32 buckets per doubling: under 1/32 (~3%) relative width

# (sessions started, sessions ended, total length in ms of the ended ones, their length
# histogram as (bucket in s, sessions), ascending): stored in the channel record
SessionsTuple = tuple[int, int, int, list[tuple[int, int]]]


def length_bucket(seconds: int) -> int:
    """The histogram bucket of a length in whole seconds, named by its lowest length: the
    length itself below 256 s, else the length with all but its 6 highest bits cleared (a
    bucket is under 1/32 of its lengths wide). At most 256 + 32 per doubling past 256 s
    buckets exist: ~1,000 for lengths up to a year."""
    if seconds < _EXACT_SECONDS:
        return seconds
    shift = seconds.bit_length() - 1 - _SUB_BUCKETS_BITS
    return (seconds >> shift) << shift


def nearest_rank(histogram: dict[int, int], share: float) -> int | None:
    """The nearest-rank ``share`` quantile (0.9: p90) of a histogram's values, None when
    empty: the smallest value with at least ceil(share x n) values at or below it."""
    count = sum(histogram.values())
    if not count:
        return None
    rank = max(1, math.ceil(share * count))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    raise AssertionError("unreachable: the ranks add up to the count")


@dataclass(slots=True)
class WindowSessions:
    """One window's session counts."""

    started: int = 0
    ended: int = 0
    total_ms: int = 0
    # length bucket (s, see length_bucket) -> ended sessions
    lengths: dict[int, int] = field(default_factory=dict)

    def end(self, length_ms: int) -> None:
        self.ended += 1
        self.total_ms += length_ms
        bucket = length_bucket(length_ms // 1000)
        self.lengths[bucket] = self.lengths.get(bucket, 0) + 1

    @property
    def mean_s(self) -> float | None:
        """The ended sessions' mean length (s, to the ms), None when none ended."""
        return round(self.total_ms / self.ended / 1000, 3) if self.ended else None

    @property
    def p90_s(self) -> int | None:
        """The ended sessions' p90 length: whole seconds below 256 s, above that the lowest
        length of its histogram bucket (under 3% below the exact p90); None when none
        ended."""
        return nearest_rank(self.lengths, 0.9)

    def to_tuple(self) -> SessionsTuple:
        return (self.started, self.ended, self.total_ms, sorted(self.lengths.items()))

    @classmethod
    def from_tuple(cls, value: SessionsTuple) -> "WindowSessions":
        started, ended, total_ms, lengths = value
        return cls(started, ended, total_ms, dict(lengths))


class OpenSessions:
    """A channel's open sessions, as worked on during one state transaction: read from the
    state when first needed, written back by :meth:`write` at the checkpoint."""

    __slots__ = (
        "_buckets",
        "_dirty_buckets",
        "_dirty_users",
        "_index",
        "_index_changed",
        "_store",
        "_users",
    )

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        # user token -> (first, last), None when the state has none (read once)
        self._users: dict[bytes, tuple[int, int] | None] = {}
        self._dirty_users: set[bytes] = set()
        self._buckets: dict[int, set[bytes]] = {}
        self._dirty_buckets: set[int] = set()
        self._index: array[int] | None = None
        self._index_changed = False

    def get(self, token: bytes) -> tuple[int, int] | None:
        """The user's open session (first, last), or None."""
        try:
            return self._users[token]
        except KeyError:
            data = self._store.get_bytes(_USER + token)
            found = None if data is None else _session.unpack(data)
            self._users[token] = found
            return found

    def put(self, token: bytes, first: int, last: int, before: tuple[int, int] | None) -> None:
        """Set the user's session (``before``: what :meth:`get` gave); listed in the bucket
        of its last message when that changed."""
        self._users[token] = (first, last)
        self._dirty_users.add(token)
        bucket = last // BUCKET_MS
        if before is not None and before[1] // BUCKET_MS == bucket:
            return
        tokens = self._buckets.get(bucket)
        if tokens is None:
            index = self._bucket_index()
            position = bisect.bisect_left(index, bucket)
            if position < len(index) and index[position] == bucket:
                tokens = read_bucket(self._store, bucket, _EXPIRY)
            else:
                tokens = set()
                index.insert(position, bucket)
                self._index_changed = True
            self._buckets[bucket] = tokens
        tokens.add(token)
        self._dirty_buckets.add(bucket)

    def drop(self, token: bytes) -> None:
        """The user's session ended: no open session any more."""
        self._users[token] = None
        self._dirty_users.add(token)

    def due(self, gap_ms: int, grace_ms: int) -> int | None:
        """The channel time at which the oldest bucket is expired, None without sessions.

        A session ending at e = last + gap lies in a window ``[s, s + size)`` with e < s +
        size; its bucket's end is at most s + size - gap (whole seconds), so the bucket is
        expired by s + size + grace, the time that window closes: expiring before closing
        (the processor's order) counts every session into a window still open."""
        index = self._bucket_index()
        return (index[0] + 1) * BUCKET_MS + gap_ms + grace_ms if index else None

    def expire(self, latest: int, gap_ms: int, grace_ms: int) -> Iterator[tuple[int, int]]:
        """End the sessions of every bucket expired at channel time ``latest``: yields each
        one's (first, last)."""
        index = self._bucket_index()
        while index and (index[0] + 1) * BUCKET_MS + gap_ms + grace_ms <= latest:
            bucket = index.pop(0)
            tokens = self._buckets.pop(bucket, None)
            if tokens is None:
                tokens = read_bucket(self._store, bucket, _EXPIRY)
            for token in tokens:  # (any order: the counts it adds to commute)
                found = self.get(token)
                if found is not None and found[1] // BUCKET_MS == bucket:
                    self.drop(token)
                    yield found
            delete_bucket(self._store, bucket, _EXPIRY)
            self._dirty_buckets.discard(bucket)
            self._index_changed = True

    def write(self, chunk_bytes: int) -> None:
        """Write the changed sessions, buckets and index into the state."""
        store = self._store
        for token in self._dirty_users:
            found = self._users[token]
            if found is None:
                store.delete(_USER + token)
            else:
                store.set_bytes(_USER + token, _session.pack(*found))
        for bucket in self._dirty_buckets:
            write_bucket(store, bucket, self._buckets[bucket], _EXPIRY, chunk_bytes)
        if self._index is not None and self._index_changed:
            store.set_bytes(_EXPIRY_INDEX, self._index.tobytes())

    def _bucket_index(self) -> "array[int]":
        if self._index is None:
            self._index = array("q")
            data = self._store.get_bytes(_EXPIRY_INDEX)
            if data is not None:
                self._index.frombytes(data)
        return self._index


class SessionRules:
    """The rules of the module docstring, over a channel's :class:`OpenSessions` and a way to
    reach the :class:`WindowSessions` of the windows holding a time (made when missing)."""

    __slots__ = ("gap_ms", "grace_ms", "skipped")

    def __init__(self, gap_ms: int, grace_ms: int) -> None:
        if gap_ms < BUCKET_MS or gap_ms % BUCKET_MS:
            raise ValueError("the session gap must be a whole number of seconds, at least 1 s")
        self.gap_ms = gap_ms
        self.grace_ms = grace_ms
        # messages left out of sessions (more than the gap before their user's session)
        self.skipped = Tally()

    def expire(
        self, sessions: OpenSessions, latest: int, windows_at: Callable[[int], list[WindowSessions]]
    ) -> None:
        """End every session over at ``latest`` whose bucket is expired; call it before the
        channel's windows are closed at ``latest``."""
        gap = self.gap_ms
        for first, last in sessions.expire(latest, gap, self.grace_ms):
            for window in windows_at(last + gap):
                window.end(last - first)

    def message(
        self,
        sessions: OpenSessions,
        token: bytes,
        sent_at: int,
        latest: int,
        windows_at: Callable[[int], list[WindowSessions]],
    ) -> None:
        """Count a message (not late) of the user ``token`` at ``sent_at``."""
        gap = self.gap_ms
        found = sessions.get(token)
        if found is not None:
            first, last = found
            if latest >= last + gap + self.grace_ms or sent_at > last + gap:
                for window in windows_at(last + gap):  # over: it ends, a new one starts
                    window.end(last - first)
                sessions.drop(token)
            elif sent_at < first - gap:
                self.skipped.value += 1
                return
            else:
                if sent_at < first:
                    for window in windows_at(first):
                        window.started -= 1
                    for window in windows_at(sent_at):
                        window.started += 1
                sessions.put(token, min(first, sent_at), max(last, sent_at), found)
                return
        for window in windows_at(sent_at):
            window.started += 1
        sessions.put(token, sent_at, sent_at, found)
