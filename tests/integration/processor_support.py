"""Helpers of the processor's integration tests (no tests here).

- ``generate``: a chat stream with out-of-order messages within the grace, redeliveries, late
  messages and, per channel, a final "closer" message far enough ahead to close every window;
  with ``moderation``, CLEARMSG/CLEARCHAT events of twitch-chat-events among them.
- ``ground_truth``: what every number must be, computed from the generated records with
  plain sets and Counters, independently of chatpulse.processor (the moderation join: by
  id, user and time, whatever order the two topics are read in).
- ``ProcessorProcess``: ``chatpulse process`` as a subprocess of the real CLI.
- ``read_results`` / ``wait_until_exact``: what Cassandra and channel-stats hold.
"""

import heapq
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from chatpulse.models import ChatEvent, ChatMessage, decode_chat_message
from chatpulse.settings import Settings
from chatpulse.storage import connect
from chatpulse.topics import Topics

VENV_BIN = Path(sys.executable).parent
WINDOWS = ["10s", "1m"]
SIZES = {"10s": 10_000, "1m": 60_000}
GRACE = "3s"
GRACE_MS = 3_000
EMOTE_NAMES = {str(i): f"Emote{i}" for i in range(1, 13)}
# the chat-spike rule the processor runs with in these tests (processor_env): a baseline of
# 3 minutes, so that the short streams of the tests have windows to decide on
SPIKE_FACTOR = 1.5
SPIKE_MIN_MESSAGES = 15
SPIKE_BASELINE = 3


@dataclass(frozen=True)
class Record:
    channel: str
    value: bytes
    id: str
    user_id: str
    sent_at: int
    emote_ids: tuple[str, ...]
    # a twitch-chat-events record: its type (message_deleted, timeout, ban, clear) and, for
    # a CLEARMSG, the message id it deletes
    event: str = ""
    target: str = ""


MODERATION_HORIZON = "24h"  # the processes' CHATPULSE_MODERATION_HORIZON: the whole stream
# the processes' CHATPULSE_SESSION_GAP: short, so that the streams' chatters end sessions
SESSION_GAP = "30s"
SESSION_GAP_MS = 30_000


def moderation_event(
    channel: str, kind: str, sent_at: int, *, target: str = "", user: str = ""
) -> Record:
    """A ChatEvent as the ingest makes it of a CLEARMSG or CLEARCHAT."""
    if kind == "message_deleted":
        eid = f"clearmsg:{target}"
    else:
        eid = f"clearchat:1:{sent_at}:{user}" if user else f"clearchat:1:{sent_at}"
    value = {
        "v": 1,
        "type": kind,
        "channel": channel,
        "sent_at": sent_at,
        "id": eid,
        "channel_id": "1",
        "user_id": user,
        "user_login": f"user{user}" if user else "",
        "target_msg_id": target,
        "duration_s": 600 if kind == "timeout" else None,
    }
    return Record(channel, json.dumps(value).encode(), eid, user, sent_at, (), kind, target)


def message(channel: str, mid: str, user: str, sent_at: int, rng: random.Random) -> Record:
    words, emotes, emote_ids = [], [], []
    position = 0
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.4:
            eid = rng.choice(list(EMOTE_NAMES))
            word = EMOTE_NAMES[eid]
            emotes.append({"id": eid, "start": position, "end": position + len(word) - 1})
            emote_ids.append(eid)
        else:
            word = rng.choice(["hi", "lol", "gg", "wow", "no"])
        words.append(word)
        position += len(word) + 1
    value = {
        "v": 1,
        "id": mid,
        "channel": channel,
        "channel_id": "1",
        "user_id": user,
        "user_login": f"user{user}",
        "display_name": f"User{user}",
        "text": " ".join(words),
        "is_action": False,
        "sent_at": sent_at,
        "emotes": emotes,
        "bits": 0,
        "badges": {},
    }
    return Record(channel, json.dumps(value).encode(), mid, user, sent_at, tuple(emote_ids))


