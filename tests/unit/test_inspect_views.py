"""Pure parts of ``chatpulse inspect``: name parsing, record decoding, stores, rendering."""

import io
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from chatpulse.inspect.collect import selects
from chatpulse.inspect.errors import TransactionLogError
from chatpulse.inspect.kafka_view import changelog_topics, parse_internal_topic, topic_role
from chatpulse.inspect.local_state import collect_stores
from chatpulse.inspect.model import (
    BrokerInfo,
    CassandraNode,
    GroupInfo,
    GroupMember,
    PartitionLag,
    PartitionOffsets,
    Snapshot,
    StoreInfo,
    TableInfo,
    TopicInfo,
    TransactionInfo,
    TransactionsView,
)
from chatpulse.inspect.render import partition_ranges, render_snapshot
from chatpulse.inspect.transactions import decode_key, decode_value
from chatpulse.settings import Settings
from chatpulse.topics import Topics


def test_quix_internal_topic_names() -> None:
    name = "changelog__chatpulse-processor--twitch-chat-messages--dedup"
    assert parse_internal_topic(name) == (
        "changelog",
        "chatpulse-processor",
        "twitch-chat-messages",
        "dedup",
    )
    assert parse_internal_topic("repartition__g--t--by_user") == (
        "repartition",
        "g",
        "t",
        "by_user",
    )
    assert parse_internal_topic("twitch-chat-messages") is None
    assert parse_internal_topic("changelog__only-group") is None
    topics = Topics.from_prefix("x-")
    assert topic_role("x-twitch-chat-messages", topics) == "messages"
    assert topic_role("x-tracked-channels", topics) == "tracked"
    assert topic_role("changelog__x-processor--x-twitch-chat-messages--s", topics) == "changelog"
    assert topic_role("somebody-else", topics) == "other"


def test_selection_by_prefix_and_group() -> None:
    settings = Settings(topic_prefix="t1-", processor_group="t1-processor")
    assert selects(settings, "t1-twitch-chat-messages")
    assert selects(settings, "changelog__t1-processor--t1-twitch-chat-messages--s")
    assert not selects(settings, "t2-twitch-chat-messages")
    assert not selects(settings, "__consumer_offsets")
    assert selects(settings, "t2-twitch-chat-messages", everything=True)
    assert selects(Settings(), "anything")


def test_partition_ranges() -> None:
    assert partition_ranges([5, 0, 1, 2]) == "0-2,5"
    assert partition_ranges([3]) == "3"
    assert partition_ranges([]) == ""
    assert partition_ranges([0, 2, 4, 5]) == "0,2,4-5"


def _value_v0(pid: int, epoch: int, status: int, parts: dict[str, list[int]]) -> bytes:
    out = struct.pack(">hqhib", 0, pid, epoch, 60000, status)
    out += struct.pack(">i", len(parts))
    for topic, ids in parts.items():
        raw = topic.encode()
        out += struct.pack(">h", len(raw)) + raw + struct.pack(">i", len(ids))
        out += b"".join(struct.pack(">i", i) for i in ids)
    return out + struct.pack(">qq", 2000, 1000)


def _value_v1(pid: int, epoch: int, status: int, parts: dict[str, list[int]]) -> bytes:
    out = struct.pack(">hqhib", 1, pid, epoch, 60000, status)
    out += bytes([len(parts) + 1])  # compact array length (uvarint n+1)
    for topic, ids in parts.items():
        raw = topic.encode()
        out += bytes([len(raw) + 1]) + raw + bytes([len(ids) + 1])
        out += b"".join(struct.pack(">i", i) for i in ids)
        out += b"\x00"  # no tagged fields in the partition entry
    out += struct.pack(">qq", 2000, 1000)
    # top-level tagged fields: PreviousProducerId (tag 0, 8 bytes)
    return out + b"\x01\x00\x08" + struct.pack(">q", 41)


