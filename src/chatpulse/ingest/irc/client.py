"""An asyncio Twitch chat client: sharded connections, rate-limited JOINs, lossless reconnects.

Our own client because no maintained Python library does what ingest needs: anonymous
``justinfan`` login with correct IRCv3 tag handling (one-pass unescaping), make-before-break
handling of RECONNECT with de-duplication, and sharding of hundreds of channels over
connections under Twitch's JOIN rate limit.

New connections (logins) are rate-limited like JOINs; a JOIN that Twitch answers with neither
its JOIN echo nor a refusal NOTICE within ``join_confirm_timeout_s`` (Twitch drops JOINs over
its limit silently) is sent again.

Every received line (parsed or not) comes out of :meth:`TwitchChatClient.lines` once; a data
line (PRIVMSG, USERNOTICE, CLEARCHAT, CLEARMSG) seen twice across a reconnect overlap is
dropped by its key: (channel, ``id`` tag), or the raw line when there is no ``id``.
"""

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from pydantic import SecretStr

from chatpulse.ingest.irc.connection import DEFAULT_MAX_LINE, IrcConnection, Received
from chatpulse.ingest.irc.dedup import RecentKeys
from chatpulse.ingest.irc.parser import DATA_COMMANDS
from chatpulse.ingest.irc.ratelimit import SlidingWindowLimiter, backoff_delay
from chatpulse.ingest.irc.shard import Shard, ShardContext, ShardCounters
from chatpulse.models import normalize_channel

__all__ = ["Received", "TwitchChatClient"]

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"irc": 6667, "ircs": 6697}


