"""Provisioning: the contract's Kafka topics and the Cassandra schema, created idempotently.

The one place that creates them (the API creates nothing): :func:`ensure_topics` (the ingest at
start), :func:`initialize` (topics and schema: ``chatpulse up``, the processor at start, test
fixtures, benchmarks) and ``init_command``, which is ``chatpulse init``.
"""

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import typer
from cassandra import AuthenticationFailed
from cassandra.cluster import NoHostAvailable

from chatpulse.errors import AccessRefusedError, CassandraUnavailableError, TopicLayoutError
from chatpulse.kafka_admin import admin_client, create_topics, topic_mismatches, wait_for_kafka
from chatpulse.logs import configure_logging
from chatpulse.options import (
    BootstrapServersOption,
    CassandraContactPointsOption,
    CassandraPortOption,
    KeyspaceOption,
    TopicPrefixOption,
)
from chatpulse.settings import Settings, load_settings
from chatpulse.storage import connect, ensure_schema
from chatpulse.topics import Topics

__all__ = [
    "InitResult",
    "check_copartitioned",
    "check_topics",
    "ensure_topics",
    "init_command",
    "initialize",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InitResult:
    """What one ``initialize`` call did (``created_topics`` empty when all existed)."""

    topics: list[str]
    created_topics: list[str]
    keyspace: str
    # Existing topics whose partitions or replication differ from the settings (left as
    # they are): one line each.
    warnings: list[str] = field(default_factory=list)


def ensure_topics(settings: Settings, *, wait_s: float, timeout: float = 30.0) -> list[str]:
    """Create the contract's missing topics; return the names created.

    Waits up to ``wait_s`` seconds for Kafka to answer (KafkaUnavailableError after that);
    ``timeout`` bounds the creation itself.
    """
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    wait_for_kafka(admin, settings.kafka_bootstrap_servers, wait_s)
    specs = Topics.from_settings(settings).specs(settings)
    return create_topics(admin, specs, settings.topic_replication_factor, timeout=timeout)


def check_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """The existing contract topics whose partitions or replication differ from the settings."""
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    specs = Topics.from_settings(settings).specs(settings)
    return topic_mismatches(admin, specs, settings.topic_replication_factor, timeout=timeout)


def check_copartitioned(settings: Settings, timeout: float = 30.0) -> None:
    """Raise :class:`TopicLayoutError` unless twitch-chat-messages and twitch-chat-events have
    the same number of partitions.

    The processor joins moderation events with messages by channel: both topics are keyed by
    channel and written by one producer (one partitioner), so with equal partition counts a
    channel's events are in the partition of the same number as its messages, which one
    instance reads together with one state. With other counts they would meet another
    partition's state: the join would miss and the counts land in the wrong place.
    """
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    names = Topics.from_settings(settings)
    found = admin.list_topics(timeout=timeout).topics
    counts = {
        name: len(found[name].partitions)
        for name in (names.messages, names.events)
        if name in found and found[name].partitions
    }
    if len(counts) == 2 and counts[names.messages] != counts[names.events]:
        raise TopicLayoutError(
            f"topic {names.events} has {counts[names.events]} partitions and {names.messages} "
            f"{counts[names.messages]}: the processor joins them by channel, so they must have "
            f"the same number (co-partitioned); delete {names.events} and run `chatpulse init` "
            f"to create it with {counts[names.messages]} (its events are lost), or raise its "
            "partitions with kafka-topics.sh --alter --partitions while it is empty"
        )


def cassandra_refusal(settings: Settings, exc: NoHostAvailable) -> AccessRefusedError | None:
    """The error to stop on when every node refused our login or its certificate."""
    errors = list(exc.errors.values())
    hosts = f"{','.join(settings.cassandra_contact_points)}:{settings.cassandra_port}"
    if errors and all(isinstance(error, AuthenticationFailed) for error in errors):
        return AccessRefusedError(
            f"Cassandra at {hosts} refused the login (CHATPULSE_CASSANDRA_USERNAME / "
            f"CHATPULSE_CASSANDRA_PASSWORD): {errors[0]}"
        )
    # The driver reports a failed handshake as an SSLError, or as an OSError quoting it.
    if errors and all(
        isinstance(error, ssl.SSLError) or (isinstance(error, OSError) and "[SSL" in str(error))
        for error in errors
    ):
        return AccessRefusedError(
            f"TLS to Cassandra at {hosts} failed (CHATPULSE_CASSANDRA_SSL_CA_FILE): {errors[0]}"
        )
    return None


def _ensure_cassandra_schema(settings: Settings, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster, session = connect(settings, connect_timeout=5.0)
        except NoHostAvailable as exc:
            refused = cassandra_refusal(settings, exc)
            if refused is not None:
                raise refused from None
            if time.monotonic() >= deadline:
                hosts = ",".join(settings.cassandra_contact_points)
                raise CassandraUnavailableError(
                    f"Cassandra at {hosts}:{settings.cassandra_port} did not accept a session "
                    f"within {timeout:.0f}s: {exc}"
                ) from None
            time.sleep(1.0)
            continue
        try:
            ensure_schema(session, settings)
        finally:
            cluster.shutdown()
        return


def initialize(
    settings: Settings, *, timeout: float = 60.0, progress: Callable[[str], None] | None = None
) -> InitResult:
    """Create the topics and the Cassandra keyspace and tables if missing.

    Waits up to ``timeout`` seconds for each cluster to answer; safe to call any number of times.
    """
    say = progress or logger.info
    names = [spec.name for spec in Topics.from_settings(settings).specs(settings)]
    say(f"waiting for Kafka at {settings.kafka_bootstrap_servers}")
    created = ensure_topics(settings, wait_s=timeout)
    say(f"topics ready: {', '.join(names)} ({len(created)} created)")
    warnings = check_topics(settings)
    for warning in warnings:
        logger.warning("%s", warning)
        say(f"warning: {warning}; init changes no existing topic")
    check_copartitioned(settings)
    hosts = ",".join(settings.cassandra_contact_points)
    say(f"waiting for Cassandra at {hosts}:{settings.cassandra_port}")
    _ensure_cassandra_schema(settings, timeout)
    say(f"Cassandra keyspace {settings.cassandra_keyspace} and tables ready")
    return InitResult(
        topics=names,
        created_topics=created,
        keyspace=settings.cassandra_keyspace,
        warnings=warnings,
    )


def init_command(
    *,
    bootstrap_servers: BootstrapServersOption = None,
    cassandra_contact_points: CassandraContactPointsOption = None,
    cassandra_port: CassandraPortOption = None,
    keyspace: KeyspaceOption = None,
    topic_prefix: TopicPrefixOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each cluster to answer")
    ] = 60.0,
) -> None:
    """Create the Kafka topics and the Cassandra keyspace and tables (idempotent)."""
    configure_logging("WARNING")
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap_servers,
        cassandra_contact_points=cassandra_contact_points,
        cassandra_port=cassandra_port,
        cassandra_keyspace=keyspace,
        topic_prefix=topic_prefix,
    )
    initialize(settings, timeout=timeout, progress=typer.echo)
    typer.echo("init: done")
