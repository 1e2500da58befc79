"""fake-twitch's sources: the simulator's realism and determinism, capture replay."""

import gzip
import os
from collections import Counter
from itertools import islice
from pathlib import Path

from chatpulse.fake_twitch.simulate import (
    MAX_TEXT,
    channel_names,
    channel_rates,
    simulate,
    simulate_channel,
)
from chatpulse.fake_twitch.source import ReplaySource, SimulatedSource, read_capture
from chatpulse.fake_twitch.vocab import EMOTES
from chatpulse.ingest.convert import to_record
from chatpulse.ingest.irc.parser import parse_line
from chatpulse.models import ChatEvent, ChatMessage

SAMPLE = Path(
    os.environ.get(
        "CHATPULSE_SAMPLE_CAPTURE",
        Path(__file__).resolve().parents[1] / "data/twitch-irc-xqcow-2019-09.txt.gz",
    )
)
# Tags real Twitch sends on every PRIVMSG today (bits, vip and reply-* only when they apply).
PRIVMSG_TAGS = {
    "badge-info", "badges", "client-nonce", "color", "display-name", "emotes", "first-msg",
    "flags", "id", "mod", "returning-chatter", "room-id", "subscriber", "tmi-sent-ts", "turbo",
    "user-id", "user-type",
}  # fmt: skip
PRIVMSG_OPTIONAL = {
    "bits", "vip", "reply-parent-display-name", "reply-parent-msg-body", "reply-parent-msg-id",
    "reply-parent-user-id", "reply-parent-user-login", "reply-thread-parent-display-name",
    "reply-thread-parent-msg-id", "reply-thread-parent-user-id", "reply-thread-parent-user-login",
}  # fmt: skip
EMOTE_NAMES = {name for _, name in EMOTES}


def tags_in_twitch_order(line: str) -> bool:
    """Twitch sorts the ``key=value`` strings (so sub-plan-name comes before sub-plan)."""
    items = line[1 : line.index(" ")].split(";") if line.startswith("@") else []
    return items == sorted(items, key=lambda item: item.partition("=")[0] + "=")


def test_capture_tags_follow_twitch_order() -> None:
    assert all(tags_in_twitch_order(line) for line in read_capture(SAMPLE))


def test_simulation_is_deterministic_per_seed() -> None:
    first = list(simulate(20, 200.0, seed=3, duration_s=5.0))
    assert first == list(simulate(20, 200.0, seed=3, duration_s=5.0))
    assert first != list(simulate(20, 200.0, seed=4, duration_s=5.0))
    # the merged stream is exactly the union of the per-channel streams
    per_channel = [
        line for i in range(20) for _, line in simulate_channel(i, 20, 200.0, 3, duration_s=5.0)
    ]
    assert sorted(first) == sorted(per_channel)


def test_simulated_lines_are_what_twitch_sends() -> None:
    lines = list(simulate(50, 1000.0, seed=11, duration_s=12.0))
    records = [to_record(parse_line(line)) for line in lines]
    messages = [r for r in records if isinstance(r, ChatMessage)]
    events = [r for r in records if isinstance(r, ChatEvent)]
    assert len(messages) + len(events) == len(lines)
    assert 8_000 < len(lines) < 16_000  # ~1000/s for 12 s, bursty
    assert len({(r.channel, r.id) for r in records}) == len(records)
    for line in lines[:3000]:
        msg = parse_line(line)
        if msg.command == "PRIVMSG":
            assert PRIVMSG_TAGS <= msg.tags.keys() <= PRIVMSG_TAGS | PRIVMSG_OPTIONAL
        assert tags_in_twitch_order(line)
    for message in messages:
        for emote in message.emotes:
            assert message.emote_name(emote) in EMOTE_NAMES
        assert len(message.text) <= MAX_TEXT + 30  # a reply adds "@name "
    with_emotes = sum(1 for m in messages if m.emotes) / len(messages)
    assert 0.12 < with_emotes < 0.5
    assert sum(m.is_action for m in messages) > 0
    assert sum(m.reply_parent_msg_id is not None for m in messages) > 0
    assert sum(m.bits > 0 for m in messages) > 0
    assert sum(len(m.text) > 300 for m in messages) > 0
    assert sum(any(ord(c) > 0xFFFF for c in m.text) for m in messages) > 0  # emoji
    assert sum(not m.text.isascii() for m in messages) > 0
    types = Counter(e.type for e in events)
    assert {"subscription", "resub", "timeout", "message_deleted"} <= types.keys()
    assert len({m.user_id for m in messages}) > 500


def test_channel_popularity_is_zipf_skewed() -> None:
    rates = channel_rates(100, 1000.0)
    assert abs(sum(rates) - 1000.0) < 1e-6
    assert rates[0] > 10 * rates[50]
    counts = Counter(parse_line(line).channel for line in simulate(100, 300.0, 5, duration_s=30))
    assert counts["streamer0000"] == max(counts.values())
    assert counts["streamer0000"] > 5 * counts["streamer0050"]


def test_arrivals_are_bursty() -> None:
    offsets = [t for t, _ in islice(simulate_channel(0, 1, 50.0, seed=2), 20_000)]
    per_second = Counter(int(t) for t in offsets)
    values = sorted(per_second[s] for s in range(int(offsets[-1])))
    mean = sum(values) / len(values)
    assert values[int(len(values) * 0.99)] > 2.5 * mean  # Poisson alone would stay near mean


def test_replay_source_keeps_lines_and_rewrites_channel() -> None:
    lines = read_capture(SAMPLE)
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        assert lines == fh.read().splitlines()
    source = ReplaySource(lines)
    assert source.channels == {"xqcow": 5000}
    replayed = list(source.stream("xqcow"))
    assert [line for _, line in replayed] == lines
    offsets = [t for t, _ in replayed]
    assert offsets == sorted(offsets)
    assert 450 < offsets[-1] < 470
    assert source.room_id("xqcow") == "71092938"
    assert list(source.stream("other")) == []
    moved = ReplaySource(lines, channel="mychan")
    moved_lines = [line for _, line in moved.stream("mychan")]
    assert len(moved_lines) == 5000
    for old, new in zip(lines, moved_lines, strict=True):
        assert new == old.replace(" #xqcow", " #mychan", 1)
        assert parse_line(new).channel == "mychan"


def test_simulated_source_streams_by_channel_name() -> None:
    source = SimulatedSource(3, 30.0, seed=1, duration_s=2.0)
    assert channel_names(3) == ["streamer0000", "streamer0001", "streamer0002"]
    assert list(source.stream("streamer0001")) == list(
        simulate_channel(1, 3, 30.0, 1, duration_s=2.0)
    )
    assert list(source.stream("nobody")) == []
    assert source.room_id("streamer0001") != source.room_id("streamer0002")


def test_replay_shifts_sent_timestamps_to_the_requested_start() -> None:
    lines = [
        "@id=a;room-id=1;tmi-sent-ts=1000;user-id=5 :u!u@u.tmi.twitch.tv PRIVMSG #c :hi",
        "@id=b;room-id=1;tmi-sent-ts=1500;user-id=5 :u!u@u.tmi.twitch.tv PRIVMSG #c "
        ":tmi-sent-ts=1500",
    ]
    shifted = [line for _, line in ReplaySource(lines, start_ms=10_000).stream("c")]
    assert [parse_line(line).tags["tmi-sent-ts"] for line in shifted] == ["10000", "10500"]
    assert parse_line(shifted[1]).trailing == "tmi-sent-ts=1500"
    kept = [line for _, line in ReplaySource(lines).stream("c")]
    assert kept == lines
