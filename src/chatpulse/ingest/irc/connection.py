"""One IRC connection to Twitch: login, reading and splitting lines, keepalive, JOIN/PART.

Which channels, reconnects and make-before-break live in :mod:`.shard`, the sharding of
channels over connections and de-duplication in :mod:`.client`; this module only speaks the
protocol on one socket.
"""

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import SecretStr

from chatpulse.ingest.errors import IrcParseError, TwitchLoginError
from chatpulse.ingest.irc.parser import IrcMessage, parse_line

__all__ = ["CAPABILITIES", "LOGIN_FAILURES", "IrcConnection", "Received"]

logger = logging.getLogger(__name__)

CAPABILITIES = "twitch.tv/tags twitch.tv/commands twitch.tv/membership"
# NOTICE texts Twitch sends to ``*`` before closing a connection whose login it refused.
LOGIN_FAILURES = (
    "Login authentication failed",
    "Improperly formatted auth",
    "Login unsuccessful",
    "Invalid NICK",
)
_READ_SIZE = 256 * 1024
DEFAULT_MAX_LINE = (
    65_536  # far above Twitch's longest lines (a few KB); CHATPULSE_IRC_MAX_LINE_BYTES
)
_OVERSIZED_HEAD = 16_384  # bytes of an oversized line kept for its dead letter
# Commands that need nothing from the connection itself (the hot path skips _on_message).
_QUIET_COMMANDS = frozenset({"PRIVMSG", "CLEARCHAT", "USERNOTICE", "CLEARMSG", "ROOMSTATE"})


@dataclass(slots=True)
class Received:
    """One line as received: ``msg`` when it parsed, else ``error`` (and ``raw`` as is).

    Read-only by convention (not ``frozen``: a frozen dataclass costs ~1 us more per line).
    """

    raw: str
    msg: IrcMessage | None
    error: IrcParseError | None
    received_at: float  # epoch seconds, taken once per socket read
    connection: int  # the id of the connection it came on (ids are never reused)


Deliver = Callable[["IrcConnection", list[Received]], Awaitable[None]]


