"""Cassandra facts for ``inspect``: the keyspace's tables, keys and size estimates.

Estimates come from ``system.size_estimates`` (what ``nodetool tablestats`` would show
without needing nodetool): Cassandra refreshes it every few minutes from flushed SSTables,
so data still only in memtables is not counted yet. ``count=True`` adds an exact
``SELECT COUNT(*)`` per table: cheap on a laptop, a full scan on a real cluster.
"""

from __future__ import annotations

from typing import Any

from cassandra import DriverException, OperationTimedOut, RequestExecutionException

from chatpulse.inspect.model import TableInfo

__all__ = ["collect_tables"]


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
