"""The stack against real servers: transactions, idempotent ``up``, and a clean ``down``."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from chatpulse.kafka_admin import admin_client, create_topics
from chatpulse.ports import free_ports, is_port_free
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import CassandraServer, KafkaServer, Stack
from chatpulse.stack.process import cmdline_of
from chatpulse.storage import connect
from chatpulse.topics import Topics, TopicSpec


def _read_partition(bootstrap: str, topic: str, isolation: str, until: bytes) -> list[bytes]:
    """Values of partition 0 from the start up to and including ``until``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        for _ in range(300):
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            value = message.value()
            assert value is not None
            values.append(value)
            if value == until:
                break
    finally:
        consumer.close()
    return values


@pytest.mark.timeout(120)
def test_committed_transaction_is_read_and_aborted_one_is_not(settings: Settings) -> None:
    topic = Topics.from_settings(settings).tracked  # one partition: order is total
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "transactional.id": f"{settings.topic_prefix}tx",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for value in (b"committed-1", b"committed-2", b"committed-3"):
        producer.produce(topic, key=b"k", value=value, partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    for value in (b"aborted-1", b"aborted-2"):
        producer.produce(topic, key=b"k", value=value, partition=0)
    producer.flush(30)  # the aborted records really reach the log
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed-last", partition=0)
    producer.commit_transaction(30)

    bootstrap = settings.kafka_bootstrap_servers
    committed = _read_partition(bootstrap, topic, "read_committed", until=b"committed-last")
    everything = _read_partition(bootstrap, topic, "read_uncommitted", until=b"committed-last")

    assert committed == [b"committed-1", b"committed-2", b"committed-3", b"committed-last"]
    assert everything == [
        b"committed-1",
        b"committed-2",
        b"committed-3",
        b"aborted-1",
        b"aborted-2",
        b"committed-last",
    ]


def test_up_when_already_up_starts_nothing(stack: Stack) -> None:
    before = [status.pid for status in stack.status()]
    again = Stack(stack.data_dir, kafka_port=stack.kafka.port, cassandra_port=stack.cassandra.port)

    started = again.up()

    assert started == []
    assert [status.pid for status in again.status()] == before
    assert all(pid is not None for pid in before)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}  # rich would otherwise truncate the table
    return subprocess.run(
        [sys.executable, "-m", "chatpulse", "stack", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def _processes_mentioning(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and str(path) in cmdline_of(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.timeout(600)
def test_cli_up_status_down_on_a_throwaway_stack(tmp_path: Path) -> None:
    kafka_port, cassandra_port = free_ports(2)
    data_dir = tmp_path / "throwaway-stack"
    flags = [
        "--kafka-port",
        str(kafka_port),
        "--cassandra-port",
        str(cassandra_port),
        "--data-dir",
        str(data_dir),
    ]
    throwaway = Stack(data_dir, kafka_port=kafka_port, cassandra_port=cassandra_port)
    try:
        up = _cli("up", *flags)
        assert up.returncode == 0, up.stderr
        assert "started kafka, cassandra" in up.stdout
        pids = [status.pid for status in throwaway.status()]
        assert all(pid is not None for pid in pids)

        again = _cli("up", *flags)
        assert again.returncode == 0, again.stderr
        assert "already running, nothing started" in again.stdout
        assert [status.pid for status in throwaway.status()] == pids

        status = _cli("status", *flags)
        assert status.returncode == 0, status.stderr
        assert re.search(
            rf"kafka\s*│\s*running\s*│\s*4\.\d+\.\d+\s*│\s*{pids[0]}\s*│\s*{kafka_port}",
            status.stdout,
        ), status.stdout
        assert re.search(
            rf"cassandra\s*│\s*running\s*│\s*5\.0\.\d+\s*│\s*{pids[1]}\s*│\s*{cassandra_port}",
            status.stdout,
        ), status.stdout
        assert str(data_dir / "kafka") in status.stdout

        down = _cli("down", *flags)
        assert down.returncode == 0, down.stderr
        assert "stopped kafka, cassandra" in down.stdout
        assert _processes_mentioning(data_dir) == []
        assert all(is_port_free(port) for port in (kafka_port, kafka_port + 1))
        assert all(is_port_free(port) for port in (cassandra_port, cassandra_port + 1))
        after = _cli("status", *flags)
        assert after.stdout.count("stopped") == 2, after.stdout
    finally:
        throwaway.down(timeout=10)


@pytest.mark.timeout(300)
def test_dedicated_kafka_restarts_on_its_port_with_its_data(dedicated_kafka: KafkaServer) -> None:
    bootstrap = dedicated_kafka.bootstrap_servers
    assert create_topics(admin_client(bootstrap), [TopicSpec("kept", 1)], 1) == ["kept"]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce("kept", value=b"before-outage", partition=0)
    assert producer.flush(30) == 0
    first_pid = dedicated_kafka.pid

    assert dedicated_kafka.stop() is True
    assert not dedicated_kafka.is_running()
    assert is_port_free(dedicated_kafka.port)
    assert dedicated_kafka.start() is True
    dedicated_kafka.wait_ready(timeout=120)

    assert dedicated_kafka.pid not in (None, first_pid)
    producer.produce("kept", value=b"after-outage", partition=0)
    assert producer.flush(30) == 0
    values = _read_partition(bootstrap, "kept", "read_committed", until=b"after-outage")
    assert values == [b"before-outage", b"after-outage"]


@pytest.mark.timeout(400)
def test_dedicated_cassandra_restarts_on_its_port_with_its_data(
    dedicated_cassandra: CassandraServer,
) -> None:
    settings = load_settings(
        cassandra_contact_points="127.0.0.1",
        cassandra_port=dedicated_cassandra.port,
        cassandra_keyspace="kept",
    )

    def execute(statement: str) -> list[tuple[object, ...]]:
        cluster, session = connect(settings)
        try:
            return [tuple(row) for row in session.execute(statement, timeout=60)]
        finally:
            cluster.shutdown()

    execute(
        "CREATE KEYSPACE kept WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    execute("CREATE TABLE kept.t (k text PRIMARY KEY, v int)")
    execute("INSERT INTO kept.t (k, v) VALUES ('before-outage', 1)")

    assert dedicated_cassandra.stop() is True
    assert not dedicated_cassandra.is_running()
    assert dedicated_cassandra.start() is True
    dedicated_cassandra.wait_ready(timeout=180)

    execute("INSERT INTO kept.t (k, v) VALUES ('after-outage', 2)")
    assert sorted(execute("SELECT k, v FROM kept.t")) == [("after-outage", 2), ("before-outage", 1)]
