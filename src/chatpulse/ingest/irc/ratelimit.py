"""Pacing for the Twitch client: sliding-window limiters, reconnect backoff, JOIN retries."""

import asyncio
import random
import time
from collections import deque
from collections.abc import Mapping, Set

__all__ = ["SlidingWindowLimiter", "backoff_delay", "unanswered_joins"]


class SlidingWindowLimiter:
    """At most ``rate`` acquisitions in any ``window_s`` seconds (Twitch counts JOINs so).

    A sliding log rather than a token bucket: a bucket refilling continuously would let a
    burst of ``rate`` plus the refill through inside one window, which Twitch counts as
    over the limit.
    """

    def __init__(self, rate: int, window_s: float) -> None:
        if rate < 1 or window_s <= 0:
            raise ValueError("rate must be >= 1 and window_s > 0")
        self.rate = rate
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()

    def _expire(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()

    async def acquire(self) -> None:
        """Wait until one more attempt fits in the window, then record it (FIFO order)."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._expire(now)
                if len(self._times) < self.rate:
                    self._times.append(now)
                    return
                await asyncio.sleep(self._times[0] + self.window_s - now)


def backoff_delay(
    attempt: int, base_s: float = 1.0, max_s: float = 60.0, jitter: float = 0.25
) -> float:
    """Delay before reconnect ``attempt`` (1-based): 0, then base, 2*base, 4*base ... + jitter.

    The first retry is immediate (a dropped connection is usually fine on the next try); the
    jitter spreads the reconnects of many shards after an outage.
    """
    if attempt <= 1:
        return 0.0
    delay = min(max_s, base_s * 2.0 ** (attempt - 2))
    return float(delay * (1.0 + random.uniform(0.0, jitter)))


def unanswered_joins(
    sent: Mapping[str, float],
    answered: Set[str],
    wanted: Set[str],
    now: float,
    timeout_s: float,
) -> list[str]:
    """Channels to JOIN again: still wanted, JOIN sent ``timeout_s`` ago or more, no answer.

    ``answered`` holds the channels Twitch answered (its JOIN echo or a refusal NOTICE; a
    refusal such as ``msg_channel_suspended`` is for good and is not retried). No answer at
    all is the transient case: Twitch drops JOINs over its rate limit without a word.
    """
    return sorted(
        channel
        for channel, at in sent.items()
        if now - at >= timeout_s and channel not in answered and channel in wanted
    )
