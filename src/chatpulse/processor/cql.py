"""The processor's Cassandra side: one driver session, its prepared upserts, and batching.

Every statement is an idempotent upsert keyed by what it describes (never a counter), so a
batch written again after a crash or a rewind changes nothing. Rows go in unlogged batches
(one driver request per batch, not per row), far below Cassandra's batch size failure limit.
Rows are serialised by :mod:`chatpulse.processor.binding`, not bound by the driver one
``BoundStatement`` at a time.

:class:`InFlight` keeps a bounded number of asynchronous requests outstanding while a
checkpoint's rows are sent, and waits for them all (up to a deadline) before the checkpoint
commits.
"""

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from cassandra import InvalidRequest, OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.connection import ConnectionException
from cassandra.policies import ExponentialReconnectionPolicy
from cassandra.query import PreparedStatement

from chatpulse.processor.binding import RowBatch, RowBinder
from chatpulse.processor.errors import FlushTimeout
from chatpulse.settings import Settings
from chatpulse.storage import connect, ensure_schema

__all__ = [
    "BATCH_BYTES",
    "TRANSIENT_ERRORS",
    "CassandraWriter",
    "InFlight",
    "batches",
    "cql_date",
    "schema_missing",
]

logger = logging.getLogger(__name__)


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    FlushTimeout,  # a flush that outlives its deadline is retried like any slow write
    NoHostAvailable,
    OperationTimedOut,
    WriteTimeout,
    ReadTimeout,
    Unavailable,
    ConnectionException,
)
# Sent again by InFlight (not a flush's own timeout: that ends the flush).
_RESENT_ERRORS = tuple(error for error in TRANSIENT_ERRORS if error is not FlushTimeout)
_DAY_MS = 86_400_000
_DATE_OFFSET = 2**31  # CQL `date` is an unsigned day count centred on the epoch
# Cassandra fails batches above batch_size_fail_threshold (50 KiB by default).
BATCH_BYTES = 20_000


# Cassandra 4-5 ("keyspace x does not exist", "table x does not exist"), older
# ("Keyspace x does not exist", "unconfigured table x").
_MISSING_SCHEMA = re.compile(
    r"\b(keyspace|table) \S+ does not exist|unconfigured table", re.IGNORECASE
)


def schema_missing(exc: InvalidRequest) -> bool:
    """Whether Cassandra refused a request because its keyspace or table does not exist."""
    return _MISSING_SCHEMA.search(str(exc)) is not None


def cql_date(epoch_ms: int) -> int:
    """The CQL ``date`` (as the driver binds it) of an epoch-milliseconds instant."""
    return epoch_ms // _DAY_MS + _DATE_OFFSET


def batches(
    binder: RowBinder,
    rows: Iterable[list[bytes | None]],
    size: int,
    weights: Iterable[int] | None = None,
) -> Iterable[RowBatch]:
    """Rows (serialised by ``binder``) in unlogged batches of at most ``size`` rows and
    ~:data:`BATCH_BYTES` (by the rows' ``weights``, estimated sizes in bytes; 64 bytes each
    when not given)."""
    group = RowBatch()
    count = weight = 0
    row_weights = iter(weights) if weights is not None else None
    for row in rows:
        row_weight = next(row_weights) if row_weights is not None else 64
        if count and (count >= size or weight + row_weight > BATCH_BYTES):
            yield group
            group = RowBatch()
            count = weight = 0
        group.add_values(binder, row)
        count += 1
        weight += row_weight
    if count:
        yield group


