"""The API's Cassandra gateway: one driver session, prepared statements, asyncio bridging.

The session is opened in the background and re-opened until it works, so the API starts (and
answers 503 problems) while Cassandra is down, and serves again by itself once it is back.
The API only reads: it never creates the keyspace or a table (DDL belongs to ``chatpulse init``
and the processor), so it can run with a read-only role; while the schema is missing it
answers 503 "schema not initialised" and prepares its statements again every few seconds.
Every statement is a SELECT, so a read is sent to another Cassandra node as well when no
answer came within ``CHATPULSE_API_SPECULATIVE_DELAY_S`` (at most
``CHATPULSE_API_SPECULATIVE_EXECUTIONS`` more, all within the request's 2 s; the first answer
wins: :mod:`chatpulse.api.speculation`). Why: when a Cassandra node dies, the driver stops using
it as a coordinator at once (its connections close), but the other nodes keep choosing it as a
replica of a quorum read until gossip convicts it, seconds later; such a read waits for
Cassandra's own read timeout (5 s, 10 s for the channel list's token-range scan), past the
API's 2 s, and the request was a 503 although two of three replicas could answer. Another
coordinator usually picks another replica, and Cassandra's own speculative retry does not
cover range scans.
Driver errors become API errors by :func:`~chatpulse.api.driver_errors.classify_cassandra_error`;
their texts (hosts, addresses) go to the log only.
"""

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

from cassandra.cluster import Cluster, ResponseFuture, Session
from cassandra.policies import ConstantReconnectionPolicy
from cassandra.pool import Host
from cassandra.query import PreparedStatement

from chatpulse.api.driver_errors import SchemaNotFoundError, classify_cassandra_error
from chatpulse.api.errors import ApiError, StorageUnavailableError
from chatpulse.api.log_limits import KindedLog
from chatpulse.api.speculation import first_answer
from chatpulse.settings import Settings
from chatpulse.storage import connect
from chatpulse.words import MAX_QUERY_WORDS

__all__ = ["STATEMENTS", "CassandraGateway"]

logger = logging.getLogger(__name__)

# The API's only queries; ``{ks}`` is the configured keyspace (validated by the settings).
STATEMENTS: dict[str, str] = {
    "totals_one": "SELECT channel, total_messages, first_seen, last_seen "
    "FROM {ks}.channel_totals WHERE channel = ?",
    "totals_first": "SELECT channel, total_messages, first_seen, last_seen, token(channel) "
    "FROM {ks}.channel_totals LIMIT ?",
    "totals_after": "SELECT channel, total_messages, first_seen, last_seen, token(channel) "
    "FROM {ks}.channel_totals WHERE token(channel) > ? LIMIT ?",
    "stats_latest": "SELECT channel, window, window_start, window_end, messages, "
    "unique_chatters, top_emotes, closed, top_chatters, deleted_messages, timeouts, bans, "
    "sessions_started, sessions_ended, session_mean_s, session_p90_s "
    "FROM {ks}.window_stats "
    "WHERE channel = ? AND window = ? AND day = ? LIMIT 1",
    "stats_latest_of": "SELECT channel, window, window_start, window_end, messages, "
    "unique_chatters, top_emotes, closed, top_chatters, deleted_messages, timeouts, bans, "
    "sessions_started, sessions_ended, session_mean_s, session_p90_s "
    "FROM {ks}.window_stats "
    "WHERE channel = ? AND window IN ? AND day = ? PER PARTITION LIMIT 1",
    "stats_range": "SELECT channel, window, window_start, window_end, messages, "
    "unique_chatters, top_emotes, closed, top_chatters, deleted_messages, timeouts, bans, "
    "sessions_started, sessions_ended, session_mean_s, session_p90_s "
    "FROM {ks}.window_stats "
    "WHERE channel = ? AND window = ? AND day = ? AND window_start >= ? AND window_start < ? "
    "LIMIT ?",
    "message_buckets": "SELECT bucket FROM {ks}.message_buckets "
    "WHERE channel = ? AND bucket <= ? AND bucket >= ? LIMIT ?",
    "messages_before_time": "SELECT sent_at, id, record, deleted FROM {ks}.messages_bucketed "
    "WHERE channel = ? AND bucket = ? AND sent_at < ? LIMIT ?",
    "messages_before_key": "SELECT sent_at, id, record, deleted FROM {ks}.messages_bucketed "
    "WHERE channel = ? AND bucket = ? AND (sent_at, id) < (?, ?) LIMIT ?",
    "user_messages_before_time": "SELECT sent_at, id, record, deleted FROM {ks}.user_messages "
    "WHERE channel = ? AND user_login = ? AND bucket = ? AND sent_at < ? AND sent_at >= ? "
    "LIMIT ?",
    "user_messages_before_key": "SELECT sent_at, id, record, deleted FROM {ks}.user_messages "
    "WHERE channel = ? AND user_login = ? AND bucket = ? AND (sent_at, id) < (?, ?) "
    "AND sent_at >= ? LIMIT ?",
    "spikes_first": "SELECT channel, window_start, window, window_end, messages, "
    "baseline_median, factor FROM {ks}.chat_spikes WHERE channel = ? LIMIT ?",
    "spikes_before": "SELECT channel, window_start, window, window_end, messages, "
    "baseline_median, factor FROM {ks}.chat_spikes WHERE channel = ? AND window_start < ? "
    "LIMIT ?",
    "latest_window": "SELECT window_start FROM {ks}.latest_window WHERE window = ?",
    "leaderboard": "SELECT channel, messages, unique_chatters FROM {ks}.window_leaderboard "
    "WHERE window = ? AND window_start = ?",
    "ping": "SELECT release_version FROM system.local",
}


