"""Follow the compacted ``tracked-channels`` topic: which channels the ingest should be in.

Read from the beginning at start (the compacted topic is the current set), then followed:
a record ``{"channel": ..., "tracked": true}`` adds a channel, a tombstone (or
``"tracked": false``) removes it. Partitions are assigned by hand (no consumer group): every
ingest instance needs the whole set, and there are no offsets worth committing.
"""

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from chatpulse.logs import RateLimitedLog
from chatpulse.models import TrackedChannel, normalize_channel

__all__ = ["BadTrackedRecord", "TrackedChannels"]

logger = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(TrackedChannel)


@dataclass(frozen=True, slots=True)
class BadTrackedRecord:
    """A record of the topic that is not a valid channel entry (for the dead-letter topic)."""

    raw: bytes
    reason: str
    partition: int
    offset: int


class TrackedChannels:
    """The set of tracked channels, kept up to date by :meth:`poll`."""

    def __init__(
        self, bootstrap_servers: str, topic: str, security: Mapping[str, str] | None = None
    ) -> None:
        self.topic = topic
        self.channels: set[str] = set()
        self.bad: list[BadTrackedRecord] = []
        self._bad_log = RateLimitedLog(logger, 10.0)  # a topic full of bad records: few lines
        self._consumer = Consumer(
            {
                **(security or {}),
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"chatpulse-ingest-tracked-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "logger": logger,
            }
        )
        self._assigned = False
        self._partitions: set[int] = set()
        self._at_end: set[int] = set()

    def _assign(self, timeout_s: float) -> bool:
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            logger.warning("cannot read topic %s yet: %s", self.topic, exc)
            return False
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            logger.warning("topic %s not available yet", self.topic)
            return False
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in topic.partitions]
        )
        self._partitions = set(topic.partitions)
        self._assigned = True
        return True

    def load(self, timeout_s: float = 10.0) -> set[str]:
        """Read the topic to its end (at most ``timeout_s``); return the tracked channels."""
        deadline = time.monotonic() + timeout_s
        while not self._assigned and time.monotonic() < deadline:
            if not self._assign(min(5.0, max(0.1, deadline - time.monotonic()))):
                time.sleep(0.5)
        while self._assigned and self._at_end != self._partitions:
            if time.monotonic() >= deadline:
                logger.warning("topic %s not read to its end within %.0fs", self.topic, timeout_s)
                break
            self._consume(0.2)
        logger.info("tracked channels from %s: %d", self.topic, len(self.channels))
        return set(self.channels)

    def poll(self) -> tuple[set[str], set[str]]:
        """Apply new records; return the channels (added, removed) since the last call."""
        if not self._assigned and not self._assign(1.0):
            return set(), set()
        before = set(self.channels)
        self._consume(0.0)
        return self.channels - before, before - self.channels

    def _consume(self, timeout_s: float) -> None:
        for msg in self._consumer.consume(num_messages=1000, timeout=timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition())
                else:
                    logger.warning("reading %s: %s", self.topic, error.str())
                continue
            self._apply(msg.key(), msg.value(), msg.partition(), msg.offset())

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        try:
            if value is None:
                self.channels.discard(normalize_channel((key or b"").decode()))
                return
            entry = _decoder.decode(value)
            channel = normalize_channel(entry.channel)
        except (ValueError, UnicodeDecodeError, msgspec.DecodeError) as exc:
            self._bad_log.warning(
                "bad record in %s (partition %d, offset %d): %s", self.topic, partition, offset, exc
            )
            self.bad.append(BadTrackedRecord(value or key or b"", str(exc), partition, offset))
            return
        if entry.tracked:
            self.channels.add(channel)
        else:
            self.channels.discard(channel)

    def close(self) -> None:
        """Leave the cluster."""
        self._consumer.close()
