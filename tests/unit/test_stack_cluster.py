"""chatpulse.stack clusters without servers: node layout, generated configs, remembered shape."""

import itertools
import json
from pathlib import Path

import pytest
import yaml

from chatpulse.stack import Stack, StackError
from chatpulse.stack.cassandra import cassandra_yaml, initial_tokens
from chatpulse.stack.kafka import kafka_properties, replication_for


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_a_three_node_kafka_replicates_every_topic_three_times_with_min_isr_two(
    tmp_path: Path,
) -> None:
    props = _properties(
        kafka_properties(
            port=9093,
            controller_port=9096,
            log_dir=tmp_path,
            node_id=2,
            voters={1: 9095, 2: 9096, 3: 9097},
        )
    )

    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9095,2@127.0.0.1:9096,3@127.0.0.1:9097"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9096"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "2", key


def test_replication_follows_the_broker_count() -> None:
    assert [replication_for(n) for n in (1, 2, 3, 5)] == [(1, 1), (2, 1), (3, 2), (3, 2)]


def test_cluster_nodes_listen_on_their_own_loopback_address(tmp_path: Path) -> None:
    config = yaml.safe_load(
        cassandra_yaml(
            port=9042,
            storage_port=9043,
            home=tmp_path,
            address="127.0.0.3",
            seed="127.0.0.1",
            initial_token=42,
            new_cluster=True,
        )
    )

    assert config["listen_address"] == config["rpc_address"] == "127.0.0.3"
    assert config["seed_provider"][0]["parameters"] == [{"seeds": "127.0.0.1:9043"}]
    assert config["initial_token"] == "42"
    assert config["auto_bootstrap"] is False
    again = yaml.safe_load(
        cassandra_yaml(port=9042, storage_port=9043, home=tmp_path, initial_token=42)
    )
    assert "auto_bootstrap" not in again  # a node that has joined once keeps the default
    single = yaml.safe_load(cassandra_yaml(port=9042, storage_port=9043, home=tmp_path))
    assert "initial_token" not in single
    assert "auto_bootstrap" not in single


def test_initial_tokens_split_the_ring_evenly() -> None:
    tokens = initial_tokens(3)

    assert tokens[0] == -(2**63)
    assert len(set(tokens)) == 3
    steps = {b - a for a, b in itertools.pairwise(tokens)}
    assert steps == {2**64 // 3}
    assert tokens[-1] < 2**63
    assert initial_tokens(1) == [-(2**63)]


def test_a_three_plus_three_stack_lays_out_its_nodes(tmp_path: Path) -> None:
    stack = Stack(tmp_path, kafka_port=9092, cassandra_port=9042, kafka_nodes=3, cassandra_nodes=3)

    assert [s.name for s in stack.servers] == [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "cassandra-1",
        "cassandra-2",
        "cassandra-3",
    ]
    assert [k.ports for k in stack.kafka_servers] == [
        {"client": 9092, "controller": 9095},
        {"client": 9093, "controller": 9096},
        {"client": 9094, "controller": 9097},
    ]
    assert stack.kafka_bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    assert [(c.address, c.port, c.storage_port) for c in stack.cassandra_servers] == [
        ("127.0.0.1", 9042, 9043),
        ("127.0.0.2", 9042, 9043),
        ("127.0.0.3", 9042, 9043),
    ]
    assert stack.cassandra_contact_points == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    # each is ready only once it knows the two others (a new cluster's ring has formed)
    assert [c.peers for c in stack.cassandra_servers] == [2, 2, 2]
    assert [c.home for c in stack.cassandra_servers] == [
        tmp_path / f"cassandra-{n}" for n in (1, 2, 3)
    ]
    assert stack.server("kafka-2") is stack.kafka_servers[1]
    with pytest.raises(StackError, match=r"no node 'kafka-4' in this stack \(it has: kafka-1"):
        stack.server("kafka-4")


def test_a_single_node_stack_keeps_its_names_ports_and_layout(tmp_path: Path) -> None:
    stack = Stack(tmp_path, kafka_port=19092, cassandra_port=19042)

    assert [(s.name, s.home) for s in stack.servers] == [
        ("kafka", tmp_path / "kafka"),
        ("cassandra", tmp_path / "cassandra"),
    ]
    assert stack.kafka.ports == {"client": 19092, "controller": 19093}
    assert stack.server("kafka-1") is stack.kafka
    assert stack.cassandra.peers == 0
    stack._remember_layout()
    assert not (tmp_path / "cluster.json").exists()


def test_a_cluster_remembers_its_shape(tmp_path: Path) -> None:
    first = Stack(tmp_path, kafka_nodes=3, cassandra_nodes=2)
    first._remember_layout()
    layout = json.loads((tmp_path / "cluster.json").read_text())

    again = Stack(tmp_path)
    assert (again.kafka_nodes, again.cassandra_nodes) == (3, 2)
    assert again.kafka.cluster_id == first.kafka.cluster_id == layout["kafka_cluster_id"]
    assert {k.cluster_id for k in again.kafka_servers} == {layout["kafka_cluster_id"]}
    with pytest.raises(StackError, match="this stack has 3 Kafka node"):
        Stack(tmp_path, kafka_nodes=1)


def test_a_single_node_data_dir_cannot_become_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "kafka").mkdir()
    with pytest.raises(StackError, match="holds a single-node stack"):
        Stack(tmp_path, kafka_nodes=3, cassandra_nodes=3)._remember_layout()


@pytest.mark.parametrize("nodes", [0, 10])
def test_node_counts_are_bounded(tmp_path: Path, nodes: int) -> None:
    with pytest.raises(StackError, match=f"Kafka nodes must be 1 to 9, got {nodes}"):
        Stack(tmp_path, kafka_nodes=nodes)
