"""IRC lines to wire records: chat messages, events, emotes, bad input."""

import gzip
import os
from pathlib import Path

import pytest

from chatpulse.api.cursors import MAX_CURSOR_CHARS, Cursors, message_position
from chatpulse.ingest.convert import MAX_MESSAGE_ID_CHARS, parse_emotes, to_record
from chatpulse.ingest.errors import ConvertError
from chatpulse.ingest.irc.parser import parse_line
from chatpulse.models import ChatEvent, ChatMessage, Emote

SAMPLE = Path(
    os.environ.get(
        "CHATPULSE_SAMPLE_CAPTURE",
        Path(__file__).resolve().parents[1] / "data/twitch-irc-xqcow-2019-09.txt.gz",
    )
)
TAGS = "id=m1;room-id=22;tmi-sent-ts=1700000000123;user-id=7;display-name=Zoë"
PREFIX = ":zoe!zoe@zoe.tmi.twitch.tv"


def record(line: str) -> ChatMessage | ChatEvent | None:
    return to_record(parse_line(line))


def chat(tags: str, text: str, channel: str = "#Chan") -> ChatMessage:
    result = record(f"@{tags} {PREFIX} PRIVMSG {channel} :{text}")
    assert isinstance(result, ChatMessage)
    return result


def test_privmsg_fields() -> None:
    msg = chat(
        f"{TAGS};badges=subscriber/12,premium/1;bits=100;reply-parent-msg-id=p1;emotes=25:0-4",
        "Kappa cheer100",
    )
    assert msg == ChatMessage(
        id="m1",
        channel="chan",
        user_id="7",
        user_login="zoe",
        text="Kappa cheer100",
        sent_at=1_700_000_000_123,
        channel_id="22",
        display_name="Zoë",
        emotes=[Emote(id="25", start=0, end=4)],
        bits=100,
        badges={"subscriber": "12", "premium": "1"},
        reply_parent_msg_id="p1",
    )


def test_action_and_unicode_emotes() -> None:
    # indices count code points of the text without the ACTION wrapper: 😀 is one code point
    msg = chat(f"{TAGS};emotes=25:2-6/emotesv2_abc:8-15", "\x01ACTION 😀 Kappa LUL👍 forsenE\x01")
    assert msg.is_action
    assert msg.text == "😀 Kappa LUL👍 forsenE"
    assert [msg.emote_name(e) for e in msg.emotes] == ["Kappa", "LUL👍 for"]
    assert chat(TAGS, "\x01ACTION\x01").text == ""
    plain = chat(TAGS, "\x01ACTIONS\x01")
    assert not plain.is_action
    assert plain.text == "\x01ACTIONS\x01"


def test_trailing_that_starts_with_colon() -> None:
    assert chat(TAGS, ":P").text == ":P"


def test_emote_indices_are_clamped_never_fatal() -> None:
    assert parse_emotes("25:0-4,3-99/1:x-2,5-,-3/:0-1/33:7-2", 10) == [
        Emote(id="25", start=0, end=4),
        Emote(id="25", start=3, end=9),
    ]
    assert parse_emotes("25:20-24", 10) == []
    assert parse_emotes("25:0-4", 0) == []
    assert parse_emotes("", 10) == []


def test_usernotice_types() -> None:
    base = f"{TAGS};login=zoe;system-msg=Zoë\\ssubscribed.;msg-param-months=3"
    sub = record(f"@{base};msg-id=sub :tmi.twitch.tv USERNOTICE #chan")
    assert sub == ChatEvent(
        type="subscription",
        channel="chan",
        sent_at=1_700_000_000_123,
        id="m1",
        channel_id="22",
        user_id="7",
        user_login="zoe",
        system_msg="Zoë subscribed.",
        params={"months": "3"},
    )
    raid = record(f"@{base};msg-id=somethingnew :tmi.twitch.tv USERNOTICE #chan :hi there")
    assert isinstance(raid, ChatEvent)
    assert (raid.type, raid.text) == ("somethingnew", "hi there")


