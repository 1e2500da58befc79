"""The IRC line parser: protocol-note cases, every line of the sample capture, fuzzing."""

import contextlib
import gzip
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatpulse.ingest.errors import IrcParseError
from chatpulse.ingest.irc.parser import (
    IrcMessage,
    escape_tag_value,
    format_line,
    parse_line,
    unescape_tag_value,
)

SAMPLE = Path(
    os.environ.get(
        "CHATPULSE_SAMPLE_CAPTURE",
        Path(__file__).resolve().parents[1] / "data/twitch-irc-xqcow-2019-09.txt.gz",
    )
)


def sample_lines() -> list[str]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()


def test_full_line() -> None:
    line = (
        "@badge-info=;badges=broadcaster/1;color=#0000FF;display-name=Some\\sOne;emotes=25:0-4;"
        "id=abc;tmi-sent-ts=1568505600501 :someone!someone@someone.tmi.twitch.tv "
        "PRIVMSG #chan :Kappa hello world\r\n"
    )
    msg = parse_line(line)
    assert msg.tags == {
        "badge-info": "",
        "badges": "broadcaster/1",
        "color": "#0000FF",
        "display-name": "Some One",
        "emotes": "25:0-4",
        "id": "abc",
        "tmi-sent-ts": "1568505600501",
    }
    assert msg.prefix == "someone!someone@someone.tmi.twitch.tv"
    assert msg.nick == "someone"
    assert msg.command == "PRIVMSG"
    assert msg.params == ["#chan", "Kappa hello world"]
    assert msg.channel == "chan"
    assert msg.trailing == "Kappa hello world"
    assert msg.raw == line


@pytest.mark.parametrize(
    ("line", "prefix", "command", "params"),
    [
        ("PING :tmi.twitch.tv", None, "PING", ["tmi.twitch.tv"]),
        (":tmi.twitch.tv PONG tmi.twitch.tv :x", "tmi.twitch.tv", "PONG", ["tmi.twitch.tv", "x"]),
        (":tmi.twitch.tv RECONNECT", "tmi.twitch.tv", "RECONNECT", []),
        (
            ":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!",
            "tmi.twitch.tv",
            "001",
            ["justinfan1", "Welcome, GLHF!"],
        ),
        (":a!a@a.tmi.twitch.tv PRIVMSG #c ::P", "a!a@a.tmi.twitch.tv", "PRIVMSG", ["#c", ":P"]),
        (":a!a@a PRIVMSG #c :", "a!a@a", "PRIVMSG", ["#c", ""]),
        (":a!a@a JOIN #c", "a!a@a", "JOIN", ["#c"]),
        (
            ":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands",
            "tmi.twitch.tv",
            "CAP",
            ["*", "ACK", "twitch.tv/tags twitch.tv/commands"],
        ),
        ("privmsg  #c   :two  spaces ", None, "PRIVMSG", ["#c", "two  spaces "]),
        (":x 353 me = #c :a b c", "x", "353", ["me", "=", "#c", "a b c"]),
    ],
)
def test_line_shapes(line: str, prefix: str | None, command: str, params: list[str]) -> None:
    msg = parse_line(line)
    assert (msg.prefix, msg.command, msg.params) == (prefix, command, params)
    assert msg.tags == {}


@pytest.mark.parametrize(
    ("escaped", "value"),
    [
        ("a\\sb", "a b"),
        ("a\\:b", "a;b"),
        ("a\\\\b", "a\\b"),
        ("\\r\\n", "\r\n"),
        ("\\\\s", "\\s"),  # one pass: chained replace would give "\\ " or " "
        ("\\\\:", "\\:"),
        ("a\\b", "ab"),  # unknown escape: the character itself
        ("end\\", "end"),  # a lone trailing backslash is dropped
        ("x=y=z", "x=y=z"),
        ("", ""),
    ],
)
def test_tag_unescaping(escaped: str, value: str) -> None:
    assert unescape_tag_value(escaped) == value
    assert parse_line(f"@k={escaped} :p CMD").tags["k"] == value


