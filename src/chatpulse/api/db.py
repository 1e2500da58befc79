"""The API's Cassandra gateway: one driver session, prepared statements, asyncio bridging.

The session is opened in the background and re-opened until it works, so the API starts (and
answers 503 problems) while Cassandra is down, and serves again by itself once it is back.
Driver errors that mean "Cassandra cannot answer now" become :class:`StorageUnavailableError`.
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from cassandra import DriverException, OperationTimedOut, RequestExecutionException
from cassandra.cluster import Cluster, NoHostAvailable, ResponseFuture, Session
from cassandra.policies import ConstantReconnectionPolicy
from cassandra.query import PreparedStatement

from chatpulse.api.errors import StorageUnavailableError
from chatpulse.settings import Settings
from chatpulse.storage import connect, ensure_schema

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
    "unique_chatters, top_emotes, closed FROM {ks}.window_stats "
    "WHERE channel = ? AND window = ? AND day = ? LIMIT 1",
    "stats_latest_of": "SELECT channel, window, window_start, window_end, messages, "
    "unique_chatters, top_emotes, closed FROM {ks}.window_stats "
    "WHERE channel = ? AND window IN ? AND day = ? PER PARTITION LIMIT 1",
    "stats_range": "SELECT channel, window, window_start, window_end, messages, "
    "unique_chatters, top_emotes, closed FROM {ks}.window_stats "
    "WHERE channel = ? AND window = ? AND day = ? AND window_start >= ? AND window_start < ? "
    "LIMIT ?",
    "message_buckets": "SELECT bucket FROM {ks}.message_buckets "
    "WHERE channel = ? AND bucket <= ? AND bucket >= ? LIMIT ?",
    "messages_before_time": "SELECT sent_at, id, record FROM {ks}.messages_bucketed "
    "WHERE channel = ? AND bucket = ? AND sent_at < ? LIMIT ?",
    "messages_before_key": "SELECT sent_at, id, record FROM {ks}.messages_bucketed "
    "WHERE channel = ? AND bucket = ? AND (sent_at, id) < (?, ?) LIMIT ?",
    "latest_window": "SELECT window_start FROM {ks}.latest_window WHERE window = ?",
    "leaderboard": "SELECT channel, messages, unique_chatters FROM {ks}.window_leaderboard "
    "WHERE window = ? AND window_start = ?",
    "ping": "SELECT release_version FROM system.local",
}

_UNAVAILABLE = (NoHostAvailable, OperationTimedOut, RequestExecutionException, DriverException)


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
        self._last_error = "not connected yet"
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._session is not None

    @property
    def last_error(self) -> str:
        return self._last_error

    def start(self) -> None:
        """Begin connecting in the background (returns at once)."""
        self._task = asyncio.get_running_loop().create_task(self._connect_until_done())

    async def _connect_until_done(self) -> None:
        while self._session is None:
            try:
                await asyncio.to_thread(self._connect_once)
            except Exception as exc:  # noqa: BLE001 - any failure means "try again later"
                self._last_error = f"cannot connect to Cassandra: {exc}"
                logger.warning("%s; retrying in %.0f s", self._last_error, self._retry_interval_s)
                await asyncio.sleep(self._retry_interval_s)

    def _connect_once(self) -> None:
        cluster, session = connect(self._settings, connect_timeout=5.0)
        try:
            # Reconnect every second rather than backing off to minutes: the API must serve
            # again soon after Cassandra is back.
            cluster.reconnection_policy = ConstantReconnectionPolicy(1.0, max_attempts=None)
            ensure_schema(session, self._settings)
            ks = self._settings.cassandra_keyspace
            prepared = {
                name: session.prepare(cql.format(ks=ks)) for name, cql in STATEMENTS.items()
            }
        except Exception:
            cluster.shutdown()
            raise
        self._cluster, self._prepared, self._session = cluster, prepared, session
        logger.info("connected to Cassandra, keyspace %s", ks)

    async def execute(self, name: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of statement ``name``; StorageUnavailableError if Cassandra cannot say."""
        session = self._session
        if session is None:
            raise StorageUnavailableError(f"Cassandra is unavailable ({self._last_error}).")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        rows: list[Any] = []
        try:
            response = session.execute_async(
                self._prepared[name], params, timeout=self._request_timeout_s
            )
        except _UNAVAILABLE as exc:
            raise StorageUnavailableError(
                f"Cassandra is unavailable ({type(exc).__name__})."
            ) from exc

        def on_page(page: list[Any]) -> None:
            rows.extend(page)
            if response.has_more_pages:
                response.start_fetching_next_page()
            else:
                loop.call_soon_threadsafe(_resolve, future, rows, None)

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_resolve, future, None, exc)

        _add_callbacks(response, on_page, on_error)
        try:
            return await future
        except _UNAVAILABLE as exc:
            raise StorageUnavailableError(
                f"Cassandra is unavailable ({type(exc).__name__}: {exc})."
            ) from exc

    async def ping(self) -> None:
        """Raise StorageUnavailableError unless Cassandra answers a trivial query."""
        await self.execute("ping")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.shutdown)
        self._session = self._cluster = None


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
