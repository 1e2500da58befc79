"""Cassandra sink: a Quix ``BatchingSink`` that upserts the processor's results at checkpoints.

Quix flushes sinks before it commits the Kafka transaction, so after a crash a batch is
written again: every statement is an idempotent upsert keyed by what it describes (never a
counter). Within one flush only the newest value of a window or a channel's totals is
written (the batch holds one update per message). Rows go in unlogged batches: raw
messages and a window's leaderboard rows by partition, window rows and totals ten partitions
at a time, so the driver (pure Python per request) is not the bottleneck.
Transient Cassandra errors raise ``SinkBackpressureError``: Quix drops the batch, pauses,
rewinds to the last checkpoint and processes again, so nothing is lost.
"""

import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.concurrent import execute_concurrent
from cassandra.connection import ConnectionException
from cassandra.policies import ExponentialReconnectionPolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from chatpulse.models import ChatMessage, WindowStats
from chatpulse.processor.aggregate import WindowAggregate, top_emotes
from chatpulse.processor.channel import ChannelUpdate
from chatpulse.processor.metrics import ProcessorMetrics
from chatpulse.settings import Settings
from chatpulse.storage import connect
from chatpulse.windows import format_duration

__all__ = ["TRANSIENT_ERRORS", "CassandraSink"]

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    NoHostAvailable,
    OperationTimedOut,
    WriteTimeout,
    ReadTimeout,
    Unavailable,
    ConnectionException,
)
_DAY_MS = 86_400_000
_DATE_OFFSET = 2**31  # CQL `date` is an unsigned day count centred on the epoch
_MESSAGES_PER_BATCH = 60
_ROWS_PER_LEADERBOARD_BATCH = 200
# Window rows and totals are one row per partition: small multi-partition batches (under
# Cassandra's warning threshold of 10 partitions) still cut the driver's per-request cost
# ~10x, which dominates the sink when many channels are active.
_PARTITIONS_PER_BATCH = 10
# Cassandra fails batches above batch_size_fail_threshold (50 KiB by default).
_BATCH_BYTES = 20_000
_json = msgspec.json.Encoder()


def _cql_date(epoch_ms: int) -> int:
    return epoch_ms // _DAY_MS + _DATE_OFFSET


def _row_bytes(row: tuple[Any, ...]) -> int:
    """A generous estimate of a row's size in a batch (text dominates)."""
    return 64 + sum(len(value) * 2 for value in row if isinstance(value, str))


def _batches(
    statement: PreparedStatement, rows: list[tuple[Any, ...]], size: int
) -> Iterable[tuple[BatchStatement, None]]:
    """Rows in unlogged batches of at most ``size`` rows and ~``_BATCH_BYTES``: one driver
    request per batch, not per row, and far below Cassandra's batch size failure limit."""
    group = BatchStatement(batch_type=BatchType.UNLOGGED)
    count = weight = 0
    for row in rows:
        row_weight = _row_bytes(row)
        if count and (count >= size or weight + row_weight > _BATCH_BYTES):
            yield group, None
            group = BatchStatement(batch_type=BatchType.UNLOGGED)
            count = weight = 0
        group.add(statement, row)
        count += 1
        weight += row_weight
    if count:
        yield group, None


