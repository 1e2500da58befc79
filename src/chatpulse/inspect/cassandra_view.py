"""Cassandra facts for ``inspect``: the nodes and their state, the keyspace's tables, keys and
size estimates.

Nodes come from the driver's cluster metadata (``system.local`` and ``system.peers`` of the
node it first reached, so a node that is down is still listed) and their state from the
driver's own attempt to open a connection pool to each one.

Estimates come from ``system.size_estimates`` (what ``nodetool tablestats`` would show
without needing nodetool): Cassandra refreshes it every few minutes from flushed SSTables,
so data still only in memtables is not counted yet. ``count=True`` adds an exact
``SELECT COUNT(*)`` per table: cheap on a laptop, a full scan on a real cluster.
"""

from __future__ import annotations

import time
from typing import Any

from cassandra import DriverException, OperationTimedOut, RequestExecutionException

from chatpulse.inspect.model import CassandraNode, TableInfo

__all__ = ["collect_nodes", "collect_tables"]


def _states(session: Any, hosts: list[Any]) -> dict[Any, str]:
    """Each host's state as far as the driver has found out: ``up`` with an open connection
    pool, ``down`` once a connection attempt failed, else ``unknown`` (not tried yet)."""
    pools = session.get_pool_state()
    states = {}
    for host in hosts:
        if pools.get(host, {}).get("open_count", 0) > 0:
            states[host] = "up"
        elif host.is_up is False:
            states[host] = "down"
        else:
            states[host] = "unknown"
    return states


def collect_nodes(cluster: Any, session: Any, *, wait: float = 5.0) -> list[CassandraNode]:
    """Every node of a connected driver ``Cluster``, by address.

    ``Cluster.connect`` returns as soon as one node's connection pool is open and opens the
    others in the background (a dead node's contact point still reads ``is_up`` True until
    its attempt fails), so this waits up to ``wait`` seconds for a verdict on every node.
    """
    hosts = list(cluster.metadata.all_hosts())
    deadline = time.monotonic() + wait
    states = _states(session, hosts)
    while "unknown" in states.values() and time.monotonic() < deadline:
        time.sleep(0.05)
        states = _states(session, hosts)
    nodes = [
        CassandraNode(
            address=str(host.endpoint.address),
            datacenter=host.datacenter or "",
            rack=host.rack or "",
            state=states[host],
            release_version=host.release_version or "",
            host_id=str(host.host_id or ""),
        )
        for host in hosts
    ]
    return sorted(nodes, key=lambda node: tuple(int(n) for n in node.address.split(".")))


def collect_tables(
    session: Any, keyspace: str, *, count: bool, timeout: float = 10.0
) -> list[TableInfo]:
    """The keyspace's tables with primary keys, estimated partitions and (optionally) rows."""
    columns = session.execute(
        "SELECT table_name, column_name, kind, position FROM system_schema.columns "
        "WHERE keyspace_name = %s",
        (keyspace,),
        timeout=timeout,
    )
    keys: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for row in columns:
        table = keys.setdefault(row.table_name, {"partition_key": [], "clustering": []})
        if row.kind in table:
            table[row.kind].append((row.position, row.column_name))
    estimates: dict[str, tuple[int, int]] = {}
    for row in session.execute(
        "SELECT table_name, partitions_count, mean_partition_size FROM system.size_estimates "
        "WHERE keyspace_name = %s",
        (keyspace,),
        timeout=timeout,
    ):
        partitions, size = estimates.get(row.table_name, (0, 0))
        estimates[row.table_name] = (
            partitions + int(row.partitions_count or 0),
            max(size, int(row.mean_partition_size or 0)),
        )
    tables = []
    for name in sorted(keys):
        partitions, mean_size = estimates.get(name, (0, 0))
        rows: int | None = None
        error = ""
        if count:
            try:
                rows = int(
                    session.execute(
                        # names from system_schema and the validated keyspace setting
                        f"SELECT COUNT(*) FROM {keyspace}.{name}",  # noqa: S608
                        timeout=timeout,
                    ).one()[0]
                )
            except (OperationTimedOut, RequestExecutionException, DriverException) as exc:
                error = f"count failed: {type(exc).__name__}"
        tables.append(
            TableInfo(
                keyspace=keyspace,
                table=name,
                partition_key=[c for _, c in sorted(keys[name]["partition_key"])],
                clustering_key=[c for _, c in sorted(keys[name]["clustering"])],
                estimated_partitions=partitions,
                mean_partition_bytes=mean_size,
                rows=rows,
                count_error=error,
            )
        )
    return tables
