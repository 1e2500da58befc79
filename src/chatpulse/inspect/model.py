"""What ``chatpulse inspect`` shows, as plain dataclasses (rendered as tables or JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BrokerInfo",
    "CassandraNode",
    "ChangelogTopic",
    "GroupInfo",
    "GroupMember",
    "PartitionLag",
    "PartitionOffsets",
    "Snapshot",
    "StoreInfo",
    "TableInfo",
    "TopicInfo",
    "TransactionInfo",
    "TransactionsView",
]


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition: offsets ``low`` (earliest), ``high`` (log end), ``stable`` (LSO), and
    its copies: the ``leader`` broker (-1: none), the ``replicas`` assigned to hold it and
    the in-sync replicas (``isr``) that hold everything acknowledged at ``acks=all``."""

    partition: int
    low: int
    high: int
    stable: int
    leader: int
    replicas: list[int] = field(default_factory=list)
    isr: list[int] = field(default_factory=list)

    @property
    def under_replicated(self) -> bool:
        """Fewer copies in sync than assigned: a replica's broker is down or falling behind."""
        return len(self.isr) < len(self.replicas)

    @property
    def offline(self) -> bool:
        """No leader: nobody can read or write the partition until an in-sync replica returns."""
        return self.leader < 0

    @property
    def records(self) -> int:
        """Offsets in the log: messages plus transaction markers (each commit/abort takes one)."""
        return max(self.high - self.low, 0)

    @property
    def open_transaction(self) -> bool:
        """A transaction wrote here and has not committed/aborted yet (LSO < high watermark)."""
        return self.stable < self.high


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic: its role for chatpulse, partitions with offsets and the config that matters."""

    name: str
    role: str  # messages, events, stats, tracked, deadletter, changelog, repartition, other
    partitions: list[PartitionOffsets]
    cleanup_policy: str = ""
    retention_ms: str = ""

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def under_replicated(self) -> list[int]:
        """The partitions with fewer in-sync replicas than replicas."""
        return [p.partition for p in self.partitions if p.under_replicated]


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A Kafka broker: one the cluster lists as alive, or one that partitions name as a replica
    while the cluster no longer lists it (``alive`` False: stopped, crashed or fenced)."""

    node_id: int
    host: str
    port: int
    alive: bool
    controller: bool = False


@dataclass(frozen=True, slots=True)
class CassandraNode:
    """A Cassandra node as the driver sees it after connecting: ``state`` is ``up`` when the
    driver holds an open connection to it, ``down`` when connecting failed, ``unknown`` when
    the driver did not try (a node outside the local datacenter) or had no answer yet."""

    address: str
    datacenter: str
    rack: str
    state: str
    release_version: str
    host_id: str


@dataclass(frozen=True, slots=True)
class ChangelogTopic:
    """A Quix state changelog, ``changelog__<group>--<source topic>--<store>``, parsed."""

    topic: str
    group: str
    source_topic: str
    store: str
    records: int
    partitions: int


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A consumer in a group and the partitions the group assigned to it."""

    member_id: str
    client_id: str
    host: str
    assignment: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """A group's committed offset on one partition and how far behind the log end it is."""

    topic: str
    partition: int
    committed: int | None  # None: nothing committed yet
    high: int
    stable: int

    @property
    def lag(self) -> int | None:
        """Records between the committed offset and the log end (markers included)."""
        return None if self.committed is None else max(self.high - self.committed, 0)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group: state, assignor, coordinator, members and per-partition lag."""

    group_id: str
    state: str
    assignor: str
    coordinator: int | None
    members: list[GroupMember]
    offsets: list[PartitionLag]

    @property
    def total_lag(self) -> int:
        return sum(o.lag or 0 for o in self.offsets)


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A local RocksDB state store partition of the processor, and its size on disk."""

    group: str
    store: str
    stream: str  # the source topic the store belongs to ("" in older layouts)
    partition: int
    path: str
    bytes: int


@dataclass(frozen=True, slots=True)
class TransactionInfo:
    """A transactional id as the transaction coordinator last recorded it."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str
    timeout_ms: int
    partitions: list[tuple[str, int]]
    last_update_ms: int
    start_ms: int


@dataclass(frozen=True, slots=True)
class TransactionsView:
    """Transactional producers, read from ``__transaction_state`` (see transactions.py)."""

    source: str
    transactions: list[TransactionInfo]
    note: str = ""


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A Cassandra table: primary key, estimated partitions, exact rows when counted."""

    keyspace: str
    table: str
    partition_key: list[str]
    clustering_key: list[str]
    estimated_partitions: int
    mean_partition_bytes: int
    rows: int | None = None  # only with --count
    count_error: str = ""


@dataclass(slots=True)
class Snapshot:
    """Everything one ``inspect`` pass saw; ``errors`` names the parts it could not read."""

    taken_at: str
    kafka: str
    cassandra: str
    topics: list[TopicInfo] = field(default_factory=list)
    brokers: list[BrokerInfo] = field(default_factory=list)
    groups: list[GroupInfo] = field(default_factory=list)
    changelogs: list[ChangelogTopic] = field(default_factory=list)
    stores: list[StoreInfo] = field(default_factory=list)
    transactions: TransactionsView | None = None
    tables: list[TableInfo] = field(default_factory=list)
    cassandra_nodes: list[CassandraNode] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data, with the derived values (records, lag, under-replicated)."""
        data = asdict(self)
        for topic, raw in zip(self.topics, data["topics"], strict=True):
            raw["records"] = topic.records
            raw["under_replicated"] = topic.under_replicated
            for part, raw_part in zip(topic.partitions, raw["partitions"], strict=True):
                raw_part["records"] = part.records
                raw_part["under_replicated"] = part.under_replicated
                raw_part["offline"] = part.offline
        for group, raw in zip(self.groups, data["groups"], strict=True):
            raw["total_lag"] = group.total_lag
            for lag, raw_lag in zip(group.offsets, raw["offsets"], strict=True):
                raw_lag["lag"] = lag.lag
        return data
