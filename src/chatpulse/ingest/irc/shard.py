"""A shard: up to ``channels_per_connection`` channels on one (re)connecting connection.

Owns the reconnect loop (backoff, make-before-break on RECONNECT) and keeps the
connection's channels in step with the ones asked for. The client (:mod:`.client`) creates
the shards and hands each the same :class:`ShardContext`; a shard knows nothing else of it.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chatpulse.errors import ChatpulseError
from chatpulse.ingest.errors import retriable
from chatpulse.ingest.irc.connection import IrcConnection
from chatpulse.ingest.irc.ratelimit import SlidingWindowLimiter, unanswered_joins

__all__ = ["Shard", "ShardContext", "ShardCounters"]

logger = logging.getLogger(__name__)


@dataclass
class ShardCounters:
    """Counters every shard of a client adds to (for metrics and tests)."""

    reconnects: int = 0
    join_retries: int = 0
    connect_attempts: int = 0


@dataclass(frozen=True)
class ShardContext:
    """What the shards of one client share: limits, a connection factory, where to report.

    ``new_connection`` makes an unopened connection; ``backoff(attempt)`` is the delay before
    connect attempt ``attempt``; ``on_fatal`` is told of an error no reconnect can fix (a
    refused login), after which the shard stops.
    """

    new_connection: Callable[[], IrcConnection]
    join_limiter: SlidingWindowLimiter
    connect_limiter: SlidingWindowLimiter
    backoff: Callable[[int], float]
    on_fatal: Callable[[BaseException], None]
    join_confirm_timeout_s: float
    stable_after_s: float  # a connection that lived this long resets the backoff
    drain_timeout_s: float
    counters: ShardCounters = field(default_factory=ShardCounters)


class Shard:
    """Up to ``channels_per_connection`` channels on one (re)connecting connection."""

    def __init__(self, context: ShardContext, index: int) -> None:
        self.context = context
        self.index = index
        self.channels: set[str] = set()
        self.conn: IrcConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self._joiners: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"twitch-shard-{self.index}")

    def add(self, channel: str) -> None:
        self.channels.add(channel)
        if self.conn is not None and not self.conn.closed.is_set():
            self._spawn_joins(self.conn, [channel])

    def remove(self, channel: str) -> None:
        self.channels.discard(channel)
        conn = self.conn
        if conn is not None and not conn.closed.is_set():
            self._spawn_parts(conn, [channel])

    def _spawn_parts(self, conn: IrcConnection, channels: list[str]) -> None:
        # Forget them now, so that a join right after this part is not taken as done already.
        conn.requested.difference_update(channels)

        async def part_all() -> None:
            for channel in channels:
                with contextlib.suppress(ConnectionError, OSError):
                    await conn.part(channel)

        task = asyncio.create_task(part_all())
        self._joiners.add(task)
        task.add_done_callback(self._joiners.discard)

    def _reconcile(self, conn: IrcConnection) -> None:
        """Catch up with joins/parts asked for while ``conn`` was being set up."""
        missing = sorted(self.channels - conn.requested)
        if missing:
            self._spawn_joins(conn, missing)
        extra = sorted(conn.requested - self.channels)
        if extra:
            self._spawn_parts(conn, extra)

    def _spawn_joins(self, conn: IrcConnection, channels: list[str]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._join_all(conn, channels))
        self._joiners.add(task)
        task.add_done_callback(self._joiners.discard)
        return task

    async def _join_all(self, conn: IrcConnection, channels: list[str]) -> None:
        for channel in channels:
            if channel not in self.channels or channel in conn.requested:
                continue
            await self.context.join_limiter.acquire()
            if channel not in self.channels or channel in conn.requested:
                continue
            if conn.closed.is_set():
                return
            try:
                await conn.join(channel)
            except (ConnectionError, OSError):
                return

    async def _retry_unanswered_joins(self, conn: IrcConnection) -> None:
        """While ``conn`` lives, JOIN again the channels Twitch did not answer in time."""
        timeout_s = self.context.join_confirm_timeout_s
        while not conn.closed.is_set():
            await asyncio.sleep(timeout_s / 2)
            stale = unanswered_joins(
                conn.join_sent,
                conn.joined | conn.join_failed,
                self.channels,
                time.monotonic(),
                timeout_s,
            )
            if not stale or conn.closed.is_set():
                continue
            logger.warning(
                "shard %d: connection %d: no answer to the JOIN of %d channel(s) (%s) in %.0f s: "
                "joining again",
                self.index,
                conn.id,
                len(stale),
                ", ".join(stale[:5]),
                timeout_s,
            )
            self.context.counters.join_retries += len(stale)
            conn.requested.difference_update(stale)  # so that _join_all sends them again
            for channel in stale:
                del conn.join_sent[channel]  # re-stamped when the JOIN goes out
            self._spawn_joins(conn, stale)

    async def _connect(self, *, wait_joined: bool) -> IrcConnection:
        await self.context.connect_limiter.acquire()
        self.context.counters.connect_attempts += 1
        conn = self.context.new_connection()
        try:
            await conn.open()
            retry = asyncio.create_task(self._retry_unanswered_joins(conn))
            self._joiners.add(retry)
            retry.add_done_callback(self._joiners.discard)
            joining = self._spawn_joins(conn, sorted(self.channels))
            if wait_joined:
                await joining
                wanted = set(self.channels)
                if not await conn.wait_joined(wanted, self.context.join_confirm_timeout_s):
                    logger.warning(
                        "shard %d: connection %d did not confirm all %d joins in time",
                        self.index,
                        conn.id,
                        len(wanted),
                    )
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        conn: IrcConnection | None = None
        connected_at = 0.0
        try:
            while True:
                if conn is None:
                    attempt += 1
                    await asyncio.sleep(self.context.backoff(attempt))
                    try:
                        conn = await self._connect(wait_joined=False)
                    except (OSError, TimeoutError, ChatpulseError) as exc:
                        if not retriable(exc):
                            raise
                        logger.warning(
                            "shard %d: connect attempt %d failed: %s", self.index, attempt, exc
                        )
                        continue
                    self.conn, connected_at = conn, loop.time()
                await _first_of(conn.closed.wait(), conn.reconnect_requested.wait())
                if conn.closed.is_set():
                    logger.info("shard %d: connection %d lost, reconnecting", self.index, conn.id)
                    self.context.counters.reconnects += 1
                    if loop.time() - connected_at >= self.context.stable_after_s:
                        attempt = 0  # it was healthy: the next try is immediate again
                    conn = self.conn = None
                    continue
                conn = await self._replace(conn)
                if conn is not None:
                    connected_at = loop.time()
        except ChatpulseError as exc:  # not retriable (a refused login): this shard stops
            self.context.on_fatal(exc)
        finally:
            for open_conn in (conn, self.conn):
                if open_conn is not None:
                    open_conn.abort()
            for task in list(self._joiners):
                task.cancel()

    async def _replace(self, old: IrcConnection) -> IrcConnection | None:
        """RECONNECT: open and join a new connection first, then let the old one go."""
        self.context.counters.reconnects += 1
        try:
            new = await self._connect(wait_joined=True)
        except (OSError, TimeoutError, ChatpulseError) as exc:
            if not retriable(exc):
                raise
            # Keep reading the old connection until the server closes it, then reconnect.
            logger.warning("shard %d: replacement connection failed: %s", self.index, exc)
            await old.closed.wait()
            return None
        self.conn = new
        self._reconcile(new)
        logger.info("shard %d: connection %d replaces %d", self.index, new.id, old.id)
        await old.quit_and_drain(self.context.drain_timeout_s)
        return new


async def _first_of(*waits: object) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
