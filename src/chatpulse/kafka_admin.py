"""Kafka administration for ``init`` and tests: wait for a cluster, create and delete topics."""

import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from chatpulse.errors import AccessRefusedError, ChatpulseError, KafkaUnavailableError
from chatpulse.topics import TopicSpec

__all__ = [
    "admin_client",
    "create_topics",
    "delete_topics",
    "min_insync_replicas",
    "refusal_of",
    "topic_mismatches",
    "wait_for_kafka",
]

logger = logging.getLogger(__name__)


# librdkafka's errors that the same settings cannot get past, and the settings to look at.
_REFUSALS = {
    KafkaError._AUTHENTICATION: (
        "CHATPULSE_KAFKA_SASL_USERNAME / CHATPULSE_KAFKA_SASL_PASSWORD / "
        "CHATPULSE_KAFKA_SASL_MECHANISM"
    ),
    KafkaError._SSL: "CHATPULSE_KAFKA_SSL_CA_LOCATION, CHATPULSE_KAFKA_SECURITY_PROTOCOL",
}


class _DropRefusals(logging.Filter):
    """librdkafka logs a refused login or handshake at each try; wait_for_kafka reports it
    once, as the AccessRefusedError that stops the command."""

    _MARKS = ("SASL authentication", "SSL handshake", "SSL_HANDSHAKE", "AUTH_REQ", "certificate")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(mark in text for mark in self._MARKS)


_librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")
_librdkafka_log.addFilter(_DropRefusals())


class _AdminClient(AdminClient):  # type: ignore[misc]  # the stubs mark AdminClient final
    """An AdminClient that remembers the last refused login or TLS handshake."""

    refusal: KafkaError | None = None

    def on_error(self, error: KafkaError) -> None:
        if error.code() in _REFUSALS:
            self.refusal = error


def admin_client(bootstrap_servers: str, security: Mapping[str, str] | None = None) -> AdminClient:
    """An AdminClient whose librdkafka log goes through :mod:`logging` (not raw stderr).

    ``security``: librdkafka security properties (``Settings.kafka_security_config()``).
    """
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap_servers,
        "logger": _librdkafka_log,
        "log_level": 3,
    }
    holder: list[_AdminClient] = []
    config["error_cb"] = lambda error: holder[0].on_error(error) if holder else None
    admin = _AdminClient({**config, **(security or {})})
    holder.append(admin)
    return admin


def refusal_of(admin: AdminClient, bootstrap_servers: str) -> AccessRefusedError | None:
    """The error to stop on when Kafka refused our login or we refused its certificate."""
    admin.poll(0)  # serves error_cb
    error = getattr(admin, "refusal", None)
    if error is None:
        return None
    return AccessRefusedError(
        f"Kafka at {bootstrap_servers} refused the connection ({_REFUSALS[error.code()]}): "
        f"{error.str()}"
    )


def wait_for_kafka(admin: AdminClient, bootstrap_servers: str, timeout: float) -> None:
    """Block until the cluster lists its topics, at most ``timeout`` seconds; at once
    AccessRefusedError when it refuses our login or we refuse its certificate."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
        except KafkaException as exc:
            refused = refusal_of(admin, bootstrap_servers)
            if refused is not None:
                raise refused from None
            if time.monotonic() >= deadline:
                raise KafkaUnavailableError(
                    f"Kafka at {bootstrap_servers} did not answer within {timeout:.0f}s: {exc}"
                ) from None
            time.sleep(1.0)
        else:
            return


def create_topics(
    admin: AdminClient, specs: Iterable[TopicSpec], replication_factor: int, timeout: float = 30.0
) -> list[str]:
    """Create the missing topics; return the names created (existing ones are fine).

    Asks to create only the topics the cluster does not list: a client that may use the
    topics but not create them (on a cluster with ACLs) starts where they exist.
    """
    min_isr = {"min.insync.replicas": str(min_insync_replicas(replication_factor))}
    existing = admin.list_topics(timeout=timeout).topics
    new = [
        NewTopic(
            spec.name,
            spec.partitions,
            replication_factor,
            config={**(min_isr if replication_factor > 1 else {}), **spec.config},
        )
        for spec in specs
        if spec.name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                logger.debug("topic %s already exists", name)
                continue
            raise ChatpulseError(f"could not create Kafka topic {name}: {error}") from None
        created.append(name)
        logger.info("created topic %s", name)
    return created


def min_insync_replicas(replication_factor: int) -> int:
    """The min ISR of a topic with that many copies: 2 from 3 copies on, so an acks=all write
    is on two brokers and one broker may die without blocking producers; 1 below."""
    return 2 if replication_factor >= 3 else 1


def topic_mismatches(
    admin: AdminClient, specs: Iterable[TopicSpec], replication_factor: int, timeout: float = 30.0
) -> list[str]:
    """One line per existing topic whose partitions or replication differ from ``specs``.

    Only reports: a topic's partitions cannot shrink, adding some moves keys to other
    partitions, and changing replication is a reassignment; all for an operator to decide.
    """
    topics = admin.list_topics(timeout=timeout).topics
    found = []
    for spec in specs:
        topic = topics.get(spec.name)
        if topic is None or topic.error is not None or not topic.partitions:
            continue
        partitions = len(topic.partitions)
        if partitions != spec.partitions:
            wanted = (
                f"the settings say {spec.partitions} ({spec.setting})"
                if spec.setting
                else (f"chatpulse creates it with {spec.partitions}")
            )
            found.append(f"topic {spec.name} has {partitions} partitions, {wanted}")
        copies = max(len(partition.replicas) for partition in topic.partitions.values())
        if copies != replication_factor:
            found.append(
                f"topic {spec.name} has {copies} replicas per partition, the settings say "
                f"{replication_factor} (CHATPULSE_TOPIC_REPLICATION_FACTOR)"
            )
    return found


def delete_topics(admin: AdminClient, names: Iterable[str], timeout: float = 30.0) -> None:
    """Delete topics (missing ones are fine); used to keep test clusters small."""
    wanted = list(names)
    if not wanted:
        return
    for name, future in admin.delete_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise ChatpulseError(f"could not delete Kafka topic {name}: {error}") from None
