"""The one decoding rule of tracked-channels records, shared by the API and the ingest."""

import pytest

from chatpulse.errors import TrackedRecordError
from chatpulse.tracked import (
    BadTrackedRecord,
    TrackedChannelsFollower,
    decode_tracked,
)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (b"xqcow", b'{"channel": "xqcow", "tracked": true}', ("xqcow", True)),
        (b"xqcow", b'{"channel": "xqcow"}', ("xqcow", True)),  # tracked defaults to true
        (b"xqcow", b'{"channel": "xqcow", "tracked": false}', ("xqcow", False)),
        (b"xqcow", None, ("xqcow", False)),  # a tombstone
        (b"XQcOW", b'{"channel": "#XQcOW", "tracked": true}', ("xqcow", True)),
        (b"xqcow", b'{"channel": "xqcow", "tracked": true, "by": "api"}', ("xqcow", True)),
    ],
)
def test_good_records(key: bytes, value: bytes | None, expected: tuple[str, bool]) -> None:
    assert decode_tracked(key, value) == expected


@pytest.mark.parametrize(
    ("key", "value", "channel", "reason"),
    [
        (b"xqcow", b"not json", "xqcow", "value of xqcow is not a channel entry"),
        (b"xqcow", b'{"tracked": true}', "xqcow", "value of xqcow is not a channel entry"),
        (b"xqcow", b'{"channel": "xqcow", "tracked": "yes"}', "xqcow", "not a channel entry"),
        (b"xqcow", b'{"channel": "shroud"}', "xqcow", "names channel 'shroud', its key 'xqcow'"),
        (b"bad key!", b'{"channel": "xqcow"}', None, "is not a Twitch channel"),
        (None, None, None, "is not a Twitch channel"),
        (b"\xff\xfe", None, None, "is not a Twitch channel"),
    ],
)
def test_bad_records_untrack_the_keys_channel(
    key: bytes | None, value: bytes | None, channel: str | None, reason: str
) -> None:
    with pytest.raises(TrackedRecordError, match=reason) as caught:
        decode_tracked(key, value)
    assert caught.value.channel == channel


def test_the_follower_applies_the_rule_record_by_record() -> None:
    bad: list[BadTrackedRecord] = []
    follower = TrackedChannelsFollower(
        "127.0.0.1:1", "tracked-channels", client_id="chatpulse-test", on_bad=bad.append
    )
    try:
        follower._apply(b"alpha", b'{"channel": "Alpha", "tracked": true}', 0, 0)
        follower._apply(b"beta", b'{"channel": "beta"}', 0, 1)
        follower._apply(b"alpha", None, 0, 2)
        follower._apply(b"gamma", b'{"channel": "gamma", "tracked": false}', 0, 3)
        follower._apply(b"d", b"not json", 0, 4)
        follower._apply(b"e", b'{"channel": "bad name!"}', 0, 5)
        assert follower.channels == {"beta"}
        follower._apply(b"delta", b'{"channel": "delta"}', 0, 6)
        follower._apply(b"delta", b"{garbled", 0, 7)  # the latest word on delta: not tracked
        assert follower.channels == {"beta"}
    finally:
        follower.close()
    assert [(b.raw, b.offset) for b in bad] == [
        (b"not json", 4),
        (b'{"channel": "bad name!"}', 5),
        (b"{garbled", 7),
    ]
