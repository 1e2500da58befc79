"""The chat side of bench/pipeline.py: a fake Twitch IRC server in a child process whose offered
rate the benchmark changes while it runs, plus a probe channel with one message every
``PROBE_EVERY_S``, whose send times the benchmark knows.

The server is chatpulse's own (:class:`FakeTwitchServer`); only the source is the benchmark's:
Zipf-shared channels whose per-channel arrival gaps follow the rate set *now* (the simulator's
source has one fixed rate), stamped with the real time (``tmi-sent-ts``), so event time and
wall time agree whatever the rate. The child shares three numbers with the benchmark
(``multiprocessing.Value``): the rate to offer, the lines sent so far, and the monotonic time
the probe stream started (``time.monotonic`` is one clock for every process on Linux).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from collections.abc import Iterator
from multiprocessing.sharedctypes import Synchronized

from chatpulse.fake_twitch.server import FakeTwitchServer
from chatpulse.fake_twitch.simulate import channel_names, channel_rates, room_id

__all__ = ["PROBE_CHANNEL", "PROBE_EVERY_S", "ChatProcess"]

PROBE_CHANNEL = "benchprobe"
PROBE_EVERY_S = 0.2
_WORDS = ("hello", "chat", "gg", "LUL", "nice", "what", "lets", "go", "no", "way", "clip", "it")
_EMOTES = (("25", "Kappa"), ("88", "PogChamp"), ("354", "4Head"))


def _line(channel: str, room: str, user: int, sent_ms: int, rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(2, 8))
    emotes = ""
    if rng.random() < 0.3:
        emote_id, name = rng.choice(_EMOTES)
        words.insert(0, name)
        emotes = f"{emote_id}:0-{len(name) - 1}"
    login = f"viewer{user}"
    return (
        f"@badge-info=;badges=;color=#1E90FF;display-name={login};emotes={emotes};"
        f"first-msg=0;flags=;id={uuid.uuid4()};mod=0;returning-chatter=0;room-id={room};"
        f"subscriber=0;tmi-sent-ts={sent_ms};turbo=0;user-id={user};user-type= "
        f":{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{' '.join(words)}"
    )


class _RampSource:
    """Channels ``streamer0000``... at Zipf shares of ``rate`` (read at every arrival), and
    the probe channel at a fixed pace."""

    def __init__(self, channels: int, rate: Synchronized, probe_t0: Synchronized) -> None:  # type: ignore[type-arg]
        self._names = {name: i for i, name in enumerate(channel_names(channels))}
        self._shares = [r / 1000.0 for r in channel_rates(channels, 1000.0)]
        self._rate, self._probe_t0 = rate, probe_t0

    def room_id(self, channel: str) -> str:
        return room_id(self._names.get(channel, 999_999))

    def stream(self, channel: str) -> Iterator[tuple[float, str]]:
        if channel == PROBE_CHANNEL:
            return self._probes()
        index = self._names.get(channel)
        return iter(()) if index is None else self._chat(channel, index)

    def _chat(self, channel: str, index: int) -> Iterator[tuple[float, str]]:
        rng = random.Random(index)
        room = self.room_id(channel)
        audience = [rng.randint(10_000, 1_200_000_000) for _ in range(2_000)]
        offset, wall0 = 0.0, time.time()
        while True:
            # The rate now (always > 0): a change applies from each channel's next arrival.
            offset += rng.expovariate(self._rate.value * self._shares[index])
            sent_ms = int((wall0 + offset) * 1000)
            yield offset, _line(channel, room, rng.choice(audience), sent_ms, rng)

    def _probes(self) -> Iterator[tuple[float, str]]:
        rng = random.Random("probe")
        self._probe_t0.value = time.monotonic()
        wall0 = time.time()
        number = 0
        while True:
            offset = number * PROBE_EVERY_S
            yield offset, _line(PROBE_CHANNEL, "1", 424_242_424, int((wall0 + offset) * 1000), rng)
            number += 1


def _serve(
    channels: int,
    port: Synchronized,  # type: ignore[type-arg]
    rate: Synchronized,  # type: ignore[type-arg]
    sent: Synchronized,  # type: ignore[type-arg]
    joined: Synchronized,  # type: ignore[type-arg]
    probe_t0: Synchronized,  # type: ignore[type-arg]
) -> None:
    names = [*channel_names(channels), PROBE_CHANNEL]

    async def main() -> None:
        server = FakeTwitchServer(_RampSource(channels, rate, probe_t0), port=0)
        async with server:
            port.value = server.port
            while True:
                sent.value = sum(server.sent(name) for name in names)
                joined.value = len(set().union(*server.memberships().values()))
                await asyncio.sleep(0.2)

    asyncio.run(main())


class ChatProcess:
    """The fake Twitch server as a child process; ``rate`` (msg/s over all chat channels,
    probes not counted, always > 0) is changed while it runs."""

    def __init__(self, channels: int, rate: float) -> None:
        context = multiprocessing.get_context("fork")
        self.channels = channels
        self._port = context.Value("i", 0)
        self._rate = context.Value("d", rate)
        self._sent = context.Value("q", 0)
        self._joined = context.Value("i", 0)
        self._probe_t0 = context.Value("d", 0.0)
        self._process = context.Process(
            target=_serve,
            args=(channels, self._port, self._rate, self._sent, self._joined, self._probe_t0),
            daemon=True,
        )

    def start(self, timeout: float = 30.0) -> str:
        """Start the server; its ``irc://`` URL."""
        self._process.start()
        deadline = time.monotonic() + timeout
        while not self._port.value:
            if time.monotonic() > deadline or not self._process.is_alive():
                raise RuntimeError("the fake Twitch server did not start")
            time.sleep(0.05)
        return f"irc://127.0.0.1:{self._port.value}"

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(10)

    @property
    def names(self) -> list[str]:
        return [*channel_names(self.channels), PROBE_CHANNEL]

    @property
    def rate(self) -> float:
        return float(self._rate.value)

    @rate.setter
    def rate(self, value: float) -> None:
        if value <= 0:
            raise ValueError("the offered rate must be > 0")
        self._rate.value = value

    @property
    def sent(self) -> int:
        """Lines delivered to the ingest so far (every channel, probes included)."""
        return int(self._sent.value)

    @property
    def joined(self) -> int:
        return int(self._joined.value)

    def probe_due(self, number: int) -> float | None:
        """Monotonic time probe ``number`` (0 first) is sent; None before the probe stream."""
        t0 = float(self._probe_t0.value)
        return t0 + number * PROBE_EVERY_S if t0 else None
