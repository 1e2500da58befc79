"""A 3 + 3 cluster from ``chatpulse stack up --kafka-nodes 3 --cassandra-nodes 3``: every node in
``stack status --json``; writes at acks=all (min ISR 2) and QUORUM go on with one Kafka and one
Cassandra node killed, ``chatpulse inspect`` shows the dead broker's partitions under-replicated
and the dead Cassandra node down; ``stack up`` brings both back into the cluster."""

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from cassandra import ConsistencyLevel, ReadTimeout, Unavailable
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy
from cassandra.query import SimpleStatement
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from chatpulse.inspect import Snapshot, collect_snapshot
from chatpulse.provision import check_topics, initialize
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import Stack
from chatpulse.storage import connect
from chatpulse.topics import Topics

pytestmark = pytest.mark.cluster

PARTITIONS = 6


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``chatpulse stack <args>`` on the cluster, as a user types it (no node-count flags)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatpulse",
            "stack",
            *args,
            "--data-dir",
            str(stack.data_dir),
            "--kafka-port",
            str(stack.kafka.port),
            "--cassandra-port",
            str(stack.cassandra.port),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "250"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _chat(count: int) -> list[bytes]:
    """Chat-like records: current timestamps, Twitch user ids spread up to ~1.2e9."""
    now = datetime.now(UTC).isoformat()
    return [
        json.dumps(
            {
                "id": str(uuid.uuid4()),
                "channel": "xqc",
                "user_id": str(random.randint(10_000, 1_200_000_000)),
                "text": f"KEKW message {n}",
                "sent_at": now,
            }
        ).encode()
        for n in range(count)
    ]


