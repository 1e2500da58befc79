"""``chatpulse init`` against the real test stack: topics and schema, idempotent."""

import subprocess
import sys
from datetime import UTC

import pytest
from cassandra import ConsistencyLevel

from chatpulse.errors import SchemaError
from chatpulse.kafka_admin import admin_client, create_topics
from chatpulse.provision import check_topics, initialize
from chatpulse.settings import Settings
from chatpulse.storage import connect
from chatpulse.topics import Topics, TopicSpec


def _tables(settings: Settings) -> set[str]:
    cluster, session = connect(settings)
    try:
        rows = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (settings.cassandra_keyspace,),
        )
        return {row.table_name for row in rows}
    finally:
        cluster.shutdown()


def _partitions(settings: Settings) -> dict[str, int]:
    metadata = admin_client(settings.kafka_bootstrap_servers).list_topics(timeout=10)
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if name.startswith(settings.topic_prefix)
    }


def test_init_creates_topics_and_schema_and_a_second_run_is_harmless(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    expected = {
        topics.messages: settings.messages_partitions,
        topics.events: settings.events_partition_count,
        topics.stats: settings.stats_partitions,
        topics.tracked: 1,
        topics.deadletter: 1,
    }
    tables = {
        "messages_bucketed",
        "message_buckets",
        "user_messages",
        "window_stats",
        "window_leaderboard",
        "latest_window",
        "channel_totals",
        "chat_spikes",
    }
    # The fixture already ran initialize once.
    assert _partitions(settings) == expected
    assert _tables(settings) == tables

    again = initialize(settings, timeout=30)

    assert again.created_topics == []
    assert sorted(again.topics) == sorted(expected)
    assert _partitions(settings) == expected
    assert _tables(settings) == tables
    assert settings.messages_partitions == 6


def test_cql_write_read_round_trip(settings: Settings) -> None:
    ks = settings.cassandra_keyspace
    cluster, session = connect(settings)
    try:
        session.execute(
            f"INSERT INTO {ks}.channel_totals (channel, total_messages, first_seen, last_seen) "
            "VALUES (%s, %s, %s, %s)",
            ("somechannel", 42, 1_700_000_000_000, 1_700_000_060_000),
        )
        row = session.execute(
            f"SELECT total_messages, first_seen, last_seen FROM {ks}.channel_totals "
            "WHERE channel = %s",
            ("somechannel",),
        ).one()
    finally:
        cluster.shutdown()
    assert row is not None
    assert row.total_messages == 42
    # The driver returns naive datetimes in UTC.
    assert row.first_seen.replace(tzinfo=UTC).timestamp() == 1_700_000_000
    assert row.last_seen.replace(tzinfo=UTC).timestamp() == 1_700_000_060


@pytest.mark.timeout(120)
def test_init_cli_runs_twice(settings: Settings) -> None:
    # Names under the test's own prefix, so the fixture's teardown deletes these topics too.
    prefix = f"{settings.topic_prefix}cli-"
    keyspace = f"{settings.cassandra_keyspace}_cli"
    command = [
        sys.executable,
        "-m",
        "chatpulse",
        "init",
        "--bootstrap-servers",
        settings.kafka_bootstrap_servers,
        "--cassandra-contact-points",
        "127.0.0.1",
        "--cassandra-port",
        str(settings.cassandra_port),
        "--keyspace",
        keyspace,
        "--topic-prefix",
        prefix,
        "--timeout",
        "30",
    ]
    cli_settings = settings.model_copy(
        update={"topic_prefix": prefix, "cassandra_keyspace": keyspace}
    )
    try:
        first = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        second = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr
        assert "(5 created)" in first.stdout
        assert "(0 created)" in second.stdout
        assert len(_partitions(cli_settings)) == 5
        assert "window_stats" in _tables(cli_settings)
    finally:
        cluster, session = connect(settings)
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        finally:
            cluster.shutdown()


def test_init_on_a_keyspace_of_the_previous_layout_adds_the_bucketed_tables(
    settings: Settings,
) -> None:
    """A keyspace made before messages were bucketed: its old table stays as it was (nothing
    reads it), the new ones are created beside it."""
    ks = settings.cassandra_keyspace
    cluster, session = connect(settings)
    try:
        for table in ("messages_bucketed", "message_buckets"):
            session.execute(f"DROP TABLE {ks}.{table}", timeout=60)
        session.execute(
            f"CREATE TABLE {ks}.messages (channel text, day date, sent_at timestamp, id text, "
            "record blob, PRIMARY KEY ((channel, day), sent_at, id))",
            timeout=60,
        )
        session.execute(
            f"INSERT INTO {ks}.messages (channel, day, sent_at, id, record) "
            "VALUES ('xqcow', '2026-12-03', '2026-12-03 12:00:00+0000', 'old', 0x7b7d)",
            timeout=60,
        )
    finally:
        cluster.shutdown()

    initialize(settings, timeout=60)

    assert {"messages", "messages_bucketed", "message_buckets"} <= _tables(settings)
    cluster, session = connect(settings)
    try:
        old = session.execute(f"SELECT id FROM {ks}.messages", timeout=60)
        assert [row.id for row in old] == ["old"]
    finally:
        cluster.shutdown()


def test_init_on_tables_of_before_search_and_top_chatters_adds_their_columns_and_index(
    settings: Settings,
) -> None:
    """Tables made before search and top chatters: init adds ``words`` with its SAI and
    ``top_chatters``, keeping the rows; a search then finds a message written after."""
    ks = settings.cassandra_keyspace
    cluster, session = connect(settings)
    try:
        for table in ("messages_bucketed", "window_stats"):
            session.execute(f"DROP TABLE {ks}.{table}", timeout=60)
        session.execute(
            f"CREATE TABLE {ks}.messages_bucketed (channel text, bucket timestamp, "
            "sent_at timestamp, id text, record blob, "
            "PRIMARY KEY ((channel, bucket), sent_at, id))",
            timeout=60,
        )
        session.execute(
            f"CREATE TABLE {ks}.window_stats (channel text, window text, day date, "
            "window_start timestamp, window_end timestamp, messages bigint, "
            "unique_chatters bigint, top_emotes text, closed boolean, "
            "PRIMARY KEY ((channel, window, day), window_start))",
            timeout=60,
        )
        session.execute(
            f"INSERT INTO {ks}.messages_bucketed (channel, bucket, sent_at, id, record) "
            "VALUES ('xqcow', 0, 1, 'old', 0x7b7d)",
            timeout=60,
        )
    finally:
        cluster.shutdown()

    initialize(settings, timeout=60)
    initialize(settings, timeout=60)  # a second run finds everything in place

    cluster, session = connect(settings)
    try:
        session.execute(
            f"UPDATE {ks}.messages_bucketed SET record = 0x7b7d, words = words + {{'kekw'}} "
            "WHERE channel = 'xqcow' AND bucket = 0 AND sent_at = 2 AND id = 'new'",
            timeout=60,
        )
        found = session.execute(
            f"SELECT id FROM {ks}.messages_bucketed WHERE channel = 'xqcow' AND bucket = 0 "
            "AND words CONTAINS 'kekw'",
            timeout=60,
        )
        assert [row.id for row in found] == ["new"]
        old = session.execute(f"SELECT id, words FROM {ks}.messages_bucketed", timeout=60)
        assert sorted((row.id, row.words) for row in old) == [("new", {"kekw"}), ("old", None)]
        columns = {
            row.column_name
            for row in session.execute(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
                "AND table_name = 'window_stats'",
                (ks,),
                timeout=60,
            )
        }
        assert "top_chatters" in columns
    finally:
        cluster.shutdown()


def test_a_table_without_a_column_chatpulse_uses_stops_init_with_the_fix(
    settings: Settings,
) -> None:
    ks = settings.cassandra_keyspace
    cluster, session = connect(settings)
    try:
        session.execute(f"DROP TABLE {ks}.messages_bucketed", timeout=60)
        session.execute(
            f"CREATE TABLE {ks}.messages_bucketed (channel text, bucket timestamp, "
            "sent_at timestamp, id text, text text, PRIMARY KEY ((channel, bucket), sent_at, id))",
            timeout=60,
        )
    finally:
        cluster.shutdown()
    with pytest.raises(SchemaError) as caught:
        initialize(settings)
    assert str(caught.value) == (
        f"the table {ks}.messages_bucketed lacks the column(s) record that chatpulse uses: "
        f"drop it (DROP TABLE {ks}.messages_bucketed) to let chatpulse create it, or set "
        "CHATPULSE_CASSANDRA_KEYSPACE to another keyspace"
    )


@pytest.mark.timeout(120)
def test_init_warns_about_existing_topics_that_differ_and_changes_nothing(
    settings: Settings,
) -> None:
    # Under the test's own prefix, so the fixture's teardown deletes these topics too.
    prefix = f"{settings.topic_prefix}old-"
    keyspace = f"{settings.cassandra_keyspace}_old"
    old = Topics.from_settings(settings.model_copy(update={"topic_prefix": prefix}))
    messages, events = old.messages, old.events
    admin = admin_client(settings.kafka_bootstrap_servers)
    # (co-partitioned: the processor joins the two)
    assert create_topics(admin, [TopicSpec(messages, 2), TopicSpec(events, 2)], 1) == [
        messages,
        events,
    ]
    command = [
        sys.executable,
        "-m",
        "chatpulse",
        "init",
        "--bootstrap-servers",
        settings.kafka_bootstrap_servers,
        "--cassandra-contact-points",
        "127.0.0.1",
        "--cassandra-port",
        str(settings.cassandra_port),
        "--keyspace",
        keyspace,
        "--topic-prefix",
        prefix,
        "--timeout",
        "30",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
        assert warnings == [
            f"warning: topic {messages} has 2 partitions, the settings say 6 "
            "(CHATPULSE_MESSAGES_PARTITIONS); init changes no existing topic",
            f"warning: topic {events} has 2 partitions, the settings say 6 "
            "(CHATPULSE_EVENTS_PARTITIONS); init changes no existing topic",
        ]
        assert "(3 created)" in done.stdout
        metadata = admin.list_topics(messages, timeout=10)
        assert len(metadata.topics[messages].partitions) == 2
        # Settings asking for more copies than the topics have: every topic is reported.
        two_copies = settings.model_copy(
            update={"topic_prefix": prefix, "topic_replication_factor": 2}
        )
        names = [spec.name for spec in Topics.from_settings(two_copies).specs(two_copies)]
        partitions = {
            messages: "CHATPULSE_MESSAGES_PARTITIONS",
            events: "CHATPULSE_EVENTS_PARTITIONS",
        }
        expected = []
        for name in names:
            if name in partitions:
                expected.append(
                    f"topic {name} has 2 partitions, the settings say 6 ({partitions[name]})"
                )
            expected.append(
                f"topic {name} has 1 replicas per partition, the settings say 2 "
                "(CHATPULSE_TOPIC_REPLICATION_FACTOR)"
            )
        assert check_topics(two_copies) == expected
        # a messages topic of 2 partitions and an events topic of 6 (created by init from
        # the settings): not co-partitioned, init stops with one line saying what to do
        alone = f"{settings.topic_prefix}alone-"
        lone = Topics.from_prefix(alone)
        assert create_topics(admin, [TopicSpec(lone.messages, 2)], 1) == [lone.messages]
        command[command.index(prefix)] = alone
        refused = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        assert refused.returncode == 1
        assert (
            f"chatpulse: error: topic {lone.events} has 6 partitions and {lone.messages} 2: the "
            "processor joins them by channel, so they must have the same number "
            f"(co-partitioned); delete {lone.events} and run `chatpulse init` to create it "
            "with 2 (its events are lost), or raise its partitions with kafka-topics.sh "
            "--alter --partitions while it is empty\n"
        ) in refused.stderr
    finally:
        cluster, session = connect(settings)
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        finally:
            cluster.shutdown()


def test_the_keyspace_is_network_topology_and_sessions_use_local_quorum(
    settings: Settings,
) -> None:
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
        "datacenter1": "1",
    }
