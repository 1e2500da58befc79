"""The local stack keeps schema and data through a crash: SIGKILL a server, start it, read back.

A SIGKILL stands for an OOM kill or a crashed JVM; it leaves the OS page cache alone, so what a
server acknowledged before it (Cassandra's commit log, Kafka's log segments and KRaft metadata)
must all be there after a restart. (A power cut is another matter: docs/operations.md says what
each server promises then.)
"""

import os
import signal
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from cassandra.concurrent import execute_concurrent_with_args
from confluent_kafka import Consumer, KafkaError, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from chatpulse.ports import is_port_free
from chatpulse.settings import load_settings
from chatpulse.stack import CassandraServer, KafkaServer
from chatpulse.stack.server import JavaServer
from chatpulse.storage import connect, ensure_schema


def _sigkill(server: JavaServer) -> None:
    """Kill the server's JVM at once (no shutdown hook runs) and wait until it is gone."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    # A dying JVM loses its command line before it closes its sockets: wait for both.
    while server.is_running() or not all(map(is_port_free, server.ports.values())):
        assert time.monotonic() < deadline, f"{server.name} pid {pid} still alive after SIGKILL"
        time.sleep(0.05)


@pytest.mark.timeout(420)
def test_cassandra_keeps_schema_and_rows_through_sigkill(
    dedicated_cassandra: CassandraServer,
) -> None:
    settings = load_settings(
        cassandra_contact_points="127.0.0.1",
        cassandra_port=dedicated_cassandra.port,
        cassandra_keyspace="crash_kept",
    )
    ks = settings.cassandra_keyspace
    now = datetime.now(UTC).replace(microsecond=0)
    channels = [f"channel_{n}" for n in range(400)]
    totals = {
        channel: (1_000 + 37 * n, now - timedelta(hours=n + 1), now - timedelta(seconds=n))
        for n, channel in enumerate(channels)
    }
    cluster, session = connect(settings)
    try:
        ensure_schema(session, settings)  # what `chatpulse init` does
        insert = session.prepare(
            f"INSERT INTO {ks}.channel_totals (channel, total_messages, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?)"
        )
        # concurrently, as the processor writes: every one of them acknowledged
        rows = [(channel, *values) for channel, values in totals.items()]
        results = execute_concurrent_with_args(session, insert, rows, concurrency=64)
        assert all(success for success, _ in results)
    finally:
        cluster.shutdown()

    # At once, well inside the commit log's 10 s periodic sync: acknowledged writes must not
    # depend on that sync to survive a crash of the process.
    _sigkill(dedicated_cassandra)
    assert dedicated_cassandra.start() is True
    dedicated_cassandra.wait_ready(timeout=240)

    cluster, session = connect(settings)
    try:
        rows = session.execute(
            f"SELECT channel, total_messages, first_seen, last_seen FROM {ks}.channel_totals",
            timeout=60,
        )
        found = {
            row.channel: (
                row.total_messages,
                row.first_seen.replace(tzinfo=UTC),
                row.last_seen.replace(tzinfo=UTC),
            )
            for row in rows
        }
        # and the schema is usable as it was: `init` again is a no-op, not an error
        ensure_schema(session, settings)
    finally:
        cluster.shutdown()
    assert found == totals


def _describe(admin: AdminClient, topic: str) -> tuple[str, int, str]:
    """The topic's id, partition count and retention.ms, as the KRaft metadata holds them."""
    description = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    return (str(description.topic_id), len(description.partitions), config["retention.ms"].value)


def _consume_all(bootstrap: str, topic: str, expected: int) -> dict[int, list[bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    values: dict[int, list[bytes]] = defaultdict(list)
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 90
        while sum(map(len, values.values())) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                error = message.error()
                assert error is None or error.code() == KafkaError._PARTITION_EOF, error
                value = message.value()
                partition = message.partition()
                assert value is not None
                assert partition is not None
                values[partition].append(value)
    finally:
        consumer.close()
    return dict(values)


@pytest.mark.timeout(300)
def test_kafka_keeps_records_metadata_and_offsets_through_sigkill(
    dedicated_kafka: KafkaServer,
) -> None:
    bootstrap = dedicated_kafka.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic, group = "crash-kept", "crash-kept-group"
    week_ms = str(7 * 86_400_000)
    created = admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1, config={"retention.ms": week_ms})]
    )
    created[topic].result(timeout=30)
    before = _describe(admin, topic)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    sent: dict[int, list[bytes]] = defaultdict(list)
    for n in range(3_000):
        value = f'{{"n": {n}, "sent_at": {time.time_ns() // 1_000_000}}}'.encode()
        partition = n % 3
        producer.produce(topic, value=value, partition=partition)
        sent[partition].append(value)
    assert producer.flush(30) == 0
    # A consumer group's committed offsets live in __consumer_offsets: they must survive too.
    offsets = [TopicPartition(topic, p, 1_000 + 100 * p) for p in range(3)]
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committer.commit(offsets=offsets, asynchronous=False)
    finally:
        committer.close()

    _sigkill(dedicated_kafka)
    assert dedicated_kafka.start() is True
    dedicated_kafka.wait_ready(timeout=180)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert _describe(admin, topic) == before
    assert _consume_all(bootstrap, topic, expected=3_000) == sent
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = reader.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
    finally:
        reader.close()
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 1_000), (1, 1_100), (2, 1_200)]
