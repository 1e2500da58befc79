"""Deterministic simulated Twitch chat: N channels at a total rate, lines exactly as Twitch sends.

Channel popularity is Zipf-skewed; arrivals per channel alternate between calm and burst
phases (a two-state Markov-modulated Poisson process); messages carry emotes with correct
code-point indices, unicode, /me actions, replies, cheers and long copypastas, mixed with
subs, raids, announcements, timeouts, bans and deleted messages. The same (channels, rate,
seed, start_ms) always gives the same lines, so tests know exactly what was sent.
"""

import heapq
import random
import uuid
from collections.abc import Iterator
from functools import lru_cache

from chatpulse.fake_twitch import events
from chatpulse.fake_twitch.users import User, UserPool
from chatpulse.fake_twitch.vocab import EMOJI, EMOTES, FOREIGN, WORDS
from chatpulse.ingest.irc.parser import escape_tag_value

__all__ = [
    "DEFAULT_START_MS",
    "MAX_TEXT",
    "channel_names",
    "channel_rates",
    "room_id",
    "simulate",
    "simulate_channel",
]

DEFAULT_START_MS = 1_700_000_000_000
MAX_TEXT = 500  # Twitch's limit on a chat message, in code points
ZIPF_EXPONENT = 1.1
_BURST_FACTOR = 6.0
_CALM_MEAN_S, _BURST_MEAN_S = 20.0, 3.0
# Calm rate such that the long-run mean equals the channel's share of the total rate.
_CALM_SHARE = (_CALM_MEAN_S + _BURST_MEAN_S) / (_CALM_MEAN_S + _BURST_FACTOR * _BURST_MEAN_S)


def channel_names(channels: int) -> list[str]:
    """The simulated channels' logins, most popular first."""
    return [f"streamer{i:04d}" for i in range(channels)]


def room_id(index: int) -> str:
    return str(500_000_000 + index * 7_919)


@lru_cache(maxsize=16)
def channel_rates(channels: int, rate: float) -> list[float]:
    """Messages per second of each channel: Zipf shares of ``rate``."""
    weights = [1.0 / (i + 1) ** ZIPF_EXPONENT for i in range(channels)]
    total = sum(weights)
    return [rate * w / total for w in weights]