def test_clearchat_and_clearmsg() -> None:
    ts = "tmi-sent-ts=1700000000000;room-id=22"
    timeout = record(f"@ban-duration=600;{ts};target-user-id=9 :tmi.twitch.tv CLEARCHAT #chan :Bad")
    ban = record("@tmi-sent-ts=1700000000001;target-user-id=9 :tmi.twitch.tv CLEARCHAT #chan :bad")
    clear = record(f"@{ts} :tmi.twitch.tv CLEARCHAT #chan")
    deleted = record(f"@login=bad;{ts};target-msg-id=m9 :tmi.twitch.tv CLEARMSG #chan :oops")
    assert isinstance(timeout, ChatEvent)
    assert (timeout.type, timeout.user_login, timeout.user_id, timeout.duration_s) == (
        "timeout",
        "bad",
        "9",
        600,
    )
    assert isinstance(ban, ChatEvent)
    assert (ban.type, ban.duration_s, ban.user_login) == ("ban", None, "bad")
    assert isinstance(clear, ChatEvent)
    assert (clear.type, clear.user_login) == ("clear", "")
    assert isinstance(deleted, ChatEvent)
    assert (deleted.type, deleted.target_msg_id, deleted.user_login, deleted.text) == (
        "message_deleted",
        "m9",
        "bad",
        "oops",
    )
    assert len({timeout.id, ban.id, clear.id, deleted.id}) == 4


@pytest.mark.parametrize(
    "line",
    [
        ":tmi.twitch.tv PING :x",
        "PING :tmi.twitch.tv",
        ":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!",
        ":me!me@me.tmi.twitch.tv JOIN #chan",
        "@emote-only=0;room-id=22;slow=0 :tmi.twitch.tv ROOMSTATE #chan",
        "@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE #chan :This channel is suspended.",
        ":tmi.twitch.tv RECONNECT",
    ],
)
def test_non_data_lines_give_none(line: str) -> None:
    assert record(line) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"@room-id=1;tmi-sent-ts=1;user-id=7 {PREFIX} PRIVMSG #c :x", "missing tag id"),
        (f"@id=a;user-id=7 {PREFIX} PRIVMSG #c :x", "missing tag tmi-sent-ts"),
        (f"@id=a;tmi-sent-ts=1 {PREFIX} PRIVMSG #c :x", "missing tag user-id"),
        (f"@id=a;tmi-sent-ts=soon;user-id=7 {PREFIX} PRIVMSG #c :x", "tag tmi-sent-ts is not"),
        (f"@id=a;tmi-sent-ts=1;user-id=7;bits=-5 {PREFIX} PRIVMSG #c :x", "tag bits is not"),
        (f"@id=a;tmi-sent-ts=1;user-id=7 {PREFIX} PRIVMSG c :x", "no #channel parameter"),
        (f"@id=a;tmi-sent-ts=1;user-id=7 {PREFIX} PRIVMSG #c", "PRIVMSG without text"),
        ("@id=a;tmi-sent-ts=1 :tmi.twitch.tv USERNOTICE #c", "missing tag msg-id"),
        ("@tmi-sent-ts=1;ban-duration=x :tmi.twitch.tv CLEARCHAT #c :u", "tag ban-duration"),
        ("@tmi-sent-ts=1 :tmi.twitch.tv CLEARMSG #c :u", "missing tag target-msg-id"),
    ],
)
def test_unconvertible_data_lines(line: str, reason: str) -> None:
    with pytest.raises(ConvertError) as info:
        record(line)
    assert info.value.reason.startswith(reason)
    assert info.value.line == line


