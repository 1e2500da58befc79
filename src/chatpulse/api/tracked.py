"""The ``tracked-channels`` topic: an in-memory follower (from the beginning) and the writer.

The topic is compacted with the channel as key; a ``{"channel", "tracked": true}`` value tracks
a channel and a tombstone untracks it, so replaying it from the start gives the current set.
"""

import asyncio
import logging
import threading
import uuid
from collections.abc import Mapping

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer

from chatpulse.api.partitions import assign_all
from chatpulse.errors import KafkaUnavailableError
from chatpulse.models import TrackedChannel, encode

__all__ = ["TrackedChannels"]

logger = logging.getLogger(__name__)


_decoder = msgspec.json.Decoder(TrackedChannel)


def _tracks(value: bytes | None) -> bool:
    """A record tracks its channel unless it is a tombstone or says ``"tracked": false``."""
    if value is None:
        return False
    try:
        return _decoder.decode(value).tracked
    except msgspec.MsgspecError:
        logger.warning("unreadable tracked-channels value %r; taken as tracked", value[:100])
        return True


class TrackedChannels:
    """Follows the tracked set in a thread; :meth:`set_tracked` writes a change and waits for it."""

    def __init__(
        self, *, bootstrap_servers: str, topic: str, security: Mapping[str, str] | None = None
    ) -> None:
        self._topic = topic
        self._consumer_config = {
            **(security or {}),
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"chatpulse-api-tracked-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "client.id": "chatpulse-api-tracked",
        }
        self._producer = Producer(
            {
                **(security or {}),
                "bootstrap.servers": bootstrap_servers,
                "client.id": "chatpulse-api",
                "enable.idempotence": True,
                "linger.ms": 0,
                "message.timeout.ms": 5000,
            }
        )
        self._channels: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    def is_tracked(self, channel: str) -> bool:
        return channel in self._channels

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracked-follower", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        await asyncio.to_thread(self._producer.flush, 5)

    def ping(self, timeout_s: float = 2.0) -> None:
        """Raise KafkaUnavailableError unless the cluster answers a metadata request (blocking)."""
        try:
            # No topic named: asking for one could make the broker auto-create it (uncompacted).
            self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"Kafka is unreachable: {exc}") from exc

    async def set_tracked(self, channel: str, *, tracked: bool) -> None:
        """Write the change and wait until Kafka has it; KafkaUnavailableError if it cannot."""
        value = encode(TrackedChannel(channel=channel)) if tracked else None
        await asyncio.to_thread(self._produce, channel, value)
        # The follower will read it back; apply it now so this instance answers consistently.
        if tracked:
            self._channels.add(channel)
        else:
            self._channels.discard(channel)

    def _produce(self, channel: str, value: bytes | None) -> None:
        errors: list[str] = []

        def delivered(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        try:
            self._producer.produce(
                self._topic, key=channel.encode(), value=value, on_delivery=delivered
            )
        except (KafkaException, BufferError) as exc:
            raise KafkaUnavailableError(f"cannot write to {self._topic}: {exc}") from exc
        if self._producer.flush(6) > 0:
            raise KafkaUnavailableError(
                f"Kafka did not acknowledge the change of {channel} in time"
            )
        if errors:
            raise KafkaUnavailableError(f"Kafka refused the change of {channel}: {errors[0]}")

    def _run(self) -> None:
        consumer = Consumer(self._consumer_config)
        assigned = False
        try:
            while not self._stop.is_set():
                if not assigned:
                    try:
                        assign_all(consumer, self._topic, OFFSET_BEGINNING)
                        assigned = True
                    except KafkaException as exc:
                        logger.warning("cannot follow %s yet: %s", self._topic, exc)
                        self._stop.wait(1.0)
                        continue
                for record in consumer.consume(num_messages=500, timeout=0.5):
                    if record.error() is not None or record.key() is None:
                        continue
                    channel = record.key().decode("utf-8", "replace")
                    if _tracks(record.value()):
                        self._channels.add(channel)
                    else:
                        self._channels.discard(channel)
        finally:
            consumer.close()
