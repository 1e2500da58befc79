"""A local asyncio server speaking Twitch's IRC dialect, for tests, benchmarks and demos.

Each channel's stream (replay or simulation) starts when the channel is first joined and is
broadcast to every connection joined to it. While no connection is in a channel that has
started, its lines are kept and delivered to the next connection that joins it: a client
that reconnects after a drop or a RECONNECT receives every line exactly once (a client that
joins before leaving gets the overlap twice, as from real Twitch, and must de-duplicate).
"""

import asyncio
import contextlib
import heapq
import logging
import math
import ssl
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from chatpulse.fake_twitch.session import Session
from chatpulse.fake_twitch.source import Source

__all__ = ["FakeTwitchServer"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Channel:
    name: str
    lines: Iterator[tuple[float, str]]
    started_at: float
    members: set[Session] = field(default_factory=set)
    pending: deque[str] = field(default_factory=deque)
    next_line: str = ""
    sent: int = 0
    done: bool = False
    parked: bool = False  # as-fast-as-possible stream waiting for a client to rejoin


class FakeTwitchServer:
    """Serve ``source`` on ``host:port`` (port 0 picks a free one; see :attr:`url`).

    ``speed`` scales the streams' timing (2.0 = twice as fast); 0 or ``inf`` sends as fast
    as the clients read. Control from tests: :meth:`send_reconnect`, :meth:`drop_connections`,
    :meth:`send_ping`, :meth:`inject`; observe :attr:`join_log`, :meth:`sent`, counters.
    """

    def __init__(
        self,
        source: Source,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        ping_interval_s: float = 300.0,
        reconnect_grace_s: float = 10.0,
        reject_tokens: Iterable[str] = (),
        suspended_channels: Iterable[str] = (),
        batch_lines: int = 500,
        drain_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.source = source
        self.host, self._port = host, port
        self.fast = speed <= 0 or math.isinf(speed)
        self.speed = speed
        self.ping_interval_s = ping_interval_s
        self.reconnect_grace_s = reconnect_grace_s
        self.reject_tokens = frozenset(reject_tokens)
        self.suspended_channels = frozenset(suspended_channels)
        self.batch_lines = batch_lines
        self.drain_timeout_s = drain_timeout_s
        self.ssl_context = ssl_context
        self.sessions: set[Session] = set()
        self.join_log: list[tuple[float, int, str]] = []  # (loop time, session id, channel)
        self.close_log: list[tuple[float, int]] = []  # (loop time, session id)
        self.answer_pings = True  # False simulates a connection that went silent
        self.quit_delay_s = 0.0  # keep a quitting connection in its channels this long
        self.connections_accepted = 0
        self.login_failures = 0
        self.pings_answered = 0
        self.pongs_received = 0
        self._channels: dict[str, _Channel] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session_tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (the one picked when constructed with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """The URL to give ingest (CHATPULSE_TWITCH_IRC_URL)."""
        scheme = "ircs" if self.ssl_context is not None else "irc"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, ssl=self.ssl_context
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._spawn(self._schedule())
        self._spawn(self._ping_loop())
        logger.info("fake Twitch listening on %s", self.url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close()
        if self._session_tasks:  # closed sessions end by themselves: never cancel them
            await asyncio.wait(self._session_tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> "FakeTwitchServer":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        session = Session(self, self.connections_accepted, reader, writer)
        self.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._session_tasks.add(task)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            if task is not None:
                self._session_tasks.discard(task)

    # -- control and observation -----------------------------------------------------------

    def send_reconnect(self, grace_s: float | None = None) -> int:
        """Tell every logged-in connection to reconnect; close each after ``grace_s``."""
        loop = asyncio.get_running_loop()
        told = [s for s in self.sessions if s.logged_in and not s.closed]
        for session in told:
            session.send([":tmi.twitch.tv RECONNECT"])
            loop.call_later(self.reconnect_grace_s if grace_s is None else grace_s, session.close)
        return len(told)

    def drop_connections(self) -> int:
        """Close every connection now (after flushing what was already written to it)."""
        sessions = [s for s in self.sessions if not s.closed]
        for session in sessions:
            session.close()
        return len(sessions)

    def send_ping(self) -> None:
        for session in self.sessions:
            session.send(["PING :tmi.twitch.tv"])

    def inject(self, channel: str, line: str) -> None:
        """Send one raw line now to every connection in ``channel`` (e.g. a malformed one)."""
        for session in self._channels[channel].members if channel in self._channels else ():
            session.send([line])

    def inject_bytes(self, channel: str, data: bytes) -> None:
        """Send raw bytes now to every connection in ``channel`` (invalid UTF-8, no line end)."""
        for session in self._channels[channel].members if channel in self._channels else ():
            if not session.closed:
                session.writer.write(data)

    def sent(self, channel: str) -> int:
        """Stream lines delivered in ``channel`` (each counted once, however many joined)."""
        state = self._channels.get(channel)
        return state.sent if state is not None else 0

    def finished(self, channel: str) -> bool:
        """True once every line of the channel's stream has been delivered."""
        state = self._channels.get(channel)
        return state is not None and state.done and not state.pending

    def memberships(self) -> dict[int, frozenset[str]]:
        """Channels joined by each open connection, by session id."""
        return {s.id: frozenset(s.channels) for s in self.sessions if not s.closed}

    # -- streams (a Session calls enter and leave) --------------------------------------------

    def enter(self, session: Session, name: str) -> None:
        """Add ``session`` to the channel's stream, starting the stream on its first join."""
        state = self._channels.get(name)
        if state is None:
            loop_time = asyncio.get_running_loop().time()
            state = _Channel(name, self.source.stream(name), loop_time)
            self._channels[name] = state
            self._advance(state)
            self._wakeup.set()
        state.members.add(session)
        if state.pending:
            session.send(list(state.pending))
            state.sent += len(state.pending)
            state.pending.clear()
        if state.parked:
            state.parked = False
            self._advance(state)
            self._wakeup.set()

    def leave(self, session: Session, name: str) -> None:
        """Take ``session`` out of the channel's stream (lines wait for the next member)."""
        state = self._channels.get(name)
        if state is not None:
            state.members.discard(session)

    def _advance(self, state: _Channel) -> None:
        item = next(state.lines, None)
        if item is None:
            state.done = True
            return
        offset, state.next_line = item
        due = 0.0 if self.fast else state.started_at + offset / self.speed
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, state.name))

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            if not heap or heap[0][0] > loop.time():
                self._wakeup.clear()
                delay = heap[0][0] - loop.time() if heap else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                continue
            now = loop.time()
            out: dict[Session, list[str]] = {}
            count = 0
            while heap and heap[0][0] <= now and count < self.batch_lines:
                state = self._channels[heapq.heappop(heap)[2]]
                count += 1
                if state.members:
                    for session in state.members:
                        out.setdefault(session, []).append(state.next_line)
                    state.sent += 1
                else:
                    state.pending.append(state.next_line)
                    if self.fast:  # no clock to keep: wait for a client instead of piling up
                        state.parked = True
                        continue
                self._advance(state)
            for session, lines in out.items():
                session.send(lines)
            await self._drain(out)
            await asyncio.sleep(0)  # let sessions read JOINs between batches

    async def _drain(self, sessions: Iterable[Session]) -> None:
        for session in sessions:
            if session.closed:
                continue
            try:
                async with asyncio.timeout(self.drain_timeout_s):
                    await session.writer.drain()
            except (ConnectionError, OSError, TimeoutError) as exc:
                logger.warning("session %d: dropping a slow or broken client: %r", session.id, exc)
                session.close()

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            self.send_ping()