@pytest.mark.parametrize("encode", [_value_v0, _value_v1])
def test_transaction_log_values(encode: Callable[..., bytes]) -> None:
    value = encode(42, 3, 1, {"t-messages": [0, 2], "changelog__g--t--s": [1]})
    info = decode_value("tx-1", value)
    assert info == TransactionInfo(
        transactional_id="tx-1",
        producer_id=42,
        producer_epoch=3,
        state="Ongoing",
        timeout_ms=60000,
        partitions=[("changelog__g--t--s", 1), ("t-messages", 0), ("t-messages", 2)],
        last_update_ms=2000,
        start_ms=1000,
    )
    assert decode_value("tx-1", encode(7, 0, 4, {})).state == "CompleteCommit"


def test_transaction_log_key_and_bad_records() -> None:
    assert decode_key(struct.pack(">hh", 0, 4) + b"tx-9") == "tx-9"
    with pytest.raises(TransactionLogError):
        decode_key(struct.pack(">hh", 3, 1) + b"x")
    with pytest.raises(TransactionLogError):
        decode_value("x", struct.pack(">hq", 0, 1))  # truncated
    with pytest.raises(TransactionLogError):
        decode_value("x", struct.pack(">h", 9) + bytes(40))


def test_local_stores_sizes(tmp_path: Path) -> None:
    for partition, size in ((0, 100), (3, 250)):
        part = tmp_path / "grp" / "default" / "topic-a" / str(partition)
        part.mkdir(parents=True)
        (part / "000001.sst").write_bytes(b"x" * size)
        (part / "LOCK").write_bytes(b"")
    (tmp_path / "grp" / "default" / "not-a-partition").mkdir()
    (tmp_path / "grp" / "default" / "topic-a" / "0" / "archive").mkdir()
    stores = collect_stores(tmp_path)
    assert [(s.group, s.store, s.stream, s.partition, s.bytes) for s in stores] == [
        ("grp", "default", "topic-a", 0, 100),
        ("grp", "default", "topic-a", 3, 250),
    ]
    assert collect_stores(tmp_path / "missing") == []


def _snapshot() -> Snapshot:
    topic = TopicInfo(
        "p-twitch-chat-messages",
        "messages",
        [PartitionOffsets(0, 0, 10, 10, 1), PartitionOffsets(1, 5, 9, 7, 1)],
        "delete",
    )
    changelog = TopicInfo(
        "changelog__p-proc--p-twitch-chat-messages--default",
        "changelog",
        [PartitionOffsets(0, 0, 3, 3, 1), PartitionOffsets(1, 0, 2, 2, 1)],
        "compact",
    )
    member = GroupMember("m-1", "client-a", "/127.0.0.1", [("p-twitch-chat-messages", 0)])
    group = GroupInfo(
        "p-proc",
        "STABLE",
        "range",
        1,
        [member],
        [
            PartitionLag("p-twitch-chat-messages", 0, 8, 10, 10),
            PartitionLag("p-twitch-chat-messages", 1, None, 9, 7),
        ],
    )
    return Snapshot(
        taken_at="2026-01-01T00:00:00+00:00",
        kafka="k:9092",
        cassandra="c:9042/ks",
        topics=[topic, changelog],
        groups=[group],
        changelogs=changelog_topics([topic, changelog]),
        stores=[StoreInfo("p-proc", "default", "p-twitch-chat-messages", 0, "/x/0", 2048)],
        transactions=TransactionsView(
            "__transaction_state",
            [TransactionInfo("tx-a", 1, 0, "Ongoing", 60000, [], int(time.time() * 1000), 0)],
        ),
        tables=[TableInfo("ks", "channel_totals", ["channel"], [], 3, 120, rows=3)],
    )


def test_derived_numbers_and_json() -> None:
    snapshot = _snapshot()
    assert snapshot.topics[0].records == 14
    assert snapshot.topics[0].partitions[1].open_transaction
    assert snapshot.groups[0].total_lag == 2
    assert snapshot.changelogs[0].store == "default"
    assert snapshot.changelogs[0].records == 5
    data = snapshot.to_dict()
    assert data["topics"][0]["records"] == 14
    assert data["topics"][0]["partitions"][1]["records"] == 4
    assert data["groups"][0]["offsets"][1]["lag"] is None
    assert data["groups"][0]["total_lag"] == 2


