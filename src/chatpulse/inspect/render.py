"""Rich tables for a :class:`Snapshot`, with captions that explain what the numbers mean."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chatpulse.inspect.model import GroupInfo, GroupMember, Snapshot

__all__ = ["SECTIONS", "partition_ranges", "render_snapshot"]

SECTIONS = ("topics", "replication", "groups", "state", "transactions", "cassandra")


def partition_ranges(partitions: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    ordered = sorted(set(partitions))
    runs: list[str] = []
    start = prev = None
    for number in [*ordered, None]:
        if number is not None and prev is not None and number == prev + 1:
            prev = number
            continue
        if start is not None:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = number
    return ",".join(runs)


def _assignment(pairs: Iterable[tuple[str, int]]) -> str:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, partition in pairs:
        by_topic[topic].append(partition)
    return "\n".join(f"{t} [{partition_ranges(ps)}]" for t, ps in sorted(by_topic.items())) or "-"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _ago(epoch_ms: int) -> str:
    seconds = max(time.time() - epoch_ms / 1000, 0)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _topics_table(snapshot: Snapshot) -> Table:
    table = Table(
        title="Topics",
        caption="records = high - low watermark per partition; under exactly-once every "
        "committed or aborted transaction also leaves one marker offset. "
        "[bold]open txn[/]: partitions whose last stable offset is below the high watermark.",
        caption_justify="left",
    )
    table.add_column("topic", overflow="fold", min_width=20)
    for column in ("role", "parts", "records", "per partition", "policy", "open txn"):
        table.add_column(column, justify="right" if column in ("parts", "records") else "left")
    for topic in snapshot.topics:
        open_txn = [p.partition for p in topic.partitions if p.open_transaction]
        table.add_row(
            topic.name,
            topic.role,
            str(len(topic.partitions)),
            f"{topic.records:,}",
            " ".join(f"{p.partition}:{p.records}" for p in topic.partitions),
            topic.cleanup_policy,
            partition_ranges(open_txn) or "-",
        )
    return table


def _brokers_table(snapshot: Snapshot) -> Table:
    table = Table(
        title="Kafka brokers",
        caption="down: named as a replica by some partition but not listed by the cluster "
        "(stopped, crashed, or fenced by the controller after broker.session.timeout.ms).",
        caption_justify="left",
    )
    for column in ("node", "address", "state", "controller"):
        table.add_column(column)
    for broker in snapshot.brokers:
        table.add_row(
            str(broker.node_id),
            f"{broker.host}:{broker.port}" if broker.alive else "-",
            "up" if broker.alive else Text("down", style="bold red"),
            "yes" if broker.controller else "",
        )
    return table


def _replicas_table(snapshot: Snapshot) -> Table:
    table = Table(
        title="Partitions: leader, replicas, in-sync replicas",
        caption="isr: the replicas holding everything the leader acknowledged. [bold red]under"
        "-replicated[/]: fewer in sync than assigned; writes at acks=all go on while the ISR "
        "is at least min.insync.replicas. offline: no leader, no reads or writes.",
        caption_justify="left",
    )
    table.add_column("topic", overflow="fold", min_width=20)
    for column in ("part", "leader", "replicas", "isr", "status"):
        table.add_column(column, justify="right" if column == "part" else "left")
    for topic in snapshot.topics:
        first = True
        for part in topic.partitions:
            status, style = "ok", ""
            if part.offline:
                status, style = "offline", "bold red"
            elif part.under_replicated:
                status, style = "under-replicated", "bold red"
            table.add_row(
                topic.name if first else "",
                str(part.partition),
                "-" if part.offline else str(part.leader),
                ",".join(map(str, part.replicas)),
                ",".join(map(str, part.isr)),
                Text(status, style=style),
            )
            first = False
    return table


def _groups_table(groups: list[GroupInfo]) -> Table:
    table = Table(
        title="Consumer groups",
        caption="lag = log end offset - committed offset. A transactional (exactly-once) "
        "consumer at rest shows lag 1 on partitions whose last record is a commit marker.",
        caption_justify="left",
    )
    table.add_column("group", overflow="fold", min_width=16)
    for column in ("state", "assignor", "member (client id @ host)"):
        table.add_column(column)
    table.add_column("assigned", overflow="fold", min_width=18)
    table.add_column("lag", overflow="fold", min_width=18)
    for group in groups:
        lag_by_topic: dict[str, list[str]] = defaultdict(list)
        for offset in group.offsets:
            shown = "?" if offset.lag is None else str(offset.lag)
            lag_by_topic[offset.topic].append(f"{offset.partition}:{shown}")
        lag_text = f"total {group.total_lag:,}\n" + "\n".join(
            f"{t} {' '.join(parts)}" for t, parts in sorted(lag_by_topic.items())
        )
        members: list[GroupMember | None] = list(group.members) or [None]
        first = True
        for member in members:
            table.add_row(
                group.group_id if first else "",
                group.state if first else "",
                group.assignor if first else "",
                f"{member.client_id} @ {member.host}" if member else "(no members)",
                _assignment(member.assignment) if member else "-",
                lag_text if first else "",
            )
            first = False
    return table


def _state_table(snapshot: Snapshot) -> Table:
    table = Table(
        title="State: changelog topics and local stores",
        caption="Each RocksDB store partition on disk is backed by the same partition of its "
        "compacted changelog topic; a restarted or newly assigned processor replays it.",
        caption_justify="left",
    )
    table.add_column("changelog topic", overflow="fold", min_width=20)
    for column in ("store", "source topic", "parts", "records", "on disk"):
        table.add_column(column, overflow="fold")
    on_disk: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    sizes: dict[tuple[str, str, str], int] = defaultdict(int)
    for store in snapshot.stores:
        on_disk[(store.group, store.stream, store.store)].append(store.partition)
        sizes[(store.group, store.stream, store.store)] += store.bytes
    shown = set()
    for log in snapshot.changelogs:
        key = (log.group, log.source_topic, log.store)
        shown.add(key)
        local = (
            f"{_size(sizes[key])} in partitions [{partition_ranges(on_disk[key])}]"
            if key in on_disk
            else "not on this machine"
        )
        table.add_row(
            log.topic, log.store, log.source_topic, str(log.partitions), f"{log.records:,}", local
        )
    for key in sorted(set(on_disk) - shown):
        local = f"{_size(sizes[key])} in partitions [{partition_ranges(on_disk[key])}]"
        table.add_row(f"(none listed; group {key[0]})", key[2], key[1], "", "", local)
    return table


def _transactions_table(snapshot: Snapshot) -> Table | None:
    view = snapshot.transactions
    if view is None:
        return None
    caption = f"From the compacted internal topic {view.source}. {view.note}".strip()
    table = Table(title="Transactional producers", caption=caption, caption_justify="left")
    table.add_column("transactional id", overflow="fold", min_width=20)
    for column in ("producer id", "epoch", "state", "partitions", "updated"):
        table.add_column(column, overflow="fold")
    for txn in view.transactions[:25]:
        table.add_row(
            txn.transactional_id,
            str(txn.producer_id),
            str(txn.producer_epoch),
            txn.state,
            _assignment(txn.partitions),
            _ago(txn.last_update_ms),
        )
    if len(view.transactions) > 25:
        table.add_row(f"... {len(view.transactions) - 25} more", "", "", "", "", "")
    return table


def _nodes_table(snapshot: Snapshot) -> Table:
    table = Table(
        title="Cassandra nodes",
        caption="state: up when the driver connected to the node, down when it could not. "
        "A write at LOCAL_QUORUM needs 2 of 3 replicas up.",
        caption_justify="left",
    )
    for column in ("address", "datacenter", "rack", "state", "version", "host id"):
        table.add_column(column)
    for node in snapshot.cassandra_nodes:
        table.add_row(
            node.address,
            node.datacenter,
            node.rack,
            Text(node.state, style="" if node.state == "up" else "bold red"),
            node.release_version,
            node.host_id,
        )
    return table


def _tables_table(snapshot: Snapshot) -> Table:
    table = Table(
        title=f"Cassandra {snapshot.cassandra}",
        caption="est. partitions: Cassandra's own estimate (system.size_estimates), refreshed "
        "every few minutes from flushed SSTables: 0 before the first flush, coarse for small "
        "tables. rows: an exact count, with --count (a full scan).",
        caption_justify="left",
    )
    for column in ("table", "partition key", "clustering", "est. partitions", "mean part.", "rows"):
        table.add_column(column)
    for info in snapshot.tables:
        rows = info.count_error or ("-" if info.rows is None else f"{info.rows:,}")
        table.add_row(
            info.table,
            ", ".join(info.partition_key),
            ", ".join(info.clustering_key) or "-",
            f"{info.estimated_partitions:,}",
            _size(info.mean_partition_bytes) if info.mean_partition_bytes else "-",
            rows,
        )
    return table


def render_snapshot(snapshot: Snapshot, sections: Collection[str] = SECTIONS) -> RenderableType:
    """The chosen sections (all by default), in the order data flows through chatpulse."""
    parts: list[RenderableType] = [
        Text.assemble(
            ("chatpulse inspect", "bold"),
            f"  Kafka {snapshot.kafka}  Cassandra {snapshot.cassandra}  at {snapshot.taken_at}",
        )
    ]
    if "topics" in sections:
        parts.append(_topics_table(snapshot))
    if "replication" in sections:
        parts += [_brokers_table(snapshot), _replicas_table(snapshot)]
    if "groups" in sections:
        parts.append(_groups_table(snapshot.groups))
    if "state" in sections:
        parts.append(_state_table(snapshot))
    transactions = _transactions_table(snapshot) if "transactions" in sections else None
    if transactions is not None:
        parts.append(transactions)
    if "cassandra" in sections:
        parts += [_nodes_table(snapshot), _tables_table(snapshot)]
    parts += [Text(f"could not read {error}", style="bold red") for error in snapshot.errors]
    return Group(*parts)
