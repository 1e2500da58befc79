"""``chatpulse inspect`` against the real test stack: every number checked exactly."""

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from quixstreams import Application, State

from chatpulse.inspect import collect_snapshot
from chatpulse.inspect.model import Snapshot
from chatpulse.settings import Settings
from chatpulse.storage import connect
from chatpulse.topics import Topics

pytestmark = pytest.mark.timeout(240)

PER_PARTITION = {0: 5, 1: 3, 4: 2}  # records produced into the 6-partition messages topic


def _produce(settings: Settings, topic: str) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for partition, count in PER_PARTITION.items():
        for index in range(count):
            producer.produce(topic, key=f"ch{partition}", value=f"m{index}", partition=partition)
    assert producer.flush(30) == 0


@pytest.fixture
def consumer(settings: Settings) -> Iterator[Consumer]:
    """A live group member on the messages topic that committed known offsets."""
    topic = Topics.from_settings(settings).messages
    _produce(settings, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.topic_prefix}learners",
            "client.id": "inspect-test-client",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        assert time.monotonic() < deadline, "no partitions assigned within 60 s"
        consumer.poll(0.5)
    # Committed: p0 read 2 of 5 (lag 3), p1 read all 3 (lag 0); others never committed.
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 3)], asynchronous=False
    )
    yield consumer
    consumer.close()


def _snapshot(settings: Settings, **kwargs: bool) -> Snapshot:
    snapshot = collect_snapshot(settings, **kwargs)
    assert snapshot.errors == []
    return snapshot


def test_topics_groups_members_and_lag(settings: Settings, consumer: Consumer) -> None:
    topics = Topics.from_settings(settings)
    snapshot = _snapshot(settings)
    by_name = {topic.name: topic for topic in snapshot.topics}
    assert set(by_name) == {
        topics.messages,
        topics.events,
        topics.stats,
        topics.tracked,
        topics.deadletter,
    }
    messages = by_name[topics.messages]
    assert messages.role == "messages"
    assert [p.partition for p in messages.partitions] == list(range(6))
    assert {p.partition: p.records for p in messages.partitions} == {
        p: PER_PARTITION.get(p, 0) for p in range(6)
    }
    assert messages.records == 10
    assert by_name[topics.tracked].cleanup_policy == "compact"
    assert by_name[topics.events].records == 0

    [group] = snapshot.groups
    assert group.group_id == f"{settings.topic_prefix}learners"
    assert group.state == "STABLE"
    [member] = group.members
    assert member.client_id == "inspect-test-client"
    assert member.assignment == [(topics.messages, p) for p in range(6)]
    lags = {o.partition: (o.committed, o.lag) for o in group.offsets if o.topic == topics.messages}
    assert lags == {
        0: (2, 3),
        1: (3, 0),
        2: (None, None),
        3: (None, None),
        4: (None, None),
        5: (None, None),
    }
    assert group.total_lag == 3


def test_transactions_and_open_transaction(settings: Settings) -> None:
    topic = Topics.from_settings(settings).stats
    committed_id, open_id = f"{settings.topic_prefix}tx-done", f"{settings.topic_prefix}tx-open"
    done = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "transactional.id": committed_id}
    )
    done.init_transactions(30)
    done.begin_transaction()
    done.produce(topic, key="a", value="1", partition=0)
    done.commit_transaction(30)
    pending = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "transactional.id": open_id}
    )
    pending.init_transactions(30)
    pending.begin_transaction()
    pending.produce(topic, key="b", value="2", partition=2)
    assert pending.flush(30) == 0
    try:
        snapshot = _snapshot(settings)
        assert snapshot.transactions is not None
        found = {t.transactional_id: t for t in snapshot.transactions.transactions}
        assert found[committed_id].state == "CompleteCommit"
        assert found[open_id].state == "Ongoing"
        assert found[open_id].partitions == [(topic, 2)]
        [stats] = [t for t in snapshot.topics if t.name == topic]
        parts = {p.partition: p for p in stats.partitions}
        # Partition 0: one record plus the commit marker, nothing open.
        assert (parts[0].records, parts[0].open_transaction) == (2, False)
        # Partition 2: the uncommitted record is in the log but above the last stable offset.
        assert (parts[2].high, parts[2].stable, parts[2].open_transaction) == (1, 0, True)
    finally:
        pending.abort_transaction(30)
    after = {t.transactional_id: t for t in _snapshot(settings).transactions.transactions}  # type: ignore[union-attr]
    assert after[open_id].state == "CompleteAbort"