# A search asks for MAX_QUERY_WORDS words, a query of fewer repeating its first word (the
# index intersects the same word's rows again): one statement for any query.
_WORDS = " AND words CONTAINS ?" * MAX_QUERY_WORDS
STATEMENTS["search_before_time"] = (
    "SELECT sent_at, id, record, deleted FROM {ks}.messages_bucketed "  # noqa: S608 - constants
    f"WHERE channel = ? AND bucket = ? AND sent_at < ?{_WORDS} LIMIT ?"
)
STATEMENTS["search_before_key"] = (
    "SELECT sent_at, id, record, deleted FROM {ks}.messages_bucketed "  # noqa: S608 - constants
    f"WHERE channel = ? AND bucket = ? AND (sent_at, id) < (?, ?){_WORDS} LIMIT ?"
)
# The keyspace's tables the statements read.
TABLES = frozenset(re.findall(r"FROM \{ks\}\.(\w+)", " ".join(STATEMENTS.values())))


class CassandraGateway:
    """Runs the prepared :data:`STATEMENTS`; ``start`` connects in the background."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry_interval_s: float = 2.0,
        request_timeout_s: float = 2.0,
    ) -> None:
        self._settings = settings
        self._retry_interval_s = retry_interval_s
        self._request_timeout_s = request_timeout_s
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}
        # Why requests cannot be served yet (None once prepared).
        self._not_ready: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = KindedLog(logger)

    @property
    def connected(self) -> bool:
        return bool(self._prepared)

    def start(self) -> None:
        """Begin connecting in the background (returns at once)."""
        self._task = asyncio.get_running_loop().create_task(self._connect_until_done())

    async def _connect_until_done(self) -> None:
        while not self._prepared:
            try:
                await asyncio.to_thread(self._connect_once)
            except Exception as exc:  # noqa: BLE001 - any failure means "try again later"
                self._not_ready = exc
                answer = classify_cassandra_error(exc)
                self._log.warning(
                    "connect",
                    "Cassandra cannot serve the API yet (answering %d %s): %s: %s; "
                    "retrying in %.0f s",
                    answer.status,
                    answer.slug,
                    type(exc).__name__,
                    exc,
                    self._retry_interval_s,
                )
                await asyncio.sleep(self._retry_interval_s)
        self._not_ready = None

    def _connect_once(self) -> None:
        if self._cluster is None:
            cluster, session = connect(self._settings, connect_timeout=5.0)
            # Reconnect every second rather than backing off to minutes: the API must serve
            # again soon after Cassandra is back.
            cluster.reconnection_policy = ConstantReconnectionPolicy(1.0, max_attempts=None)
            self._cluster, self._session = cluster, session
        assert self._session is not None
        ks = self._settings.cassandra_keyspace
        # Looked up in the driver's schema metadata first: preparing against a missing table
        # fails too, but the driver then logs an error with a traceback at every attempt.
        keyspace = self._cluster.metadata.keyspaces.get(ks)
        missing = TABLES - set(keyspace.tables if keyspace is not None else ())
        if missing:
            raise SchemaNotFoundError(
                f"keyspace {ks} does not exist"
                if keyspace is None
                else f"keyspace {ks} lacks the tables {', '.join(sorted(missing))}"
            )
        # The session is kept when this fails: only the schema is looked for again.
        prepared = {
            name: self._session.prepare(cql.format(ks=ks)) for name, cql in STATEMENTS.items()
        }
        self._prepared = prepared
        logger.info("connected to Cassandra, keyspace %s", ks)

    def _unavailable(self) -> ApiError:
        if self._not_ready is None:
            return StorageUnavailableError()
        return classify_cassandra_error(self._not_ready)

    async def execute(self, name: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of statement ``name``; an ApiError saying what failed if Cassandra fails.

        Sent to another node too when the first is slow (the module docstring says why)."""
        session = self._session
        if session is None or not self._prepared:
            raise self._unavailable()
        responses: list[ResponseFuture] = []

        def attempt(number: int, timeout_s: float) -> "asyncio.Future[list[Any]] | None":
            host = None
            if number:
                host = self._another_host(responses)
                if host is None:
                    return None
            return self._start(session, name, params, timeout_s, host=host, responses=responses)

        try:
            return await first_answer(
                attempt,
                delay_s=self._settings.api_speculative_delay_s,
                extra=self._settings.api_speculative_executions,
                budget_s=self._request_timeout_s,
                transient=lambda exc: isinstance(
                    classify_cassandra_error(exc), StorageUnavailableError
                ),
            )
        except Exception as exc:  # every driver error is classified
            raise self._failed(name, exc) from exc

    def _another_host(self, responses: list[ResponseFuture]) -> Host | None:
        """A node up that none of ``responses`` has asked yet (None: there is none)."""
        if self._cluster is None:
            return None
        asked = {host for response in responses for host in response.attempted_hosts or ()}
        for host in self._cluster.metadata.all_hosts():
            if host.is_up and host not in asked:
                return host
        return None

    def _start(
        self,
        session: Session,
        name: str,
        params: Sequence[Any],
        timeout_s: float,
        *,
        host: Host | None,
        responses: list[ResponseFuture],
    ) -> "asyncio.Future[list[Any]]":
        """Send one request (to ``host``, or as the load balancing policy chooses); its own
        rows, all pages, in the returned future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        rows: list[Any] = []
        try:
            response = session.execute_async(
                self._prepared[name], params, timeout=timeout_s, host=host
            )
        except Exception as exc:  # noqa: BLE001 - handed to the caller like any failure
            future.set_exception(exc)
            return future
        responses.append(response)

        def on_page(page: list[Any]) -> None:
            rows.extend(page)
            if response.has_more_pages:
                response.start_fetching_next_page()
            else:
                loop.call_soon_threadsafe(_resolve, future, rows, None)

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_resolve, future, None, exc)

        _add_callbacks(response, on_page, on_error)
        return future

    def _failed(self, name: str, exc: Exception) -> ApiError:
        answer = classify_cassandra_error(exc)
        self._log.warning(
            f"{name}:{answer.slug}",
            "Cassandra statement %s failed (answering %d %s): %s: %s",
            name,
            answer.status,
            answer.slug,
            type(exc).__name__,
            exc,
        )
        return answer

    async def ping(self) -> None:
        """Raise StorageUnavailableError unless Cassandra answers a trivial query."""
        await self.execute("ping")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.shutdown)
        self._session = self._cluster = None
        self._prepared = {}


def _add_callbacks(response: ResponseFuture, on_page: Any, on_error: Any) -> None:
    response.add_callbacks(on_page, on_error)


def _resolve(
    future: "asyncio.Future[list[Any]]", rows: list[Any] | None, exc: BaseException | None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(rows or [])
