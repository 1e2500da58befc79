"""Top chatters of a window: a bounded, deterministic heavy-hitters summary (Space-Saving).

A window of a big channel sees hundreds of thousands of chatters an hour; counting each one
exactly would make the window's state grow with its audience. :class:`TopChatters` keeps at
most ``capacity`` counters (Metwally, Agrawal, El Abbadi: "Efficient computation of frequent
and top-k elements in data streams", 2005):

- a chatter with a counter gets +1;
- a new chatter while fewer than ``capacity`` are counted gets a counter of 1;
- a new chatter when all counters are taken replaces the counted chatter with the smallest
  (count, user id), and takes over its count + 1, remembering that count as its ``error``.

Guarantees, with N the window's messages: while the distinct chatters of the window fit
``capacity`` no replacement happens and every count is exact. Past it, a reported count is
at most its ``error`` (and at most N / capacity) above the true count and never below it,
and every chatter with more than N / capacity messages is counted. So the top 10 are exact
whenever the 10th has clearly more than N / capacity messages, which is what "top chatters"
means in a chat with a long tail of one-message chatters.

Deterministic: which counter is replaced depends only on the counts and user ids (the
smallest (count, user id)), never on the order of a heap or a dict, so a window restored
from the state and fed the same messages again (exactly-once replay after a crash) ends
with the same summary as one that never stopped.
"""

import heapq
from dataclasses import dataclass, field

from chatpulse.models import TopChatter

__all__ = [
    "DEFAULT_CAPACITY",
    "MAX_KEY_CHARS",
    "TOP_CHATTERS",
    "TopChatters",
    "TopChattersTuple",
]

TOP_CHATTERS = 10
# counters per window by default (CHATPULSE_TOP_CHATTERS_CAPACITY)
DEFAULT_CAPACITY = 1_000
# user ids and logins are kept to this many characters (Twitch's: at most 10 and 25), so a
# window's summary stays under capacity x ~90 bytes in the state
MAX_KEY_CHARS = 32

# (user ids, logins, counts, errors), index-aligned: the stored form
TopChattersTuple = tuple[list[str], list[str], list[int], list[int]]


@dataclass(slots=True)
class TopChatters:
    """The Space-Saving summary of one window's chatters, keyed by user id."""

    counts: dict[str, int] = field(default_factory=dict)
    logins: dict[str, str] = field(default_factory=dict)
    # over-count of chatters that replaced another (absent: 0, counted exactly)
    errors: dict[str, int] = field(default_factory=dict)
    # (count when pushed, user id), one entry per counted chatter; a count only grows, so an
    # entry is at most its chatter's count (refreshed when it reaches the top). Built at the
    # first replacement: windows within capacity never pay for it.
    _heap: list[tuple[int, str]] | None = None
    # changed since the state was last written
    dirty: bool = False
    # the number of state records it was last written in (see chatpulse.processor.channel)
    parts: int = 0

    def add(self, user_id: str, login: str, capacity: int) -> None:
        """Count one message of ``user_id`` (shown as ``login``)."""
        self.dirty = True
        counts = self.counts
        if len(user_id) > MAX_KEY_CHARS:
            user_id = user_id[:MAX_KEY_CHARS]
        count = counts.get(user_id)
        if count is not None:
            counts[user_id] = count + 1
            if self.logins[user_id] != login:
                self.logins[user_id] = login[:MAX_KEY_CHARS]
            return
        if len(counts) < capacity:
            counts[user_id] = 1
            self.logins[user_id] = login[:MAX_KEY_CHARS]
            if self._heap is not None:
                heapq.heappush(self._heap, (1, user_id))
            return
        self._replace(user_id, login[:MAX_KEY_CHARS], capacity)

    def _replace(self, user_id: str, login: str, capacity: int) -> None:
        counts = self.counts
        heap = self._heap
        if heap is None:
            heap = self._heap = [(count, key) for key, count in counts.items()]
            heapq.heapify(heap)
        # Shrinking the capacity (a changed setting) drops the smallest counters first.
        while len(counts) >= capacity:
            while True:
                pushed, smallest = heap[0]
                now = counts[smallest]
                if now == pushed:
                    break
                heapq.heapreplace(heap, (now, smallest))
            if len(counts) > capacity:
                heapq.heappop(heap)
                self._forget(smallest)
                continue
            heapq.heapreplace(heap, (pushed + 1, user_id))
            self._forget(smallest)
            counts[user_id] = pushed + 1
            self.logins[user_id] = login
            self.errors[user_id] = pushed
            return

    def _forget(self, user_id: str) -> None:
        del self.counts[user_id]
        del self.logins[user_id]
        self.errors.pop(user_id, None)

    def top(self, limit: int = TOP_CHATTERS) -> list[TopChatter]:
        """The ``limit`` chatters with the most messages, ties by login then user id."""
        logins = self.logins
        ranked = heapq.nsmallest(
            limit, self.counts.items(), key=lambda item: (-item[1], logins[item[0]], item[0])
        )
        return [TopChatter(login=logins[key], count=count) for key, count in ranked]

    @property
    def exact(self) -> bool:
        """Whether every count is exact (no chatter was ever replaced)."""
        return not self.errors

    def to_tuple(self) -> TopChattersTuple:
        keys = list(self.counts)
        logins = self.logins
        errors = self.errors
        return (
            keys,
            [logins[key] for key in keys],
            list(self.counts.values()),
            [errors.get(key, 0) for key in keys],
        )

    @classmethod
    def from_tuple(cls, value: TopChattersTuple) -> "TopChatters":
        keys, logins, counts, errors = value
        return cls(
            dict(zip(keys, counts, strict=True)),
            dict(zip(keys, logins, strict=True)),
            {key: error for key, error in zip(keys, errors, strict=True) if error},
        )
