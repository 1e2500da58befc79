"""When the ingest replaces its Kafka producer after a fatal error, and when it stops instead.

librdkafka makes some transactional errors fatal that say nothing about this producer's right
to go on: the two-broker outage test on the 3 + 3 cluster saw ``INVALID_TXN_STATE`` answer the
abort of the outage's transaction once the brokers were back, and the ingest stopped with
records held (spilled, so nothing was lost, but chat was no longer read). A new producer with
the same ``transactional.id`` fences the failed one and aborts its open transaction
(``init_transactions``); the failed producer's records go back to the spill in their place in
the stream and are sent again, exactly once for ``read_committed`` readers. (A commit whose
outcome was unknown when the producer failed may have landed: its records can then reach
Kafka twice, the case consumers already de-duplicate by (channel, id), as after any restart.)

Not replaced, because a new producer would fail the same way: fencing by another ingest with
the same transactional id, and refused permissions. Bounded: at most ``limit`` replacements in
any ``period_s`` (``CHATPULSE_INGEST_PRODUCER_REPLACEMENTS`` per 10 minutes); past it the
ingest stops with its one line, as before.
"""

import time
from collections import deque
from collections.abc import Callable

from confluent_kafka import KafkaError

__all__ = ["NOT_REPLACEABLE", "Replacements"]

NOT_REPLACEABLE = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError._FENCED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }
)


class Replacements:
    """Decides, per fatal error, whether the producer is replaced (and counts it) or not."""

    def __init__(
        self, limit: int, *, period_s: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.period_s = period_s
        self._clock = clock
        self._at: deque[float] = deque()

    def allow(self, error: KafkaError) -> bool:
        """True (and counted) when a producer that failed with ``error`` is to be replaced."""
        if error.code() in NOT_REPLACEABLE:
            return False
        now = self._clock()
        while self._at and self._at[0] <= now - self.period_s:
            self._at.popleft()
        if len(self._at) >= self.limit:
            return False
        self._at.append(now)
        return True

    @property
    def recent(self) -> int:
        """Replacements counted in the current period (as of the last :meth:`allow`)."""
        return len(self._at)