def test_render_shows_every_section() -> None:
    out = io.StringIO()
    Console(file=out, width=250, color_system=None).print(render_snapshot(_snapshot()))
    text = out.getvalue()
    for expected in (
        "p-twitch-chat-messages",
        "0:10 1:4",
        "client-a @ /127.0.0.1",
        "p-twitch-chat-messages [0]",
        "total 2",
        "0:2 1:?",
        "2.0 KiB in partitions [0]",
        "tx-a",
        "Ongoing",
        "channel_totals",
    ):
        assert expected in text, expected


def test_render_only_some_sections() -> None:
    out = io.StringIO()
    view = render_snapshot(_snapshot(), ["groups"])
    Console(file=out, width=250, color_system=None).print(view)
    text = out.getvalue()
    assert "Consumer groups" in text
    assert "client-a @ /127.0.0.1" in text
    assert "Topics" not in text
    assert "channel_totals" not in text
    assert "Transactional producers" not in text


def _cluster_snapshot() -> Snapshot:
    """Broker 2 and Cassandra 127.0.0.3 down: partition 0 lost a copy, partition 1 its leader."""
    topic = TopicInfo(
        "p-twitch-chat-messages",
        "messages",
        [
            PartitionOffsets(0, 0, 5, 5, 1, replicas=[1, 2, 3], isr=[1, 3]),
            PartitionOffsets(1, 0, 5, 5, -1, replicas=[2], isr=[2]),
            PartitionOffsets(2, 0, 5, 5, 3, replicas=[3, 1, 2], isr=[1, 2, 3]),
        ],
    )
    return Snapshot(
        taken_at="2026-01-01T00:00:00+00:00",
        kafka="k:9092",
        cassandra="c:9042/ks",
        topics=[topic],
        brokers=[
            BrokerInfo(1, "127.0.0.1", 9092, alive=True, controller=True),
            BrokerInfo(2, "", 0, alive=False),
            BrokerInfo(3, "127.0.0.1", 9094, alive=True),
        ],
        cassandra_nodes=[
            CassandraNode("127.0.0.1", "datacenter1", "rack1", "up", "5.0.2", "a"),
            CassandraNode("127.0.0.3", "datacenter1", "rack1", "down", "5.0.2", "c"),
        ],
    )


def test_under_replicated_and_offline_partitions_in_json() -> None:
    snapshot = _cluster_snapshot()
    assert snapshot.topics[0].under_replicated == [0]
    data = snapshot.to_dict()
    parts = data["topics"][0]["partitions"]
    assert [(p["under_replicated"], p["offline"]) for p in parts] == [
        (True, False),
        (False, True),
        (False, False),
    ]
    assert parts[0]["replicas"] == [1, 2, 3]
    assert parts[0]["isr"] == [1, 3]
    assert data["topics"][0]["under_replicated"] == [0]
    assert [b["alive"] for b in data["brokers"]] == [True, False, True]
    assert [(n["address"], n["state"]) for n in data["cassandra_nodes"]] == [
        ("127.0.0.1", "up"),
        ("127.0.0.3", "down"),
    ]


def test_render_replication_and_cassandra_nodes() -> None:
    out = io.StringIO()
    view = render_snapshot(_cluster_snapshot(), ["replication", "cassandra"])
    Console(file=out, width=250, color_system=None).print(view)
    rows = [" ".join(line.replace("│", " ").split()) for line in out.getvalue().splitlines()]
    assert "p-twitch-chat-messages 0 1 1,2,3 1,3 under-replicated" in rows
    assert "1 - 2 2 offline" in rows
    assert "2 3 3,1,2 1,2,3 ok" in rows
    assert "2 - down" in rows
    assert "1 127.0.0.1:9092 up yes" in rows
    assert "127.0.0.3 datacenter1 rack1 down 5.0.2 c" in rows
    assert "Topics" not in " ".join(rows)
