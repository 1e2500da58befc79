"""Replication and consistency settings: the keyspace's strategy, the driver's consistency, the
min ISR given to topics. (The cluster's broker defaults: tests/unit/test_stack_cluster.py.)"""

import pytest
from cassandra import ConsistencyLevel

from chatpulse.kafka_admin import min_insync_replicas
from chatpulse.settings import load_settings
from chatpulse.storage import execution_profile, schema_statements


def test_the_keyspace_uses_network_topology_with_the_configured_factor() -> None:
    keyspace = schema_statements("chat", 3)[0]

    assert keyspace == (
        "CREATE KEYSPACE IF NOT EXISTS chat WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
    )


def test_reads_and_writes_default_to_local_quorum() -> None:
    assert load_settings().cassandra_consistency == "LOCAL_QUORUM"
    profile = execution_profile(load_settings())
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM


def test_the_consistency_setting_reaches_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPULSE_CASSANDRA_CONSISTENCY", "QUORUM")

    assert execution_profile(load_settings()).consistency_level == ConsistencyLevel.QUORUM


@pytest.mark.parametrize(("copies", "min_isr"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_topics_keep_writing_with_one_broker_down(copies: int, min_isr: int) -> None:
    assert min_insync_replicas(copies) == min_isr
