"""The REST API on the real stack: exact numbers, pagination, validation, writes.

The rows are written through the storage schema with numbers computed by the test from a
known stream (see api_support), not by the processor.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from api_support import KnownStream, iso, running_api, write_rows
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from chatpulse.settings import Settings
from chatpulse.topics import Topics

pytestmark = pytest.mark.timeout(300)

COUNTS = {"alpha": 40, "beta": 25, "gamma": 9}


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_key": SecretStr("k3y")})


@pytest.fixture
def stream(keyed_settings: Settings) -> KnownStream:
    known = KnownStream.build(
        dict(zip(keyed_settings.windows, keyed_settings.window_sizes_ms, strict=True)), COUNTS
    )
    write_rows(keyed_settings, known)
    return known


@pytest.fixture
def api(keyed_settings: Settings, stream: KnownStream) -> Iterator[httpx.Client]:
    with running_api(keyed_settings) as client:
        yield client


def _walk(api: httpx.Client, path: str, cursor_param: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(1000):
        page = api.get(path, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= limit
        items.extend(body["items"])
        if body["next_cursor"] is None:
            return items
        params = {"limit": limit, cursor_param: body["next_cursor"]}
    raise AssertionError("pagination does not end")


def test_every_read_endpoint_returns_the_exact_numbers(
    api: httpx.Client, stream: KnownStream
) -> None:
    for channel in stream.channels:
        sent = [m.sent_at for m in stream.of(channel)]
        summary = api.get(f"/api/v1/channels/{channel.upper()}").json()
        assert summary["channel"] == channel
        assert summary["total_messages"] == COUNTS[channel]
        assert summary["first_seen"] == iso(min(sent))
        assert summary["last_seen"] == iso(max(sent))
        assert summary["tracked"] is False
        for name in stream.windows:
            newest = stream.starts(channel, name)[0]
            closed = stream.is_closed(channel, name, newest)
            assert summary["windows"][name] == stream.stats_json(
                channel, name, newest, closed=closed
            )

        for name in stream.windows:
            stats = api.get(f"/api/v1/channels/{channel}/stats", params={"window": name}).json()
            expected = [
                stream.stats_json(channel, name, s, closed=stream.is_closed(channel, name, s))
                for s in stream.starts(channel, name)
            ]
            assert stats == {"channel": channel, "window": name, "items": expected}

    board = api.get("/api/v1/leaderboard", params={"window": "1m", "limit": 10}).json()
    table = stream.window_table()
    newest = max(s for (_c, n, s) in table if n == "1m")
    expected_board = sorted(
        (
            {"channel": c, "messages": w.messages, "unique_chatters": len(w.users)}
            for (c, n, s), w in table.items()
            if n == "1m" and s == newest
        ),
        key=lambda e: (-e["messages"], e["channel"]),
    )
    assert board == {"window": "1m", "window_start": iso(newest), "items": expected_board}
    top1 = api.get("/api/v1/leaderboard", params={"window": "1m", "limit": 1}).json()
    assert top1["items"] == expected_board[:1]


def test_stats_range_and_limit(api: httpx.Client, stream: KnownStream) -> None:
    starts = stream.starts("alpha", "1m")  # newest first, spanning midnight
    assert len(starts) >= 5
    params = {"window": "1m", "from": iso(starts[3]), "to": iso(starts[0])}
    got = api.get("/api/v1/channels/alpha/stats", params=params).json()["items"]
    assert [item["window_start"] for item in got] == [iso(s) for s in starts[1:4]]
    limited = api.get("/api/v1/channels/alpha/stats", params={"window": "1m", "limit": 2}).json()
    assert [item["window_start"] for item in limited["items"]] == [iso(s) for s in starts[:2]]


def test_messages_walk_every_message_once_newest_first(
    api: httpx.Client, stream: KnownStream
) -> None:
    for channel in stream.channels:
        items = _walk(api, f"/api/v1/channels/{channel}/messages", "before", limit=7)
        expected = sorted(stream.of(channel), key=lambda m: (m.sent_at, m.id), reverse=True)
        assert [item["id"] for item in items] == [m.id for m in expected]
        # the moderation join's marks: deleted true exactly on the deleted messages
        assert {item["id"] for item in items if item["deleted"]} == {
            m.id for m in expected if m.id in stream.deleted
        }
        assert any(item["deleted"] for item in items)
        first, message = items[0], expected[0]
        assert first["text"] == message.text
        assert first["user_login"] == message.user_login
        assert first["display_name"] == message.display_name
        assert first["sent_at"] == iso(message.sent_at)
        assert first["bits"] == message.bits
        assert first["emotes"] == [
            {"id": e.id, "start": e.start, "end": e.end} for e in message.emotes
        ]
    cutoff = stream.of("beta")[10].sent_at
    older = api.get("/api/v1/channels/beta/messages", params={"before": iso(cutoff)}).json()
    assert [i["id"] for i in older["items"]] == [f"beta-{i:04d}" for i in range(9, -1, -1)]


def test_spikes_walk_every_spike_once_newest_first(api: httpx.Client, stream: KnownStream) -> None:
    for channel in stream.channels:
        expected = stream.spikes(channel)
        assert len(expected) >= 2
        assert _walk(api, f"/api/v1/channels/{channel}/spikes", "before", limit=2) == expected
        whole = api.get(f"/api/v1/channels/{channel}/spikes").json()
        assert whole == {"items": expected, "next_cursor": None}
    # before an ISO time: the spikes whose window started before it
    spikes = stream.spikes("alpha")
    older = api.get("/api/v1/channels/alpha/spikes", params={"before": spikes[1]["window_start"]})
    assert older.json()["items"] == spikes[2:]


def test_a_cursor_from_one_instance_works_on_another(
    api: httpx.Client, stream: KnownStream, keyed_settings: Settings
) -> None:
    """Cursors hold no per-process key: a page's cursor continues on another instance (or the
    same one restarted), as behind a load balancer or across ``--workers``."""
    expected = [m.id for m in sorted(stream.of("alpha"), key=lambda m: (m.sent_at, m.id))][::-1]
    first = api.get("/api/v1/channels/alpha/messages", params={"limit": 7}).json()
    channels = api.get("/api/v1/channels", params={"limit": 1}).json()
    with running_api(keyed_settings) as other:
        page = other.get(
            "/api/v1/channels/alpha/messages", params={"limit": 7, "before": first["next_cursor"]}
        )
        assert page.status_code == 200, page.text
        assert [i["id"] for i in first["items"] + page.json()["items"]] == expected[:14]
        rest = other.get(
            "/api/v1/channels", params={"limit": 50, "cursor": channels["next_cursor"]}
        )
        assert rest.status_code == 200, rest.text
        names = [i["channel"] for i in channels["items"] + rest.json()["items"]]
        assert sorted(names) == sorted(COUNTS)
        # Still scoped: a cursor of alpha's messages is not one of beta's.
        wrong = other.get("/api/v1/channels/beta/messages", params={"before": first["next_cursor"]})
        assert wrong.status_code == 400
        assert wrong.json()["type"] == "urn:chatpulse:problem:invalid-cursor"


def test_channels_pagination_lists_each_channel_once_with_tracked_ones(
    api: httpx.Client, stream: KnownStream, keyed_settings: Settings
) -> None:
    key = {"X-API-Key": "k3y"}
    for channel in ("zeta_new", "Beta"):
        response = api.post("/api/v1/channels", json={"channel": channel}, headers=key)
        assert response.status_code == 202
        assert response.json() == {"channel": channel.lower(), "tracked": True}
    for limit in (1, 2, 3, 50):
        items = _walk(api, "/api/v1/channels", "cursor", limit=limit)
        assert sorted(i["channel"] for i in items) == ["alpha", "beta", "gamma", "zeta_new"]
        by_name = {i["channel"]: i for i in items}
        assert by_name["zeta_new"] == {
            "channel": "zeta_new",
            "total_messages": 0,
            "first_seen": None,
            "last_seen": None,
            "tracked": True,
        }
        assert by_name["beta"]["tracked"] is True
        assert by_name["alpha"]["tracked"] is False
        assert by_name["gamma"]["total_messages"] == COUNTS["gamma"]
    # A tracked channel without data is known: empty answers, not 404.
    assert api.get("/api/v1/channels/zeta_new/stats").json()["items"] == []
    assert api.get("/api/v1/channels/zeta_new").json()["windows"] == dict.fromkeys(stream.windows)

    response = api.delete("/api/v1/channels/zeta_new", headers=key)
    assert response.status_code == 202
    assert api.get("/api/v1/channels/zeta_new").status_code == 404
    records = _read_tracked(keyed_settings, expected=3)
    assert records == [
        ("zeta_new", {"channel": "zeta_new", "tracked": True}),
        ("beta", {"channel": "beta", "tracked": True}),
        ("zeta_new", None),
    ]


def _read_tracked(settings: Settings, expected: int) -> list[tuple[str, Any]]:
    topic = Topics.from_settings(settings).tracked
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "t-read"}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[tuple[str, Any]] = []
    try:
        for _ in range(50):
            for record in consumer.consume(10, timeout=0.2):
                if record.error() is None:
                    value = record.value()
                    got.append((record.key().decode(), orjson.loads(value) if value else None))
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


def test_validation_and_problems_with_data(api: httpx.Client, stream: KnownStream) -> None:
    def problem(path: str, status: int, **params: Any) -> dict[str, Any]:
        response = api.get(path, params=params)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return response.json()  # type: ignore[no-any-return]

    for sub in ("", "/stats", "/messages", "/live", "/spikes"):
        assert problem(f"/api/v1/channels/nobody{sub}", 404)["type"].endswith("unknown-channel")
    problem("/api/v1/channels/alpha/stats", 422, **{"from": iso(2_000_000), "to": iso(1_000_000)})
    span = problem(
        "/api/v1/channels/alpha/stats", 422, **{"from": iso(0), "to": iso(40 * 86_400_000)}
    )
    assert "31 days" in span["detail"]
    problem("/api/v1/channels/alpha/stats", 422, window="2m")
    problem("/api/v1/channels/alpha/stats", 422, limit=1441)
    problem("/api/v1/channels/alpha/stats", 422, to="yesterday")
    problem("/api/v1/channels/alpha/messages", 422, limit=201)

    alpha_cursor = api.get("/api/v1/channels/alpha/messages", params={"limit": 1}).json()[
        "next_cursor"
    ]
    assert alpha_cursor is not None
    problem("/api/v1/channels/beta/messages", 400, before=alpha_cursor)
    problem("/api/v1/channels", 400, cursor=alpha_cursor)
    channel_cursor = api.get("/api/v1/channels", params={"limit": 1}).json()["next_cursor"]
    problem("/api/v1/channels/alpha/messages", 400, before=channel_cursor)
    problem("/api/v1/channels/alpha/messages", 400, before=alpha_cursor[:-2] + "AA")
    spike_cursor = api.get("/api/v1/channels/alpha/spikes", params={"limit": 1}).json()[
        "next_cursor"
    ]
    assert spike_cursor is not None
    problem("/api/v1/channels/beta/spikes", 400, before=spike_cursor)
    problem("/api/v1/channels/alpha/spikes", 400, before=alpha_cursor)
    problem("/api/v1/channels/alpha/messages", 400, before=spike_cursor)
    problem("/api/v1/channels/alpha/spikes", 422, limit=201)
    problem("/api/v1/channels/alpha/spikes", 422, limit=0)


EXTREME_TIMES = [
    ("/api/v1/channels/alpha/messages", {"before": "0001-01-01T00:00:00"}),
    ("/api/v1/channels/alpha/messages", {"before": "0001-01-01T00:00:00+05:00"}),
    ("/api/v1/channels/alpha/messages", {"before": "9999-12-31T23:59:59.999999-05:00"}),
    ("/api/v1/channels/alpha/stats", {"from": "0001-01-01T00:00:00+05:00"}),
    ("/api/v1/channels/alpha/stats", {"to": "0001-01-01T00:00:00+05:00"}),
    ("/api/v1/channels/alpha/stats", {"from": "9999-12-31T23:59:59-05:00"}),
    ("/api/v1/channels/alpha/stats", {"to": "9999-12-31T23:59:59-05:00"}),
]


def test_extreme_times_are_answered_not_crashed_on(api: httpx.Client) -> None:
    for path, params in EXTREME_TIMES:
        response = api.get(path, params=params)
        assert response.status_code in (200, 422), (params, response.text)
        if response.status_code == 200 and "0001" in str(params):
            assert response.json()["items"] == []


def test_write_key_rules(api: httpx.Client) -> None:
    body = {"channel": "newone"}
    assert api.post("/api/v1/channels", json=body).status_code == 401
    assert api.post("/api/v1/channels", json=body, headers={"X-API-Key": "k3"}).status_code == 401
    assert api.delete("/api/v1/channels/newone", headers={"X-API-Key": ""}).status_code == 401
    bad = api.post("/api/v1/channels", json={"channel": "a" * 26}, headers={"X-API-Key": "k3y"})
    assert bad.status_code == 422
