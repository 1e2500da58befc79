"""A hostile chat server: ordinary chat interleaved with every kind of bad line.

fake-twitch replays a capture (stamped now) to the real ingest while the test injects hostile
lines into the same connection: timestamps out of range both ways, absurd numbers in every
numeric tag chatpulse reads, oversized lines and tag values, invalid UTF-8, NUL bytes, lines
without a command, an unknown command, CLEARMSG/USERNOTICE missing their fields. Every
ordinary message must land exactly once (Kafka, then Cassandra through the real processor),
every hostile line must be dead-lettered with its reason, the ingest and the processor must
still be running at the end, and the API must answer.

Twitch ids (``user-id``, ``room-id``, ``target-user-id``) must be canonical decimals from 1 to
2^53 - 1 and a message id at most 48 characters: absurd ones are in the hostile set. What the
ingest does not dead-letter, by design: ``msg-param-*`` tags, kept as strings. The processor's
own far-future check (dead-lettering at the processor) is not reached here: the ingest stops
those lines first; its test is in test_processor.py.
"""

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from api_support import running_api
from processor_support import ProcessorProcess, read_cassandra
from test_ingest import (
    acked,
    capture_lines,
    expected_records,
    for_server,
    read_topic,
    running_ingest,
    until,
)

from chatpulse.fake_twitch.server import FakeTwitchServer
from chatpulse.fake_twitch.source import ReplaySource
from chatpulse.ingest.service import IngestSummary
from chatpulse.models import ChatMessage
from chatpulse.settings import Settings
from chatpulse.topics import Topics

pytestmark = [pytest.mark.timeout(300)]

_TS = re.compile(r"tmi-sent-ts=(\d+)")
HOUR_MS = 3600 * 1000
PREFIX = ":hostile!hostile@hostile.tmi.twitch.tv"


def _shift_to(lines: list[str], start_ms: int) -> list[str]:
    first = next(int(m.group(1)) for line in lines if (m := _TS.search(line)))
    return [
        _TS.sub(lambda m: f"tmi-sent-ts={int(m.group(1)) - first + start_ms}", x) for x in lines
    ]


def _privmsg(
    marker: str,
    now: int,
    *,
    extra: str = "",
    ts: str | None = None,
    msg_id: str | None = None,
    user_id: str = "914873215",
    room_id: str = "71092938",
) -> str:
    sent = ts if ts is not None else str(now)
    return (
        f"@display-name=Hostile;id={msg_id or marker};room-id={room_id};tmi-sent-ts={sent};"
        f"user-id={user_id}{extra} {PREFIX} PRIVMSG #xqcow :{marker} text"
    )


def hostile_lines(now: int) -> dict[str, tuple[bytes, str]]:
    """marker -> (the bytes sent, a pattern of the dead letter's reason)."""
    lines: dict[str, tuple[str | bytes, str]] = {
        "h-future": (_privmsg("h-future", now, ts=str(now + 3 * HOUR_MS)), "ahead of the ingest"),
        "h-old": (_privmsg("h-old", now, ts=str(now - 8 * 24 * HOUR_MS)), "older than the ret"),
        "h-overflow": (
            _privmsg("h-overflow", now, ts="12345678901234567890123"),
            r"tag tmi-sent-ts is out of range",
        ),
        "h-negative": (_privmsg("h-negative", now, ts="-5"), "not a non-negative integer"),
        "h-bits": (_privmsg("h-bits", now, extra=";bits=" + "9" * 25), "tag bits is out of range"),
        "h-uid-digits": (
            _privmsg("h-uid-digits", now, user_id="7" * 23),
            re.escape("tag user-id is out of range (over 2^53 - 1): '" + "7" * 23 + "'"),
        ),
        "h-uid-zeros": (
            _privmsg("h-uid-zeros", now, user_id="000914873215"),
            re.escape("tag user-id is not a Twitch id (a decimal number from 1, no leading zero)"),
        ),
        "h-uid-text": (
            _privmsg("h-uid-text", now, user_id="someone-else"),
            "tag user-id is not a Twitch id .*'someone-else'",
        ),
        "h-room": (
            _privmsg("h-room", now, room_id="71092938" * 5),
            re.escape("tag room-id is out of range (over 2^53 - 1)"),
        ),
        "h-target-uid": (
            f"@room-id=71092938;target-user-id=-914873215;tmi-sent-ts={now};ban-duration=600;"
            "h-target-uid=1 :tmi.twitch.tv CLEARCHAT #xqcow :h-target-uid",
            "tag target-user-id is not a Twitch id .*'-914873215'",
        ),
        "h-long-id": (
            _privmsg("h-long-id", now, msg_id="h-long-id-" + "z" * 90),
            re.escape("tag id is longer than 48 characters (100)"),
        ),
        "h-ban": (
            f"@room-id=71092938;target-user-id=5;tmi-sent-ts={now};ban-duration={'9' * 40};"
            "h-ban=1 :tmi.twitch.tv CLEARCHAT #xqcow :h-ban",
            "tag ban-duration is out of range",
        ),
        # A long line arriving in one read, and a longer one than a read (cut while read).
        "h-long-text": (_privmsg("h-long-text", now) + "x" * 100_000, r"line over 65536 bytes"),
        "h-long-tag": (
            _privmsg("h-long-tag", now, extra=";display-name=" + "y" * 600_000),
            r"line over 65536 bytes \(6\d{5} bytes\), dropped",
        ),
        "h-utf8": (
            b"@id=h-utf8;tmi-sent-ts=1;user-id=1 " + PREFIX.encode() + b" PRIVMSG #xqcow :\xff\xfe",
            "invalid UTF-8",
        ),
        "h-nul": (_privmsg("h-nul", now) + "\x00after", "CR, LF or NUL inside the line"),
        "h-tags-only": ("@id=h-tags-only;tmi-sent-ts=1", "tags without a command"),
        "h-prefix-only": ("@id=h-prefix-only :h-prefix-only!x@y", "prefix without a command"),
        "h-unknown": (
            "@id=h-unknown :tmi.twitch.tv FROBNICATE #xqcow :h-unknown",
            "unknown command",
        ),
        "h-clearmsg": (
            f"@login=x;room-id=1;tmi-sent-ts={now};id=h-clearmsg :tmi.twitch.tv CLEARMSG #xqcow :t",
            "missing tag target-msg-id",
        ),
        "h-usernotice": (
            f"@id=h-usernotice;room-id=1;tmi-sent-ts={now} :tmi.twitch.tv USERNOTICE #xqcow :t",
            "missing tag msg-id",
        ),
    }
    return {
        marker: ((line if isinstance(line, bytes) else line.encode()) + b"\r\n", reason)
        for marker, (line, reason) in lines.items()
    }