def generate(
    *,
    channels: int,
    messages: int,
    seed: int,
    span_ms: int = 5 * 60_000,
    duplicate_rate: float = 0.04,
    late_rate: float = 0.003,
    base: int | None = None,
    id_prefix: str = "",
    bursts: int = 0,
    moderation: float = 0.0,
) -> list[Record]:
    """A stream in production order (the order of each channel's records is what counts),
    from ``base`` (default: the start of the hour two hours ago); message ids begin with
    ``id_prefix``. With ``bursts``, that many times a channel's chat bursts: about a minute's
    worth more messages (of as many chatters) within a few seconds (a chat spike), drawn from
    a random generator of their own (the rest of the stream is the same as without). With
    ``moderation`` (a share of the messages), CLEARMSG events of a recent message, timeouts
    and bans of a recent chatter and a few clears follow messages, stamped 1 ms after their
    channel's latest message, some of them delivered twice (from a generator of their own
    too)."""
    rng = random.Random(seed)
    burst_rng = random.Random(seed + 1_000_003)
    mod_rng = random.Random(seed + 2_000_003)  # events: the messages stay as without
    burst_at = set(burst_rng.sample(range(messages), bursts)) if bursts else set()
    if base is None:
        base = int(time.time() * 1000) - 2 * 3_600_000
        base -= base % 3_600_000
    names = [f"ch{i:03d}" for i in range(channels)]
    weights = [1.0 / (i + 1) for i in range(channels)]
    clock = {name: base for name in names}
    step = span_ms / messages * channels / 2
    records: list[Record] = []
    recent: dict[str, list[Record]] = {}
    for n in range(messages):
        channel = rng.choices(names, weights)[0]
        clock[channel] += rng.randint(0, int(step * 2) + 1)
        now = clock[channel]
        roll = rng.random()
        if roll < late_rate:
            sent = now - rng.randint(70_000, 120_000)  # beyond 1m window + grace: late
        elif roll < 0.25:
            sent = now - rng.randint(0, GRACE_MS // 2)  # out of order, within grace
        else:
            sent = now
        user = str(rng.randint(1, 300)) if rng.random() < 0.97 else f"x{rng.randint(1, 9)}"
        record = message(channel, f"{id_prefix}{channel}-{n}", user, max(sent, base), rng)
        records.append(record)
        if n in burst_at:
            # about 0.8 to 1.6 minutes' worth of the channel's usual chat at once
            for b in range(int(60_000 / step * burst_rng.uniform(0.8, 1.6))):
                user = str(burst_rng.randint(1, 1_200_000_000))
                sent = now + burst_rng.randint(0, 3_000)
                burst_id = f"{id_prefix}{channel}-{n}b{b}"
                records.append(message(channel, burst_id, user, sent, burst_rng))
        if rng.random() < duplicate_rate:
            records.append(record)
        recent.setdefault(channel, []).append(record)
        del recent[channel][:-20]
        if moderation and mod_rng.random() < moderation:
            event = _moderation_event(mod_rng, channel, recent[channel], clock[channel] + 1)
            records.append(event)
            if mod_rng.random() < 0.1:
                records.append(event)  # delivered twice
    # redeliver a block of earlier records (an ingest reconnect overlap)
    records.extend(records[len(records) // 2 : len(records) // 2 + 200])
    end = max(clock.values()) + 3 * 60_000
    for i, channel in enumerate(names):
        records.append(message(channel, f"{id_prefix}{channel}-closer", "1", end + i, rng))
    return records


def _moderation_event(rng: random.Random, channel: str, recent: list[Record], at: int) -> Record:
    roll = rng.random()
    if roll < 0.5:  # a message is deleted once (a redelivery repeats its time too)
        target = recent.pop(rng.randrange(len(recent)))
        return moderation_event(channel, "message_deleted", at, target=target.id)
    if roll < 0.995:
        kind = "timeout" if roll < 0.8 else "ban"
        return moderation_event(channel, kind, at, user=rng.choice(recent).user_id)
    return moderation_event(channel, "clear", at)


def top_chatters(
    users: list[str], capacity: int | None, logins: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The 10 chatters with the most messages of a window whose messages came from ``users``
    (in the order counted), most first, ties by login: the plain counts, or with a
    ``capacity`` what Space-Saving gives, written the plain way (when all counters are taken,
    a new chatter replaces the one with the smallest (count, user id) and takes its count + 1)."""
    if capacity is None:
        counts = dict(Counter(users))
    else:
        counts = {}
        for user in users:
            if user in counts:
                counts[user] += 1
            elif len(counts) < capacity:
                counts[user] = 1
            else:
                victim = min(counts, key=lambda key: (counts[key], key))
                counts[user] = counts.pop(victim) + 1
    login = (logins or {}).get
    ranked = sorted(
        counts.items(), key=lambda item: (-item[1], login(item[0], f"user{item[0]}"), item[0])
    )
    return [{"login": login(user, f"user{user}"), "count": count} for user, count in ranked[:10]]


# (sessions started, sessions ended, their mean length in s, their p90 length in s)
SessionTuple = tuple[int, int, float | None, int | None]
WindowTuple = tuple[
    int, int, list[dict[str, Any]], list[dict[str, Any]], int, int, int, SessionTuple
]


class Sessions:
    """Chatter sessions the plain way (the rules of chatpulse.processor.sessions): per
    (channel, user) the open session (first, last); a heap of when each is over at the
    latest (the end of the second of its last message + gap + grace), looked at after each
    message of the channel."""

    def __init__(self, gap_ms: int = SESSION_GAP_MS) -> None:
        self.gap = gap_ms
        self.open: dict[tuple[str, str], tuple[int, int]] = {}
        self.due: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        self.started: Counter[tuple[str, str, int]] = Counter()
        self.lengths: dict[tuple[str, str, int], list[int]] = defaultdict(list)

    def _end(self, channel: str, first: int, last: int) -> None:
        at = last + self.gap
        for name, size in SIZES.items():
            self.lengths[(channel, name, at // size * size)].append(last - first)

    def _start(self, channel: str, at: int, step: int) -> None:
        for name, size in SIZES.items():
            self.started[(channel, name, at // size * size)] += step

    def _keep(self, channel: str, user: str, first: int, last: int) -> None:
        self.open[(channel, user)] = (first, last)
        over = (last // 1000 + 1) * 1000 + self.gap + GRACE_MS
        heapq.heappush(self.due[channel], (over, user, last))

    def message(self, channel: str, user: str, sent_at: int, now: int, late: bool) -> None:
        due = self.due[channel]
        while due and due[0][0] <= now:
            _, who, last = heapq.heappop(due)
            found = self.open.get((channel, who))
            if found is not None and found[1] == last:
                self._end(channel, *found)
                del self.open[(channel, who)]
        if late:
            return
        found = self.open.get((channel, user))
        if found is not None:
            first, last = found
            if last + self.gap + GRACE_MS <= now or sent_at > last + self.gap:
                self._end(channel, first, last)
                del self.open[(channel, user)]
            elif sent_at < first - self.gap:
                return
            else:
                if sent_at < first:
                    self._start(channel, first, -1)
                    self._start(channel, sent_at, +1)
                new_last = max(last, sent_at)
                if new_last != last:
                    self._keep(channel, user, min(first, sent_at), new_last)
                else:
                    self.open[(channel, user)] = (min(first, sent_at), last)
                return
        self._start(channel, sent_at, +1)
        self._keep(channel, user, sent_at, sent_at)

    def of(self, key: tuple[str, str, int]) -> SessionTuple:
        lengths = self.lengths.get(key, [])
        if not lengths:
            return (self.started[key], 0, None, None)
        seconds = sorted(ms // 1000 for ms in lengths)
        p90 = seconds[math.ceil(0.9 * len(seconds)) - 1]
        if p90 >= 256:  # reported to the histogram's bucket: its 6 highest bits
            p90 -= p90 % (1 << (p90.bit_length() - 6))
        mean = round(sum(lengths) / len(lengths) / 1000, 3)
        return (self.started[key], len(lengths), mean, p90)


@dataclass
class Truth:
    # (messages, unique chatters, top emotes, top chatters, deleted_messages, timeouts, bans)
    windows: dict[tuple[str, str, int], WindowTuple]
    totals: dict[str, tuple[int, int, int]]
    messages: dict[str, int]
    closed: set[tuple[str, str, int]]
    late: int
    duplicates: int = 0
    distinct_ids: set[tuple[str, str]] = field(default_factory=set)
    # chat spikes: (channel, 1m window start) -> (messages, baseline median)
    spikes: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    # closed 1m windows with a full baseline (those a spike was decided on, either way)
    decided: int = 0
    # (channel, message id) of the messages moderation deleted
    deleted: set[tuple[str, str]] = field(default_factory=set)
    events: int = 0


def spikes_of(
    closed: dict[tuple[str, int], int],
) -> tuple[dict[tuple[str, int], tuple[int, float]], int]:
    """The chat spikes among closed 1m windows ((channel, start) -> messages), written the
    plain way: per channel, from its first closed minute on, a minute whose previous
    SPIKE_BASELINE minutes all lie at or after that one is decided on: a spike when it has at
    least SPIKE_MIN_MESSAGES and more than SPIKE_FACTOR x the median of those minutes' counts
    (0 for a minute without a window). Also the number of minutes decided on."""
    size = SIZES["1m"]
    first: dict[str, int] = {}
    for channel, start in closed:
        first[channel] = min(first.get(channel, start), start)
    spikes = {}
    decided = 0
    for (channel, start), count in closed.items():
        if start - SPIKE_BASELINE * size < first[channel]:
            continue
        decided += 1
        before = [closed.get((channel, start - k * size), 0) for k in range(1, SPIKE_BASELINE + 1)]
        median = statistics.median(before)
        if count >= SPIKE_MIN_MESSAGES and count > SPIKE_FACTOR * median:
            spikes[(channel, start)] = (count, float(median))
    return spikes, decided


def records_of(
    messages: list[ChatMessage], events: Sequence[ChatEvent] = ()
) -> tuple[list[Record], dict[str, str], dict[str, str]]:
    """Chat messages (e.g. simulated chat as the ingest converts it) as Records, with the
    moderation events among ``events`` merged in by time (each channel's chat is in time
    order), the name of each emote id they use and the login of each user id (for
    :func:`ground_truth`)."""
    names = {e.id: m.emote_name(e) for m in messages for e in m.emotes}
    logins = {m.user_id: m.user_login for m in messages}
    records = [
        Record(m.channel, b"", m.id, m.user_id, m.sent_at, tuple(e.id for e in m.emotes))
        for m in messages
    ]
    moderation = [
        Record(e.channel, b"", e.id, e.user_id, e.sent_at, (), e.type, e.target_msg_id)
        for e in events
        if e.type in ("message_deleted", "timeout", "ban", "clear")
    ]
    if moderation:  # (a stable sort: a message before an event of the same time)
        records = sorted(records + moderation, key=lambda r: (r.sent_at, bool(r.event)))
    return records, names, logins


def ground_truth(
    records: list[Record],
    top_capacity: int | None = None,
    emote_names: dict[str, str] | None = None,
    logins: dict[str, str] | None = None,
) -> Truth:
    """Per channel in order: count once per id; a window closes when the channel's latest
    sent_at reaches end + grace; a message for a closed window is late (totals only).
    Top chatters: exact counts, or Space-Saving with ``top_capacity`` counters (the
    processor's CHATPULSE_TOP_CHATTERS_CAPACITY) when given. ``emote_names``: the name of
    each emote id (default: :data:`EMOTE_NAMES`); ``logins``: the login of each user id
    (default: ``user<id>``, as :func:`message` writes them)."""
    emote_names = emote_names or EMOTE_NAMES
    seen: set[tuple[str, str]] = set()
    latest: dict[str, int] = {}
    counts: dict[tuple[str, str, int], int] = Counter()
    users: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    chatters: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    emotes: dict[tuple[str, str, int], Counter[str]] = defaultdict(Counter)
    totals: dict[str, list[int]] = {}
    moderation: dict[tuple[str, str, int], Counter[str]] = defaultdict(Counter)
    sessions = Sessions()
    smallest = min(SIZES.values())
    events: list[Record] = []
    late = duplicates = 0
    for r in records:
        if r.event:
            if (r.channel, r.id) in seen:
                continue  # delivered twice
            seen.add((r.channel, r.id))
            events.append(r)
            now = latest.get(r.channel, 0)
            for name, size in SIZES.items():
                start = r.sent_at // size * size
                # (the generator stamps events after their channel's messages: never late)
                assert start + size + GRACE_MS > now
                moderation[(r.channel, name, start)][r.event] += 1
            continue
        if (r.channel, r.id) in seen:
            duplicates += 1
            continue
        seen.add((r.channel, r.id))
        now = max(latest.get(r.channel, r.sent_at), r.sent_at)
        latest[r.channel] = now
        t = totals.setdefault(r.channel, [0, r.sent_at, r.sent_at])
        t[0] += 1
        t[1] = min(t[1], r.sent_at)
        t[2] = now
        for name, size in SIZES.items():
            start = r.sent_at // size * size
            if start + size + GRACE_MS <= now:
                late += 1
                continue
            key = (r.channel, name, start)
            counts[key] += 1
            users[key].add(r.user_id)
            chatters[key].append(r.user_id)
            emotes[key].update(r.emote_ids)
        too_late = r.sent_at // smallest * smallest + smallest + GRACE_MS <= now
        sessions.message(r.channel, r.user_id, r.sent_at, now, too_late)
    windows = {}
    closed = set()
    for key in counts.keys() | moderation.keys() | sessions.lengths.keys():
        ranked = sorted(emotes[key].items(), key=lambda item: (-item[1], item[0]))[:10]
        top = [{"id": eid, "name": emote_names[eid], "count": c} for eid, c in ranked]
        mod = moderation[key]
        windows[key] = (
            counts[key],
            len(users[key]),
            top,
            top_chatters(chatters[key], top_capacity, logins),
            mod["message_deleted"],
            mod["timeout"],
            mod["ban"],
            sessions.of(key),
        )
        channel, name, start = key
        if start + SIZES[name] + GRACE_MS <= latest[channel]:
            closed.add(key)
    spikes, decided = spikes_of({(c, s): counts[(c, n, s)] for c, n, s in closed if n == "1m"})
    # the join, in event time: a CLEARMSG deletes its message, a timeout or ban the user's
    # messages sent at or before it, a clear every message sent at or before it
    by_id = {(r.channel, r.id): r for r in records if not r.event}
    by_channel: dict[str, list[Record]] = defaultdict(list)
    by_user: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for m in by_id.values():
        by_channel[m.channel].append(m)
        by_user[(m.channel, m.user_id)].append(m)
    deleted: set[tuple[str, str]] = set()
    for e in events:
        if e.event == "message_deleted":
            if (e.channel, e.target) in by_id:
                deleted.add((e.channel, e.target))
            continue
        targets = by_channel[e.channel] if e.event == "clear" else by_user[(e.channel, e.user_id)]
        deleted.update((m.channel, m.id) for m in targets if m.sent_at <= e.sent_at)
    return Truth(
        windows=windows,
        totals={c: (t[0], t[1], t[2]) for c, t in totals.items()},
        messages={c: t[0] for c, t in totals.items()},
        closed=closed,
        late=late,
        duplicates=duplicates,
        distinct_ids={key for key in seen if key in by_id},
        deleted=deleted,
        events=len(events),
        spikes=spikes,
        decided=decided,
    )


def produce(settings: Settings, records: list[Record], rate: float | None = None) -> None:
    """Produce in order (idempotent producer keeps each partition's order)."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 20,
        }
    )
    topics = Topics.from_settings(settings)
    # the events topic in time order, as the ingest writes it live (see moderation_event)
    ordered = [r for r in records if not r.event]
    ordered += sorted((r for r in records if r.event), key=lambda r: r.sent_at)
    start = time.monotonic()
    for i, r in enumerate(ordered):
        topic = topics.events if r.event else topics.messages
        while True:
            try:
                producer.produce(topic, key=r.channel.encode(), value=r.value, timestamp=r.sent_at)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        if rate and i % 100 == 0:
            ahead = i / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    assert producer.flush(60) == 0


def processor_env(settings: Settings, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **settings.as_environment()}
    env.update(
        {
            "CHATPULSE_STATE_DIR": str(state_dir),
            "CHATPULSE_WINDOWS": ",".join(WINDOWS),
            "CHATPULSE_GRACE": GRACE,
            "CHATPULSE_COMMIT_INTERVAL_S": "0.5",
            "CHATPULSE_PROCESSOR_METRICS_PORT": "0",
            "CHATPULSE_LOG_LEVEL": "INFO",
            "CHATPULSE_SPIKE_FACTOR": str(SPIKE_FACTOR),
            "CHATPULSE_SPIKE_MIN_MESSAGES": str(SPIKE_MIN_MESSAGES),
            "CHATPULSE_SPIKE_BASELINE_WINDOWS": str(SPIKE_BASELINE),
            "CHATPULSE_MODERATION_HORIZON": MODERATION_HORIZON,
            "CHATPULSE_SESSION_GAP": SESSION_GAP,
        }
    )
    env.update(extra)
    return env


class ProcessorProcess:
    """``chatpulse process`` in a subprocess, its output in a log file."""

    def __init__(self, settings: Settings, state_dir: Path, log: Path, **extra: str) -> None:
        self.env = processor_env(settings, state_dir, **extra)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "chatpulse"), "process"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Results:
    windows: dict[tuple[str, str, int], WindowTuple]
    closed_flags: dict[tuple[str, str, int], bool]
    totals: dict[str, tuple[int, int, int]]
    messages: dict[str, int]
    leaderboard: dict[tuple[str, str, int], tuple[int, int]]
    # chat_spikes rows: (channel, window start) -> (messages, baseline median)
    spikes: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    user_deleted: set[tuple[str, str]] = field(default_factory=set)


def read_cassandra(settings: Settings) -> Results:
    cluster, session = connect(settings)
    ks = settings.cassandra_keyspace
    try:
        windows, flags, leaderboard = {}, {}, {}
        for row in session.execute(f"SELECT * FROM {ks}.window_stats", timeout=60):
            start = int(row.window_start.timestamp() * 1000)
            key = (row.channel, row.window, start)
            windows[key] = (
                row.messages,
                row.unique_chatters,
                json.loads(row.top_emotes),
                json.loads(row.top_chatters),
                row.deleted_messages or 0,
                row.timeouts or 0,
                row.bans or 0,
                (
                    row.sessions_started or 0,
                    row.sessions_ended or 0,
                    row.session_mean_s,
                    row.session_p90_s,
                ),
            )
            flags[key] = row.closed
        for row in session.execute(f"SELECT * FROM {ks}.window_leaderboard", timeout=60):
            start = int(row.window_start.timestamp() * 1000)
            leaderboard[(row.channel, row.window, start)] = (row.messages, row.unique_chatters)
        totals = {
            row.channel: (
                row.total_messages,
                int(row.first_seen.timestamp() * 1000),
                int(row.last_seen.timestamp() * 1000),
            )
            for row in session.execute(f"SELECT * FROM {ks}.channel_totals", timeout=60)
        }
        spikes = {}
        for row in session.execute(f"SELECT * FROM {ks}.chat_spikes", timeout=60):
            start = int(row.window_start.replace(tzinfo=UTC).timestamp() * 1000)
            assert (row.window, row.factor) == ("1m", SPIKE_FACTOR)
            assert int(row.window_end.replace(tzinfo=UTC).timestamp() * 1000) == start + 60_000
            spikes[(row.channel, start)] = (row.messages, row.baseline_median)
        messages: Counter[str] = Counter()
        deleted: set[tuple[str, str]] = set()
        query = f"SELECT channel, sent_at, id, record, deleted FROM {ks}.messages_bucketed"
        for row in session.execute(query, timeout=120):
            stored = decode_chat_message(row.record)  # the consumed record, as it came
            sent_at = int(row.sent_at.replace(tzinfo=UTC).timestamp() * 1000)
            assert (stored.channel, stored.id, stored.sent_at) == (row.channel, row.id, sent_at)
            messages[row.channel] += 1
            if row.deleted:
                deleted.add((row.channel, row.id))
        query = f"SELECT channel, id, record, deleted FROM {ks}.user_messages"
        user_deleted = set()
        for row in session.execute(query, timeout=120):
            assert row.record is not None, "a mark outlived or preceded its row"
            if row.deleted:
                user_deleted.add((row.channel, row.id))
        return Results(
            windows, flags, totals, dict(messages), leaderboard, spikes, deleted, user_deleted
        )
    finally:
        cluster.shutdown()


def read_channel_stats(
    settings: Settings,
    expected_closed: set[tuple[str, str, int]],
    idle_s: float = 3.0,
    timeout_s: float = 90.0,
) -> list[dict[str, Any]]:
    """Committed records of channel-stats (read_committed) until every expected closed window
    is seen and nothing more comes for ``idle_s``. A killed instance's open transaction holds
    back its partitions' later records until the broker aborts it (transaction timeout)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.topic_prefix}verify-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([Topics.from_settings(settings).stats])
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, int]] = set()
    last = time.monotonic()
    deadline = last + timeout_s
    try:
        while time.monotonic() < deadline and (
            not expected_closed <= seen or time.monotonic() - last < idle_s
        ):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            value = json.loads(msg.value())
            assert msg.key() == value["channel"].encode()
            out.append(value)
            if value.get("closed"):
                seen.add((value["channel"], value["window"], value["window_start"]))
    finally:
        consumer.close()
    return out


def wait_for_totals(
    settings: Settings, truth: Truth, timeout_s: float, procs: tuple["ProcessorProcess", ...] = ()
) -> Results:
    """Poll Cassandra until the channel totals equal the truth (or time out)."""
    deadline = time.monotonic() + timeout_s
    results = read_cassandra(settings)
    while results.totals != truth.totals and time.monotonic() < deadline:
        for proc in procs:
            assert proc.alive(), proc.log.read_text()[-3000:]
        time.sleep(2)
        results = read_cassandra(settings)
    return results


def assert_exact(
    settings: Settings,
    truth: Truth,
    timeout_s: float = 120,
    procs: tuple["ProcessorProcess", ...] = (),
) -> None:
    """Cassandra and channel-stats hold exactly the truth."""
    results = wait_for_totals(settings, truth, timeout_s, procs)
    assert results.totals == truth.totals
    deadline = time.monotonic() + 30
    while results.windows != truth.windows and time.monotonic() < deadline:
        time.sleep(2)
        results = read_cassandra(settings)
    assert results.messages == truth.messages
    missing = set(truth.windows) - set(results.windows)
    extra = set(results.windows) - set(truth.windows)
    wrong = {
        k for k in truth.windows if k in results.windows and results.windows[k] != truth.windows[k]
    }
    assert not missing, f"{len(missing)} windows missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} windows too many, e.g. {sorted(extra)[:3]}"
    assert not wrong, f"{len(wrong)} windows wrong, e.g. " + "; ".join(
        f"{k}: {results.windows[k]} != {truth.windows[k]}" for k in sorted(wrong)[:3]
    )
    assert results.windows == truth.windows
    assert {k for k, closed in results.closed_flags.items() if closed} == truth.closed
    assert results.leaderboard == {k: v[:2] for k, v in truth.windows.items() if v[0]}
    assert results.spikes == truth.spikes
    deadline = time.monotonic() + 30
    while results.deleted != truth.deleted and time.monotonic() < deadline:
        time.sleep(2)  # (a mark may be in the checkpoint after the totals)
        results = read_cassandra(settings)
    assert results.deleted == truth.deleted
    assert results.user_deleted == truth.deleted

    stats = read_channel_stats(settings, truth.closed)
    closed = Counter(
        (s["channel"], s["window"], s["window_start"]) for s in stats if s.get("closed")
    )
    assert set(closed) == truth.closed
    assert max(closed.values()) == 1, "a closed window was published twice"
    # chat spikes: each once, with the same numbers
    spikes = [s for s in stats if s.get("type") == "spike"]
    published = Counter((s["channel"], s["window_start"]) for s in spikes)
    assert set(published) == set(truth.spikes)
    assert not published or max(published.values()) == 1, "a spike was published twice"
    for s in spikes:
        assert (s["window"], s["window_end"] - s["window_start"], s["factor"]) == (
            "1m",
            60_000,
            SPIKE_FACTOR,
        )
        assert (s["messages"], s["baseline_median"]) == truth.spikes[
            (s["channel"], s["window_start"])
        ]
    for s in stats:
        if s.get("closed"):
            key = (s["channel"], s["window"], s["window_start"])
            assert (
                s["messages"],
                s["unique_chatters"],
                s["top_emotes"],
                s["top_chatters"],
                s["deleted_messages"],
                s["timeouts"],
                s["bans"],
                (
                    s["sessions_started"],
                    s["sessions_ended"],
                    s["session_mean_s"],
                    s["session_p90_s"],
                ),
            ) == truth.windows[key]
