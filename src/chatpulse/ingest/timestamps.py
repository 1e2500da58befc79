"""Which ``sent_at`` times the ingest sends to Kafka: a window around its own clock.

Ahead: at most ``CHATPULSE_MAX_FUTURE_SKEW`` (5 min). Kafka 4 refuses records stamped more
than ``message.timestamp.after.max.ms`` (1 h) ahead, and the processor would open windows
early. Behind: no older than the topic's ``retention.ms``; Kafka would delete such a record
at its next retention check, so it would be acknowledged and never read.

The retention comes from the topics' own configuration, read at start and again every
``_RETENTION_EVERY_S`` (10 min; :mod:`chatpulse.ingest.service`), not from a setting: what
matters is what Kafka applies, which an operator may change per topic (``kafka-configs``),
and a second copy in chatpulse's settings would drift.
Until it could be read (Kafka away at start) only the future bound applies; records older
than the retention that reach Kafka then are deleted by it, as before.
"""

import logging
import time

from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from chatpulse.windows import format_duration

__all__ = ["SentAtWindow", "read_retention_ms"]

logger = logging.getLogger(__name__)


def read_retention_ms(admin: AdminClient, topic: str, timeout_s: float) -> int | None:
    """The topic's ``retention.ms``; None when it keeps records forever (-1)."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(
        timeout=timeout_s
    )
    value = int(configs["retention.ms"].value)
    return None if value < 0 else value


class SentAtWindow:
    """The accepted ``sent_at`` range of each data topic, moved with the clock once per batch."""

    def __init__(self, max_future_skew_ms: int) -> None:
        self.max_future_skew_ms = max_future_skew_ms
        self.retention_ms: dict[str, int | None] = {}  # topic -> retention; absent: unknown
        self.now_ms = 0
        self.latest = 0  # the newest sent_at accepted now
        self._earliest: dict[str, int] = {}

    def set_retention(self, topic: str, retention_ms: int | None) -> None:
        self.retention_ms[topic] = retention_ms
        self.advance()

    def advance(self, now_ms: int | None = None) -> None:
        """Move the window to ``now_ms`` (the wall clock by default)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self.now_ms = now
        self.latest = now + self.max_future_skew_ms
        self._earliest = {
            topic: now - retention for topic, retention in self.retention_ms.items() if retention
        }

    def earliest(self, topic: str) -> int:
        """The oldest sent_at ``topic`` takes now (0 while its retention is unknown or infinite)."""
        return self._earliest.get(topic, 0)

    def reason(self, topic: str, sent_at: int) -> str:
        """Why ``sent_at`` is outside the window (call only when it is)."""
        if sent_at > self.latest:
            return (
                f"sent_at {sent_at} is {_span(sent_at - self.now_ms)} ahead of the ingest's clock "
                f"(more than CHATPULSE_MAX_FUTURE_SKEW, {_span(self.max_future_skew_ms)})"
            )
        retention = self.retention_ms.get(topic) or 0
        return (
            f"sent_at {sent_at} is {_span(self.now_ms - sent_at)} old, older than the retention "
            f"of {topic} ({_span(retention)}): Kafka would delete it at once"
        )


def _span(ms: int) -> str:
    """A duration as a short text: ``3h 5m``, or seconds when not whole."""
    if ms <= 0 or ms % 1000:
        return f"{ms / 1000:.1f}s"
    return format_duration(ms)
