"""A channel with a very large audience, on the real Kafka and Cassandra: 1,000,000 distinct
chatters in one hour are counted exactly, through a SIGKILL and a restore from the changelog
alone, and no changelog record comes near Kafka's 1 MB limit."""

import json
import random
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from processor_support import SESSION_GAP_MS, ProcessorProcess, read_channel_stats

from chatpulse.settings import Settings
from chatpulse.storage import connect
from chatpulse.topics import Topics

CHANNEL = "bigstreamer"
CHATTERS = 1_000_000
HOUR = 3_600_000
TEN_MIN = 600_000
GRACE_MS = 3_000


def _produce(settings: Settings, sent_at: list[int], users: list[int]) -> None:
    """One message per chatter, in time order, with a raw producer and large batches."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    topic = Topics.from_settings(settings).messages
    key = CHANNEL.encode()
    template = (
        '{"v":1,"id":"%08x-5c1e-4d7b-9a3f-%012d","channel":"' + CHANNEL + '","user_id":"%d",'
        '"user_login":"u%d","text":"Kappa hi","sent_at":%d}'
    )
    for i, (at, user) in enumerate(zip(sent_at, users, strict=True)):
        value = (template % (i, i, user, user, at)).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=key, timestamp=at)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0


def _total(settings: Settings) -> int:
    cluster, session = connect(settings)
    try:
        ks = settings.cassandra_keyspace
        row = session.execute(
            f"SELECT total_messages FROM {ks}.channel_totals WHERE channel = %s", (CHANNEL,)
        ).one()
        return 0 if row is None else int(row.total_messages)
    finally:
        cluster.shutdown()


def _windows(
    settings: Settings,
) -> tuple[dict[tuple[str, int], tuple[int, int, bool]], dict[tuple[str, int], tuple[int, int]]]:
    """(messages, unique chatters, closed) of the windows with messages, and (sessions
    started, sessions ended) of every window."""
    cluster, session = connect(settings)
    try:
        ks = settings.cassandra_keyspace
        rows = list(session.execute(f"SELECT * FROM {ks}.window_stats", timeout=60))
        key = lambda row: (row.window, int(row.window_start.timestamp() * 1000))  # noqa: E731
        counted = {
            key(row): (row.messages, row.unique_chatters, row.closed)
            for row in rows
            if row.channel == CHANNEL and row.messages
        }
        sessions = {
            key(row): (row.sessions_started or 0, row.sessions_ended or 0)
            for row in rows
            if row.channel == CHANNEL
        }
        return counted, sessions
    finally:
        cluster.shutdown()


def _largest_changelog_record(settings: Settings) -> tuple[int, int]:
    """(largest key + value in bytes, number of records) of the processor's changelog."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.topic_prefix}measure-{time.time_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 50_000_000,
        }
    )
    try:
        topics = consumer.list_topics(timeout=10).topics
        (name,) = [t for t in topics if t.startswith("changelog__") and settings.topic_prefix in t]
        partitions = [TopicPartition(name, p, 0) for p in topics[name].partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        consumer.assign(partitions)
        largest = count = 0
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 120
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1):
                if msg.error():
                    continue
                size = len(msg.key() or b"") + len(msg.value() or b"")
                largest = max(largest, size)
                count += 1
            for tp in consumer.position(partitions):
                if tp.offset >= ends[tp.partition] - 1:  # the last is a transaction marker
                    done.add(tp.partition)
        assert len(done) == len(ends), "the changelog was not read to its end"
        return largest, count
    finally:
        consumer.close()


