"""The Twitch chat client against the fake Twitch server over real sockets (no Kafka needed)."""

import asyncio
import gzip
import logging
import os
import signal
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from itertools import islice
from pathlib import Path

import pytest
from pydantic import SecretStr

from chatpulse.fake_twitch.server import FakeTwitchServer
from chatpulse.fake_twitch.simulate import channel_names, simulate_channel
from chatpulse.fake_twitch.source import ReplaySource, SimulatedSource
from chatpulse.ingest.errors import TwitchLoginError
from chatpulse.ingest.irc.client import Received, TwitchChatClient

pytestmark = pytest.mark.timeout(60)

SAMPLE = Path(
    os.environ.get(
        "CHATPULSE_SAMPLE_CAPTURE",
        Path(__file__).resolve().parents[1] / "data/twitch-irc-xqcow-2019-09.txt.gz",
    )
)
DATA = {"PRIVMSG", "USERNOTICE", "CLEARCHAT", "CLEARMSG"}
FAST = {"backoff_base_s": 0.05, "join_window_s": 0.01, "drain_timeout_s": 2.0}


def sample_lines() -> list[str]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()


@pytest.fixture
async def replay_server() -> AsyncIterator[FakeTwitchServer]:
    async with FakeTwitchServer(ReplaySource(sample_lines()), speed=0) as server:
        yield server


async def collect(
    client: TwitchChatClient,
    until: Callable[[Received], bool],
    on_line: Callable[[int], None] | None = None,
    timeout_s: float = 20.0,
) -> list[Received]:
    """Lines from the client up to the first for which ``until`` holds (included)."""
    got: list[Received] = []

    async def read() -> None:
        async for received in client.lines():
            got.append(received)
            if on_line is not None:
                on_line(len(got))
            if until(received):
                return

    await asyncio.wait_for(read(), timeout_s)
    return got


def counting(command: str | set[str], count: int) -> Callable[[Received], bool]:
    """A stop condition: the ``count``-th line with one of these commands."""
    wanted = {command} if isinstance(command, str) else command
    seen = 0

    def until(received: Received) -> bool:
        nonlocal seen
        if received.msg is not None and received.msg.command in wanted:
            seen += 1
        return seen >= count

    return until


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll the server's or client's state (they expose no events for tests to wait on)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def data_lines(lines: list[Received]) -> list[str]:
    return [r.raw for r in lines if r.msg is not None and r.msg.command in DATA]


async def test_login_join_and_replay_every_line_once(replay_server: FakeTwitchServer) -> None:
    client = TwitchChatClient(replay_server.url, **FAST)
    client.join("#XQcOW")
    await client.start()
    try:
        got = await collect(client, counting(DATA, 5000))
    finally:
        await client.stop()
    commands = Counter(r.msg.command for r in got if r.msg is not None)
    assert data_lines(got) == sample_lines()  # every line, once, in order
    assert (commands["PRIVMSG"], commands["CLEARCHAT"], commands["USERNOTICE"]) == (4933, 58, 9)
    assert commands["CAP"] == 1
    assert commands["001"] == 1
    roomstate = next(r.msg for r in got if r.msg is not None and r.msg.command == "ROOMSTATE")
    assert roomstate.tags["room-id"] == "71092938"
    assert max(len(r.raw.encode()) for r in got) > 1024
    assert all(r.error is None for r in got)
    assert client.nick.startswith("justinfan")
    assert client.channels == {"xqcow"}


async def test_malformed_line_is_delivered_with_its_error() -> None:
    async with FakeTwitchServer(SimulatedSource(1, 1.0, seed=1, duration_s=0.0)) as server:
        client = TwitchChatClient(server.url, **FAST)
        client.join("streamer0000")
        await client.start()
        try:
            await collect(
                client,
                counting("ROOMSTATE", 1),
            )
            server.inject("streamer0000", "@tags-only-no-command")
            server.inject("streamer0000", ":tmi.twitch.tv PING :after")
            got = await collect(client, lambda received: received.msg is not None)
        finally:
            await client.stop()
    assert got[0].error is not None
    assert got[0].error.reason == "tags without a command"
    assert got[0].raw == "@tags-only-no-command"
    assert got[1].msg is not None
    assert got[1].msg.command == "PING"