class TwitchChatClient:
    """Reads Twitch chat from many channels; see the module docstring.

    ``join``/``part`` may be called before or after :meth:`start`. Lines come out of
    :meth:`lines`, which ends after :meth:`stop` and raises TwitchLoginError when Twitch
    refuses the login.
    """

    def __init__(
        self,
        url: str,
        login: str | None = None,
        token: SecretStr | None = None,
        *,
        channels_per_connection: int = 90,
        join_rate: int = 20,
        join_window_s: float = 10.0,
        ping_interval_s: float = 60.0,
        pong_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        join_confirm_timeout_s: float = 15.0,
        connect_rate: int = 20,
        connect_window_s: float = 10.0,
        drain_timeout_s: float = 5.0,
        stable_after_s: float = 10.0,
        dedup_capacity: int = 100_000,
        max_pending_batches: int = 1_000,
        ssl_context: ssl.SSLContext | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an irc:// or ircs:// URL: {url!r}")
        if token is not None and not login:
            raise ValueError("a Twitch token needs the login it belongs to")
        if channels_per_connection < 1:
            raise ValueError("channels_per_connection must be >= 1")
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.tls = parts.scheme == "ircs"
        self._ssl = (ssl_context or ssl.create_default_context()) if self.tls else None
        self.nick = login.lower() if login else f"justinfan{random.randint(10_000, 99_999_999)}"
        self._token = token
        self._max_line_bytes = max_line_bytes
        self.channels_per_connection = channels_per_connection
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._counters = ShardCounters()
        self._shard_context = ShardContext(
            new_connection=self._new_connection,
            join_limiter=SlidingWindowLimiter(join_rate, join_window_s),
            # Each new connection is a login, and Twitch limits those too (20 per 10 s): after
            # an outage every shard reconnects at once, and must not lock the account/IP out.
            connect_limiter=SlidingWindowLimiter(connect_rate, connect_window_s),
            backoff=self._backoff,
            on_fatal=self._fail,
            join_confirm_timeout_s=join_confirm_timeout_s,
            stable_after_s=stable_after_s,
            drain_timeout_s=drain_timeout_s,
            counters=self._counters,
        )
        self._recent = RecentKeys(dedup_capacity)
        self._queue: asyncio.Queue[list[Received] | None] = asyncio.Queue()
        self._max_pending = max_pending_batches
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._shards: list[Shard] = []
        self._shard_of: dict[str, Shard] = {}
        self._next_connection_id = 0
        self._started = False
        self._error: BaseException | None = None
        self.duplicates_dropped = 0  # for metrics and tests

    def __repr__(self) -> str:
        scheme = "ircs" if self.tls else "irc"
        return f"TwitchChatClient({scheme}://{self.host}:{self.port}, nick={self.nick!r})"

    @property
    def reconnects(self) -> int:
        """Connections lost or replaced on RECONNECT, over all shards."""
        return self._counters.reconnects

    @property
    def join_retries(self) -> int:
        """JOINs sent again because Twitch answered neither yes nor no in time."""
        return self._counters.join_retries

    @property
    def connect_attempts(self) -> int:
        """Connections opened or tried (each is a login)."""
        return self._counters.connect_attempts

    @property
    def channels(self) -> frozenset[str]:
        """The channels we want to be in (joined or being joined)."""
        return frozenset(self._shard_of)

    @property
    def connections(self) -> list[IrcConnection]:
        """The live connection of each shard (for metrics and tests)."""
        return [s.conn for s in self._shards if s.conn is not None and not s.conn.closed.is_set()]

    def join(self, channel: str) -> None:
        """Join a channel (login, with or without ``#``); the JOIN itself is rate-limited."""
        name = normalize_channel(channel)
        if name in self._shard_of:
            return
        shard = next(
            (s for s in self._shards if len(s.channels) < self.channels_per_connection), None
        )
        if shard is None:
            shard = Shard(self._shard_context, len(self._shards))
            self._shards.append(shard)
            if self._started:
                shard.start()
        self._shard_of[name] = shard
        shard.add(name)

    def part(self, channel: str) -> None:
        """Leave a channel; its slot on the connection is reused by the next join."""
        name = normalize_channel(channel)
        shard = self._shard_of.pop(name, None)
        if shard is not None:
            shard.remove(name)

    async def start(self) -> None:
        """Start connecting (one connection per shard of channels)."""
        self._started = True
        for shard in self._shards:
            shard.start()

    async def stop(self) -> None:
        """Close every connection; :meth:`lines` ends after the lines already received."""
        self._started = False
        tasks = [s.task for s in self._shards if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queue.put_nowait(None)

    async def lines(self) -> AsyncIterator[Received]:
        """Every received line once, in arrival order per connection."""
        async for batch in self.batches():
            for received in batch:
                yield received

    async def batches(self) -> AsyncIterator[list[Received]]:
        """Like :meth:`lines`, one list per socket read (cheaper per line for hot loops)."""
        while True:
            batch = await self._queue.get()
            if self._queue.qsize() < self._max_pending:
                self._not_full.set()
            if batch is None:
                if self._error is not None:
                    raise self._error
                return
            yield batch

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s)

    def _new_connection(self) -> IrcConnection:
        self._next_connection_id += 1
        return IrcConnection(
            self._next_connection_id,
            self.host,
            self.port,
            ssl_context=self._ssl,
            nick=self.nick,
            token=self._token,
            deliver=self._deliver,
            ping_interval_s=self.ping_interval_s,
            pong_timeout_s=self.pong_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            max_line_bytes=self._max_line_bytes,
        )

    async def _deliver(self, conn: IrcConnection, batch: list[Received]) -> None:
        fresh: list[Received] = []
        append, seen, data_commands = fresh.append, self._recent.seen, DATA_COMMANDS
        for received in batch:
            msg = received.msg
            if msg is not None and msg.command in data_commands:
                msg_id = msg.tags.get("id")
                key = (msg.params[0] if msg.params else "", msg_id) if msg_id else received.raw
                # The hash stands for the key: 64 bits make a collision within the window
                # practically impossible, and ints cost a fraction of the strings' memory.
                if seen(hash(key)):
                    self.duplicates_dropped += 1
                    continue
            append(received)
        if not fresh:
            return
        if self._queue.qsize() >= self._max_pending:
            # Back-pressure: stop reading this socket until the consumer catches up.
            self._not_full.clear()
            await self._not_full.wait()
        self._queue.put_nowait(fresh)

    def _fail(self, exc: BaseException) -> None:
        logger.error("Twitch chat client stopped: %s", exc)
        self._error = exc
        self._queue.put_nowait(None)
