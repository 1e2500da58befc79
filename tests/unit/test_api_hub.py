"""The live hub's fan-out (no Kafka: the consumer thread is not started)."""

import orjson

from chatpulse.api.hub import LiveHub, _decode, _payload, stats_json
from chatpulse.models import ChatSpike, TopChatter, TopEmote, WindowStats, encode


def _hub(queue_size: int = 3) -> LiveHub:
    return LiveHub(bootstrap_servers="127.0.0.1:1", topic="unused", queue_size=queue_size)


async def test_updates_reach_every_subscriber_of_their_channel_only() -> None:
    hub = _hub()
    async with (
        hub.subscribe("alpha") as a1,
        hub.subscribe("alpha") as a2,
        hub.subscribe("beta") as b,
    ):
        hub._dispatch(
            [("alpha", ("1m", "", "A")), ("beta", ("1m", "", "B")), ("gamma", ("1m", "", "G"))]
        )
        assert a1.get_nowait() == a2.get_nowait() == ("1m", "", "A")
        assert b.get_nowait() == ("1m", "", "B")
        assert a1.empty()
        assert b.empty()


async def test_a_slow_subscriber_loses_its_oldest_updates() -> None:
    hub = _hub(queue_size=3)
    async with hub.subscribe("alpha") as queue:
        hub._dispatch([("alpha", ("1m", "", str(i))) for i in range(5)])
        assert [queue.get_nowait()[2] for _ in range(3)] == ["2", "3", "4"]


async def test_leaving_unsubscribes() -> None:
    hub = _hub()
    async with hub.subscribe("alpha"):
        assert "alpha" in hub._subscribers
    assert hub._subscribers == {}
    hub._dispatch([("alpha", ("1m", "", "A"))])  # nobody listening: nothing happens


def test_stats_json_is_the_api_shape() -> None:
    stats = WindowStats(
        "alpha",
        "1m",
        1_700_000_040_000,
        1_700_000_100_000,
        5,
        2,
        [TopEmote("25", "Kappa", 3)],
        False,
        [TopChatter("someviewer", 2)],
        sessions_started=3,
        sessions_ended=2,
        session_mean_s=14.5,
        session_p90_s=29,
    )
    assert orjson.loads(stats_json(stats)) == {
        "channel": "alpha",
        "window": "1m",
        "window_start": "2023-11-14T22:14:00Z",
        "window_end": "2023-11-14T22:15:00Z",
        "messages": 5,
        "unique_chatters": 2,
        "top_emotes": [{"id": "25", "name": "Kappa", "count": 3}],
        "closed": False,
        "top_chatters": [{"login": "someviewer", "count": 2}],
        "deleted_messages": 0,
        "timeouts": 0,
        "bans": 0,
        "sessions_started": 3,
        "sessions_ended": 2,
        "session_mean_s": 14.5,
        "session_p90_s": 29,
    }


def test_a_spike_record_of_channel_stats_becomes_a_spike_event() -> None:
    start = 1_764_000_000_000
    spike = ChatSpike("alpha", "1m", start, start + 60_000, 140, baseline_median=31.5, factor=3.0)
    record = _decode(encode(spike))
    assert record == spike
    window, event, data = _payload(record)
    assert (window, event) == ("1m", "spike")
    assert orjson.loads(data) == {
        "channel": "alpha",
        "window": "1m",
        "window_start": "2025-11-24T16:00:00Z",
        "window_end": "2025-11-24T16:01:00Z",
        "messages": 140,
        "baseline_median": 31.5,
        "factor": 3.0,
    }
    # window statistics are still unnamed events
    stats = WindowStats("alpha", "1m", start, start + 60_000, 140, 12)
    assert _payload(_decode(encode(stats)))[:2] == ("1m", "")
