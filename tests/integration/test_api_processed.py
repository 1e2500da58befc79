"""End to end below ingest: a known stream through the real processor, read through the API.

Messages (every fourth one delivered twice) go to the messages topic and a few CLEARMSG/CLEARCHAT
events to the events topic; ``chatpulse process``
(a subprocess of the real CLI) counts them into Cassandra; every read endpoint must then answer
the numbers computed independently by the test (api_support.KnownStream). Whether a window is
already closed is the processor's business (it depends on its grace), so ``closed`` is left out;
ties among top emotes may be ordered either way, so they are compared as sets. Chatter
sessions are off here (their numbers are checked against their own ground truth by the
processor's exactness tests and, through the API, by the cluster failure tests): every window
must say so.
"""

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import KnownStream, iso, running_api
from confluent_kafka import Producer
from processor_support import ProcessorProcess

from chatpulse.models import encode
from chatpulse.settings import Settings
from chatpulse.topics import Topics

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

COUNTS = {"alpha": 40, "beta": 25, "gamma": 9}
SESSIONS_OFF = {
    "sessions_started": 0,
    "sessions_ended": 0,
    "session_mean_s": None,
    "session_p90_s": None,
}


def _comparable(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    emotes = sorted(stats["top_emotes"], key=lambda e: e["id"])
    return {**{k: v for k, v in stats.items() if k != "closed"}, "top_emotes": emotes}


def _wait_counted(api: httpx.Client, stream: KnownStream, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(stream.channels)
    while pending:
        assert time.monotonic() < deadline, f"not counted in time: {sorted(pending)}"
        for channel in sorted(pending):
            response = api.get(f"/api/v1/channels/{channel}")
            if response.status_code == 200:
                newest = response.json()["windows"]["1m"]
                want = stream.window_table()[(channel, "1m", stream.starts(channel, "1m")[0])]
                if (
                    response.json()["total_messages"] == COUNTS[channel]
                    and newest is not None
                    and newest["messages"] == want.messages
                ):
                    pending.discard(channel)
        time.sleep(0.5)


def _user_pages(api: httpx.Client, path: str, **params: Any) -> list[str]:
    """Every page of a user's history (3 to a page), as message ids."""
    ids: list[str] = []
    query: dict[str, Any] = {"limit": 3, **params}
    while True:
        response = api.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids
        query = {**query, "before": page["next_cursor"]}


def _check_user_histories(api: httpx.Client, stream: KnownStream, channel: str) -> None:
    """Each user's history, from the processor's user_messages rows: exactly their messages,
    newest first, across the midnight the stream spans; from/to bound it."""
    messages = sorted(stream.of(channel), key=lambda m: (m.sent_at, m.id), reverse=True)
    logins = sorted({m.user_login for m in messages})
    assert len(logins) > 2
    for login in logins:
        path = f"/api/v1/channels/{channel}/users/{login.upper()}/messages"
        expected = [m.id for m in messages if m.user_login == login]
        assert _user_pages(api, path) == expected
        # deleted as the moderation join marked the user_messages rows
        items = api.get(path, params={"limit": 100}).json()["items"]
        assert {i["id"] for i in items if i["deleted"]} == set(expected) & stream.deleted
    login = logins[0]
    own = [m for m in messages if m.user_login == login]
    middle = own[len(own) // 2]
    path = f"/api/v1/channels/{channel}/users/{login}/messages"
    assert _user_pages(api, path, **{"from": iso(middle.sent_at)}) == [
        m.id for m in own if m.sent_at >= middle.sent_at
    ]
    assert _user_pages(api, path, to=iso(middle.sent_at)) == [
        m.id for m in own if m.sent_at < middle.sent_at
    ]
    nobody = api.get(f"/api/v1/channels/{channel}/users/nobody_here/messages").json()
    assert nobody == {"items": [], "next_cursor": None}
    backwards = api.get(path, params={"from": iso(middle.sent_at), "to": iso(own[-1].sent_at)})
    assert backwards.status_code == 422
    assert api.get(f"/api/v1/channels/{channel}/users/not-a-login/messages").status_code == 422
    unknown = api.get("/api/v1/channels/never_seen_here/users/someone/messages")
    assert unknown.status_code == 404


def _check_search(api: httpx.Client, stream: KnownStream, channel: str) -> None:
    """A search finds exactly the messages holding every word (any case), newest first,
    through the Storage-Attached Index of the words the processor stored; bad q is a 422."""
    messages = sorted(stream.of(channel), key=lambda m: (m.sent_at, m.id), reverse=True)
    path = f"/api/v1/channels/{channel}/messages"
    for query, wanted in [("kappa", {"kappa"}), ("KAPPA gg", {"kappa", "gg"}), ("LuL", {"lul"})]:
        expected = [m.id for m in messages if wanted <= set(m.text.lower().split())]
        assert expected, query
        assert _user_pages(api, path, q=query) == expected
    assert _user_pages(api, path, q="nothing_says_this") == []
    for bad in ["", "?!", "a b c d e f", "x" * 41, "y " * 101]:
        response = api.get(path, params={"q": bad})
        assert response.status_code == 422, bad
        assert response.headers["content-type"].startswith("application/problem+json")


def _check_deleted(api: httpx.Client, stream: KnownStream, channel: str) -> None:
    """``deleted`` is true exactly on the messages the events delete (marks may land a
    checkpoint after the numbers: waited for)."""
    want = {m.id for m in stream.of(channel)} & stream.deleted
    assert want
    deadline = time.monotonic() + 30
    while True:
        page = api.get(f"/api/v1/channels/{channel}/messages", params={"limit": 100}).json()
        got = {item["id"] for item in page["items"] if item["deleted"]}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(1.1)  # past the API's response cache
    assert got == want


def test_api_serves_exactly_what_the_processor_counted(settings: Settings, tmp_path: Path) -> None:
    windows = dict(zip(settings.windows, settings.window_sizes_ms, strict=True))
    stream = KnownStream.build(windows, COUNTS)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topic = Topics.from_settings(settings).messages
    for i, message in enumerate(stream.messages):
        for _ in range(2 if i % 4 == 0 else 1):
            producer.produce(
                topic,
                key=message.channel.encode(),
                value=encode(message),
                timestamp=message.sent_at,
            )
    events = Topics.from_settings(settings).events
    for event in sorted(stream.events, key=lambda e: e.sent_at):
        producer.produce(
            events, key=event.channel.encode(), value=encode(event), timestamp=event.sent_at
        )
    producer.flush(30)
    assert stream.deleted

    processor = ProcessorProcess(
        settings,
        tmp_path / "state",
        tmp_path / "processor.log",
        CHATPULSE_WINDOWS="1m,10m,1h",
        CHATPULSE_SESSION_GAP="off",
    )
    processor.start()
    try:
        with running_api(settings) as api:
            _wait_counted(api, stream)
            time.sleep(1.5)  # past the API's 1 s response cache: every read below is fresh
            for channel in stream.channels:
                sent = [m.sent_at for m in stream.of(channel)]
                summary = api.get(f"/api/v1/channels/{channel}").json()
                assert summary["total_messages"] == COUNTS[channel]
                assert (summary["first_seen"], summary["last_seen"]) == (
                    iso(min(sent)),
                    iso(max(sent)),
                )
                for name in windows:
                    newest = stream.starts(channel, name)[0]
                    expected = stream.stats_json(channel, name, newest, closed=False)
                    assert _comparable(summary["windows"][name]) == _comparable(
                        {**expected, **SESSIONS_OFF}
                    )
                    stats = api.get(
                        f"/api/v1/channels/{channel}/stats", params={"window": name}
                    ).json()
                    assert [_comparable(s) for s in stats["items"]] == [
                        _comparable(
                            {**stream.stats_json(channel, name, s, closed=False), **SESSIONS_OFF}
                        )
                        for s in stream.starts(channel, name)
                    ]
                ids: list[str] = []
                params: dict[str, Any] = {"limit": 9}
                while True:
                    page = api.get(f"/api/v1/channels/{channel}/messages", params=params).json()
                    ids += [item["id"] for item in page["items"]]
                    if page["next_cursor"] is None:
                        break
                    params = {"limit": 9, "before": page["next_cursor"]}
                expected_ids = sorted(stream.of(channel), key=lambda m: (m.sent_at, m.id))
                assert ids == [m.id for m in reversed(expected_ids)]
                _check_deleted(api, stream, channel)
                _check_user_histories(api, stream, channel)
                _check_search(api, stream, channel)

            table = stream.window_table()
            for name in windows:
                newest = max(s for (_c, n, s) in table if n == name)
                board = api.get("/api/v1/leaderboard", params={"window": name}).json()
                assert board["window_start"] == iso(newest)
                assert board["items"] == sorted(
                    (
                        {"channel": c, "messages": w.messages, "unique_chatters": len(w.users)}
                        for (c, n, s), w in table.items()
                        if n == name and s == newest
                    ),
                    key=lambda e: (-e["messages"], e["channel"]),
                )
    finally:
        processor.stop()