class CassandraSink(BatchingSink):
    """Writes messages, window statistics (open and closed) and channel totals."""

    def __init__(
        self,
        settings: Settings,
        metrics: ProcessorMetrics | None = None,
        *,
        retry_after_s: float = 5.0,
        concurrency: int = 64,
        request_timeout_s: float = 10.0,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._metrics = metrics or ProcessorMetrics()
        self._retry_after_s = retry_after_s
        self._concurrency = concurrency
        self._request_timeout_s = request_timeout_s
        self._ttl_s = settings.message_ttl_days * 86_400
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._statements: dict[str, PreparedStatement] = {}

    def setup(self) -> None:
        """Connect and prepare the statements (the schema is created at start-up)."""
        cluster, session = connect(self._settings)
        # Come back quickly after an outage: the default policy waits up to 10 minutes.
        cluster.reconnection_policy = ExponentialReconnectionPolicy(0.5, 5.0)
        cluster.profile_manager.default.request_timeout = self._request_timeout_s
        self._cluster, self._session = cluster, session
        # The keyspace name is validated by the settings ([a-zA-Z][a-zA-Z0-9_]*).
        ks = self._settings.cassandra_keyspace
        cql = {
            "message": f"INSERT INTO {ks}.messages (channel, day, sent_at, id, channel_id, "  # noqa: S608
            "user_id, user_login, display_name, text, is_action, emotes, bits, badges) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
            "window": f"INSERT INTO {ks}.window_stats (channel, window, day, window_start, "  # noqa: S608
            "window_end, messages, unique_chatters, top_emotes, closed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            "leaderboard": f"INSERT INTO {ks}.window_leaderboard (window, window_start, channel, "  # noqa: S608
            "messages, unique_chatters) VALUES (?, ?, ?, ?, ?)",
            "latest": f"INSERT INTO {ks}.latest_window (window, window_start) VALUES (?, ?) "  # noqa: S608
            "USING TIMESTAMP ?",
            "totals": f"INSERT INTO {ks}.channel_totals (channel, total_messages, first_seen, "  # noqa: S608
            "last_seen) VALUES (?, ?, ?, ?)",
        }
        self._statements = {name: session.prepare(text) for name, text in cql.items()}

    def close(self) -> None:
        """Shut the driver down (the app calls this on exit)."""
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None

    def write(self, batch: SinkBatch) -> None:
        """Upsert one partition's batch; transient failures become backpressure."""
        if self._session is None:
            raise RuntimeError("CassandraSink.write before setup")
        updates: list[ChannelUpdate] = [item.value for item in batch]
        statements = list(self._statements_for(updates))
        start = time.perf_counter()
        try:
            results = execute_concurrent(
                self._session, statements, concurrency=self._concurrency, raise_on_first_error=True
            )
        except TRANSIENT_ERRORS as exc:
            self._metrics.sink_backpressure.inc()
            logger.warning(
                "Cassandra write failed for partition %s[%d] (%s); pausing %.1fs and retrying",
                batch.topic,
                batch.partition,
                exc.__class__.__name__,
                self._retry_after_s,
            )
            raise SinkBackpressureError(retry_after=self._retry_after_s) from exc
        self._metrics.sink_write_seconds.observe(time.perf_counter() - start)
        logger.debug(
            "wrote %d statements for partition %s[%d] from offset %d",
            len(results),
            batch.topic,
            batch.partition,
            batch.start_offset,
        )

    def _statements_for(self, updates: list[ChannelUpdate]) -> Iterable[tuple[Any, Any]]:
        st = self._statements
        windows: dict[tuple[str, int, int], WindowAggregate | WindowStats] = {}
        totals: dict[str, ChannelUpdate] = {}
        by_partition: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        for update in updates:
            message = update.message
            day = _cql_date(message.sent_at)
            row = self._message_row(message.channel, day, message)
            by_partition.setdefault((message.channel, day), []).append(row)
            totals[message.channel] = update
            for size, start, aggregate in update.windows:
                windows[(message.channel, size, start)] = aggregate
            for final in update.closed:
                size = final.window_end - final.window_start
                windows[(final.channel, size, final.window_start)] = final

        for rows in by_partition.values():
            yield from _batches(st["message"], rows, _MESSAGES_PER_BATCH)
        yield from self._window_statements(windows)
        totals_rows = [
            (channel, update.total_messages, update.first_seen, update.last_seen)
            for channel, update in totals.items()
        ]
        yield from _batches(st["totals"], totals_rows, _PARTITIONS_PER_BATCH)

    def _window_statements(
        self, windows: dict[tuple[str, int, int], WindowAggregate | WindowStats]
    ) -> Iterable[tuple[Any, Any]]:
        st = self._statements
        latest: dict[str, int] = {}
        leaderboards: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        window_rows: list[tuple[Any, ...]] = []
        for (channel, size, start), value in windows.items():
            name = format_duration(size)
            if isinstance(value, WindowStats):
                closed, emotes = True, value.top_emotes
            else:
                closed, emotes = False, top_emotes(value.emotes)
            row = (
                channel,
                name,
                _cql_date(start),
                start,
                start + size,
                value.messages,
                value.unique_chatters,
                _json.encode(emotes).decode(),
                closed,
            )
            window_rows.append(row)
            leaderboards.setdefault((name, start), []).append(
                (name, start, channel, value.messages, value.unique_chatters)
            )
            latest[name] = max(latest.get(name, start), start)
        yield from _batches(st["window"], window_rows, _PARTITIONS_PER_BATCH)
        # one leaderboard partition per window: its rows go in single-partition batches
        for rows in leaderboards.values():
            yield from _batches(st["leaderboard"], rows, _ROWS_PER_LEADERBOARD_BATCH)
        for name, start in latest.items():
            yield st["latest"], (name, start, start * 1000)

    def _message_row(self, channel: str, day: int, m: ChatMessage) -> tuple[Any, ...]:
        emotes = _json.encode(m.emotes).decode() if m.emotes else "[]"
        return (
            channel,
            day,
            m.sent_at,
            m.id,
            m.channel_id,
            m.user_id,
            m.user_login,
            m.display_name,
            m.text,
            m.is_action,
            emotes,
            m.bits,
            m.badges,
            self._ttl_s,
        )