def _produce_all(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Produce at acks=all; fail unless every record is acknowledged."""
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 90_000,
        }
    )
    for value in values:
        # Keyed by chatter, as the ingest does: the records spread over every partition.
        key = json.loads(value)["user_id"]
        producer.produce(topic, value, key=key, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert errors == []


def _count_records(bootstrap: str, topic: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}"}
    )
    try:
        ends = 0
        for partition in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            ends += high - low
        return ends
    finally:
        consumer.close()


def _isr_sizes(admin: AdminClient, topic: str) -> list[int]:
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions
    return [len(partitions[p].isrs) for p in sorted(partitions)]


@pytest.fixture
def session(cluster_stack: Stack) -> Iterator[Session]:
    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(),
        consistency_level=ConsistencyLevel.QUORUM,
        request_timeout=30,
    )
    cluster = Cluster(
        cluster_stack.cassandra_contact_points,
        port=cluster_stack.cassandra.port,
        protocol_version=4,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=10,
        control_connection_timeout=10,
    )
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def test_status_json_lists_every_node(cluster_stack: Stack) -> None:
    shown = json.loads(_cli(cluster_stack, "status", "--json").stdout)

    kafka_port, cql_port = cluster_stack.kafka.port, cluster_stack.cassandra.port
    pids = {status.name: status.pid for status in cluster_stack.status()}
    assert shown == {
        "kafka": [
            {"node": n, "pid": pids[f"kafka-{n}"], "port": kafka_port + n - 1, "running": True}
            for n in (1, 2, 3)
        ],
        "cassandra": [
            {
                "node": n,
                "address": f"127.0.0.{n}",
                "pid": pids[f"cassandra-{n}"],
                "port": cql_port,
                "running": True,
            }
            for n in (1, 2, 3)
        ],
    }
    assert all(isinstance(pid, int) for pid in pids.values())
    assert len(set(pids.values())) == 6


def _min_isr(admin: AdminClient, topic: str) -> str:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    (future,) = admin.describe_configs([resource]).values()
    return str(future.result(30)["min.insync.replicas"].value)


def _copies(admin: AdminClient, topic: str) -> set[int]:
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions
    return {len(partition.replicas) for partition in partitions.values()}


def test_init_on_the_cluster_replicates_topics_internal_topics_and_the_keyspace(
    cluster_stack: Stack,
) -> None:
    token = uuid.uuid4().hex[:8]
    settings = load_settings(
        kafka_bootstrap_servers=cluster_stack.kafka_bootstrap_servers,
        cassandra_contact_points=",".join(cluster_stack.cassandra_contact_points),
        cassandra_port=cluster_stack.cassandra.port,
        cassandra_keyspace=f"k_{token}",
        topic_prefix=f"t{token}-",
        topic_replication_factor=3,
        cassandra_replication_factor=3,
    )
    initialize(settings, timeout=120)

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    names = [spec.name for spec in Topics.from_settings(settings).specs(settings)]
    assert {name: _copies(admin, name) for name in names} == {name: {3} for name in names}
    assert {name: _min_isr(admin, name) for name in names} == {name: "2" for name in names}
    assert check_topics(settings) == []
    # Kafka's internal topics, created on first use: transaction state and group offsets.
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "transactional.id": token}
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(names[0], b"{}", key=b"1")
    producer.commit_transaction(60)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"g{token}"}
    )
    consumer.commit(offsets=[TopicPartition(names[0], 0, 0)], asynchronous=False)
    consumer.close()
    for internal in ("__transaction_state", "__consumer_offsets"):
        assert _copies(admin, internal) == {3}, internal
    assert _min_isr(admin, "__transaction_state") == "2"
    cluster, session = connect(settings)
    try:
        row = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (settings.cassandra_keyspace,),
        ).one()
        assert cluster.profile_manager.default.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    finally:
        cluster.shutdown()
    assert row is not None
    assert dict(row.replication) == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        "datacenter1": "3",
    }


def _insert(session: Session, keyspace: str, values: list[bytes], level: int) -> None:
    insert = SimpleStatement(
        f"INSERT INTO {keyspace}.chat (channel, id, record) VALUES (%s, %s, %s)",
        consistency_level=level,
    )
    for value in values:
        session.execute(insert, ("xqc", json.loads(value)["id"], value))


def _count_rows(session: Session, keyspace: str, level: int) -> int:
    select = SimpleStatement(
        f"SELECT count(*) FROM {keyspace}.chat WHERE channel = %s", consistency_level=level
    )
    row = session.execute(select, ("xqc",)).one()
    assert row is not None
    return int(row[0])


def _inspect_cli(settings: Settings) -> dict[str, object]:
    """``chatpulse inspect --json`` as a user runs it, configured by CHATPULSE_* variables."""
    env = {
        **os.environ,
        "CHATPULSE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CHATPULSE_CASSANDRA_CONTACT_POINTS": ",".join(settings.cassandra_contact_points),
        "CHATPULSE_CASSANDRA_PORT": str(settings.cassandra_port),
        "CHATPULSE_TOPIC_PREFIX": settings.topic_prefix,
    }
    done = subprocess.run(
        [sys.executable, "-m", "chatpulse", "inspect", "--json", "--no-transactions"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shown: dict[str, object] = json.loads(done.stdout)
    return shown


def _replication(snapshot: Snapshot) -> dict[tuple[str, int], tuple[int, list[int], list[int]]]:
    """(topic, partition) -> (leader, replicas, in-sync replicas), as inspect shows them."""
    return {
        (t.name, p.partition): (p.leader, p.replicas, p.isr)
        for t in snapshot.topics
        for p in t.partitions
    }


def _inspect_until(
    settings: Settings, check: Callable[[Snapshot], bool], timeout: float, what: str
) -> Snapshot:
    """The first inspect snapshot, read without errors, that passes ``check``."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = collect_snapshot(settings, transactions=False, timeout=20)
        if not snapshot.errors and check(snapshot):
            return snapshot
        assert time.monotonic() < deadline, f"inspect showed no {what} within {timeout:.0f}s"
        time.sleep(1)


def test_writes_survive_one_dead_node_of_each_and_the_nodes_rejoin(
    cluster_stack: Stack, session: Session
) -> None:
    bootstrap = cluster_stack.kafka_bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    token = uuid.uuid4().hex[:8]
    topic = f"cluster-{token}"
    # A second topic with two copies per partition: some of its partitions have none on
    # broker 2, and inspect must mark only those that had one as under-replicated.
    pairs = f"cluster-{token}-rf2"
    inspect_settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        cassandra_contact_points=",".join(cluster_stack.cassandra_contact_points),
        cassandra_port=cluster_stack.cassandra.port,
        topic_prefix=f"cluster-{token}",
    )
    # No replication factor given: the cluster's broker defaults (3 copies, min ISR 2) apply.
    created = admin.create_topics(
        [
            NewTopic(topic, num_partitions=PARTITIONS),
            NewTopic(pairs, num_partitions=PARTITIONS, replication_factor=2),
        ]
    )
    for future in created.values():
        future.result(60)
    config = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    (described,) = config.values()
    assert described.result(30)["min.insync.replicas"].value == "2"
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions
    assert sorted(len(partitions[p].replicas) for p in partitions) == [3] * PARTITIONS
    keyspace = f"k_{uuid.uuid4().hex[:8]}"
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    )
    session.execute(
        f"CREATE TABLE {keyspace}.chat (channel text, id text, record blob, "
        "PRIMARY KEY (channel, id))"
    )
    before = _chat(200)
    _produce_all(bootstrap, topic, before)
    _insert(session, keyspace, before, ConsistencyLevel.QUORUM)

    healthy = _inspect_until(
        inspect_settings,
        lambda s: all(isr == sorted(replicas) for _, replicas, isr in _replication(s).values()),
        60,
        "full ISR on every partition",
    )
    assert {t.name for t in healthy.topics} == {topic, pairs}
    assert [(b.node_id, b.alive) for b in healthy.brokers] == [(1, True), (2, True), (3, True)]
    assert [(n.address, n.state) for n in healthy.cassandra_nodes] == [
        ("127.0.0.1", "up"),
        ("127.0.0.2", "up"),
        ("127.0.0.3", "up"),
    ]
    assigned = {key: replicas for key, (_, replicas, _) in _replication(healthy).items()}
    held = {key for key, replicas in assigned.items() if 2 in replicas}
    # Two copies of six partitions over three brokers: broker 2 holds some, not all.
    assert {(topic, p) for p in range(PARTITIONS)} < held < set(assigned)

    _cli(cluster_stack, "kill", "kafka-2")
    _cli(cluster_stack, "kill", "cassandra-3")
    shown = json.loads(_cli(cluster_stack, "status", "--json").stdout)
    assert [node["running"] for node in shown["kafka"]] == [True, False, True]
    assert [node["running"] for node in shown["cassandra"]] == [True, True, False]
    # Once the controller fences the dead broker (broker.session.timeout.ms, 9 s), every
    # partition has two in-sync replicas left: just min ISR.
    _wait_for(lambda: _isr_sizes(admin, topic) == [2] * PARTITIONS, 60, "ISR shrink to 2")
    degraded = _inspect_until(
        inspect_settings,
        lambda s: all(2 not in isr for _, _, isr in _replication(s).values()),
        60,
        "broker 2 out of every ISR",
    )
    # Exactly the partitions broker 2 held are under-replicated: ISR without it, led by
    # another broker, replicas unchanged (Kafka does not move a dead broker's copies).
    for key, (leader, replicas, isr) in _replication(degraded).items():
        assert replicas == assigned[key], key
        assert isr == sorted(set(replicas) - {2}), key
        assert leader in isr, key
    assert {(t.name, p) for t in degraded.topics for p in t.under_replicated} == held
    assert [(b.node_id, b.alive) for b in degraded.brokers] == [(1, True), (2, False), (3, True)]
    assert [(n.address, n.state) for n in degraded.cassandra_nodes] == [
        ("127.0.0.1", "up"),
        ("127.0.0.2", "up"),
        ("127.0.0.3", "down"),
    ]
    # The same through the command and its JSON.
    data = _inspect_cli(inspect_settings)
    shown_under = {
        (t["name"], p)
        for t in data["topics"]
        for p in t["under_replicated"]  # type: ignore[attr-defined]
    }
    assert shown_under == held
    assert [b["alive"] for b in data["brokers"]] == [True, False, True]  # type: ignore[attr-defined]
    assert [n["state"] for n in data["cassandra_nodes"]] == ["up", "up", "down"]  # type: ignore[attr-defined]

    # Two of three copies remain: acks=all with min ISR 2 and QUORUM both still succeed.
    during = _chat(200)
    _produce_all(bootstrap, topic, during)
    _insert(session, keyspace, during, ConsistencyLevel.QUORUM)
    assert _count_records(bootstrap, topic) == 400
    assert _count_rows(session, keyspace, ConsistencyLevel.QUORUM) == 400

    _cli(cluster_stack, "up")

    # The restarted broker catches up and is back in every partition's ISR.
    _wait_for(lambda: _isr_sizes(admin, topic) == [3] * PARTITIONS, 90, "ISR back to 3")
    # The restarted Cassandra node is a peer again and seen up by the driver, and a read at
    # ALL (every replica must answer) succeeds.
    peers = {row.peer for row in session.execute("SELECT peer FROM system.peers")}
    assert len(peers) == 2
    _wait_for(lambda: _all_hosts_up(session), 90, "driver sees all 3 Cassandra nodes up")
    _wait_for(lambda: _read_at_all(session, keyspace) == 400, 60, "a read at ALL")
    recovered = _inspect_until(
        inspect_settings,
        lambda s: (
            not any(t.under_replicated for t in s.topics)
            and all(n.state == "up" for n in s.cassandra_nodes)
        ),
        90,
        "recovery",
    )
    assert {key: replicas for key, (_, replicas, isr) in _replication(recovered).items()} == (
        assigned
    )
    assert [(b.node_id, b.alive) for b in recovered.brokers] == [(1, True), (2, True), (3, True)]
    assert [n.address for n in recovered.cassandra_nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    after = _chat(100)
    _produce_all(bootstrap, topic, after)
    _insert(session, keyspace, after, ConsistencyLevel.ALL)
    assert _count_records(bootstrap, topic) == 500
    assert _count_rows(session, keyspace, ConsistencyLevel.ALL) == 500


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(1)


def _all_hosts_up(session: Session) -> bool:
    hosts = {host.address: host.is_up for host in session.cluster.metadata.all_hosts()}
    return hosts == {"127.0.0.1": True, "127.0.0.2": True, "127.0.0.3": True}


def _read_at_all(session: Session, keyspace: str) -> int | None:
    """The row count read at ALL, or None while a replica is not (yet) seen up."""
    try:
        return _count_rows(session, keyspace, ConsistencyLevel.ALL)
    except (Unavailable, ReadTimeout, NoHostAvailable):
        return None