class IrcConnection:
    """A logged-in socket; lines go to ``deliver`` in batches (one per socket read)."""

    def __init__(
        self,
        connection_id: int,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        nick: str,
        token: SecretStr | None,
        deliver: Deliver,
        ping_interval_s: float,
        pong_timeout_s: float,
        connect_timeout_s: float,
        max_line_bytes: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.id = connection_id
        self._max_line = max_line_bytes
        self.nick = nick
        self._host, self._port, self._ssl = host, port, ssl_context
        self._token = token
        self._deliver = deliver
        self._ping_interval_s = ping_interval_s
        self._pong_timeout_s = pong_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._welcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.requested: set[str] = set()  # channels we sent a JOIN for (and no PART since)
        self.join_sent: dict[str, float] = {}  # channel -> monotonic time of its last JOIN
        self.joined: set[str] = set()
        self.join_failed: set[str] = set()
        self._membership_changed = asyncio.Event()
        self.reconnect_requested = asyncio.Event()
        self.closed = asyncio.Event()
        self.last_received = time.monotonic()

    def __repr__(self) -> str:
        return f"IrcConnection(id={self.id}, host={self._host!r}, nick={self.nick!r})"

    async def open(self) -> None:
        """Connect and log in; raises OSError/TimeoutError or TwitchLoginError (see
        :func:`chatpulse.ingest.errors.retriable`)."""
        async with asyncio.timeout(self._connect_timeout_s):
            reader, self._writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
            self._tasks.append(asyncio.create_task(self._read_loop(reader)))
            lines = [f"CAP REQ :{CAPABILITIES}"]
            if self._token is not None:
                token = self._token.get_secret_value().removeprefix("oauth:")
                lines.append(f"PASS oauth:{token}")
            lines.append(f"NICK {self.nick}")
            await self._write(lines)
            try:
                await self._welcome
            except BaseException:
                self.abort()
                raise
        self._tasks.append(asyncio.create_task(self._ping_loop()))
        logger.info(
            "connection %d: logged in to %s:%d as %s", self.id, self._host, self._port, self.nick
        )

    async def _write(self, lines: list[str]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError(f"connection {self.id} is closed")
        self._writer.write("".join(f"{line}\r\n" for line in lines).encode())
        await self._writer.drain()

    async def send(self, line: str) -> None:
        """Send one line (never a PASS: that only happens in :meth:`open`)."""
        logger.debug("connection %d: > %s", self.id, line)
        await self._write([line])

    async def join(self, channel: str) -> None:
        self.requested.add(channel)
        self.join_sent[channel] = time.monotonic()
        await self.send(f"JOIN #{channel}")

    async def part(self, channel: str) -> None:
        self.requested.discard(channel)
        self.join_sent.pop(channel, None)
        self.joined.discard(channel)
        await self.send(f"PART #{channel}")

    async def wait_joined(self, channels: set[str], timeout_s: float) -> bool:
        """Wait until every channel is joined (or refused); False on timeout or close."""
        try:
            async with asyncio.timeout(timeout_s):
                while not channels <= self.joined | self.join_failed:
                    if self.closed.is_set():
                        return False
                    self._membership_changed.clear()
                    await self._membership_changed.wait()
        except TimeoutError:
            return False
        return True

    async def quit_and_drain(self, timeout_s: float) -> None:
        """Leave gracefully: QUIT, keep reading what the server still sends, until it closes."""
        with contextlib.suppress(ConnectionError, OSError):
            await self.send("QUIT")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.closed.wait()
        self.abort()

    def abort(self) -> None:
        """Close the socket now and stop this connection's tasks."""
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._writer is not None:
            self._writer.close()
        if not self._welcome.done():
            self._welcome.set_exception(ConnectionError(f"connection {self.id} closed"))
            self._welcome.exception()  # retrieved here: nobody may be waiting any more
        self.closed.set()
        self._membership_changed.set()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        pending = b""
        skipped = 0  # bytes of an oversized line dropped so far (0: not inside one)
        head = b""  # its first bytes, for the dead letter
        try:
            while data := await reader.read(_READ_SIZE):
                self.last_received = time.monotonic()
                if skipped:  # inside an oversized line: drop up to its end
                    end_of_line = data.find(b"\n")
                    if end_of_line < 0:
                        skipped += len(data)
                        continue
                    skipped += end_of_line + 1
                    await self._deliver(self, [self._oversized(head, skipped)])
                    skipped, head, data = 0, b"", data[end_of_line + 1 :]
                if pending:
                    data = pending + data
                end = data.rfind(b"\n") + 1  # complete lines end here
                pending = data[end:]
                if len(pending) > self._max_line:
                    # Never buffered past the bound: dead-lettered (cut), the stream goes on.
                    skipped, head, pending = len(pending), pending[:_OVERSIZED_HEAD], b""
                if not end:
                    continue
                batch = await self._handle(data[:end])
                if batch:
                    await self._deliver(self, batch)
        except (ConnectionError, OSError) as exc:
            logger.warning("connection %d: read failed: %s", self.id, exc)
        finally:
            logger.info("connection %d: closed", self.id)
            self.abort()

    def _oversized(self, head: bytes, length: int) -> Received:
        line = head.decode(errors="replace")
        error = IrcParseError(f"line over {self._max_line} bytes ({length} bytes), dropped", line)
        return Received(line, None, error, time.time(), self.id)

    async def _handle(self, data: bytes) -> list[Received]:
        """Parse whole lines (``data`` ends with LF): decoded once per read, not per line."""
        now = time.time()
        batch: list[Received] = []
        replies: list[str] = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self._handle_invalid_utf8(data.split(b"\n"), batch, replies, now)
        else:
            if text.count("\n") == text.count("\r\n"):  # Twitch's CR LF everywhere: no copy
                lines = text.split("\r\n")
            else:  # a bare LF somewhere; a lone CR stays and the parser refuses its line
                lines = text.replace("\r\n", "\n").split("\n")
            self._parse_into(lines, batch, replies, now)
        if replies:
            with contextlib.suppress(ConnectionError, OSError):
                await self._write(replies)
        return batch

    def _parse_into(
        self, lines: list[str], batch: list[Received], replies: list[str], now: float
    ) -> None:
        append, quiet, conn_id = batch.append, _QUIET_COMMANDS, self.id
        max_line = self._max_line
        for line in lines:
            if not line:
                continue
            if len(line) > max_line:  # characters: more than as many bytes
                error = IrcParseError(f"line over {max_line} bytes ({len(line)} characters)", line)
                append(Received(line, None, error, now, conn_id))
                continue
            try:
                msg = parse_line(line)
            except IrcParseError as exc:
                append(Received(line, None, exc, now, conn_id))
                continue
            if msg.command not in quiet:
                self._on_message(msg, replies)
            append(Received(line, msg, None, now, conn_id))

    def _handle_invalid_utf8(
        self, chunks: list[bytes], batch: list[Received], replies: list[str], now: float
    ) -> None:
        """The slow path of a read holding invalid UTF-8: line by line, in order."""
        good: list[str] = []
        for chunk in chunks:
            data = chunk[:-1] if chunk.endswith(b"\r") else chunk
            try:
                good.append(data.decode())
            except UnicodeDecodeError:
                self._parse_into(good, batch, replies, now)
                good = []
                line = data.decode(errors="replace")
                error = IrcParseError("invalid UTF-8", line)
                batch.append(Received(line, None, error, now, self.id))
        self._parse_into(good, batch, replies, now)

    def _on_message(self, msg: IrcMessage, replies: list[str]) -> None:
        command = msg.command
        if command == "PING":
            replies.append(f"PONG :{msg.trailing or 'tmi.twitch.tv'}")
        elif command == "RECONNECT":
            logger.info("connection %d: server asked to reconnect", self.id)
            self.reconnect_requested.set()
        elif command in ("JOIN", "PART") and msg.nick == self.nick and msg.channel:
            (self.joined.add if command == "JOIN" else self.joined.discard)(msg.channel)
            self._membership_changed.set()
        elif command == "001" and not self._welcome.done():
            self._welcome.set_result(None)
        elif command == "NOTICE":
            self._on_notice(msg)

    def _on_notice(self, msg: IrcMessage) -> None:
        text = msg.trailing or ""
        if not self._welcome.done() and (msg.channel is None or text in LOGIN_FAILURES):
            self._welcome.set_exception(TwitchLoginError(f"Twitch refused the login: {text}"))
        elif msg.channel and msg.tags.get("msg-id", "").startswith("msg_"):
            # Join refusals (msg_channel_suspended, msg_banned, ...) are keyed on msg-id.
            logger.warning(
                "connection %d: channel %s: %s (%s)", self.id, msg.channel, text, msg.tags["msg-id"]
            )
            self.join_failed.add(msg.channel)
            self._membership_changed.set()

    async def _ping_loop(self) -> None:
        # Our own PING: a silent socket may be dead without the OS noticing for many minutes.
        while not self.closed.is_set():
            await asyncio.sleep(self._ping_interval_s)
            if time.monotonic() - self.last_received < self._ping_interval_s:
                continue
            sent = time.monotonic()
            try:
                await self.send("PING :chatpulse")
            except (ConnectionError, OSError):
                break
            await asyncio.sleep(self._pong_timeout_s)
            if self.last_received < sent:
                logger.warning(
                    "connection %d: no reply to PING in %.1f s, reconnecting",
                    self.id,
                    self._pong_timeout_s,
                )
                break
        self.abort()
