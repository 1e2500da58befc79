"""``chatpulse fake-twitch``: a local Twitch IRC server replaying a capture or simulating chat."""

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from chatpulse.errors import ChatpulseError, ConfigError
from chatpulse.fake_twitch.server import FakeTwitchServer
from chatpulse.fake_twitch.simulate import channel_names
from chatpulse.fake_twitch.source import ReplaySource, SimulatedSource, Source
from chatpulse.logs import configure_logging
from chatpulse.models import normalize_channel

__all__ = ["fake_twitch_command", "serve"]

logger = logging.getLogger(__name__)


async def serve(server: FakeTwitchServer) -> None:
    """Run until SIGINT/SIGTERM; SIGUSR1 sends RECONNECT to every client, SIGUSR2 drops them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handlers = {
        signal.SIGINT: stop.set,
        signal.SIGTERM: stop.set,
        signal.SIGUSR1: lambda: logger.info(
            "RECONNECT sent to %d clients", server.send_reconnect()
        ),
        signal.SIGUSR2: lambda: logger.info("dropped %d clients", server.drop_connections()),
    }
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    try:
        async with server:
            print(f"fake-twitch serving {server.url}", flush=True)
            print(f"point ingest at it: CHATPULSE_TWITCH_IRC_URL={server.url}", flush=True)
            await stop.wait()
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)


def _source(
    *,
    replay: Path | None,
    channel: str | None,
    simulate: bool,
    channels: int,
    rate: float,
    seed: int,
    duration: float | None,
    start_ms: int | None,
) -> Source:
    if (replay is None) == (not simulate):
        raise ConfigError("use exactly one of --replay FILE and --simulate")
    if replay is not None:
        try:
            name = normalize_channel(channel) if channel else None
        except ValueError as exc:
            raise ConfigError(f"--channel: {exc}") from None
        try:
            source = ReplaySource.from_file(replay, name, start_ms=start_ms)
        except ChatpulseError as exc:
            raise ConfigError(f"--replay: {exc}") from None
        for chan, count in source.channels.items():
            logger.info("replaying %d lines in #%s from %s", count, chan, replay)
        return source
    if channels < 1 or rate <= 0:
        raise ConfigError("--channels must be >= 1 and --rate > 0")
    names = channel_names(channels)
    logger.info(
        "simulating %d channels (%s ... %s) at %.0f msg/s in total, seed %d",
        channels,
        names[0],
        names[-1],
        rate,
        seed,
    )
    start = start_ms if start_ms is not None else int(time.time() * 1000)
    return SimulatedSource(channels, rate, seed, duration_s=duration, start_ms=start)


def _start_time(start_ms: int | None, keep_captured: bool) -> int | None:
    if keep_captured:
        return None
    return start_ms if start_ms is not None else int(time.time() * 1000)


def fake_twitch_command(
    *,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one)")] = 6667,
    replay: Annotated[
        Path | None,
        typer.Option(help="Replay this capture (.txt or .txt.gz, one raw IRC line per row)"),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(
            help="Timing factor: 1 = as captured, 10 = ten times faster, "
            "0 = as fast as clients read"
        ),
    ] = 1.0,
    channel: Annotated[
        str | None, typer.Option(help="With --replay: move every line to this channel")
    ] = None,
    simulate: Annotated[bool, typer.Option("--simulate", help="Simulate chat instead")] = False,
    channels: Annotated[
        int,
        typer.Option(help="With --simulate: how many channels (streamer0000, streamer0001, ...)"),
    ] = 10,
    rate: Annotated[
        float, typer.Option(help="With --simulate: messages per second over all channels")
    ] = 100.0,
    seed: Annotated[int, typer.Option(help="With --simulate: same seed, same lines")] = 0,
    duration: Annotated[
        float | None,
        typer.Option(help="With --simulate: stop each channel's stream after this many seconds"),
    ] = None,
    start_ms: Annotated[
        int | None,
        typer.Option(
            help="tmi-sent-ts of the stream's start, epoch ms (default: now; a replay's "
            "timestamps are shifted by the same amount)"
        ),
    ] = None,
    keep_timestamps: Annotated[
        bool,
        typer.Option(
            "--keep-timestamps",
            help="With --replay: send the captured tmi-sent-ts unchanged (records then carry "
            "old timestamps, which Kafka's time retention deletes within minutes)",
        ),
    ] = False,
    ping_interval: Annotated[float, typer.Option(help="Seconds between PINGs to clients")] = 300.0,
    reject_token: Annotated[
        list[str] | None, typer.Option(help="An OAuth token whose login fails (repeatable)")
    ] = None,
) -> None:
    """Serve Twitch's IRC dialect locally: replay a capture or simulate chat.

    Clients get what Twitch sends: CAP ACK, the login numerics (or the
    login failure NOTICE), JOIN echo + NAMES + ROOMSTATE, chat lines with
    their IRCv3 tags, PINGs. A channel's stream starts when it is first
    joined and reaches only the clients in it; lines sent while no client
    is in the channel are delivered when one rejoins (nothing is lost).

    Examples:

      chatpulse fake-twitch --replay capture.txt.gz --speed 10 --channel me

      chatpulse fake-twitch --simulate --channels 100 --rate 2000 --seed 1

    SIGUSR1 makes every client reconnect (RECONNECT), SIGUSR2 drops them.
    """
    configure_logging()
    source = _source(
        replay=replay,
        channel=channel,
        simulate=simulate,
        channels=channels,
        rate=rate,
        seed=seed,
        duration=duration,
        start_ms=_start_time(start_ms, replay is not None and keep_timestamps),
    )
    server = FakeTwitchServer(
        source,
        host=host,
        port=port,
        speed=speed,
        ping_interval_s=ping_interval,
        reject_tokens=reject_token or (),
    )
    asyncio.run(serve(server))