def test_changelog_topics_and_local_stores(settings: Settings, consumer: Consumer) -> None:
    """A tiny stateful Quix app leaves a changelog topic and RocksDB stores on disk."""
    topics = Topics.from_settings(settings)
    group = f"{settings.topic_prefix}quix"
    app = Application(
        broker_address=settings.kafka_bootstrap_servers,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=settings.state_dir,
        processing_guarantee="exactly-once",
        commit_interval=60,  # one checkpoint, when the app stops
    )

    def count(value: bytes, state: State) -> int:
        seen: int = state.get("seen", 0) + 1
        state.set("seen", seen)
        return seen

    source = app.topic(topics.messages, value_deserializer="bytes", key_deserializer="str")
    app.dataframe(source).apply(count, stateful=True)
    app.run(count=10, timeout=60)

    snapshot = _snapshot(settings)
    changelog_name = f"changelog__{group}--{topics.messages}--default"
    [changelog] = [c for c in snapshot.changelogs if c.topic == changelog_name]
    assert (changelog.group, changelog.source_topic, changelog.store) == (
        group,
        topics.messages,
        "default",
    )
    assert changelog.partitions == 6
    [topic] = [t for t in snapshot.topics if t.name == changelog_name]
    assert topic.role == "changelog"
    assert topic.cleanup_policy == "compact"
    # A checkpoint writes each changed key once (its latest value), not once per message:
    # here one key per partition -> one update plus one transaction commit marker each.
    assert {p.partition: p.records for p in topic.partitions} == {
        p: 2 if p in PER_PARTITION else 0 for p in range(6)
    }
    stores = [s for s in snapshot.stores if s.group == group]
    assert {s.partition for s in stores} == set(range(6))
    assert {(s.store, s.stream) for s in stores} == {("default", topics.messages)}
    assert all(s.bytes > 0 for s in stores)
    quix_group = [g for g in snapshot.groups if g.group_id == group]
    assert quix_group, "the Quix app's consumer group is listed"
    committed = {o.partition: o.committed for o in quix_group[0].offsets}
    # Exactly-once commits the offset past each partition's last transaction marker.
    for partition, produced in PER_PARTITION.items():
        assert committed[partition] is not None
        assert committed[partition] >= produced


def test_cassandra_tables_and_counts(settings: Settings) -> None:
    cluster, session = connect(settings)
    try:
        for channel in ("a", "b", "c"):
            session.execute(
                f"INSERT INTO {settings.cassandra_keyspace}.channel_totals "
                "(channel, total_messages) VALUES (%s, %s)",
                (channel, 1),
            )
    finally:
        cluster.shutdown()
    snapshot = _snapshot(settings, count_rows=True, transactions=False)
    tables = {t.table: t for t in snapshot.tables}
    assert {"messages_bucketed", "window_stats", "channel_totals"} <= set(tables)
    assert tables["channel_totals"].rows == 3
    assert tables["channel_totals"].partition_key == ["channel"]
    assert tables["messages_bucketed"].rows == 0
    assert tables["messages_bucketed"].partition_key == ["channel", "bucket"]
    assert tables["window_stats"].partition_key == ["channel", "window", "day"]
    assert tables["window_stats"].clustering_key == ["window_start"]
    assert snapshot.transactions is None


def test_replicas_isr_brokers_and_cassandra_nodes_on_one_node(settings: Settings) -> None:
    """One broker (node 1) leads and holds every partition alone; one Cassandra node, up."""
    snapshot = _snapshot(settings, transactions=False)
    assert [(b.node_id, b.alive, b.controller) for b in snapshot.brokers] == [(1, True, True)]
    assert f"{snapshot.brokers[0].host}:{snapshot.brokers[0].port}" == (
        settings.kafka_bootstrap_servers
    )
    for topic in snapshot.topics:
        assert [(p.leader, p.replicas, p.isr) for p in topic.partitions] == [(1, [1], [1])] * len(
            topic.partitions
        ), topic.name
        assert topic.under_replicated == []
    data = snapshot.to_dict()
    assert {p["under_replicated"] for t in data["topics"] for p in t["partitions"]} == {False}
    [node] = snapshot.cassandra_nodes
    assert (node.address, node.datacenter, node.rack, node.state) == (
        "127.0.0.1",
        "datacenter1",
        "rack1",
        "up",
    )
    assert node.release_version.startswith("5.")
