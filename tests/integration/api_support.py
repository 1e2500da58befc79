"""Helpers of the API's integration tests: a known stream, its expected numbers, a running API.

The expected numbers are computed here, independently of the processor, from the messages
themselves (counting semantics of the contract); :func:`write_rows` stores them through the
storage schema exactly as the processor's rows are laid out.
"""

import contextlib
import json
import math
import ssl
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from chatpulse.api.app import create_app
from chatpulse.api.server import serve_in_thread, tls_options
from chatpulse.buckets import message_bucket
from chatpulse.models import ChatEvent, ChatMessage, Emote, encode
from chatpulse.settings import Settings
from chatpulse.storage import connect

DAY_MS = 86_400_000
# the chatter sessions seeded into the stored windows: a user's messages with no silence
# longer than this are one session (the processor's rule without its late-record cases)
SEEDED_SESSION_GAP_MS = 60_000
EMOTES = {"Kappa": "25", "PogChamp": "88", "LUL": "425618"}


def iso(ms: int) -> str:
    """How the API writes a time: ISO 8601 UTC with Z."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.isoformat().replace("+00:00", "Z")


def _message(channel: str, i: int, sent_at: int, users: int) -> ChatMessage:
    words = ["hi", "Kappa", "gg", "PogChamp", "LUL", "nice", "Kappa"]
    chosen = [words[(i * k) % len(words)] for k in (1, 2, 3)][: 1 + i % 3]
    text = " ".join(chosen)
    emotes, position = [], 0
    for word in chosen:
        if word in EMOTES:
            emotes.append(Emote(id=EMOTES[word], start=position, end=position + len(word) - 1))
        position += len(word) + 1
    user = f"{channel[:2]}u{(i * 5) % users}"
    return ChatMessage(
        id=f"{channel}-{i:04d}",
        channel=channel,
        user_id=user,
        user_login=user,
        display_name=user.upper(),
        text=text,
        sent_at=sent_at,
        emotes=emotes,
        bits=i % 5,
        badges={"subscriber": "12"} if i % 4 == 0 else {},
    )


@dataclass
class Window:
    messages: int = 0
    users: set[str] = field(default_factory=set)
    emotes: Counter[tuple[str, str]] = field(default_factory=Counter)
    chatters: Counter[str] = field(default_factory=Counter)  # by login (= user id here)
    moderation: Counter[str] = field(default_factory=Counter)  # by event type
    sessions_started: int = 0
    session_lengths: list[int] = field(default_factory=list)  # ms, of sessions ended here

    def sessions(self) -> dict[str, Any]:
        """The window's chatter-session fields as the API writes them."""
        lengths = sorted(self.session_lengths)
        mean = round(sum(lengths) / len(lengths) / 1000, 3) if lengths else None
        p90 = lengths[math.ceil(0.9 * len(lengths)) - 1] // 1000 if lengths else None
        return {
            "sessions_started": self.sessions_started,
            "sessions_ended": len(lengths),
            "session_mean_s": mean,
            "session_p90_s": p90,
        }

    def top_chatters(self) -> list[dict[str, Any]]:
        ranked = sorted(self.chatters.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        return [{"login": login, "count": count} for login, count in ranked]

    def top_emotes(self) -> list[dict[str, Any]]:
        ranked = sorted(self.emotes.items(), key=lambda kv: (-kv[1], kv[0][0]))[:10]
        return [{"id": eid, "name": name, "count": count} for (eid, name), count in ranked]


@dataclass
class KnownStream:
    """Messages of a few channels over five minutes around the last UTC midnight."""

    windows: dict[str, int]
    messages: list[ChatMessage] = field(default_factory=list)
    # moderation, where a channel has the messages for it: a CLEARMSG of its 4th message, a
    # timeout of its 6th message's user just after it, and a ban of the 11th message's user
    # after the 21st message
    events: list[ChatEvent] = field(default_factory=list)

    @classmethod
    def build(cls, windows: dict[str, int], counts: dict[str, int]) -> "KnownStream":
        now = int(time.time() * 1000)
        base = now - now % DAY_MS - 150_000  # 23:57:30 yesterday: the stream spans midnight
        stream = cls(windows)
        for c, (channel, count) in enumerate(counts.items()):
            step = 300_000 // count
            for i in range(count):
                sent_at = base + i * step + c * 997
                stream.messages.append(_message(channel, i, sent_at, users=3 + count // 6))
            own = stream.of(channel)
            if count > 3:  # a channel of three messages or fewer has no moderation
                stream.events.append(
                    ChatEvent(
                        type="message_deleted",
                        channel=channel,
                        sent_at=own[3].sent_at + 1,
                        id=f"clearmsg:{own[3].id}",
                        target_msg_id=own[3].id,
                        user_login=own[3].user_login,
                    )
                )
            for kind, who, after in (("timeout", 5, 5), ("ban", 10, 20)):
                if after < count:
                    target, at = own[who], own[after].sent_at + 2
                    stream.events.append(
                        ChatEvent(
                            type=kind,
                            channel=channel,
                            sent_at=at,
                            id=f"clearchat:{channel}:{at}:{target.user_id}",
                            user_id=target.user_id,
                            user_login=target.user_login,
                            duration_s=600 if kind == "timeout" else None,
                        )
                    )
        return stream

    @property
    def deleted(self) -> set[str]:
        """Ids of the messages the events delete (the processor's join, by id, user, time)."""
        out: set[str] = set()
        for e in self.events:
            out.update(
                m.id
                for m in self.of(e.channel)
                if (e.type == "message_deleted" and m.id == e.target_msg_id)
                or (
                    e.type in ("timeout", "ban")
                    and m.user_id == e.user_id
                    and m.sent_at <= e.sent_at
                )
            )
        return out

    @property
    def channels(self) -> list[str]:
        return sorted({m.channel for m in self.messages})

    def of(self, channel: str) -> list[ChatMessage]:
        return [m for m in self.messages if m.channel == channel]

    def window_table(self) -> dict[tuple[str, str, int], Window]:
        table: dict[tuple[str, str, int], Window] = defaultdict(Window)
        for m in self.messages:
            for name, size in self.windows.items():
                w = table[(m.channel, name, m.sent_at - m.sent_at % size)]
                w.messages += 1
                w.users.add(m.user_id)
                w.chatters[m.user_login] += 1
                for e in m.emotes:
                    w.emotes[(e.id, m.emote_name(e))] += 1
        for event in self.events:
            for name, size in self.windows.items():
                key = (event.channel, name, event.sent_at - event.sent_at % size)
                table[key].moderation[event.type] += 1
        for channel, first, last in self._sessions():
            for name, size in self.windows.items():
                table[(channel, name, first - first % size)].sessions_started += 1
                if last is None:
                    continue
                ended = last + SEEDED_SESSION_GAP_MS
                key = (channel, name, ended - ended % size)
                # an end is kept where its window has messages: a seeded stream stores no
                # window of ended sessions alone
                if key in table:
                    table[key].session_lengths.append(last - first)
        return dict(table)

    def _sessions(self) -> Iterator[tuple[str, int, int | None]]:
        """(channel, first, last) of every chatter session, split at silences longer than
        the gap; last is None while the session is open (its channel's chat has not gone
        past its last message + the gap)."""
        times: dict[tuple[str, str], list[int]] = defaultdict(list)
        for m in self.messages:
            times[(m.channel, m.user_id)].append(m.sent_at)
        for (channel, _user), sent in sorted(times.items()):
            now = max(m.sent_at for m in self.of(channel))
            ordered: list[int | None] = [*sorted(sent), None]
            session = [min(sent)]
            for at in ordered[1:]:
                if at is not None and at - session[-1] <= SEEDED_SESSION_GAP_MS:
                    session.append(at)
                    continue
                over = at is not None or session[-1] + SEEDED_SESSION_GAP_MS <= now
                yield channel, session[0], session[-1] if over else None
                if at is not None:
                    session = [at]

    def stats_json(self, channel: str, name: str, start: int, *, closed: bool) -> dict[str, Any]:
        w = self.window_table()[(channel, name, start)]
        size = self.windows[name]
        return {
            "channel": channel,
            "window": name,
            "window_start": iso(start),
            "window_end": iso(start + size),
            "messages": w.messages,
            "unique_chatters": len(w.users),
            "top_emotes": w.top_emotes(),
            "closed": closed,
            "top_chatters": w.top_chatters(),
            "deleted_messages": w.moderation["message_deleted"],
            "timeouts": w.moderation["timeout"],
            "bans": w.moderation["ban"],
            **w.sessions(),
        }

    def spikes(self, channel: str) -> list[dict[str, Any]]:
        """The chat spikes stored for ``channel`` (every other of its closed 1m windows, from
        the newest, each as if it had been 4 x its baseline), newest first, as the API answers
        them."""
        return [
            {
                "channel": channel,
                "window": "1m",
                "window_start": iso(start),
                "window_end": iso(start + 60_000),
                "messages": self.window_table()[(channel, "1m", start)].messages,
                "baseline_median": self.window_table()[(channel, "1m", start)].messages / 4,
                "factor": 3.0,
            }
            for start in [
                s for s in self.starts(channel, "1m") if self.is_closed(channel, "1m", s)
            ][::2]
        ]

    def starts(self, channel: str, name: str) -> list[int]:
        """Window starts of a channel, newest first."""
        return sorted(
            (s for (c, n, s) in self.window_table() if c == channel and n == name), reverse=True
        )

    def is_closed(self, channel: str, name: str, start: int) -> bool:
        """The newest 1m window of each channel is still open (a live row)."""
        return not (
            name == min(self.windows, key=self.windows.__getitem__)
            and start == max(self.starts(channel, name))
        )


def _day(ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ms // DAY_MS)


def write_rows(settings: Settings, stream: KnownStream) -> None:
    """Store the stream's messages, windows, leaderboard, latest windows and totals."""
    cluster, session = connect(settings)
    ks = settings.cassandra_keyspace
    try:
        insert_message = session.prepare(
            f"INSERT INTO {ks}.messages_bucketed (channel, bucket, sent_at, id, record, words, "
            "deleted) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        insert_user_message = session.prepare(
            f"INSERT INTO {ks}.user_messages (channel, user_login, bucket, sent_at, id, record, "
            "deleted) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        deleted = stream.deleted
        insert_bucket = session.prepare(
            f"INSERT INTO {ks}.message_buckets (channel, bucket) VALUES (?, ?)"
        )
        for m in stream.messages:
            bucket = message_bucket(m.sent_at)
            # the words as the processor keeps them; this stream's texts are plain words
            words = set(m.text.lower().split())
            # (the processor leaves a message's deleted null until a mark: so does this)
            mark = True if m.id in deleted else None
            session.execute(
                insert_message, (m.channel, bucket, m.sent_at, m.id, encode(m), words, mark)
            )
            day = m.sent_at - m.sent_at % DAY_MS
            session.execute(
                insert_user_message,
                (m.channel, m.user_login, day, m.sent_at, m.id, encode(m), mark),
            )
        for channel, bucket in {(m.channel, message_bucket(m.sent_at)) for m in stream.messages}:
            session.execute(insert_bucket, (channel, bucket))
        insert_window = session.prepare(
            f"INSERT INTO {ks}.window_stats (channel, window, day, window_start, window_end, "
            "messages, unique_chatters, top_emotes, closed, top_chatters, deleted_messages, "
            "timeouts, bans, sessions_started, sessions_ended, session_mean_s, session_p90_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        insert_board = session.prepare(
            f"INSERT INTO {ks}.window_leaderboard (window, window_start, channel, messages, "
            "unique_chatters) VALUES (?, ?, ?, ?, ?)"
        )
        latest: dict[str, int] = {}
        for (channel, name, start), w in stream.window_table().items():
            closed = stream.is_closed(channel, name, start)
            session.execute(
                insert_window,
                (
                    channel,
                    name,
                    _day(start),
                    start,
                    start + stream.windows[name],
                    w.messages,
                    len(w.users),
                    json.dumps(w.top_emotes()),
                    closed,
                    json.dumps(w.top_chatters()),
                    w.moderation["message_deleted"],
                    w.moderation["timeout"],
                    w.moderation["ban"],
                    *w.sessions().values(),
                ),
            )
            session.execute(insert_board, (name, start, channel, w.messages, len(w.users)))
            latest[name] = max(latest.get(name, start), start)
        for name, start in latest.items():
            session.execute(
                f"INSERT INTO {ks}.latest_window (window, window_start) VALUES (%s, %s)",
                (name, start),
            )
        insert_spike = session.prepare(
            f"INSERT INTO {ks}.chat_spikes (channel, window_start, window, window_end, messages, "
            "baseline_median, factor) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        for channel in stream.channels:
            for spike in stream.spikes(channel):
                start = next(
                    s for s in stream.starts(channel, "1m") if iso(s) == spike["window_start"]
                )
                session.execute(
                    insert_spike,
                    (
                        channel,
                        start,
                        "1m",
                        start + 60_000,
                        spike["messages"],
                        spike["baseline_median"],
                        spike["factor"],
                    ),
                )
        for channel in stream.channels:
            sent = [m.sent_at for m in stream.of(channel)]
            session.execute(
                f"INSERT INTO {ks}.channel_totals (channel, total_messages, first_seen, "
                "last_seen) VALUES (%s, %s, %s, %s)",
                (channel, len(sent), min(sent), max(sent)),
            )
    finally:
        cluster.shutdown()


def wait_ready(client: httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"API not ready: {response.text}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_api(
    settings: Settings, *, ready: bool = True, ca: Path | None = None
) -> Iterator[httpx.Client]:
    """The real app on a loopback port, with a client; waits for /readyz unless told not to.

    Over HTTPS when the settings name a certificate (CHATPULSE_API_TLS_*); the client then
    verifies it against ``ca``.
    """
    verify = ssl.create_default_context(cafile=ca) if ca is not None else True
    with (
        serve_in_thread(create_app(settings), tls=tls_options(settings)) as url,
        httpx.Client(base_url=url, timeout=10, verify=verify) as client,
    ):
        if ready:
            wait_ready(client)
        yield client
