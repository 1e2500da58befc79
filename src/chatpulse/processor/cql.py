"""The processor's Cassandra side: one driver session, its prepared upserts, and batching.

Every statement is an idempotent upsert keyed by what it describes (never a counter), so a
batch written again after a crash or a rewind changes nothing. Rows go in unlogged batches
(one driver request per batch, not per row: the driver spends ~7 µs of Python per bound row
and about as much again per request), far below Cassandra's batch size failure limit.

:class:`InFlight` keeps a bounded number of asynchronous requests outstanding, so a sink can
send rows while the processor goes on counting and only wait for them at the checkpoint.
"""

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import Cluster, NoHostAvailable, ResponseFuture, Session
from cassandra.connection import ConnectionException
from cassandra.policies import ExponentialReconnectionPolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from chatpulse.settings import Settings
from chatpulse.storage import connect

__all__ = [
    "BATCH_BYTES",
    "TRANSIENT_ERRORS",
    "CassandraWriter",
    "InFlight",
    "batches",
    "cql_date",
]

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
# Cassandra fails batches above batch_size_fail_threshold (50 KiB by default).
BATCH_BYTES = 20_000


def cql_date(epoch_ms: int) -> int:
    """The CQL ``date`` (as the driver binds it) of an epoch-milliseconds instant."""
    return epoch_ms // _DAY_MS + _DATE_OFFSET


def batches(
    statement: PreparedStatement | str,
    rows: Iterable[tuple[Any, ...]],
    size: int,
    weights: Iterable[int] | None = None,
) -> Iterable[BatchStatement]:
    """Rows in unlogged batches of at most ``size`` rows and ~:data:`BATCH_BYTES` (by the
    rows' ``weights``, estimated sizes in bytes; 64 bytes each when not given)."""
    group = BatchStatement(batch_type=BatchType.UNLOGGED)
    count = weight = 0
    row_weights = iter(weights) if weights is not None else None
    for row in rows:
        row_weight = next(row_weights) if row_weights is not None else 64
        if count and (count >= size or weight + row_weight > BATCH_BYTES):
            yield group
            group = BatchStatement(batch_type=BatchType.UNLOGGED)
            count = weight = 0
        group.add(statement, row)
        count += 1
        weight += row_weight
    if count:
        yield group


class CassandraWriter:
    """The processor's driver session and prepared statements, shared by its sinks."""

    def __init__(self, settings: Settings, *, request_timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._request_timeout_s = request_timeout_s
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self.statements: dict[str, PreparedStatement] = {}

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("CassandraWriter used before setup()")
        return self._session

    def setup(self) -> None:
        """Connect and prepare the statements once (each sink calls this at start)."""
        if self._session is not None:
            return
        cluster, session = connect(self._settings)
        # Come back quickly after an outage: the default policy waits up to 10 minutes.
        cluster.reconnection_policy = ExponentialReconnectionPolicy(0.5, 5.0)
        cluster.profile_manager.default.request_timeout = self._request_timeout_s
        self._cluster, self._session = cluster, session
        # The keyspace name is validated by the settings ([a-zA-Z][a-zA-Z0-9_]*), the TTL
        # is an int: both are safe in the statement text, and a literal TTL is not bound
        # per row.
        ks = self._settings.cassandra_keyspace
        ttl_s = self._settings.message_ttl_days * 86_400
        cql = {
            "message": f"INSERT INTO {ks}.messages (channel, day, sent_at, id, record) "  # noqa: S608
            f"VALUES (?, ?, ?, ?, ?) USING TTL {ttl_s:d}",
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
        self.statements = {name: session.prepare(text) for name, text in cql.items()}

    def close(self) -> None:
        """Shut the driver down (the app calls this on exit)."""
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None
            self._session = None


class InFlight:
    """Asynchronous requests of one sink, at most ``limit`` outstanding.

    ``submit`` sends at once and blocks only when ``limit`` requests are pending (that is
    the backpressure on the processing loop); ``wait`` collects them all and raises the
    first error. A failed request is kept until ``wait`` or ``clear``: nothing more is sent
    in between, since the checkpoint will be dropped and processed again anyway.
    """

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._pending: deque[ResponseFuture] = deque()
        self.error: Exception | None = None
        self._generation = 0

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, session: Session, statement: Any, parameters: Any = None) -> None:
        if self.error is not None:
            return
        try:
            future = session.execute_async(statement, parameters)
            future.add_errback(self._failed, self._generation)
            self._pending.append(future)
            while len(self._pending) > self._limit:
                self._pending.popleft().result()
        except Exception as exc:  # noqa: BLE001  kept for wait() to raise in the checkpoint
            self.error = exc

    def _failed(self, exc: Exception, generation: int) -> None:
        # the driver's event loop thread: stop sending until the checkpoint raises it
        # (a request forgotten by ``clear`` may still fail later: not this checkpoint's)
        if self.error is None and generation == self._generation:
            self.error = exc

    def wait(self) -> None:
        """Wait for every request; raise the first error (and forget the rest)."""
        try:
            while self._pending and self.error is None:
                try:
                    self._pending.popleft().result()
                except Exception as exc:  # noqa: BLE001
                    self.error = exc
            if self.error is not None:
                raise self.error
        finally:
            self.clear()

    def clear(self) -> None:
        """Forget the outstanding requests (they may still land: every write is an upsert)."""
        self._pending.clear()
        self.error = None
        self._generation += 1
