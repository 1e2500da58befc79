"""Property: whatever a chat server sends, ``to_record`` gives a record the producer and the
processor take, or raises its own ConvertError; never another exception."""

import msgspec
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatpulse.ingest.convert import MAX_EPOCH_MS, to_record
from chatpulse.ingest.errors import ConvertError
from chatpulse.ingest.irc.parser import (
    DATA_COMMANDS,
    IrcMessage,
    IrcParseError,
    escape_tag_value,
    parse_line,
)
from chatpulse.models import ChatEvent, ChatMessage, decode_chat_message, encode

# What the IRC connection can hand over: any text but surrogates (it decodes bytes with
# errors="replace") and CR/LF (they end the line).
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40
)
NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=10**30).map(str),  # up to absurd
    st.integers(min_value=1_500_000_000_000, max_value=2_000_000_000_000).map(str),  # plausible
    st.sampled_from(["", "-1", "0", "1e3", "١٢٣", "9" * 5000, " 1", "0x10", "253402300800000"]),
)
TAG_KEYS = [
    "id",
    "user-id",
    "room-id",
    "login",
    "display-name",
    "target-msg-id",
    "target-user-id",
    "msg-id",
    "system-msg",
    "msg-param-months",
    "reply-parent-msg-id",
    "emotes",
    "badges",
]
NUMERIC_KEYS = ["tmi-sent-ts", "bits", "ban-duration"]
PREFIXES = st.one_of(
    st.none(),
    st.builds(
        lambda n: f"{n}!{n}@{n}.tmi.twitch.tv", st.from_regex(r"[a-zA-Z0-9_]{1,12}", fullmatch=True)
    ),
    st.builds(
        lambda n: f"{n}@{n}.tmi.twitch.tv", st.from_regex(r"[a-zA-Z0-9_]{1,12}", fullmatch=True)
    ),
    st.just("tmi.twitch.tv"),
    st.from_regex(r"[^\s\r\n\x00]{1,20}", fullmatch=True),
)
CHANNELS = st.one_of(
    st.from_regex(r"#[a-zA-Z0-9_]{1,25}", fullmatch=True),
    st.sampled_from(["#", "", "chan", "#Ünïcode"]),
)


@st.composite
def lines(draw: st.DrawFn) -> str:
    tags = draw(st.dictionaries(st.sampled_from(TAG_KEYS), TEXT, max_size=8))
    tags.update(draw(st.dictionaries(st.sampled_from(NUMERIC_KEYS), NUMBERS, max_size=3)))
    if draw(st.booleans()):
        tags.setdefault(
            "emotes", draw(st.from_regex(r"[0-9a-z_]{1,5}:[0-9,\-]{0,12}", fullmatch=True))
        )
    head = (
        "@" + ";".join(f"{k}={escape_tag_value(v)}" for k, v in tags.items()) + " " if tags else ""
    )
    prefix = draw(PREFIXES)
    command = draw(st.sampled_from(sorted(DATA_COMMANDS)))
    channel = draw(CHANNELS)
    params = f" {channel}" if channel else ""
    if draw(st.booleans()):
        params += " :" + draw(TEXT)
    return f"{head}{':' + prefix + ' ' if prefix else ''}{command}{params}"


STATS = {"records": 0, "refused": 0}
# No broker: produce() only queues, after checking what librdkafka checks (the timestamp).
PRODUCERS: list[Producer] = []


def _convert(msg: IrcMessage) -> ChatMessage | ChatEvent | ConvertError | None:
    try:
        return to_record(msg)
    except ConvertError as exc:
        return exc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=lines())
def _record_or_its_own_error(line: str) -> None:
    try:
        msg = parse_line(line)
    except IrcParseError:
        return  # dead-lettered by the parser: not the converter's input
    outcome = _convert(msg)
    if isinstance(outcome, ConvertError):
        STATS["refused"] += 1
        assert outcome.reason  # its reason goes to the dead-letter topic
        return
    record = outcome
    STATS["records"] += 1
    assert record is not None  # every line here is a data command
    value = encode(record)  # the service's encoder (the same JSON)
    key = record.channel.encode()
    assert record.channel
    assert 0 <= record.sent_at <= MAX_EPOCH_MS
    # The producer takes it (a 23-digit sent_at was an OverflowError here)...
    PRODUCERS[0].produce("t-messages", value, key, timestamp=record.sent_at)
    # ...and the processor decodes it to the same record (the API reads the same JSON).
    if isinstance(record, ChatMessage):
        assert decode_chat_message(value) == record
    else:
        assert msgspec.json.decode(value, type=ChatEvent) == record


def test_to_record_gives_an_acceptable_record_or_its_own_error() -> None:
    STATS.update(records=0, refused=0)
    PRODUCERS.append(Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}))
    try:
        _record_or_its_own_error()
    finally:
        producer = PRODUCERS.pop()
        producer.purge()
        producer.flush(0)
    # A generator that only ever produced refusals (or only records) would prove nothing.
    assert STATS["records"] >= 20
    assert STATS["refused"] >= 20


@pytest.mark.parametrize(
    "line",
    [
        "@id=m;user-id=7;tmi-sent-ts=12345678901234567890123 :a!a@a PRIVMSG #c :hi",
        "@id=m;user-id=7;tmi-sent-ts=1700000000000;bits=99999999999999999999 :a PRIVMSG #c :x",
        "@tmi-sent-ts=1700000000000;ban-duration=" + "9" * 30 + " :tmi CLEARCHAT #c :someone",
    ],
)
def test_the_issue_lines_are_the_converters_error(line: str) -> None:
    with pytest.raises(ConvertError):
        to_record(parse_line(line))