async def test_ping_pong_both_ways() -> None:
    async with FakeTwitchServer(SimulatedSource(1, 1.0, seed=1, duration_s=0.0)) as server:
        client = TwitchChatClient(server.url, ping_interval_s=0.2, pong_timeout_s=1.0, **FAST)
        client.join("streamer0000")
        await client.start()
        try:
            await collect(client, counting("ROOMSTATE", 1))
            server.send_ping()
            await collect(client, counting("PONG", 1))
            await wait_for(lambda: server.pongs_received > 0)
        finally:
            await client.stop()
    assert server.pongs_received == 1  # our PONG to the server's PING
    assert server.pings_answered >= 1  # the server's PONG to our keepalive PING
    assert client.reconnects == 0
    assert server.connections_accepted == 1


async def test_silent_connection_is_detected_and_replaced() -> None:
    async with FakeTwitchServer(SimulatedSource(1, 1.0, seed=1, duration_s=0.0)) as server:
        server.answer_pings = False
        client = TwitchChatClient(server.url, ping_interval_s=0.2, pong_timeout_s=0.2, **FAST)
        client.join("streamer0000")
        await client.start()
        try:
            await wait_for(
                lambda: server.connections_accepted >= 2 and len(server.memberships()) == 1
            )
        finally:
            await client.stop()
    assert client.reconnects >= 1
    assert server.connections_accepted >= 2
    assert server.pings_answered == 0


async def test_server_drop_reconnects_and_loses_nothing() -> None:
    async with FakeTwitchServer(ReplaySource(sample_lines()), speed=500) as server:
        client = TwitchChatClient(server.url, **FAST)
        client.join("xqcow")
        await client.start()
        dropped: list[int] = []

        def drop_once(received_so_far: int) -> None:
            if not dropped and received_so_far > 1500:
                dropped.append(server.drop_connections())

        try:
            got = await collect(client, counting(DATA, 5000), drop_once)
        finally:
            await client.stop()
    assert dropped == [1]
    assert data_lines(got) == sample_lines()
    assert client.reconnects == 1
    assert server.connections_accepted == 2
    assert len({r.connection for r in got}) == 2


async def test_reconnect_is_make_before_break_without_duplicates() -> None:
    async with FakeTwitchServer(ReplaySource(sample_lines()), speed=500) as server:
        server.quit_delay_s = 0.2  # both connections receive the same lines for 0.2 s
        client = TwitchChatClient(server.url, **FAST)
        client.join("xqcow")
        await client.start()
        told: list[int] = []

        def reconnect_once(received_so_far: int) -> None:
            if not told and received_so_far > 1500:
                told.append(server.send_reconnect(grace_s=5.0))

        try:
            got = await collect(client, counting(DATA, 5000), reconnect_once)
        finally:
            await client.stop()
    assert told == [1]
    assert sorted(data_lines(got)) == sorted(sample_lines())  # all, none twice
    assert client.reconnects == 1
    assert client.duplicates_dropped > 100  # the overlap was real, and de-duplicated
    (old_closed,) = [t for t, session in server.close_log if session == 1][:1]
    new_joined = next(t for t, session, _ in server.join_log if session == 2)
    assert new_joined < old_closed  # the new connection joined before the old one went
    assert old_closed - new_joined < 4.0  # ... and the client let the old one go, not the grace
    assert len({r.connection for r in got if r.msg is not None and r.msg.command in DATA}) == 2


