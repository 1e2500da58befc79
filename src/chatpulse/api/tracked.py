"""The API's side of ``tracked-channels``: the shared follower in a thread, and the writer.

What a record means is :mod:`chatpulse.tracked`'s rule, the same as the ingest's; a bad record
is logged (rate-limited) here, and dead-lettered by the ingest.
"""

import asyncio
import logging
import threading
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException, Producer

from chatpulse.api.errors import (
    SchemaMissingError,
    StorageForbiddenError,
    StorageQueryError,
)
from chatpulse.api.log_limits import KindedLog
from chatpulse.errors import ChatpulseError, KafkaUnavailableError
from chatpulse.models import TrackedChannel, encode
from chatpulse.tracked import TrackedChannelsFollower

__all__ = ["TOPICS_MISSING", "TrackedChannels", "classify_kafka_error"]

logger = logging.getLogger(__name__)
_log = KindedLog(logger)

TOPICS_MISSING = "the Kafka topics"
# What an anonymous client reads; the broker's own message (addresses) goes to the log.
KAFKA_DOWN = "Kafka is unavailable; retry later."
_FORBIDDEN = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
}
_NO_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}


def classify_kafka_error(error: KafkaError) -> ChatpulseError:
    """The API's answer to a write Kafka refused (the broker's text goes to the log only)."""
    code = error.code()
    if code in _FORBIDDEN:
        return StorageForbiddenError(
            "Kafka refused the API this write: its principal lacks a permission an operator "
            "must grant (see the API's log)."
        )
    if code in _NO_TOPIC:
        return SchemaMissingError(TOPICS_MISSING)
    if error.retriable() or code in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT):
        return KafkaUnavailableError(KAFKA_DOWN)
    return StorageQueryError("Kafka")


class TrackedChannels:
    """Follows the tracked set in a thread; :meth:`set_tracked` writes a change and waits for it."""

    def __init__(
        self, *, bootstrap_servers: str, topic: str, security: Mapping[str, str] | None = None
    ) -> None:
        self._topic = topic
        self._follower = TrackedChannelsFollower(
            bootstrap_servers, topic, client_id="chatpulse-api-tracked", security=security
        )
        self._producer = Producer(
            {
                **(security or {}),
                "bootstrap.servers": bootstrap_servers,
                "client.id": "chatpulse-api",
                "enable.idempotence": True,
                "linger.ms": 0,
                "message.timeout.ms": 5000,
                # Topics are created by ``chatpulse init`` (compacted), never by a write.
                "allow.auto.create.topics": False,
            }
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._follower.channels)

    @property
    def topic_missing(self) -> bool:
        """The cluster says the topic does not exist (``chatpulse init`` has not run)."""
        return self._follower.topic_missing

    def is_tracked(self, channel: str) -> bool:
        return channel in self._follower.channels

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
            _log.warning("ping", "Kafka metadata request failed: %s", exc)
            raise KafkaUnavailableError(KAFKA_DOWN) from exc

    async def set_tracked(self, channel: str, *, tracked: bool) -> None:
        """Write the change and wait until Kafka has it; an ApiError saying why it could not."""
        if self.topic_missing:
            raise SchemaMissingError(TOPICS_MISSING)
        value = encode(TrackedChannel(channel=channel)) if tracked else None
        await asyncio.to_thread(self._produce, channel, value)
        # The follower will read it back; apply it now so this instance answers consistently.
        self._follower.note(channel, tracked=tracked)

    def _produce(self, channel: str, value: bytes | None) -> None:
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        try:
            self._producer.produce(
                self._topic, key=channel.encode(), value=value, on_delivery=delivered
            )
        except (KafkaException, BufferError) as exc:
            _log.warning("produce", "cannot write channel %s to %s: %s", channel, self._topic, exc)
            raise KafkaUnavailableError(KAFKA_DOWN) from exc
        if self._producer.flush(6) > 0:
            _log.warning(
                "produce", "Kafka did not acknowledge channel %s on %s in 6 s", channel, self._topic
            )
            raise KafkaUnavailableError(KAFKA_DOWN)
        if errors:
            answer = classify_kafka_error(errors[0])
            _log.warning(
                "refused",
                "Kafka refused channel %s on %s (%s): %s",
                channel,
                self._topic,
                type(answer).__name__,
                errors[0],
            )
            raise answer

    def _run(self) -> None:
        follower = self._follower
        try:
            while not self._stop.is_set():
                follower.poll(0.5)
                if not follower.assigned:  # not there yet: ask again in a while
                    self._stop.wait(5.0 if follower.topic_missing else 1.0)
        finally:
            follower.close()