class _ChannelSim:
    def __init__(self, index: int, channels: int, rate: float, seed: int, start_ms: int) -> None:
        self.rng = random.Random(f"{seed}:{index}")
        self.name = f"streamer{index:04d}"
        self.room = room_id(index)
        self.rate = channel_rates(channels, rate)[index]
        self.start_ms = start_ms
        self.users = UserPool(self.rng, size=max(30, min(20_000, int(self.rate * 900))))
        self.recent: list[tuple[str, User, str]] = []  # (id, user, text) for replies/deletions

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def arrivals(self) -> Iterator[tuple[float, bool]]:
        """(offset seconds, in a burst) of each line."""
        rng, t = self.rng, 0.0
        calm = self.rate * _CALM_SHARE
        burst = False
        phase_end = rng.expovariate(1.0 / _CALM_MEAN_S)
        while True:
            t += rng.expovariate(calm * _BURST_FACTOR if burst else calm)
            while t > phase_end:
                burst = not burst
                phase_end += rng.expovariate(1.0 / (_BURST_MEAN_S if burst else _CALM_MEAN_S))
            yield t, burst

    def text(self, burst: bool) -> tuple[str, str]:
        """A message text and its ``emotes`` tag value."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.01:  # a long copypasta, close to Twitch's 500-character cap
            tokens = [rng.choice(EMOTES)[1], *rng.choices(WORDS, k=4)] * rng.randint(10, 20)
            while sum(map(len, tokens)) + len(tokens) - 1 > MAX_TEXT:
                tokens.pop()
        elif burst and roll < 0.45:
            tokens = [rng.choice(EMOTES)[1]] * rng.randint(1, 6)
        else:
            tokens = rng.choices(WORDS, k=min(1 + int(rng.expovariate(0.45)), 40))
            if rng.random() < 0.17:
                for _ in range(1 + int(rng.expovariate(1.5))):
                    tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(EMOTES)[1])
            if rng.random() < 0.12:
                tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(EMOJI))
            if rng.random() < 0.05:
                tokens.append(rng.choice(FOREIGN))
        return _emote_tag(tokens)

    def chat(self, offset: float, burst: bool) -> str:
        rng, user = self.rng, self.users.pick()
        msg_id, ts = self.new_id(), self.start_ms + int(offset * 1000)
        text, emotes = self.text(burst)
        extra = ""
        bits = ""
        if rng.random() < 0.03 and self.recent:
            parent_id, parent, body = rng.choice(self.recent)
            extra = (
                f"reply-parent-display-name={parent.display_tag};"
                f"reply-parent-msg-body={escape_tag_value(body)};reply-parent-msg-id={parent_id};"
                f"reply-parent-user-id={parent.user_id};reply-parent-user-login={parent.login};"
                f"reply-thread-parent-display-name={parent.display_tag};"
                f"reply-thread-parent-msg-id={parent_id};reply-thread-parent-user-id={parent.user_id};"
                f"reply-thread-parent-user-login={parent.login};"
            )
            text, emotes = _emote_tag([f"@{parent.display_name}", *text.split(" ")])
        elif rng.random() < 0.005:
            amount = rng.choice((1, 50, 100, 500, 1000))
            bits = f"bits={amount};"
            text, emotes = _emote_tag([f"Cheer{amount}", *text.split(" ")])
        wire = f"\x01ACTION {text}\x01" if rng.random() < 0.02 else text
        self.recent.append((msg_id, user, text))
        if len(self.recent) > 20:
            self.recent.pop(0)
        return (
            f"@badge-info={user.badge_info};badges={user.badges};{bits}"
            f"client-nonce={self.rng.getrandbits(128):032x};color={user.color};"
            f"display-name={user.display_tag};emotes={emotes};"
            f"first-msg={1 if rng.random() < 0.01 else 0};flags=;id={msg_id};mod={user.mod};"
            f"{extra}returning-chatter=0;room-id={self.room};subscriber={user.subscriber};"
            f"tmi-sent-ts={ts};turbo=0;user-id={user.user_id};user-type={user.user_type}"
            f"{user.vip} :{user.login}!{user.login}@{user.login}.tmi.twitch.tv "
            f"PRIVMSG #{self.name} :{wire}"
        )

    def line(self, offset: float, burst: bool) -> str:
        roll = self.rng.random()
        ts = self.start_ms + int(offset * 1000)
        if roll < 0.006:
            return events.usernotice(self, ts)
        if roll < 0.010:
            return events.clearchat(self, ts)
        if roll < 0.011 and self.recent:
            return events.clearmsg(self, ts)
        return self.chat(offset, burst)


def _emote_tag(tokens: list[str]) -> tuple[str, str]:
    """Join tokens with spaces; the ``emotes`` tag for the tokens that are emote names."""
    ranges: dict[str, list[str]] = {}
    pos = 0
    for token in tokens:
        emote_id = _EMOTE_IDS.get(token)
        if emote_id is not None:
            ranges.setdefault(emote_id, []).append(f"{pos}-{pos + len(token) - 1}")
        pos += len(token) + 1
    emotes = "/".join(f"{eid}:{','.join(spans)}" for eid, spans in ranges.items())
    return " ".join(tokens), emotes


_EMOTE_IDS = {name: emote_id for emote_id, name in reversed(EMOTES)}


def simulate_channel(
    index: int,
    channels: int,
    rate: float,
    seed: int,
    *,
    duration_s: float | None = None,
    start_ms: int = DEFAULT_START_MS,
) -> Iterator[tuple[float, str]]:
    """(offset seconds, line) of simulated channel ``index``, until ``duration_s`` if given."""
    sim = _ChannelSim(index, channels, rate, seed, start_ms)
    for offset, burst in sim.arrivals():
        if duration_s is not None and offset >= duration_s:
            return
        yield offset, sim.line(offset, burst)


def simulate(
    channels: int,
    rate: float,
    seed: int,
    *,
    duration_s: float | None = None,
    start_ms: int = DEFAULT_START_MS,
) -> Iterator[str]:
    """All channels' lines merged in time order (what a client joined to all would get)."""
    streams = [
        simulate_channel(i, channels, rate, seed, duration_s=duration_s, start_ms=start_ms)
        for i in range(channels)
    ]
    for _, line in heapq.merge(*streams, key=lambda item: item[0]):
        yield line