def _wait_total(settings: Settings, at_least: int, proc: ProcessorProcess, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    total = _total(settings)
    while total < at_least and time.monotonic() < deadline:
        assert proc.alive(), proc.log.read_text()[-3000:]
        time.sleep(2)
        total = _total(settings)
    return total


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_million_distinct_chatters_in_an_hour_are_counted_exactly(
    settings: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    hour = now - now % HOUR - HOUR  # the last full hour
    rng = random.Random(1)
    users = rng.sample(range(1, 1_200_000_001), CHATTERS + 1)
    closer_user = users.pop()
    sent_at = [hour + i * HOUR // CHATTERS for i in range(CHATTERS)]
    started = time.monotonic()
    _produce(settings, sent_at, users)
    closer_at = max(now, hour + HOUR + GRACE_MS)  # closes every window of that hour
    closer = {
        "v": 1,
        "id": "closer",
        "channel": CHANNEL,
        "user_id": str(closer_user),
        "user_login": "closer",
        "text": "gg",
        "sent_at": closer_at,
    }
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(
        Topics.from_settings(settings).messages,
        key=CHANNEL.encode(),
        value=json.dumps(closer).encode(),
        timestamp=closer_at,
    )
    assert producer.flush(30) == 0
    produced_s = time.monotonic() - started

    env = {
        "CHATPULSE_WINDOWS": "10m,1h",
        "CHATPULSE_GRACE": f"{GRACE_MS}ms",
        # few large checkpoints: each rewrites the hour's ~2 MB of chatter chunks
        "CHATPULSE_COMMIT_INTERVAL_S": "5",
    }
    first = ProcessorProcess(settings, tmp_path / "state-1", tmp_path / "processor-1.log", **env)
    first.start()
    try:
        assert _wait_total(settings, CHATTERS * 2 // 5, first, timeout_s=240) >= CHATTERS * 2 // 5
    finally:
        first.kill()  # mid-stream; its successor has no local state: a restore from changelog
    second = ProcessorProcess(settings, tmp_path / "state-2", tmp_path / "processor-2.log", **env)
    second.start()
    try:
        assert _wait_total(settings, CHATTERS + 1, second, timeout_s=300) == CHATTERS + 1
        windows, sessions = _windows(settings)
        stats = read_channel_stats(
            settings,
            {(CHANNEL, "1h", hour)} | {(CHANNEL, "10m", hour + k * TEN_MIN) for k in range(6)},
        )
    finally:
        assert second.stop() == 0, second.log.read_text()[-3000:]
    processed_s = time.monotonic() - started - produced_s

    # every chatter is distinct: a window's unique chatters are its messages
    expected = {("1h", hour): (CHATTERS, CHATTERS, True)}
    for k in range(6):
        start = hour + k * TEN_MIN
        count = sum(1 for at in sent_at if start <= at < start + TEN_MIN)
        expected[("10m", start)] = (count, count, True)
    expected[("10m", closer_at - closer_at % TEN_MIN)] = (1, 1, False)
    expected[("1h", closer_at - closer_at % HOUR)] = (1, 1, False)
    assert windows == expected
    # chatter sessions: each chatter's one message is a session of its own, started in the
    # message's windows and ended CHATPULSE_SESSION_GAP (30 s here) later; the closer (at
    # the end of the hour or later) ends every session that ended within the hour
    gap = SESSION_GAP_MS
    for k in range(6):
        start = hour + k * TEN_MIN
        ended = sum(1 for at in sent_at if start <= at + gap < start + TEN_MIN)
        assert sessions[("10m", start)] == (expected[("10m", start)][0], ended)
    assert sessions[("1h", hour)] == (CHATTERS, sum(1 for at in sent_at if at + gap < hour + HOUR))
    published = {
        (s["window"], s["window_start"]): (s["messages"], s["unique_chatters"], True)
        for s in stats
        if s["closed"] and s["messages"]  # (not the windows of ended sessions alone)
    }
    assert published == {key: value for key, value in expected.items() if value[2]}

    largest, records = _largest_changelog_record(settings)
    print(
        f"\n1M chatters: produced in {produced_s:.0f} s, processed in {processed_s:.0f} s; "
        f"changelog: {records} records, the largest {largest} bytes"
    )
    assert largest <= settings.state_chunk_bytes + 1_024  # 64 KiB, against Kafka's 1 MB
