"""The tracked-channels follower against the real Kafka: one rule for the API and the ingest."""

from confluent_kafka import Producer

from chatpulse.settings import Settings
from chatpulse.topics import Topics
from chatpulse.tracked import BadTrackedRecord, TrackedChannelsFollower


def _produce(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for key, value in records:
        producer.produce(Topics.from_settings(settings).tracked, value, key)
    assert producer.flush(30) == 0


def _follower(settings: Settings, bad: list[BadTrackedRecord]) -> TrackedChannelsFollower:
    return TrackedChannelsFollower(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).tracked,
        client_id="chatpulse-test-tracked",
        on_bad=bad.append,
    )


def test_a_follower_from_the_start_and_a_live_one_agree_on_every_record(
    settings: Settings,
) -> None:
    _produce(
        settings,
        [
            (b"xqcow", b'{"channel": "xqcow", "tracked": true}'),
            (b"shroud", b'{"channel": "shroud", "tracked": true}'),
            (b"lirik", b'{"channel": "lirik", "tracked": true}'),
        ],
    )
    live_bad: list[BadTrackedRecord] = []
    live = _follower(settings, live_bad)
    try:
        assert live.load(30) == {"xqcow", "shroud", "lirik"}
        _produce(
            settings,
            [
                (b"shroud", b"{not json"),  # unreadable: shroud is no longer tracked
                (b"lirik", b'{"channel": "xqcow", "tracked": true}'),  # names another channel
                (b"not a channel!", b'{"channel": "forsen"}'),  # a key that is no channel
                (b"forsen", b'{"channel": "forsen", "tracked": true}'),
                (b"xqcow", None),  # a tombstone
            ],
        )
        added: set[str] = set()
        removed: set[str] = set()
        for _ in range(100):
            more, less = live.poll(0.2)
            added, removed = (added | more) - less, (removed | less) - more
            if len(live_bad) == 3 and "forsen" in live.channels:
                break
        assert live.channels == {"forsen"}
        assert (added, removed) == ({"forsen"}, {"xqcow", "shroud", "lirik"})
    finally:
        live.close()
    assert [(b.raw, b.reason.split(":")[0]) for b in live_bad] == [
        (b"{not json", "value of shroud is not a channel entry"),
        (b'{"channel": "xqcow", "tracked": true}', "value names channel 'xqcow', its key 'lirik'"),
        (b'{"channel": "forsen"}', "key b'not a channel!' is not a Twitch channel"),
    ]

    late_bad: list[BadTrackedRecord] = []
    late = _follower(settings, late_bad)
    try:
        assert late.load(30) == {"forsen"}  # the same set, read from the beginning
    finally:
        late.close()
    assert [b.reason for b in late_bad] == [b.reason for b in live_bad]