class CassandraWriter:
    """The processor's driver session and prepared statements."""

    def __init__(self, settings: Settings, *, request_timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._request_timeout_s = request_timeout_s
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self.statements: dict[str, PreparedStatement] = {}
        self.binders: dict[str, RowBinder] = {}

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
        # The keyspace name is validated by the settings ([a-zA-Z][a-zA-Z0-9_]*), the TTLs
        # are ints: both are safe in the statement text, and a literal TTL is not bound
        # per row.
        ks = self._settings.cassandra_keyspace
        ttl_s = self._settings.message_ttl_days * 86_400
        stats_ttl_s = self._settings.stats_ttl_days * 86_400
        cql = {
            # an UPDATE adding to the words set: an INSERT of a collection writes a tombstone
            # per row first (to clear an older value); adding the same words again is a no-op
            "message": f"UPDATE {ks}.messages_bucketed USING TTL {ttl_s:d} "  # noqa: S608
            "SET record = ?, words = words + ? "
            "WHERE channel = ? AND bucket = ? AND sent_at = ? AND id = ?",
            "user_message": f"INSERT INTO {ks}.user_messages "  # noqa: S608
            "(channel, user_login, bucket, sent_at, id, record) VALUES (?, ?, ?, ?, ?, ?) "
            f"USING TTL {ttl_s:d}",
            # rewritten at each checkpoint with messages in the bucket: it outlives them
            "bucket": f"INSERT INTO {ks}.message_buckets (channel, bucket) VALUES (?, ?) "  # noqa: S608
            f"USING TTL {ttl_s:d}",
            "window": f"INSERT INTO {ks}.window_stats (channel, window, day, window_start, "  # noqa: S608
            "window_end, messages, unique_chatters, top_emotes, closed, top_chatters, "
            "deleted_messages, timeouts, bans, sessions_started, sessions_ended, session_mean_s, "
            "session_p90_s) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL {stats_ttl_s:d}",
            # the moderation join's marks: the TTL the message row has left
            "mark_message": f"UPDATE {ks}.messages_bucketed USING TTL ? "  # noqa: S608
            "SET deleted = true WHERE channel = ? AND bucket = ? AND sent_at = ? AND id = ?",
            "mark_user_message": f"UPDATE {ks}.user_messages USING TTL ? "  # noqa: S608
            "SET deleted = true "
            "WHERE channel = ? AND user_login = ? AND bucket = ? AND sent_at = ? AND id = ?",
            "leaderboard": f"INSERT INTO {ks}.window_leaderboard (window, window_start, channel, "  # noqa: S608
            f"messages, unique_chatters) VALUES (?, ?, ?, ?, ?) USING TTL {stats_ttl_s:d}",
            "latest": f"INSERT INTO {ks}.latest_window (window, window_start) VALUES (?, ?) "  # noqa: S608
            "USING TIMESTAMP ?",
            "totals": f"INSERT INTO {ks}.channel_totals (channel, total_messages, first_seen, "  # noqa: S608
            "last_seen) VALUES (?, ?, ?, ?)",
            "spike": f"INSERT INTO {ks}.chat_spikes (channel, window_start, window, "  # noqa: S608
            "window_end, messages, baseline_median, factor) VALUES (?, ?, ?, ?, ?, ?, ?) "
            f"USING TTL {stats_ttl_s:d}",
        }
        self.use_statements({name: session.prepare(text) for name, text in cql.items()})

    @property
    def keyspace(self) -> str:
        return self._settings.cassandra_keyspace

    @property
    def message_ttl_s(self) -> int:
        """The TTL of message rows, in seconds (CHATPULSE_MESSAGE_TTL_DAYS)."""
        return self._settings.message_ttl_days * 86_400

    def create_schema(self) -> None:
        """Create the keyspace and tables if missing (the idempotent DDL of ``chatpulse
        init``); the driver prepares the statements again when they are next used."""
        ensure_schema(self.session, self._settings)

    def use_statements(self, statements: dict[str, PreparedStatement]) -> None:
        """Take these prepared statements (by name) and a row binder for each."""
        self.statements = statements
        self.binders = {name: RowBinder(statement) for name, statement in statements.items()}

    def close(self) -> None:
        """Shut the driver down (the app calls this on exit)."""
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None
            self._session = None


class InFlight:
    """The asynchronous requests of one checkpoint's flush, at most ``limit`` outstanding.

    ``submit`` sends at once and blocks only while ``limit`` requests are outstanding;
    ``wait`` returns when all have completed and raises the first error, or
    :class:`FlushTimeout` once ``deadline`` (``time.monotonic()``) passes: a flush must end
    well within Quix's bounded revoke flush and the Kafka transaction timeout. Completions
    arrive on the driver's event loop thread. One object serves one flush, so requests of an
    abandoned flush can never be mistaken for the next one's.

    A request that fails transiently (a write timeout, an unavailable replica, a lost
    connection) is sent again, up to ``attempts`` sends in all, before its error counts: every
    statement is an idempotent upsert. Why: a loaded cluster times a few writes out now and
    then, and failing the flush for one of them meant Quix dropped the whole checkpoint,
    paused 5 s and processed it again; catching up a backlog (after a Kafka outage), whose
    checkpoints hold thousands of messages, went on failing that way for minutes. The resends
    are made by the flushing thread (``submit``/``wait``), never on the driver's event loop.
    """

    def __init__(
        self,
        session: Session,
        limit: int,
        deadline: float,
        *,
        attempts: int = 1,
        on_retry: Callable[[Exception], None] | None = None,
    ) -> None:
        self._session = session
        self._limit = limit
        self._deadline = deadline
        self._attempts = attempts
        self._on_retry = on_retry
        self._done = threading.Condition()
        self._outstanding = 0
        # failed requests to send again: (statement, parameters, sends so far)
        self._again: list[tuple[Any, Any, int]] = []
        self.error: Exception | None = None

    def submit(self, statement: Any, parameters: Any = None) -> bool:
        """Send one request; False once a request has failed (``wait`` raises it)."""
        return self._resend_failed() and self._send(statement, parameters, 1)

    def wait(self) -> None:
        """Return once every request completed; raise the first error or FlushTimeout."""
        while True:
            if not self._resend_failed():
                break
            with self._done:
                if self.error is not None or not (self._outstanding or self._again):
                    break
                if not self._again:
                    self._wait_a_little()
        if self.error is not None:
            raise self.error

    def _resend_failed(self) -> bool:
        """Send the requests that failed transiently again; False once one failed for good."""
        while True:
            with self._done:
                if self.error is not None:
                    return False
                if not self._again:
                    return True
                statement, parameters, sends = self._again.pop()
            if not self._send(statement, parameters, sends + 1):
                return False

    def _send(self, statement: Any, parameters: Any, sends: int) -> bool:
        with self._done:
            while self._outstanding >= self._limit and self.error is None:
                self._wait_a_little()
            if self.error is not None:
                return False
            self._outstanding += 1
        try:
            future = self._session.execute_async(statement, parameters)
        except Exception as exc:  # noqa: BLE001 - kept for wait() to raise
            self._settle(exc)
            return False
        future.add_callbacks(
            self._succeeded, self._failed, errback_args=(statement, parameters, sends)
        )
        return True

    def _wait_a_little(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or not self._done.wait(remaining):
            raise FlushTimeout(
                f"{self._outstanding} Cassandra writes still pending at the deadline"
            )

    def _succeeded(self, _rows: Any) -> None:
        self._settle(None)

    def _failed(self, exc: Exception, statement: Any, parameters: Any, sends: int) -> None:
        if sends < self._attempts and isinstance(exc, _RESENT_ERRORS):
            with self._done:
                self._outstanding -= 1
                self._again.append((statement, parameters, sends))
                self._done.notify_all()
            if self._on_retry is not None:
                self._on_retry(exc)
            return
        self._settle(exc)

    def _settle(self, exc: Exception | None) -> None:
        with self._done:
            self._outstanding -= 1
            if exc is not None and self.error is None:
                self.error = exc
            self._done.notify_all()