async def test_join_rate_limit_is_observed() -> None:
    async with FakeTwitchServer(SimulatedSource(9, 9.0, seed=1, duration_s=0.0)) as server:
        client = TwitchChatClient(server.url, join_rate=3, join_window_s=0.5, backoff_base_s=0.05)
        for name in channel_names(9):
            client.join(name)
        await client.start()
        try:
            await collect(
                client,
                counting("ROOMSTATE", 9),
            )
        finally:
            await client.stop()
    times = sorted(t for t, _, _ in server.join_log)
    assert len(times) == 9
    # Never 4 JOINs in one 0.5 s window, as seen by the server (0.1 s for delivery jitter on a
    # loaded machine: unlimited, the 9 JOINs arrive within a few milliseconds).
    for i in range(len(times) - 3):
        assert times[i + 3] - times[i] >= 0.5 - 0.1, times
    assert times[-1] - times[0] >= 1.0 - 0.1


async def test_channels_are_sharded_over_connections() -> None:
    source = SimulatedSource(5, 50.0, seed=7, duration_s=1.0)
    async with FakeTwitchServer(source, speed=0) as server:
        client = TwitchChatClient(server.url, channels_per_connection=2, **FAST)
        for name in channel_names(5):
            client.join(name)
        await client.start()
        expected = {
            name: [line for _, line in simulate_channel(i, 5, 50.0, 7, duration_s=1.0)]
            for i, name in enumerate(channel_names(5))
        }
        total = sum(len(lines) for lines in expected.values())
        try:
            got = await collect(client, counting(DATA, total))
            memberships = server.memberships()
        finally:
            await client.stop()
    assert sorted(len(channels) for channels in memberships.values()) == [1, 2, 2]
    assert set().union(*memberships.values()) == set(channel_names(5))
    assert len(client.connections) == 0  # stopped
    by_channel: dict[str, list[str]] = {}
    for r in got:
        if r.msg is not None and r.msg.command in DATA:
            assert r.msg.channel is not None
            by_channel.setdefault(r.msg.channel, []).append(r.raw)
    assert by_channel == expected  # the simulator's API gives the exact ground truth


async def test_login_failure_is_a_clear_error_and_the_token_stays_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeTwitchServer(ReplaySource([]), reject_tokens={"s3cret-bad"}) as server:
        bad = TwitchChatClient(server.url, login="MyBot", token=SecretStr("s3cret-bad"), **FAST)
        bad.join("xqcow")
        await bad.start()
        with pytest.raises(TwitchLoginError, match="Login authentication failed"):
            await collect(bad, lambda received: False)
        await bad.stop()
        good = TwitchChatClient(
            server.url, login="MyBot", token=SecretStr("oauth:s3cret-good"), **FAST
        )
        good.join("xqcow")
        await good.start()
        try:
            got = await collect(good, counting("JOIN", 1))
        finally:
            await good.stop()
    assert any(r.msg and r.msg.command == "GLOBALUSERSTATE" for r in got)
    assert server.login_failures == 1
    assert good.nick == "mybot"
    assert "s3cret" not in repr(bad) + repr(good) + caplog.text


