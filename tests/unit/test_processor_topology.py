"""The topology, run record by record with ``sdf.test()`` on a local RocksDB state (no broker)."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from quixstreams import Application
from quixstreams.context import set_message_context
from quixstreams.models import MessageContext, Topic, TopicConfig

from chatpulse.models import ChatMessage, Emote, WindowStats, encode
from chatpulse.processor.aggregate import WindowAggregate
from chatpulse.processor.app import pipeline_config
from chatpulse.processor.channel import ChannelCounter, ChannelUpdate
from chatpulse.processor.metrics import ProcessorMetrics
from chatpulse.processor.spikes import SpikeRule
from chatpulse.processor.topology import (
    DeadLetter,
    FutureSkew,
    LiveThrottle,
    PipelineConfig,
    PipelineTopics,
    StateFlush,
    UpdateWriter,
    build_pipeline,
    decode_record,
)
from chatpulse.settings import Settings

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MIN)
TOPIC = "msgs"


class RecordingSink(UpdateWriter):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []

    def keep(self, update: ChannelUpdate, partition: int) -> None:
        self.values.append(update)

    def flush(self) -> None:
        pass


class Harness:
    def __init__(self, tmp_path: Path, config: PipelineConfig | None = None) -> None:
        self.app = Application(
            broker_address="127.0.0.1:1",
            consumer_group="unit",
            state_dir=tmp_path / "state",
            use_changelog_topics=False,
            loglevel=None,
        )
        # Topic objects made directly: app.topic() would ask the (absent) broker about them.
        self.topics = PipelineTopics(
            messages=Topic(TOPIC, key_deserializer="bytes", value_deserializer="bytes"),
            stats=Topic("stats", value_serializer="bytes"),
            deadletter=Topic("dead", value_serializer="bytes"),
        )
        for topic in (self.topics.messages, self.topics.stats, self.topics.deadletter):
            topic.broker_config = TopicConfig(
                num_partitions=1,
                replication_factor=1,
                extra_config={"retention.ms": "-1", "retention.bytes": "-1"},
            )
        self.metrics = ProcessorMetrics()
        config = config or PipelineConfig(
            [MIN, 10 * MIN], grace_ms=5_000, dedup_horizon_ms=3_600_000
        )
        self.sink = RecordingSink()
        self.sdf = build_pipeline(
            self.app, self.topics, config, writers=[self.sink], metrics=self.metrics
        )
        self.offset = 0
        state_manager: Any = self.app._state_manager
        state_manager.on_partition_assign(
            stream_id=self.sdf.stream_id, partition=0, committed_offsets={}
        )
        self.app._processing_context.init_checkpoint()

    def send(self, value: bytes | None, key: bytes | None) -> list[ChannelUpdate]:
        """Process one record: the updates the sink got (the topic outputs go to ``outputs``)."""
        self.offset += 1
        ctx = MessageContext(topic=TOPIC, partition=0, offset=self.offset, size=0)
        results = self.sdf.test(value, key=key, timestamp=0, ctx=ctx)
        # leaves: the produced channel-stats and dead-letter values (the sink leaf yields None)
        self.outputs = [out[0] for out in results if out[0] is not None]
        updates, self.sink.values = self.sink.values, []
        return updates

    def close(self) -> None:
        self.app._state_manager.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def chat(mid: str, sent_at: int, user: str = "1", channel: str = "c") -> bytes:
    message = ChatMessage(
        id=mid,
        channel=channel,
        user_id=user,
        user_login="u",
        text="Kappa",
        sent_at=sent_at,
        emotes=[Emote("25", 0, 4)],
    )
    return encode(message)


def test_counts_deduplicates_and_closes_windows(harness: Harness) -> None:
    first = harness.send(chat("a", T0 + 1_000), b"c")
    assert len(first) == 1
    update = first[0]
    assert isinstance(update, ChannelUpdate)
    assert update.total_messages == 1
    assert [(s, st, a.messages) for s, st, a in update.windows] == [(MIN, T0, 1), (10 * MIN, T0, 1)]
    assert harness.send(chat("a", T0 + 1_000), b"c") == []  # duplicate
    harness.send(chat("b", T0 + 2_000, user="2"), b"c")
    closing = harness.send(chat("c", T0 + MIN + 6_000), b"c")[0]
    assert [(w.window, w.messages, w.unique_chatters) for w in closing.closed] == [("1m", 2, 2)]
    assert [(e.id, e.name, e.count) for e in closing.closed[0].top_emotes] == [("25", "Kappa", 2)]
    # channel-stats gets the closed minute (a live update of the new minute may follow)
    published = [msgspec.json.decode(out, type=WindowStats) for out in harness.outputs]
    assert published[0] == closing.closed[0]
    assert all(not p.closed for p in published[1:])
    late = harness.send(chat("d", T0 + 3_000), b"c")[0]
    assert late.late_sizes == [MIN]
    assert late.total_messages == 4
    assert harness.metrics.duplicates.value == 1
    assert harness.metrics.late["1m"].value == 1
    exported = harness.metrics.registry.get_sample_value
    assert exported("chatpulse_processor_consumed_total") == 5
    assert exported("chatpulse_processor_processed_total") == 4
    assert exported("chatpulse_processor_duplicates_total") == 1
    assert exported("chatpulse_processor_late_total", {"window": "1m"}) == 1


def test_channels_have_separate_state(harness: Harness) -> None:
    harness.send(chat("a", T0, channel="x"), b"x")
    other = harness.send(chat("a", T0, channel="y"), b"y")  # same id, other channel: counts
    assert len(other) == 1
    assert other[0].total_messages == 1


def test_poison_records_become_dead_letters(harness: Harness) -> None:
    assert harness.send(b"not json", b"c") == []
    assert harness.send(b'{"id": "x", "channel": "c"}', b"c") == []
    assert harness.send(chat("a", T0, channel="c"), b"other") == []
    assert harness.send(None, b"c") == []
    assert msgspec.json.decode(harness.outputs[0])["reason"] == "empty value"
    # out of a CQL timestamp's range: every write of its checkpoint would fail, forever
    for sent_at in (2**63, -1):
        assert harness.send(chat("far", sent_at), b"c") == []
        assert "sent_at" in msgspec.json.decode(harness.outputs[0])["reason"]
    assert harness.metrics.deadlettered.value == 6
    assert len(harness.send(chat("ok", T0), b"c")) == 1


def test_decode_record_reasons() -> None:
    set_message_context(MessageContext(topic="t", partition=3, offset=42, size=0))
    bad = decode_record(b'{"id": 1}', b"c")
    assert isinstance(bad, DeadLetter)
    value = msgspec.json.decode(bad.value)
    assert value["source"] == "t"
    assert (value["partition"], value["offset"], value["raw"]) == (3, 42, '{"id": 1}')
    assert "invalid ChatMessage" in value["reason"]
    assert bad.key == b"t"


def test_dead_letters_keep_at_most_the_configured_raw_bytes(tmp_path: Path) -> None:
    config = PipelineConfig(
        [MIN], grace_ms=5_000, dedup_horizon_ms=3_600_000, deadletter_raw_max_bytes=64
    )
    harness = Harness(tmp_path, config)
    try:
        raw = b"{" + b"x" * 299  # 300 bytes, not JSON
        assert harness.send(raw, b"c") == []
        (value,) = (msgspec.json.decode(out) for out in harness.outputs)
        assert (value["raw"], value["raw_length"]) == ("{" + "x" * 63, 300)
    finally:
        harness.close()


def test_the_processor_passes_the_dead_letter_raw_bound_from_its_settings() -> None:
    config = pipeline_config(Settings(deadletter_raw_max_bytes=100, max_future_skew="2m"))
    assert (config.deadletter_raw_max_bytes, config.max_future_skew_ms) == (100, 2 * MIN)


def test_with_dedup_off_from_the_settings_a_repeated_id_counts_again(tmp_path: Path) -> None:
    config = pipeline_config(Settings(dedup=False, windows="1m", grace="5s"))
    assert config.dedup is False
    harness = Harness(tmp_path, config)
    try:
        harness.send(chat("a", T0 + 1_000), b"c")
        (again,) = harness.send(chat("a", T0 + 1_000), b"c")
        assert again.total_messages == 2
        assert harness.metrics.duplicates.value == 0
    finally:
        harness.close()


class CountingClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now_s


def test_the_future_skew_check_reads_the_clock_once_per_checkpoint_not_per_message() -> None:
    set_message_context(MessageContext(topic="t", partition=0, offset=1, size=0))
    now_ms = int(time.time() * 1000)
    clock = CountingClock(now_ms / 1000)
    skew = FutureSkew(5 * MIN, clock)
    assert clock.reads == 1
    records = [chat(f"m{i}", now_ms - 1_000 + i) for i in range(2_000)]
    for record in records:
        assert isinstance(decode_record(record, b"c", skew), ChatMessage)
    assert clock.reads == 1
    # a checkpoint reads it again: StateFlush refreshes the limit
    clock.now_s += 2.0
    StateFlush(ChannelCounter([MIN], 5_000, 3_600_000), skew).flush()
    assert (clock.reads, skew.limit_ms) == (2, now_ms + 2_000 + 5 * MIN)


def test_the_future_skew_check_refuses_only_against_a_fresh_clock_reading() -> None:
    set_message_context(MessageContext(topic="t", partition=0, offset=1, size=0))
    now_ms = int(time.time() * 1000)
    clock = CountingClock(now_ms / 1000)
    skew = FutureSkew(5 * MIN, clock)
    # 30 s later (no checkpoint meanwhile): a message 4.9 min ahead of the real clock is
    # past the old limit, so the clock is read again and the message passes
    clock.now_s += 30.0
    soon = now_ms + 30_000 + 5 * MIN - 6_000
    assert isinstance(decode_record(chat("soon", soon), b"c", skew), ChatMessage)
    assert clock.reads == 2
    # 6 min ahead of the clock: refused, the distance measured from the fresh reading
    refused = decode_record(chat("far", now_ms + 30_000 + 6 * MIN), b"c", skew)
    assert isinstance(refused, DeadLetter)
    reason = msgspec.json.decode(refused.value)["reason"]
    assert f"is {6 * MIN} ms ahead of the processor's clock" in reason
    assert f"CHATPULSE_MAX_FUTURE_SKEW ({5 * MIN} ms)" in reason
    assert clock.reads == 3


def test_live_updates_are_throttled_per_channel() -> None:
    now = [100.0]
    throttle = LiveThrottle(MIN, 1.0, clock=lambda: now[0])
    harness_update = ChannelUpdate(
        message=msgspec.json.decode(chat("a", T0), type=ChatMessage),
        total_messages=1,
        first_seen=T0,
        last_seen=T0,
    )
    assert throttle.live_update(harness_update) is None  # it entered no 1m window
    harness_update.windows.append((MIN, T0, WindowAggregate(messages=3)))
    live = throttle.live_update(harness_update)
    assert isinstance(live, WindowStats)
    assert (live.closed, live.messages, live.window) == (False, 3, "1m")
    now[0] += 0.5
    assert throttle.live_update(harness_update) is None
    now[0] += 0.6
    assert throttle.live_update(harness_update) is not None


def test_a_message_from_the_far_future_is_dead_lettered_and_moves_nothing(
    harness: Harness,
) -> None:
    now = int(time.time() * 1000)
    now -= now % MIN  # the start of this minute
    first = harness.send(chat("a", now + 1_000), b"c")[0]
    assert first.total_messages == 1
    # 5 min of skew allowed (PipelineConfig's default): 6 min ahead is refused
    assert harness.send(chat("future", now + 6 * MIN), b"c") == []
    reason = msgspec.json.decode(harness.outputs[0])["reason"]
    assert "ahead of the processor's clock" in reason
    assert "CHATPULSE_MAX_FUTURE_SKEW" in reason
    assert harness.metrics.deadlettered.value == 1
    # the channel's time did not move: this minute is still open, nothing closed or late
    after = harness.send(chat("b", now + 2_000, user="2"), b"c")[0]
    assert (after.total_messages, after.last_seen, after.closed, after.late_sizes) == (
        2,
        now + 2_000,
        [],
        [],
    )
    assert [(s, st, a.messages) for s, st, a in after.windows] == [
        (MIN, now, 2),
        (10 * MIN, now - now % (10 * MIN), 2),
    ]
    # within the skew: counted
    assert len(harness.send(chat("soon", now + 4 * MIN), b"c")) == 1


def test_a_spike_is_published_on_channel_stats_and_handed_to_the_writers(tmp_path: Path) -> None:
    rule = SpikeRule(size_ms=MIN, factor=3.0, min_messages=20, baseline_windows=3)
    config = PipelineConfig([MIN], grace_ms=5_000, dedup_horizon_ms=3_600_000, spike_rule=rule)
    harness = Harness(tmp_path, config)
    try:
        n = 0
        spikes = []
        published = []
        # minutes 0-2: 8 messages each; minute 3: 30 (> 3 x 8); minute 4: the closer
        for minute, count in enumerate([8, 8, 8, 30, 1]):
            for i in range(count):
                n += 1
                sent_at = T0 + minute * MIN + 10_000 + i * 100
                for update in harness.send(chat(f"m{n}", sent_at, user=str(i)), b"c"):
                    spikes += update.spikes
                published += [msgspec.json.decode(out) for out in harness.outputs]
        harness.send(chat("closer", T0 + 6 * MIN), b"c")
        published += [msgspec.json.decode(out) for out in harness.outputs]
        assert [(s.window_start, s.messages, s.baseline_median) for s in spikes] == [
            (T0 + 3 * MIN, 30, 8.0)
        ]
        assert [p for p in published if p.get("type") == "spike"] == [
            {
                "channel": "c",
                "window": "1m",
                "window_start": T0 + 3 * MIN,
                "window_end": T0 + 4 * MIN,
                "messages": 30,
                "baseline_median": 8.0,
                "factor": 3.0,
                "type": "spike",
                "v": 1,
            }
        ]
        assert sum(1 for p in published if p.get("closed")) == 5
    finally:
        harness.close()
