"""JOIN and connection limiters, reconnect backoff, JOIN retries and the recent-keys set."""

import asyncio
import time

import pytest
from pydantic import SecretStr

from chatpulse.ingest.irc.client import TwitchChatClient
from chatpulse.ingest.irc.dedup import RecentKeys
from chatpulse.ingest.irc.ratelimit import SlidingWindowLimiter, backoff_delay, unanswered_joins


async def test_limiter_allows_rate_per_sliding_window() -> None:
    limiter = SlidingWindowLimiter(rate=3, window_s=0.2)
    start = time.monotonic()
    times = []
    for _ in range(7):
        await limiter.acquire()
        times.append(time.monotonic() - start)
    assert times[2] < 0.05  # the first three go at once
    for i in range(len(times) - 3):
        assert times[i + 3] - times[i] >= 0.2 - 0.005
    assert times[-1] >= 0.4 - 0.01


async def test_limiter_is_fair_between_waiters() -> None:
    limiter = SlidingWindowLimiter(rate=1, window_s=0.05)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(4)))
    assert order == [0, 1, 2, 3]


def test_backoff_is_immediate_then_exponential_with_jitter() -> None:
    assert backoff_delay(1) == 0.0
    for attempt, base in [(2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)]:
        delays = {backoff_delay(attempt, base_s=1.0, max_s=60.0) for _ in range(50)}
        assert all(base <= d <= base * 1.25 for d in delays)
        assert len(delays) > 1  # jittered
    assert 60.0 <= backoff_delay(30, base_s=1.0, max_s=60.0) <= 75.0


def test_recent_keys_forget_the_oldest() -> None:
    recent = RecentKeys(capacity=3)
    assert [recent.seen(k) for k in ("a", "b", "a", "c", "d")] == [False, False, True, False, False]
    assert len(recent) == 3
    assert recent.seen("a") is False  # "a" was the oldest, forgotten when "d" came
    assert recent.seen(("#c", "id")) is False
    assert recent.seen(("#c", "id")) is True


async def test_client_validates_its_arguments_and_hides_the_token() -> None:
    with pytest.raises(ValueError, match="irc:// or ircs://"):
        TwitchChatClient("http://example.com")
    with pytest.raises(ValueError, match="needs the login"):
        TwitchChatClient("irc://localhost", token=SecretStr("x"))
    tls = TwitchChatClient("ircs://irc.chat.twitch.tv", login="Bot", token=SecretStr("tok123"))
    assert (tls.host, tls.port, tls.tls, tls.nick) == ("irc.chat.twitch.tv", 6697, True, "bot")
    assert "tok123" not in repr(tls)
    plain = TwitchChatClient("irc://127.0.0.1:6667")
    assert (plain.port, plain.tls) == (6667, False)
    assert plain.nick.startswith("justinfan")
    assert plain.nick.removeprefix("justinfan").isdigit()


async def test_channels_fill_shards_in_order() -> None:
    client = TwitchChatClient("irc://127.0.0.1:1", channels_per_connection=2)
    for name in ("a", "#B", "c", "d", "e", "b"):
        client.join(name)
    assert client.channels == {"a", "b", "c", "d", "e"}
    shards = [sorted(s.channels) for s in client._shards]
    assert shards == [["a", "b"], ["c", "d"], ["e"]]
    client.part("c")
    client.join("f")
    assert [sorted(s.channels) for s in client._shards] == [["a", "b"], ["d", "f"], ["e"]]
    with pytest.raises(ValueError, match="not a Twitch channel"):
        client.join("bad name")


def test_unanswered_joins_are_the_silent_ones_still_wanted() -> None:
    sent = {"old": 0.0, "answered": 0.0, "refused": 0.0, "parted": 0.0, "recent": 9.5}
    answered = {"answered", "refused"}  # a JOIN echo or a refusal NOTICE
    wanted = {"old", "answered", "refused", "recent"}
    assert unanswered_joins(sent, answered, wanted, now=10.0, timeout_s=1.0) == ["old"]
    assert unanswered_joins(sent, answered, wanted, now=10.5, timeout_s=1.0) == ["old", "recent"]
    assert unanswered_joins(sent, answered, wanted, now=0.5, timeout_s=1.0) == []


async def test_new_connections_are_rate_limited() -> None:
    # Four shards of one channel each; nothing listens on port 1, so each attempt fails at once
    # and the shard's next one is 30 s away: only the limiter spaces these four.
    client = TwitchChatClient(
        "irc://127.0.0.1:1",
        channels_per_connection=1,
        connect_rate=2,
        connect_window_s=0.4,
        backoff_base_s=30.0,
    )
    for name in ("a", "b", "c", "d"):
        client.join(name)
    await client.start()
    try:
        await asyncio.sleep(0.2)
        assert client.connect_attempts == 2  # the other two wait for the window to slide
        await asyncio.sleep(0.5)
        assert client.connect_attempts == 4
    finally:
        await client.stop()


async def test_a_join_twitch_does_not_answer_is_sent_again() -> None:
    joins: list[str] = []
    echoed, served = asyncio.Event(), asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nick = ""
        try:
            while line := await reader.readline():
                text = line.decode().strip()
                if text.startswith("NICK "):
                    nick = text.split()[1]
                    writer.write(f":tmi.twitch.tv 001 {nick} :Welcome, GLHF!\r\n".encode())
                elif text.startswith("JOIN "):
                    joins.append(text)
                    if len(joins) > 1:  # the first is dropped silently, as over Twitch's limit
                        echo = f":{nick}!{nick}@{nick}.tmi.twitch.tv {text}\r\n"
                        writer.write(echo.encode())
                        echoed.set()
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            served.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TwitchChatClient(f"irc://127.0.0.1:{port}", join_confirm_timeout_s=0.2)
    client.join("chan")
    await client.start()
    try:
        async with asyncio.timeout(5):
            await echoed.wait()
        (conn,) = client.connections
        assert await conn.wait_joined({"chan"}, timeout_s=5)
    finally:
        await client.stop()
        async with asyncio.timeout(5):
            await served.wait()  # the client closed its socket: the handler is done
        server.close()
        await server.wait_closed()
    assert joins == ["JOIN #chan", "JOIN #chan"]
    assert client.join_retries == 1