async def test_hostile_lines_are_dead_lettered_and_ordinary_chat_lands_once(
    settings: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    ordinary = _shift_to(capture_lines()[:500], now - 120_000)
    messages, events = expected_records(ordinary)
    hostile = hostile_lines(now)
    processor = ProcessorProcess(settings, tmp_path / "state", tmp_path / "processor.log")
    processor.start()
    summaries: list[IngestSummary] = []
    try:
        async with FakeTwitchServer(ReplaySource(ordinary), speed=20) as server:
            conf = for_server(settings, server, ["xqcow"])
            async with running_ingest(conf, summaries) as service:
                await until(lambda: server.sent("xqcow") > 100, 60, "chat flowing")
                for data, _reason in hostile.values():  # between ordinary lines
                    server.inject_bytes("xqcow", data)
                    await asyncio.sleep(0.05)
                await until(lambda: server.finished("xqcow"), 120, "replay finished")
                total = len(messages) + len(events) + len(hostile)
                await until(lambda: acked(service) == total, 60, "all records acknowledged")
                assert server.connections_accepted == 1  # no line cost the connection
            counted = await asyncio.to_thread(_wait_counted, settings, len(messages), processor)
            assert counted == len(messages)
            assert processor.alive(), processor.log.read_text()[-3000:]
            with running_api(settings) as api:
                answer = await asyncio.to_thread(api.get, "/api/v1/channels/xqcow")
                assert answer.status_code == 200, answer.text
                assert answer.json()["total_messages"] == len(messages)
    finally:
        assert processor.stop() == 0, processor.log.read_text()[-3000:]
    # The ingest ran to its stop and reported what it did (an exception would have raised).
    assert summaries[0].deadlettered == len(hostile)
    topics = Topics.from_settings(settings)
    records = read_topic(settings.kafka_bootstrap_servers, topics.messages)
    got = [msgspec.json.decode(r.value(), type=ChatMessage) for r in records]
    assert Counter(m.id for m in got) == Counter(m.id for m in messages)
    dead = [
        msgspec.json.decode(r.value())
        for r in read_topic(settings.kafka_bootstrap_servers, topics.deadletter)
    ]
    assert len(dead) == len(hostile)
    for marker, (data, reason) in hostile.items():
        (letter,) = [d for d in dead if marker in d["raw"]]
        assert re.search(reason, letter["reason"]), (marker, letter["reason"])
        assert letter["source"] == "irc"
        assert letter["raw_length"] <= len(data) + 8  # invalid UTF-8 comes back as U+FFFD


def _wait_counted(settings: Settings, expected: int, processor: ProcessorProcess) -> int:
    deadline = time.monotonic() + 120
    while True:
        assert processor.alive(), processor.log.read_text()[-3000:]
        totals = read_cassandra(settings).totals
        counted = totals.get("xqcow", (0, 0, 0))[0]
        if counted >= expected or time.monotonic() > deadline:
            return counted
        time.sleep(1)
