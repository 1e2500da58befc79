"""One ``inspect`` pass: gather every view into a :class:`Snapshot` (no rendering here).

A part that cannot be read (Cassandra down, a broker timing out) becomes a line in
``Snapshot.errors`` and the other parts are still shown.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from cassandra import DriverException
from cassandra.cluster import NoHostAvailable
from confluent_kafka import KafkaException

from chatpulse.errors import ChatpulseError
from chatpulse.inspect.cassandra_view import collect_nodes, collect_tables
from chatpulse.inspect.errors import TransactionLogError
from chatpulse.inspect.kafka_view import (
    changelog_topics,
    collect_brokers,
    collect_groups,
    collect_topics,
    topic_offsets,
)
from chatpulse.inspect.local_state import collect_stores
from chatpulse.inspect.model import Snapshot
from chatpulse.inspect.transactions import collect_transactions
from chatpulse.kafka_admin import admin_client
from chatpulse.settings import Settings
from chatpulse.storage import connect
from chatpulse.topics import Topics

__all__ = ["collect_snapshot", "selects"]

logger = logging.getLogger(__name__)

_EXPECTED = (KafkaException, DriverException, NoHostAvailable, OSError, ChatpulseError)


def selects(settings: Settings, name: str, *, everything: bool = False) -> bool:
    """Whether a topic or group belongs to this chatpulse (its prefix, or its processor group).

    Internal topics (``__consumer_offsets``, ``__transaction_state``) are never listed as
    topics; with no prefix configured every other topic and group is chatpulse's.
    """
    if name.startswith("__"):
        return False
    if everything or not settings.topic_prefix:
        return True
    return settings.topic_prefix in name or settings.processor_group in name


def collect_snapshot(
    settings: Settings,
    *,
    everything: bool = False,
    count_rows: bool = False,
    transactions: bool = True,
    cassandra: bool = True,
    timeout: float = 10.0,
) -> Snapshot:
    """Read brokers, topics, groups, changelogs, local stores, transactions, and Cassandra
    nodes and tables."""
    cassandra_at = f"{','.join(settings.cassandra_contact_points)}:{settings.cassandra_port}"
    snapshot = Snapshot(
        taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
        kafka=settings.kafka_bootstrap_servers,
        cassandra=f"{cassandra_at}/{settings.cassandra_keyspace}",
    )
    topics = Topics.from_settings(settings)

    def select(name: str) -> bool:
        return selects(settings, name, everything=everything)

    try:
        admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
        metadata = admin.list_topics(timeout=timeout)
        snapshot.brokers = collect_brokers(metadata)
        snapshot.topics = collect_topics(admin, select, topics, timeout, metadata)
        snapshot.changelogs = changelog_topics(snapshot.topics)
        snapshot.groups = collect_groups(admin, select, topic_offsets(snapshot.topics), timeout)
    except _EXPECTED as exc:
        snapshot.errors.append(f"Kafka at {settings.kafka_bootstrap_servers}: {exc}")
    if transactions:
        try:
            snapshot.transactions = collect_transactions(
                settings.kafka_bootstrap_servers, timeout, settings.kafka_security_config()
            )
        except (*_EXPECTED, TransactionLogError) as exc:
            snapshot.errors.append(f"transactions: {exc}")
    try:
        snapshot.stores = collect_stores(settings.state_dir)
    except OSError as exc:
        snapshot.errors.append(f"state dir {settings.state_dir}: {exc}")
    if not cassandra:
        return snapshot
    try:
        cluster, session = connect(settings, connect_timeout=min(timeout, 5.0))
        try:
            snapshot.cassandra_nodes = collect_nodes(cluster, session, wait=min(timeout, 5.0))
            snapshot.tables = collect_tables(
                session, settings.cassandra_keyspace, count=count_rows, timeout=timeout
            )
        finally:
            cluster.shutdown()
    except _EXPECTED as exc:
        snapshot.errors.append(f"Cassandra at {cassandra_at}: {exc}")
    return snapshot
