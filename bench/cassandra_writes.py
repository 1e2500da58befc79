"""Benchmark: what the processor's kinds of Cassandra writes cost a crash-safe node.

The processor's sink time is Cassandra's time (bench/processor.py prints the split). This
benchmark writes the processor's row shapes straight from the driver, at the processor's
concurrency (64 requests in flight), and prints each shape's rows/s and the node's CPU per row
(its JVM's user+system time from /proc over the timed window):

- ``minute``: ``messages_bucketed`` rows, channels' minutes in batches of 40 (few partitions);
- ``minute+words``: the same with each message's words (``words = words + ?``), no index;
- ``minute+sai``: the same on a table with the Storage-Attached Index of the words (search);
- ``history``: ``user_messages`` rows, one (channel, user, day) partition per message
  mostly, in batches of ten partitions (as the processor sends them).

It starts its own crash-safe node for each configuration compared (group commit, 10 ms), by
default ``concurrent_writes`` 32 (Cassandra's default, the baseline) and 128 (the stack's), so
both run in the same process on the same machine:

    .venv/bin/python bench/cassandra_writes.py [--rows N] [--concurrent-writes 32 128]
"""

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cassandra.cluster import Cluster, Session
from cassandra.concurrent import execute_concurrent
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from _machine import machine_state
from chatpulse.ports import free_ports
from chatpulse.stack.cassandra import CassandraServer

KS = "writes_bench"
IN_FLIGHT = 64  # the processor's default
CHANNELS = 200
VOCABULARY = [f"word{i}" for i in range(5_000)]
RECORD = os.urandom(350)  # about a chat record's size
Statements = list[tuple[Any, Any]]

SCHEMA = [
    f"CREATE KEYSPACE {KS} WITH replication = "
    "{'class': 'SimpleStrategy', 'replication_factor': 1}",
    *(
        f"CREATE TABLE {KS}.{table} (channel text, bucket timestamp, sent_at timestamp, "
        "id text, record blob, words set<text>, PRIMARY KEY ((channel, bucket), sent_at, id))"
        for table in ("minute", "minute_sai")
    ),
    f"CREATE INDEX minute_sai_words ON {KS}.minute_sai (VALUES(words)) USING 'sai'",
    f"CREATE TABLE {KS}.history (channel text, user_login text, bucket timestamp, "
    "sent_at timestamp, id text, record blob, "
    "PRIMARY KEY ((channel, user_login, bucket), sent_at, id))",
]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batched(statement: PreparedStatement, rows: list[tuple[Any, ...]], size: int) -> Statements:
    out: Statements = []
    for start in range(0, len(rows), size):
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for row in rows[start : start + size]:
            batch.add(statement, row)
        out.append((batch, None))
    return out


def _minute(session: Session, rows: int, table: str, words: bool) -> Statements:
    statement = session.prepare(
        f"UPDATE {KS}.{table} USING TTL 86400 SET record = ?, words = words + ? "
        "WHERE channel = ? AND bucket = ? AND sent_at = ? AND id = ?"
    )
    now = int(time.time() * 1000)
    values = [
        (
            RECORD,
            set(random.sample(VOCABULARY, 8)) if words else set(),
            f"channel{random.randrange(CHANNELS)}",
            now - now % 60_000,
            now + i,
            uuid.uuid4().hex,
        )
        for i in range(rows)
    ]
    values.sort(key=lambda row: row[2])
    return _batched(statement, values, 40)


def _history(session: Session, rows: int) -> Statements:
    statement = session.prepare(
        f"INSERT INTO {KS}.history (channel, user_login, bucket, sent_at, id, record) "
        "VALUES (?, ?, ?, ?, ?, ?) USING TTL 86400"
    )
    now = int(time.time() * 1000)
    values = [
        (
            f"channel{random.randrange(CHANNELS)}",
            f"user{random.randrange(1_200_000_000)}",
            now - now % 86_400_000,
            now + i,
            uuid.uuid4().hex,
            RECORD,
        )
        for i in range(rows)
    ]
    values.sort(key=lambda row: row[:3])
    return _batched(statement, values, 10)


SHAPES: dict[str, Callable[[Session, int], Statements]] = {
    "minute": lambda session, rows: _minute(session, rows, "minute", words=False),
    "minute+words": lambda session, rows: _minute(session, rows, "minute", words=True),
    "minute+sai": lambda session, rows: _minute(session, rows, "minute_sai", words=True),
    "history": _history,
}


def measure(concurrent_writes: int, rows: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """(rows/s, node CPU µs per row) of each shape and round on a fresh crash-safe node."""
    (port,) = free_ports(1)
    results: dict[str, list[tuple[float, float]]] = {shape: [] for shape in SHAPES}
    with tempfile.TemporaryDirectory(prefix="chatpulse-writes-") as home:
        node = CassandraServer(
            Path(home),
            port,
            yaml_overrides={
                "concurrent_writes": concurrent_writes,
                # a loaded 2-core machine misses the 2 s default now and then: the
                # benchmark measures rates, not timeouts (the same for both configurations)
                "write_request_timeout": "20000ms",
            },
        )
        started = time.monotonic()
        node.start()
        try:
            node.wait_ready(timeout=300)
            print(
                f"  node with concurrent_writes {concurrent_writes} up in "
                f"{time.monotonic() - started:.0f}s (port {port})",
                flush=True,
            )
            pid = node.pid
            assert pid is not None
            cluster = Cluster(["127.0.0.1"], port=port, protocol_version=4)
            session = cluster.connect()
            for statement in SCHEMA:
                session.execute(statement, timeout=60)
            # warm-up: the JIT and the first memtables, not measured
            for make in SHAPES.values():
                execute_concurrent(session, make(session, rows // 4), concurrency=IN_FLIGHT)
            for _ in range(rounds):
                for shape, make in SHAPES.items():
                    statements = make(session, rows)
                    cpu, wall = _cpu_seconds(pid), time.perf_counter()
                    execute_concurrent(
                        session, statements, concurrency=IN_FLIGHT, raise_on_first_error=True
                    )
                    took = time.perf_counter() - wall
                    used = _cpu_seconds(pid) - cpu
                    results[shape].append((rows / took, used / rows * 1e6))
            cluster.shutdown()
        finally:
            node.stop(timeout=60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000, help="rows per shape and round")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--concurrent-writes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--quick", action="store_true", help="5,000 rows, 2 rounds")
    args = parser.parse_args()
    rows, rounds = (5_000, 2) if args.quick else (args.rows, args.rounds)
    print(machine_state(), flush=True)
    for concurrent_writes in args.concurrent_writes:
        results = measure(concurrent_writes, rows, rounds)
        for shape, runs in results.items():
            best_rate = max(rate for rate, _ in runs)
            best_cpu = min(cpu for _, cpu in runs)
            # one figure per line ("label: value unit"), as bench/run_all.py reads them
            print(f"{shape} rows, concurrent_writes {concurrent_writes}: {best_rate:,.0f} rows/s")
            print(
                f"{shape} node CPU per row, concurrent_writes {concurrent_writes}: "
                f"{best_cpu:.0f} us"
            )
    print(machine_state())


if __name__ == "__main__":
    main()