def test_tag_splitting() -> None:
    msg = parse_line("@a=1;flag;b=x=y;c=;;d=\\s :p CMD x")
    assert msg.tags == {"a": "1", "flag": "", "b": "x=y", "c": "", "d": " "}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "no valid command"),
        ("   ", "no valid command"),
        ("@a=b", "tags without a command"),
        ("@a=b :prefix", "prefix without a command"),
        (":prefix", "prefix without a command"),
        (": CMD", "empty prefix"),
        ("@=v :p CMD", "tag without a key"),
        (":p 12 x", "no valid command"),
        (":p PRIV-MSG x", "no valid command"),
        ("PRIVMSG #c :a\rb", "CR, LF or NUL inside the line"),
        ("PRIVMSG #c :a\x00b", "CR, LF or NUL inside the line"),
    ],
)
def test_malformed_lines(line: str, reason: str) -> None:
    with pytest.raises(IrcParseError) as info:
        parse_line(line)
    assert info.value.reason == reason
    assert info.value.line == line


def test_every_sample_line_parses() -> None:
    lines = sample_lines()
    assert len(lines) == 5000
    commands: dict[str, int] = {}
    longest = 0
    for line in lines:
        msg = parse_line(line)
        commands[msg.command] = commands.get(msg.command, 0) + 1
        assert msg.channel == "xqcow"
        assert msg.prefix is not None
        assert "tmi-sent-ts" in msg.tags
        assert parse_line(format_line(msg)).params == msg.params
        longest = max(longest, len(line.encode()))
    assert commands == {"PRIVMSG": 4933, "CLEARCHAT": 58, "USERNOTICE": 9}
    assert longest > 1024


def test_sample_escaped_values() -> None:
    notices = [parse_line(line) for line in sample_lines() if " USERNOTICE " in line]
    assert notices[0].tags["system-msg"] == (
        "Nocturnal_Kemono subscribed with Twitch Prime. They've subscribed for 10 months!"
    )
    assert notices[0].tags["msg-param-sub-plan-name"] == "Channel Subscription (xqcow)"


def test_format_line() -> None:
    msg = IrcMessage({"k": "a b;c"}, "p", "PRIVMSG", ["#c", ":)"], raw="")
    assert format_line(msg) == "@k=a\\sb\\:c :p PRIVMSG #c ::)"
    assert format_line(IrcMessage({}, None, "PING", ["x"], raw="")) == "PING x"
    with pytest.raises(ValueError, match="middle parameter"):
        format_line(IrcMessage({}, None, "PRIVMSG", ["a b", "x"], raw=""))


@settings(deadline=None, max_examples=500)  # no deadline: CI machines are shared
@given(st.text())
def test_parse_never_raises_other_errors(line: str) -> None:
    try:
        msg = parse_line(line)
    except IrcParseError as exc:
        error: IrcParseError | None = exc
    else:
        error = None
        assert msg.command
    assert error is None or error.line == line


@settings(deadline=None, max_examples=500)
@given(st.text(alphabet=st.sampled_from("@:;= \\abc#\r\n\x01é😀"), max_size=60))
def test_parse_never_raises_on_protocol_characters(line: str) -> None:
    with contextlib.suppress(IrcParseError):
        parse_line(line)


@settings(deadline=None)
@given(st.text())
def test_escaping_round_trips(value: str) -> None:
    escaped = escape_tag_value(value)
    assert unescape_tag_value(escaped) == value
    assert not any(char in escaped for char in "; \r\n")


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-/.0123456789", min_size=1, max_size=12)
_middle = st.text(
    alphabet=st.characters(blacklist_characters=" \r\n\x00:", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=10,
)
_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=40,
)


@settings(deadline=None)
@given(
    tags=st.dictionaries(_keys, _text, max_size=6),
    prefix=st.none() | _middle,
    command=st.sampled_from(["PRIVMSG", "USERNOTICE", "CLEARCHAT", "001", "PING"]),
    middles=st.lists(_middle, max_size=3),
    last=st.none() | _text,
)
def test_format_then_parse_round_trips(
    tags: dict[str, str], prefix: str | None, command: str, middles: list[str], last: str | None
) -> None:
    params = [*middles, last] if last is not None else middles
    msg = IrcMessage(tags, prefix, command, params, raw="")
    parsed = parse_line(format_line(msg))
    assert (parsed.tags, parsed.prefix, parsed.command, parsed.params) == (
        tags,
        prefix,
        command,
        params,
    )