def test_every_sample_line_converts() -> None:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        records = [record(line) for line in fh.read().splitlines()]
    messages = [r for r in records if isinstance(r, ChatMessage)]
    events = [r for r in records if isinstance(r, ChatEvent)]
    assert len(messages) == 4933
    assert len(events) == 67
    types: dict[str, int] = {}
    for event in events:
        types[event.type] = types.get(event.type, 0) + 1
    assert types == {"timeout": 57, "ban": 1, "subscription": 1, "resub": 8}
    assert len({r.id for r in messages}) == 4933
    assert len({r.id for r in events}) == 67
    assert all(m.channel == "xqcow" and m.channel_id == "71092938" for m in messages)
    assert sum(1 for m in messages if m.is_action) == 2
    with_emotes = [m for m in messages if m.emotes]
    assert all(0 <= e.start <= e.end < len(m.text) for m in with_emotes for e in m.emotes)
    assert sum(len(m.emotes) for m in messages) > 0


@pytest.mark.parametrize(
    ("prefix", "login"),
    [
        ("zoe!zoe@zoe.tmi.twitch.tv", "zoe"),  # nick!user@host
        ("Zoe@zoe.tmi.twitch.tv", "zoe"),  # nick@host (RFC 2812): the login is the nick
        ("zoe!zoe", "zoe"),  # nick!user
        ("zoe", "zoe"),
    ],
)
def test_the_login_is_the_nick_of_every_prefix_form(prefix: str, login: str) -> None:
    msg = record(f"@{TAGS} :{prefix} PRIVMSG #chan :hi")
    assert isinstance(msg, ChatMessage)
    assert msg.user_login == login
    nick = parse_line(f":{prefix} PRIVMSG #chan :hi").nick
    assert nick is not None
    assert nick.lower() == login


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        # The issue's reproduction: 23 digits were an OverflowError traceback in the producer.
        (
            "id=m1;user-id=7;tmi-sent-ts=12345678901234567890123",
            "tag tmi-sent-ts is out of range (over 2^53 - 1): '12345678901234567890123'",
        ),
        (
            "id=m1;user-id=7;tmi-sent-ts=" + "9" * 5000,  # past int()'s 4300-digit limit
            "tag tmi-sent-ts is out of range (over 2^53 - 1): '" + "9" * 40 + "'",
        ),
        (
            "id=m1;user-id=7;tmi-sent-ts=253402300800000",  # year 10000
            "tag tmi-sent-ts is not a time (epoch ms past year 9999): 253402300800000",
        ),
        (
            "id=m1;user-id=7;tmi-sent-ts=1700000000123;bits=99999999999999999999",
            "tag bits is out of range (over 2^53 - 1): '99999999999999999999'",
        ),
    ],
)
def test_absurd_numbers_are_the_converters_error(tags: str, reason: str) -> None:
    with pytest.raises(ConvertError) as caught:
        record(f"@{tags} {PREFIX} PRIVMSG #chan :hi")
    assert caught.value.reason == reason


def test_absurd_numbers_in_events_are_the_converters_error() -> None:
    ban = "@room-id=1;target-user-id=2;tmi-sent-ts=1700000000000;ban-duration=" + "9" * 30
    with pytest.raises(ConvertError, match="tag ban-duration is out of range"):
        record(f"{ban} :tmi.twitch.tv CLEARCHAT #chan :someone")
    with pytest.raises(ConvertError, match="tag tmi-sent-ts is out of range"):
        record("@target-msg-id=x;tmi-sent-ts=" + "1" * 25 + " :tmi.twitch.tv CLEARMSG #chan :t")
    assert record(
        "@room-id=1;tmi-sent-ts=253402300799999 :tmi.twitch.tv CLEARCHAT #chan"
    ) == ChatEvent(
        type="clear",
        channel="chan",
        sent_at=253402300799999,
        channel_id="1",
        id="clearchat:1:253402300799999",
    )