async def test_fake_twitch_command_serves_signals_and_stops() -> None:
    start_ms = 1_700_000_000_000
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatpulse", "fake-twitch", "--simulate", "--channels", "2",
        "--rate", "40", "--seed", "5", "--port", "0", "--speed", "0", "--duration", "3",
        "--start-ms", str(start_ms),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        url = first.split()[-1]
        assert url.startswith("irc://127.0.0.1:")
        assert (
            await proc.stdout.readline()
        ).decode().strip() == f"point ingest at it: CHATPULSE_TWITCH_IRC_URL={url}"
        client = TwitchChatClient(url, **FAST)
        client.join("streamer0001")
        await client.start()
        expected = [
            line for _, line in simulate_channel(1, 2, 40.0, 5, duration_s=3.0, start_ms=start_ms)
        ]
        try:
            got = await collect(client, counting(DATA, len(expected)))
            proc.send_signal(signal.SIGUSR1)  # RECONNECT: the client moves to a new connection
            await collect(client, counting("ROOMSTATE", 1))
        finally:
            await client.stop()
        assert data_lines(got) == expected
        assert client.reconnects == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_ircs_url_uses_tls(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    source = SimulatedSource(1, 100.0, seed=2, duration_s=1.0)
    async with FakeTwitchServer(source, speed=0, ssl_context=server_tls) as server:
        assert server.url.startswith("ircs://")
        client = TwitchChatClient(server.url, ssl_context=client_tls, **FAST)
        client.join("streamer0000")
        await client.start()
        expected = [line for _, line in simulate_channel(0, 1, 100.0, 2, duration_s=1.0)]
        try:
            got = await collect(client, counting(DATA, len(expected)))
        finally:
            await client.stop()
        # Without our CA the default context (certificate verification on) refuses the server.
        untrusted = TwitchChatClient(server.url)._new_connection()
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.open()
    assert data_lines(got) == expected


async def test_join_and_part_while_running_and_during_a_reconnect() -> None:
    names = channel_names(6)
    async with FakeTwitchServer(SimulatedSource(6, 60.0, seed=3)) as server:
        client = TwitchChatClient(server.url, join_confirm_timeout_s=2.0, **FAST)
        for name in names[:3]:
            client.join(name)
        await client.start()
        try:
            await wait_for(lambda: list(server.memberships().values()) == [set(names[:3])])
            client.join(names[3])
            client.part(names[0])
            await wait_for(lambda: list(server.memberships().values()) == [set(names[1:4])])
            server.send_reconnect(grace_s=5.0)
            await wait_for(lambda: server.connections_accepted == 2)
            client.join(names[4])  # while the replacement connection is being set up
            client.part(names[1])
            await wait_for(
                lambda: list(server.memberships().values()) == [{names[2], names[3], names[4]}]
            )
        finally:
            await client.stop()
    assert client.channels == {names[2], names[3], names[4]}
    assert client.reconnects == 1


class RawClient:
    """A bare socket speaking IRC, to check the fake server's dialect line by line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: FakeTwitchServer) -> "RawClient":
        return cls(*await asyncio.open_connection(server.host, server.port))

    def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())

    async def expect(self, count: int) -> list[str]:
        lines = []
        for _ in range(count):
            data = await asyncio.wait_for(self.reader.readline(), 5)
            assert data.endswith(b"\r\n")
            lines.append(data.decode()[:-2])
        return lines

    async def closed(self) -> bool:
        """True when the server closed the connection (then ours is closed too)."""
        at_end = await asyncio.wait_for(self.reader.read(), 5) == b""
        self.writer.close()
        await self.writer.wait_closed()
        return at_end


async def test_fake_server_speaks_twitch_dialect() -> None:
    source = ReplaySource(sample_lines()[:3])
    async with FakeTwitchServer(source, speed=0, suspended_channels={"gone"}) as server:
        anon = await RawClient.connect(server)
        anon.send("CAP REQ :twitch.tv/tags twitch.tv/bogus", "CAP REQ :twitch.tv/commands")
        assert await anon.expect(2) == [
            ":tmi.twitch.tv CAP * NAK :twitch.tv/tags twitch.tv/bogus",
            ":tmi.twitch.tv CAP * ACK :twitch.tv/commands",
        ]
        anon.send("NICK justinfan123", "PING :hello", "JOIN #gone,#xqcow")
        welcome = await anon.expect(7)
        assert [line.split()[1] for line in welcome] == [
            "001",
            "002",
            "003",
            "004",
            "375",
            "372",
            "376",
        ]
        assert all(line.split()[2] == "justinfan123" for line in welcome)
        assert await anon.expect(2) == [
            ":tmi.twitch.tv PONG tmi.twitch.tv :hello",
            ":tmi.twitch.tv NOTICE #gone :This channel does not exist or has been suspended.",
        ]
        joined = await anon.expect(4 + 3)
        assert joined[:4] == [
            ":justinfan123!justinfan123@justinfan123.tmi.twitch.tv JOIN #xqcow",
            ":justinfan123.tmi.twitch.tv 353 justinfan123 = #xqcow :justinfan123",
            ":justinfan123.tmi.twitch.tv 366 justinfan123 #xqcow :End of /NAMES list",
            # without the tags capability Twitch strips the tags, as here
            ":tmi.twitch.tv ROOMSTATE #xqcow",
        ]
        assert joined[4:] == [line.split(" ", 1)[1] for line in sample_lines()[:3]]
        anon.send("PART #xqcow", "WHATEVER x")
        assert await anon.expect(2) == [
            ":justinfan123!justinfan123@justinfan123.tmi.twitch.tv PART #xqcow",
            ":tmi.twitch.tv 421 justinfan123 WHATEVER :Unknown command",
        ]
        anon.send("QUIT")
        assert await anon.closed()

        for lines, notice in [
            (["NICK somebot"], "Improperly formatted auth"),
            (["PASS oauth:abc", "NICK Not-Valid"], "Invalid NICK"),
            (["PASS abc", "NICK somebot"], "Improperly formatted auth"),
        ]:
            raw = await RawClient.connect(server)
            raw.send(*lines)
            assert await raw.expect(1) == [f":tmi.twitch.tv NOTICE * :{notice}"]
            assert await raw.closed()
        assert server.login_failures == 3


async def test_refused_join_is_keyed_on_msg_id() -> None:
    async with FakeTwitchServer(ReplaySource([]), suspended_channels={"gone"}) as server:
        client = TwitchChatClient(server.url, **FAST)
        client.join("gone")
        client.join("xqcow")
        await client.start()
        try:
            got = await collect(client, counting("NOTICE", 1))
            (conn,) = client.connections
            assert await conn.wait_joined({"gone", "xqcow"}, 5.0)
        finally:
            await client.stop()
    notice = got[-1].msg
    assert notice is not None
    assert notice.tags == {"msg-id": "msg_channel_suspended"}
    assert (conn.join_failed, conn.joined) == ({"gone"}, {"xqcow"})


async def test_reconnects_back_off_while_connections_keep_dropping() -> None:
    async with FakeTwitchServer(ReplaySource([])) as server:
        client = TwitchChatClient(server.url, backoff_base_s=0.1, join_window_s=0.01)
        client.join("xqcow")
        await client.start()
        try:
            async with asyncio.timeout(1.5):
                while True:  # a server that drops every connection right after login
                    server.drop_connections()
                    await asyncio.sleep(0.005)
        except TimeoutError:
            pass
        finally:
            await client.stop()
    # immediate, then 0.1, 0.2, 0.4, 0.8 s (+ jitter): about 5 attempts, not hundreds
    assert 3 <= server.connections_accepted <= 7


async def test_endless_fast_simulation_survives_a_drop_exactly() -> None:
    async with FakeTwitchServer(SimulatedSource(1, 1000.0, seed=9), speed=0) as server:
        client = TwitchChatClient(server.url, **FAST)
        client.join("streamer0000")
        await client.start()
        dropped: list[int] = []

        def drop_once(received_so_far: int) -> None:
            if not dropped and received_so_far > 1000:
                dropped.append(server.drop_connections())

        try:
            got = await collect(client, counting(DATA, 3000), drop_once)
        finally:
            await client.stop()
    expected = [line for _, line in islice(simulate_channel(0, 1, 1000.0, 9), 3000)]
    assert dropped == [1]
    assert data_lines(got) == expected


async def test_part_then_join_again_at_once_stays_joined() -> None:
    async with FakeTwitchServer(SimulatedSource(2, 10.0, seed=3)) as server:
        client = TwitchChatClient(server.url, **FAST)
        client.join("streamer0000")
        await client.start()
        try:
            await wait_for(lambda: list(server.memberships().values()) == [{"streamer0000"}])
            client.part("streamer0000")
            client.join("streamer0000")
            await wait_for(lambda: len(server.join_log) == 2)
            await asyncio.sleep(0.1)
            memberships = list(server.memberships().values())
        finally:
            await client.stop()
    assert memberships == [{"streamer0000"}]
