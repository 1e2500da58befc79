"""The processor on the real Kafka and Cassandra: exact counts of a known stream; poison."""

import json
import random
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from processor_support import (
    ProcessorProcess,
    Record,
    assert_exact,
    generate,
    ground_truth,
    message,
    produce,
    wait_for_totals,
)

from chatpulse.settings import Settings
from chatpulse.topics import Topics


@pytest.mark.timeout(300)
def test_known_stream_is_counted_exactly(settings: Settings, tmp_path: Path) -> None:
    # with chat bursts (spikes) and CLEARMSG/CLEARCHAT events (counted per window, joined
    # with their messages)
    records = generate(channels=30, messages=6_000, seed=1, bursts=12, moderation=0.03)
    truth = ground_truth(records)
    assert truth.late > 0
    # chat spikes found, and minutes decided on that are none
    assert len(truth.spikes) >= 3
    assert truth.decided > 20
    assert truth.duplicates > 200
    assert len(truth.closed) > 300
    assert truth.events > 100
    assert len(truth.deleted) > 100
    assert sum(v[4] for v in truth.windows.values()) > 0
    assert sum(v[5] for v in truth.windows.values()) > 0
    assert sum(v[6] for v in truth.windows.values()) > 0
    produce(settings, records)
    proc = ProcessorProcess(settings, tmp_path / "state", tmp_path / "processor.log")
    proc.start()
    try:
        assert_exact(settings, truth, timeout_s=150, procs=(proc,))
    finally:
        assert proc.stop() == 0, (tmp_path / "processor.log").read_text()[-3000:]


def _dead_letters(settings: Settings, expected: int, timeout_s: float = 60) -> list[dict]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.topic_prefix}dl-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([Topics.from_settings(settings).deadletter])
    found: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                found.append({"key": msg.key(), **json.loads(msg.value())})
    finally:
        consumer.close()
    return found


@pytest.mark.timeout(240)
def test_poison_records_go_to_dead_letter_and_processing_continues(
    settings: Settings, tmp_path: Path
) -> None:
    records = generate(channels=3, messages=300, seed=5, duplicate_rate=0, late_rate=0)
    topic = Topics.from_settings(settings).messages
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    poison = [
        (b"ch000", b"this is not json"),
        (b"ch001", b'{"id": "m1", "channel": "ch001"}'),
        (b"ch002", b'{"id": 5, "channel": "ch002", "user_id": "1"}'),
    ]
    half = len(records) // 2
    for r in records[:half]:
        producer.produce(topic, key=r.channel.encode(), value=r.value, partition=0)
    for key, value in poison:
        producer.produce(topic, key=key, value=value, partition=0)
    for r in records[half:]:
        producer.produce(topic, key=r.channel.encode(), value=r.value, partition=0)
    assert producer.flush(30) == 0
    truth = ground_truth(records)

    proc = ProcessorProcess(settings, tmp_path / "state", tmp_path / "processor.log")
    proc.start()
    try:
        results = wait_for_totals(settings, truth, timeout_s=120, procs=(proc,))
        assert results.totals == truth.totals
        letters = _dead_letters(settings, expected=3)
    finally:
        assert proc.stop() == 0
    assert sorted(letter["raw"].encode() for letter in letters) == sorted(v for _, v in poison)
    for letter in letters:
        assert letter["key"] == topic.encode()
        assert letter["source"] == topic
        assert letter["partition"] == 0
        assert letter["offset"] >= half
        assert letter["reason"]


def test_state_of_another_kafka_cluster_is_moved_aside(settings: Settings, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "kafka-cluster-id").write_text("a-cluster-long-gone\n")
    (state / "leftover").write_text("RocksDB files of that cluster")
    records = generate(channels=2, messages=200, seed=9, duplicate_rate=0, late_rate=0)
    produce(settings, records)
    truth = ground_truth(records)
    proc = ProcessorProcess(settings, state, tmp_path / "processor.log")
    proc.start()
    try:
        results = wait_for_totals(settings, truth, timeout_s=120, procs=(proc,))
        assert results.totals == truth.totals
    finally:
        assert proc.stop() == 0
    stale = list(tmp_path.glob("state.stale-*"))
    assert len(stale) == 1
    assert (stale[0] / "leftover").read_text() == "RocksDB files of that cluster"
    assert (state / "kafka-cluster-id").read_text().strip() != "a-cluster-long-gone"
    assert "belonged to another Kafka cluster" in (tmp_path / "processor.log").read_text()


def _future(channel: str, mid: str, sent_at: int, rng: random.Random) -> Record:
    return message(channel, mid, str(rng.randint(1, 1_200_000_000)), sent_at, rng)


@pytest.mark.timeout(240)
def test_messages_from_the_far_future_are_dead_lettered_and_open_no_window(
    settings: Settings, tmp_path: Path
) -> None:
    records = generate(channels=3, messages=600, seed=11, duplicate_rate=0, late_rate=0)
    truth = ground_truth(records)
    now = int(time.time() * 1000)
    rng = random.Random(11)
    # 30 min ahead (a skewed clock; Kafka still takes it, it refuses over 1 h) with the record
    # timestamp = sent_at, and 3 h ahead with a record timestamp of now: both beyond the
    # 5 min skew. Counted, either would close every open window of its channel.
    future = [
        _future(f"ch00{i % 3}", f"future-{i}", now + offset, rng)
        for i, offset in enumerate([30 * 60_000, 31 * 60_000, 3 * 3_600_000])
    ]
    stamps = [f.sent_at if f.sent_at < now + 3_600_000 else now for f in future]
    topic = Topics.from_settings(settings).messages
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    half = len(records) // 2
    for r in records[:half]:
        producer.produce(topic, key=r.channel.encode(), value=r.value, timestamp=r.sent_at)
    for f, stamp in zip(future, stamps, strict=True):
        producer.produce(topic, key=f.channel.encode(), value=f.value, timestamp=stamp)
    for r in records[half:]:
        producer.produce(topic, key=r.channel.encode(), value=r.value, timestamp=r.sent_at)
    assert producer.flush(30) == 0

    proc = ProcessorProcess(settings, tmp_path / "state", tmp_path / "processor.log")
    proc.start()
    try:
        assert_exact(settings, truth, timeout_s=150, procs=(proc,))
        letters = _dead_letters(settings, expected=3)
    finally:
        assert proc.stop() == 0
    assert sorted(json.loads(letter["raw"])["id"] for letter in letters) == sorted(
        f.id for f in future
    )
    for letter in letters:
        assert "ahead of the processor's clock" in letter["reason"]
        assert "CHATPULSE_MAX_FUTURE_SKEW" in letter["reason"]