_ID_TAGS = "id=5c0f2ba4-8cbe-4f53-9d1b-7a8a5c6e2d11;tmi-sent-ts=1764770000123"


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        (
            f"{_ID_TAGS};user-id=00417243091",
            "tag user-id is not a Twitch id (a decimal number from 1, no leading zero): "
            "'00417243091'",
        ),
        (
            f"{_ID_TAGS};user-id=0",
            "tag user-id is not a Twitch id (a decimal number from 1, no leading zero): '0'",
        ),
        (
            f"{_ID_TAGS};user-id=" + "7" * 23,
            "tag user-id is out of range (over 2^53 - 1): '" + "7" * 23 + "'",
        ),
        (
            f"{_ID_TAGS};user-id=9007199254740992",  # 2^53: one past
            "tag user-id is out of range (over 2^53 - 1): '9007199254740992'",
        ),
        (
            f"{_ID_TAGS};user-id=someone",
            "tag user-id is not a Twitch id (a decimal number from 1, no leading zero): 'someone'",
        ),
        (
            # Full-width digits: isdigit() alone takes them.
            f"{_ID_TAGS};user-id=\uff11\uff12\uff13",
            "tag user-id is not a Twitch id (a decimal number from 1, no leading zero): "
            "'\uff11\uff12\uff13'",
        ),
        (
            f"{_ID_TAGS};user-id=417243091;room-id=-71092938",
            "tag room-id is not a Twitch id (a decimal number from 1, no leading zero): "
            "'-71092938'",
        ),
        (
            "id=" + "a" * 49 + ";tmi-sent-ts=1764770000123;user-id=417243091",
            "tag id is longer than 48 characters (49): '" + "a" * 40 + "'",
        ),
    ],
)
def test_absurd_ids_are_the_converters_error(tags: str, reason: str) -> None:
    with pytest.raises(ConvertError) as caught:
        record(f"@{tags} {PREFIX} PRIVMSG #chan :hi")
    assert caught.value.reason == reason


def test_ids_at_their_bounds_are_taken() -> None:
    message = record(
        "@id=" + "a" * 48 + ";tmi-sent-ts=1764770000123;user-id=9007199254740991;"
        f"room-id=1 {PREFIX} PRIVMSG #chan :hi"
    )
    assert isinstance(message, ChatMessage)
    assert (message.id, message.user_id, message.channel_id) == ("a" * 48, "9007199254740991", "1")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            "@room-id=71092938;target-user-id=0x1F;tmi-sent-ts=1764770000123;ban-duration=600 "
            ":tmi.twitch.tv CLEARCHAT #chan :someone",
            "tag target-user-id is not a Twitch id",
        ),
        (
            "@room-id=71092938x;tmi-sent-ts=1764770000123 :tmi.twitch.tv CLEARCHAT #chan",
            "tag room-id is not a Twitch id",
        ),
        (
            "@id=e1;msg-id=sub;room-id=71092938;user-id=" + "1" * 30 + ";tmi-sent-ts=1764770000123 "
            ":tmi.twitch.tv USERNOTICE #chan",
            "tag user-id is out of range",
        ),
        (
            "@target-msg-id=x;room-id=007;tmi-sent-ts=1764770000123 "
            ":tmi.twitch.tv CLEARMSG #chan :t",
            "tag room-id is not a Twitch id",
        ),
    ],
)
def test_absurd_ids_in_events_are_the_converters_error(line: str, reason: str) -> None:
    with pytest.raises(ConvertError) as caught:
        record(line)
    assert caught.value.reason.startswith(reason)


def test_a_message_id_always_fits_in_a_cursor_the_api_takes() -> None:
    # The worst id: 48 control characters (6 bytes each in JSON), the longest channel name the
    # API takes and the widest time a cursor holds.
    cursors = Cursors()
    scope = "messages:" + "c" * 25
    cursor = cursors.issue(scope, [-62_135_596_800_000, "\x01" * MAX_MESSAGE_ID_CHARS])
    assert len(cursor) <= MAX_CURSOR_CHARS
    assert message_position(cursors.check(scope, cursor)) == (
        -62_135_596_800_000,
        "\x01" * MAX_MESSAGE_ID_CHARS,
    )
