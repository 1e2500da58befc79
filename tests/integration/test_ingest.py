"""Ingest end to end: fake-twitch -> ingest (in-process) -> the real Kafka, counted exactly."""

import asyncio
import contextlib
import gzip
import os
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from chatpulse.fake_twitch.server import FakeTwitchServer
from chatpulse.fake_twitch.simulate import channel_names, simulate_channel
from chatpulse.fake_twitch.source import ReplaySource, SimulatedSource
from chatpulse.ingest.convert import to_record
from chatpulse.ingest.errors import ConvertError
from chatpulse.ingest.irc.parser import IrcParseError, parse_line
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.producer import IngestProducer
from chatpulse.ingest.service import IngestService, IngestSummary
from chatpulse.ingest.spill import Spill
from chatpulse.ingest.timestamps import read_retention_ms
from chatpulse.kafka_admin import admin_client, create_topics, delete_topics
from chatpulse.models import ChatEvent, ChatMessage, TrackedChannel, encode
from chatpulse.provision import ensure_topics
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import KafkaServer
from chatpulse.topics import Topics
from chatpulse.transactional import transactional_id

CAPTURE = Path(__file__).resolve().parents[1] / "data/twitch-irc-xqcow-2019-09.txt.gz"
CAPTURE_MESSAGES = 4_933
CAPTURE_EVENTS = 67


def keep_forever(settings: Settings) -> None:
    """Turn time retention off on this test's topics.

    Records carry ``sent_at`` as their timestamp, and the capture (2019) and the simulator
    (2023) are older than the topics' 7-day retention: Kafka would delete a rolled segment at
    its next retention check (every 5 minutes), in the middle of a count.
    """
    topics = Topics.from_settings(settings)
    admin = admin_client(settings.kafka_bootstrap_servers)
    forever = ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)
    resources = [
        ConfigResource(ResourceType.TOPIC, name, incremental_configs=[forever])
        for name in (topics.messages, topics.events, topics.deadletter)
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)
    # The broker applies a config change from the KRaft metadata log a moment after the
    # controller accepted it; an ingest started before then reads the old retention.
    deadline = time.monotonic() + 30
    for resource in resources:
        while read_retention_ms(admin, resource.name, 10.0) is not None:
            assert time.monotonic() < deadline, f"retention of {resource.name} still set"
            time.sleep(0.1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared fixture's settings, with time retention off (see keep_forever)."""
    keep_forever(settings)
    return settings


def capture_lines() -> list[str]:
    with gzip.open(CAPTURE, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()


def expected_records(lines: Iterable[str]) -> tuple[list[ChatMessage], list[ChatEvent]]:
    """What ingest must produce for these lines (computed independently of the service)."""
    messages: list[ChatMessage] = []
    events: list[ChatEvent] = []
    for line in lines:
        try:
            record = to_record(parse_line(line))
        except (IrcParseError, ConvertError):
            continue
        if isinstance(record, ChatMessage):
            messages.append(record)
        elif isinstance(record, ChatEvent):
            events.append(record)
    return messages, events


def read_topic(bootstrap_servers: str, topic: str) -> list[Message]:
    """Every committed record of ``topic``, from the beginning to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"count-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = list(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Message] = []
        at_end: set[int] = set()
        while at_end != set(partitions):
            for msg in consumer.consume(num_messages=5_000, timeout=1.0):
                error = msg.error()
                if error is None:
                    records.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    raise AssertionError(f"reading {topic}: {error}")
        return records
    finally:
        consumer.close()


def decode_messages(records: list[Message]) -> list[ChatMessage]:
    return [msgspec.json.decode(r.value(), type=ChatMessage) for r in records]


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_ingest(
    settings: Settings, summaries: list[IngestSummary]
) -> AsyncIterator[IngestService]:
    """The ingest service running in this event loop; stopped (and flushed) on exit."""
    service = IngestService(settings, flush_timeout_s=30.0, metrics=IngestMetrics())
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        summaries.append(await task)


def acked(service: IngestService) -> int:
    producer = service._producer
    return sum(producer.acked.values()) if producer is not None else 0


def for_server(settings: Settings, server: FakeTwitchServer, channels: list[str]) -> Settings:
    return settings.model_copy(
        update={"twitch_irc_url": server.url, "channels": channels, "ingest_metrics_port": 0}
    )


def assert_exact_messages(records: list[Message], expected: list[ChatMessage]) -> None:
    got = decode_messages(records)
    assert len(got) == len(expected)
    assert Counter(m.id for m in got) == Counter(m.id for m in expected)  # each exactly once
    for record, message in zip(records, got, strict=True):
        assert record.key() == message.channel.encode()
        assert record.timestamp()[1] == message.sent_at


async def test_replaying_the_capture_produces_every_message_and_event_once(
    settings: Settings,
) -> None:
    lines = capture_lines()
    messages, events = expected_records(lines)
    assert (len(messages), len(events)) == (CAPTURE_MESSAGES, CAPTURE_EVENTS)
    summaries: list[IngestSummary] = []
    async with FakeTwitchServer(ReplaySource(lines), speed=0) as server:
        conf = for_server(settings, server, ["xqcow"])
        async with running_ingest(conf, summaries) as service:
            await until(lambda: server.finished("xqcow"), 60, "replay finished")
            await until(lambda: acked(service) == len(lines), 60, "all records acknowledged")
    topics = Topics.from_settings(settings)
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)
    event_records = read_topic(settings.kafka_bootstrap_servers, topics.events)
    assert len(event_records) == CAPTURE_EVENTS
    got_events = [msgspec.json.decode(r.value(), type=ChatEvent) for r in event_records]
    assert Counter(e.type for e in got_events) == Counter(e.type for e in events)
    assert {r.key() for r in event_records} == {b"xqcow"}
    assert summaries[0].spilled_at_exit == 0
    for metric in ("records_sent", "produced"):  # counted per read / per commit, exactly
        sample = service.metrics.registry.get_sample_value
        assert sample(f"chatpulse_ingest_{metric}_total", {"kind": "messages"}) == CAPTURE_MESSAGES
        assert sample(f"chatpulse_ingest_{metric}_total", {"kind": "events"}) == CAPTURE_EVENTS


async def test_disconnect_and_reconnect_mid_stream_lose_and_repeat_nothing(
    settings: Settings,
) -> None:
    lines = capture_lines()
    messages, _events = expected_records(lines)
    summaries: list[IngestSummary] = []
    # 463 s of chat at 60x: about 8 s, long enough to cut it twice in the middle.
    async with FakeTwitchServer(ReplaySource(lines), speed=60) as server:
        conf = for_server(settings, server, ["xqcow"])
        async with running_ingest(conf, summaries) as service:
            await until(lambda: server.sent("xqcow") > 1_000, 30, "stream under way")
            assert server.drop_connections() == 1
            await until(lambda: server.sent("xqcow") > 2_500, 30, "stream resumed after drop")
            assert server.send_reconnect(grace_s=1.0) == 1
            await until(lambda: server.finished("xqcow"), 60, "replay finished")
            await until(lambda: acked(service) == len(lines), 60, "all records acknowledged")
            assert server.connections_accepted >= 3
    topics = Topics.from_settings(settings)
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)
    assert len(read_topic(settings.kafka_bootstrap_servers, topics.events)) == CAPTURE_EVENTS


async def test_malformed_lines_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    settings: Settings,
) -> None:
    head, tail = capture_lines()[:150], capture_lines()[150:300]
    no_user = (
        "@id=bad-1;room-id=1;tmi-sent-ts=1568505610000 :x!x@x.tmi.twitch.tv PRIVMSG #xqcow :hi"
    )
    unparsable = "@badge-info=;id=2 :tmi.twitch.tv 12 #xqcow"
    messages, events = expected_records(head + tail)
    summaries: list[IngestSummary] = []
    async with FakeTwitchServer(ReplaySource([*head, no_user, *tail]), speed=10) as server:
        conf = for_server(settings, server, ["xqcow"])
        async with running_ingest(conf, summaries) as service:
            await until(lambda: server.sent("xqcow") > 10, 30, "stream under way")
            server.inject("xqcow", unparsable)
            await until(lambda: server.finished("xqcow"), 60, "replay finished")
            total = len(messages) + len(events) + 2
            await until(lambda: acked(service) == total, 60, "all records acknowledged")
            assert (
                service.metrics.registry.get_sample_value(
                    "chatpulse_ingest_deadlettered_total", {"kind": "convert"}
                )
                == 1
            )
    topics = Topics.from_settings(settings)
    dead = read_topic(settings.kafka_bootstrap_servers, topics.deadletter)
    values = sorted((msgspec.json.decode(r.value()) for r in dead), key=lambda v: v["raw"])
    assert [r.key() for r in dead] == [b"irc", b"irc"]
    assert [(v["raw"], v["reason"]) for v in values] == [
        (unparsable, "no valid command"),
        (no_user, "missing tag user-id"),
    ]
    assert all(isinstance(v["at"], int) for v in values)
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)


def _spilled_message(index: int) -> ChatMessage:
    return ChatMessage(
        id=f"spilled-{index}",
        channel="xqcow",
        user_id="1",
        user_login="someone",
        text=f"from before the restart {index}",
        sent_at=1_568_505_500_000 + index,
    )


async def test_a_restart_with_a_spill_present_drains_it_first(
    settings: Settings, tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings)
    old = [_spilled_message(i) for i in range(40)]
    # A previous run that never reached Kafka (nothing listens on port 1) left them on disk.
    spill = Spill(settings.spill_dir)
    dead = IngestProducer(
        "127.0.0.1:1",
        topics,
        spill,
        IngestMetrics(),
        buffer_messages=10,
        txn_id="unused-dead-broker",
        call_timeout_s=0.2,
        config_overrides={"log_level": 0},
    )
    for message in old:
        dead.send(topics.messages, b"xqcow", encode(message), message.sent_at)
    assert dead.close(timeout_s=0.5) == 0  # all 40 went to the spill once memory was full
    assert len(list(settings.spill_dir.glob("*.spill"))) == 1

    lines = capture_lines()[:400]
    messages, events = expected_records(lines)
    summaries: list[IngestSummary] = []
    async with FakeTwitchServer(ReplaySource(lines), speed=0) as server:
        conf = for_server(settings, server, ["xqcow"])
        async with running_ingest(conf, summaries) as service:
            total = len(old) + len(messages) + len(events)
            await until(lambda: acked(service) == total, 60, "all records acknowledged")
            await until(lambda: not list(settings.spill_dir.glob("*.spill")), 10, "spill gone")
    records = read_topic(settings.kafka_bootstrap_servers, topics.messages)
    assert_exact_messages(records, old + messages)
    assert len({r.partition() for r in records}) == 1  # one channel: one partition, one order
    # Offsets have gaps (transaction markers): compare the order of the records instead.
    in_order = sorted(records, key=lambda r: r.offset())
    ids = [m.id for m in decode_messages(in_order)]
    assert ids[: len(old)] == [m.id for m in old]  # first, in their order
    assert ids[len(old) :] == [m.id for m in messages]


@pytest.mark.timeout(400)
async def test_kafka_down_for_30s_during_a_stream_delivers_every_message_once(
    dedicated_kafka: KafkaServer, tmp_path: Path
) -> None:
    channels, rate, seed, duration_s = 4, 250.0, 11, 50.0
    start_ms = int(time.time() * 1000)  # streamed at speed 1: stamped as real chat is
    names = channel_names(channels)
    sent_lines = [
        line
        for index in range(channels)
        for _offset, line in simulate_channel(
            index, channels, rate, seed, duration_s=duration_s, start_ms=start_ms
        )
    ]
    messages, events = expected_records(sent_lines)
    source = SimulatedSource(channels, rate, seed, duration_s=duration_s, start_ms=start_ms)
    summaries: list[IngestSummary] = []
    async with FakeTwitchServer(source, speed=1.0) as server:
        settings = load_settings(
            kafka_bootstrap_servers=dedicated_kafka.bootstrap_servers,
            topic_prefix="outage-",
            spill_dir=tmp_path / "spill",
            ingest_buffer_messages=1_000,
            ingest_metrics_port=0,
            twitch_irc_url=server.url,
            channels=",".join(names),
        )
        await asyncio.to_thread(ensure_topics, settings, wait_s=30.0)
        keep_forever(settings)
        async with running_ingest(settings, summaries) as service:
            await until(lambda: acked(service) > 500, 30, "records reach Kafka")
            await asyncio.to_thread(dedicated_kafka.stop, 30)
            await asyncio.sleep(30)
            assert acked(service) < len(sent_lines)
            await asyncio.to_thread(dedicated_kafka.start)
            await asyncio.to_thread(dedicated_kafka.wait_ready, 120)
            await until(lambda: all(server.finished(n) for n in names), 120, "streams finished")
            assert sum(server.sent(n) for n in names) == len(sent_lines)
            total = len(messages) + len(events)
            await until(lambda: acked(service) == total, 120, "all records acknowledged")
            spilled = service.metrics.registry.get_sample_value("chatpulse_ingest_spilled_total")
            assert spilled is not None
            assert spilled > 1_000  # the outage outlasted the memory buffer
    # What the service handed to the producer: a surplus here would come from the IRC side.
    assert (summaries[0].messages, summaries[0].events) == (len(messages), len(events))
    topics = Topics.from_settings(settings)
    # A read_committed reader (read_topic) sees every message exactly once: what an aborted
    # transaction wrote before the outage is invisible, its records were committed again.
    records = sorted(
        read_topic(settings.kafka_bootstrap_servers, topics.messages),
        key=lambda r: (r.partition(), r.offset()),
    )
    got = decode_messages(records)
    assert Counter(m.id for m in got) == Counter(m.id for m in messages)
    assert {m.id: m for m in got} == {m.id: m for m in messages}
    for record, message in zip(records, got, strict=True):
        assert record.key() == message.channel.encode()
        assert record.timestamp()[1] == message.sent_at
    for name in names:  # and in the order chat sent them, channel by channel
        assert [m.id for m in got if m.channel == name] == [
            m.id for m in messages if m.channel == name
        ]
    event_records = read_topic(settings.kafka_bootstrap_servers, topics.events)
    on_kafka = [msgspec.json.decode(r.value(), type=ChatEvent) for r in event_records]
    assert Counter(e.id for e in on_kafka) == Counter(e.id for e in events)
    assert not list((tmp_path / "spill").glob("*.spill"))


async def test_a_record_kafka_refuses_aborts_its_transaction_and_the_rest_commit_once(
    settings: Settings, tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings)
    admin = admin_client(settings.kafka_bootstrap_servers)
    small_limit = ConfigEntry(
        "max.message.bytes", "1024", incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, topics.events, incremental_configs=[small_limit])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    metrics = IngestMetrics()
    producer = IngestProducer(
        settings.kafka_bootstrap_servers,
        topics,
        Spill(tmp_path / "spill"),
        metrics,
        buffer_messages=10_000,
        txn_id=f"{settings.topic_prefix}refusal",
        deadletter_raw_max_bytes=10_000,
    )
    messages = [_spilled_message(i) for i in range(200)]
    too_big = os.urandom(8_000).hex().encode()  # incompressible, far over the topic's 1 KiB
    # All in one transaction: the broker refuses the big record's batch, the commit fails,
    # the transaction is aborted and its other records are sent again in a new one.
    for message in messages[:100]:
        producer.send(topics.messages, b"xqcow", encode(message), message.sent_at)
    producer.send(topics.events, b"xqcow", too_big, 1_568_505_500_000)
    for message in messages[100:]:
        producer.send(topics.messages, b"xqcow", encode(message), message.sent_at)

    def done() -> bool:
        producer.poll()
        return producer.acked[topics.messages] == 200 and producer.acked[topics.deadletter] == 1

    try:
        await until(done, 60, "the messages and the dead letter committed")
    finally:
        assert producer.close(timeout_s=10) == 0
    assert metrics.registry.get_sample_value("chatpulse_ingest_delivery_retries_total") == 201
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)
    assert read_topic(settings.kafka_bootstrap_servers, topics.events) == []
    (dead,) = read_topic(settings.kafka_bootstrap_servers, topics.deadletter)
    value = msgspec.json.decode(dead.value())
    assert (dead.key(), value["source"]) == (topics.events.encode(), topics.events)
    assert value["reason"].startswith("kafka refused the record: ")
    assert value["raw"] == too_big[:10_000].decode()
    assert value["raw_length"] == len(too_big)


def _now_message(index: int, sent_at: int) -> ChatMessage:
    return ChatMessage(
        id=f"m-{index}",
        channel="xqcow",
        user_id=str(17_000_000 + index * 3_919),
        user_login=f"viewer{index}",
        text=f"message {index}",
        sent_at=sent_at,
    )


async def test_a_record_the_broker_refuses_in_a_shared_batch_is_found_and_only_it_dead_lettered(
    settings: Settings, tmp_path: Path
) -> None:
    # The broker refuses the whole partition batch (every record, INVALID_TIMESTAMP) for one
    # record stamped past message.timestamp.after.max.ms (1 h): the suspects are probed in
    # smaller transactions until the culprit is alone; every other record commits once.
    topics = Topics.from_settings(settings)
    metrics = IngestMetrics()
    producer = IngestProducer(
        settings.kafka_bootstrap_servers,
        topics,
        Spill(tmp_path / "spill"),
        metrics,
        buffer_messages=10_000,
        txn_id=f"{settings.topic_prefix}probe",
    )
    now = int(time.time() * 1000)
    messages = [_now_message(i, now - 1_000 + i) for i in range(300)]
    future = _now_message(999, now + 3 * 3600 * 1000)
    for message in [*messages[:150], future, *messages[150:]]:  # one channel: one partition
        producer.send(topics.messages, b"xqcow", encode(message), message.sent_at)

    def done() -> bool:
        producer.poll()
        return producer.acked[topics.messages] == 300 and producer.acked[topics.deadletter] == 1

    try:
        await until(done, 60, "the 300 messages and the dead letter committed")
    finally:
        assert producer.close(timeout_s=10) == 0
    records = read_topic(settings.kafka_bootstrap_servers, topics.messages)
    assert_exact_messages(records, messages)
    (dead,) = read_topic(settings.kafka_bootstrap_servers, topics.deadletter)
    value = msgspec.json.decode(dead.value())
    assert msgspec.json.decode(value["raw"], type=ChatMessage) == future
    assert (dead.key(), value["source"]) == (topics.messages.encode(), topics.messages)
    assert value["reason"].startswith("kafka refused the record: ")
    assert "timestamp" in value["reason"].lower()
    assert (
        metrics.registry.get_sample_value("chatpulse_ingest_deadlettered_total", {"kind": "kafka"})
        == 1
    )


def _produce_tracked(settings: Settings, channel: str, tracked: bool) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    value = encode(TrackedChannel(channel)) if tracked else None
    producer.produce(Topics.from_settings(settings).tracked, value, channel.encode())
    assert producer.flush(30) == 0


async def test_channels_follow_the_tracked_channels_topic(settings: Settings) -> None:
    _produce_tracked(settings, "xqcow", tracked=True)  # tracked before the start
    _produce_tracked(settings, "forsen", tracked=True)
    _produce_tracked(settings, "forsen", tracked=False)  # and untracked again
    lines = capture_lines()
    source = ReplaySource(lines[:2_000] + [_rewrite(line, "xqcow", "lirik") for line in lines])
    summaries: list[IngestSummary] = []
    async with FakeTwitchServer(source, speed=20) as server:
        conf = for_server(settings, server, [])

        def joined() -> set[str]:
            return set().union(*server.memberships().values())

        async with running_ingest(conf, summaries):
            await until(lambda: joined() == {"xqcow"}, 30, "joined the tracked channel at start")
            _produce_tracked(settings, "lirik", tracked=True)
            await until(lambda: joined() == {"xqcow", "lirik"}, 10, "joined a newly tracked one")
            await until(lambda: server.sent("lirik") > 50, 30, "lirik chat flowing")
            _produce_tracked(settings, "lirik", tracked=False)
            await until(lambda: joined() == {"xqcow"}, 10, "parted the untracked one")
            parted_after = server.sent("lirik")
    records = read_topic(settings.kafka_bootstrap_servers, Topics.from_settings(settings).messages)
    channels = Counter(r.key() for r in records)
    assert set(channels) == {b"xqcow", b"lirik"}
    assert 50 < channels[b"lirik"] <= parted_after  # nothing after the PART


def _rewrite(line: str, old: str, new: str) -> str:
    return line.replace(f" #{old}", f" #{new}", 1)


async def test_the_cli_runs_until_sigterm_and_flushes(settings: Settings) -> None:
    lines = capture_lines()[:1_000]
    messages, events = expected_records(lines)
    async with FakeTwitchServer(ReplaySource(lines), speed=0) as server:
        env = {
            **os.environ,
            "CHATPULSE_SPILL_DIR": str(settings.spill_dir),
            "CHATPULSE_INGEST_METRICS_PORT": "0",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatpulse",
            "ingest",
            "--channels",
            "xqcow",
            "--irc-url",
            server.url,
            "--bootstrap-servers",
            settings.kafka_bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        await until(lambda: server.finished("xqcow"), 60, "replay delivered to the CLI")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert f"{len(messages)} chat messages, {len(events)} events" in log
    topics = Topics.from_settings(settings)
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)


def set_retention(settings: Settings, retention_ms: int) -> None:
    """Give this test's data topics a time retention (the module's fixture turned it off)."""
    topics = Topics.from_settings(settings)
    admin = admin_client(settings.kafka_bootstrap_servers)
    entry = ConfigEntry(
        "retention.ms", str(retention_ms), incremental_operation=AlterConfigOpType.SET
    )
    resources = [
        ConfigResource(ResourceType.TOPIC, name, incremental_configs=[entry])
        for name in (topics.messages, topics.events)
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


def _shift_to(lines: list[str], start_ms: int) -> list[str]:
    """The capture's lines with tmi-sent-ts moved so the first one is ``start_ms``."""
    first = next(int(m.group(1)) for line in lines if (m := _TS.search(line)))
    return [
        _TS.sub(lambda m: f"tmi-sent-ts={int(m.group(1)) - first + start_ms}", line)
        for line in lines
    ]


_TS = re.compile(r"tmi-sent-ts=(\d+)")
WEEK_MS = 7 * 24 * 3600 * 1000


def _privmsg(msg_id: str, sent_at: str | int, text: str) -> str:
    return (
        f"@badge-info=;badges=;display-name=Hostile;emotes=;id={msg_id};room-id=71092938;"
        f"tmi-sent-ts={sent_at};user-id=914873215 :hostile!hostile@hostile.tmi.twitch.tv "
        f"PRIVMSG #xqcow :{text}"
    )


async def test_out_of_range_timestamps_are_dead_lettered_and_the_stream_goes_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The two reproductions: a 23-digit tmi-sent-ts (an OverflowError traceback that
    # ended the ingest) and a PRIVMSG stamped 3 h ahead (Kafka refused its batch and the
    # ingest sent it again forever); and one older than the topic's retention.
    set_retention(settings, WEEK_MS)
    now = int(time.time() * 1000)
    ordinary = _shift_to(capture_lines()[:600], now - 120_000)
    overflow = _privmsg("h-overflow", "12345678901234567890123", "from the year 3.9e12")
    future = _privmsg("h-future", now + 3 * 3600 * 1000, "from three hours ahead")
    old = _privmsg("h-old", now - WEEK_MS - 3600 * 1000, "from eight days ago")
    lines = [*ordinary[:150], overflow, *ordinary[150:300], future, *ordinary[300:450], old]
    lines += ordinary[450:]
    messages, events = expected_records(ordinary)
    summaries: list[IngestSummary] = []
    async with FakeTwitchServer(ReplaySource(lines), speed=0) as server:
        conf = for_server(settings, server, ["xqcow"])
        async with running_ingest(conf, summaries) as service:
            await until(lambda: server.finished("xqcow"), 60, "replay finished")
            total = len(messages) + len(events) + 3
            await until(lambda: acked(service) == total, 60, "all records acknowledged")
            sample = service.metrics.registry.get_sample_value
            assert sample("chatpulse_ingest_deadlettered_total", {"kind": "convert"}) == 1
            assert sample("chatpulse_ingest_deadlettered_total", {"kind": "timestamp"}) == 2
    assert summaries[0].deadlettered == 3
    # Three bad lines within seconds: one log line (rate-limited), the metrics count all three.
    logged = [r for r in caplog.records if r.getMessage().startswith("dead-lettering a line")]
    assert len(logged) == 1
    topics = Topics.from_settings(settings)
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)
    dead = read_topic(settings.kafka_bootstrap_servers, topics.deadletter)
    reasons = {msgspec.json.decode(r.value())["raw"]: msgspec.json.decode(r.value()) for r in dead}
    assert set(reasons) == {overflow, future, old}
    assert reasons[overflow]["reason"] == (
        "tag tmi-sent-ts is out of range (over 2^53 - 1): '12345678901234567890123'"
    )
    # 3 h less the milliseconds between the test's clock reading and the ingest's.
    assert re.fullmatch(
        rf"sent_at {now + 3 * 3600 * 1000} is 10[67]\d\d\.\ds ahead of the ingest's clock "
        r"\(more than CHATPULSE_MAX_FUTURE_SKEW, 5m\)",
        reasons[future]["reason"],
    ), reasons[future]["reason"]
    assert reasons[old]["reason"].endswith(
        f"older than the retention of {topics.messages} (7d): Kafka would delete it at once"
    )
    assert all(v["raw_length"] == len(raw) and v["source"] == "irc" for raw, v in reasons.items())


async def test_a_skew_beyond_the_brokers_limit_is_refused_by_kafka_and_dead_lettered(
    settings: Settings,
) -> None:
    # With CHATPULSE_MAX_FUTURE_SKEW above the broker's 1 h the ingest lets the record through;
    # Kafka refuses its whole batch; only the culprit is dead-lettered, the rest commit once.
    now = int(time.time() * 1000)
    ordinary = _shift_to(capture_lines()[:400], now - 60_000)
    future = _privmsg("h-future", now + 3 * 3600 * 1000, "from three hours ahead")
    lines = [*ordinary[:200], future, *ordinary[200:]]
    messages, events = expected_records(ordinary)
    summaries: list[IngestSummary] = []
    async with FakeTwitchServer(ReplaySource(lines), speed=0) as server:
        conf = for_server(settings, server, ["xqcow"]).model_copy(update={"max_future_skew": "6h"})
        async with running_ingest(conf, summaries) as service:
            await until(lambda: server.finished("xqcow"), 60, "replay finished")
            total = len(messages) + len(events) + 1
            await until(lambda: acked(service) == total, 60, "all records acknowledged")
    topics = Topics.from_settings(settings)
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)
    (dead,) = read_topic(settings.kafka_bootstrap_servers, topics.deadletter)
    value = msgspec.json.decode(dead.value())
    assert value["source"] == topics.messages
    assert msgspec.json.decode(value["raw"], type=ChatMessage).id == "h-future"
    assert value["reason"].startswith("kafka refused the record: ")


async def test_a_fenced_ingest_ends_with_one_line_and_no_traceback(settings: Settings) -> None:
    lines = _shift_to(capture_lines(), int(time.time() * 1000) - 60_000)
    instance = "fence-test"
    async with FakeTwitchServer(ReplaySource(lines), speed=20) as server:
        env = {
            **os.environ,
            "CHATPULSE_SPILL_DIR": str(settings.spill_dir),
            "CHATPULSE_INGEST_METRICS_PORT": "0",
            "CHATPULSE_INSTANCE_ID": instance,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatpulse",
            "ingest",
            "--channels",
            "xqcow",
            "--irc-url",
            server.url,
            "--bootstrap-servers",
            settings.kafka_bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        await until(lambda: server.sent("xqcow") > 200, 60, "chat flowing to the CLI")
        # A second instance with the same transactional id takes over: the first is fenced.
        txn_id = transactional_id(
            f"{settings.topic_prefix}chatpulse-ingest", settings.spill_dir, instance
        )
        usurper = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap_servers, "transactional.id": txn_id}
        )
        await asyncio.to_thread(usurper.init_transactions, 30)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 90)
        finally:
            if process.returncode is None:
                process.kill()
    log = stderr.decode()
    assert process.returncode == 1, log
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("chatpulse: error: the Kafka producer failed for good: "), last
    assert "another ingest with the same transactional id took over" in last


async def test_a_dead_letter_the_dead_letter_topic_refuses_is_counted_and_dropped(
    settings: Settings, tmp_path: Path
) -> None:
    # Both topics refuse big records: the big event is refused, its dead letter (raw kept up
    # to 16 KiB) is refused too; it is dropped and counted, never sent again.
    topics = Topics.from_settings(settings)
    admin = admin_client(settings.kafka_bootstrap_servers)
    small = ConfigEntry("max.message.bytes", "1024", incremental_operation=AlterConfigOpType.SET)
    resources = [
        ConfigResource(ResourceType.TOPIC, name, incremental_configs=[small])
        for name in (topics.events, topics.deadletter)
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)
    metrics = IngestMetrics()
    producer = IngestProducer(
        settings.kafka_bootstrap_servers,
        topics,
        Spill(tmp_path / "spill"),
        metrics,
        buffer_messages=10_000,
        txn_id=f"{settings.topic_prefix}dead-dead",
    )
    messages = [_spilled_message(i) for i in range(50)]
    for message in messages[:25]:
        producer.send(topics.messages, b"xqcow", encode(message), message.sent_at)
    producer.send(topics.events, b"xqcow", os.urandom(4_000).hex().encode(), 1_568_505_500_000)
    for message in messages[25:]:
        producer.send(topics.messages, b"xqcow", encode(message), message.sent_at)
    sample = metrics.registry.get_sample_value

    def done() -> bool:
        producer.poll()
        return (
            producer.acked[topics.messages] == 50
            and sample("chatpulse_ingest_deadletter_dropped_total") == 1
        )

    try:
        await until(done, 60, "the messages committed and the dead letter dropped")
        for _ in range(20):  # and nothing is retried after that
            producer.poll()
            await asyncio.sleep(0.05)
        assert producer.buffered == 0
    finally:
        assert producer.close(timeout_s=10) == 0
    assert sample("chatpulse_ingest_deadletter_dropped_total") == 1
    assert producer.acked[topics.deadletter] == 0
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)
    assert read_topic(settings.kafka_bootstrap_servers, topics.deadletter) == []


async def test_an_unreadable_spill_ends_the_cli_with_one_line(settings: Settings) -> None:
    settings.spill_dir.mkdir(parents=True)
    (settings.spill_dir / "000000000001a.spill").mkdir()  # a segment that cannot be read
    async with FakeTwitchServer(ReplaySource(capture_lines()[:100]), speed=0) as server:
        env = {
            **os.environ,
            "CHATPULSE_SPILL_DIR": str(settings.spill_dir),
            "CHATPULSE_INGEST_METRICS_PORT": "0",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatpulse",
            "ingest",
            "--channels",
            "xqcow",
            "--irc-url",
            server.url,
            "--bootstrap-servers",
            settings.kafka_bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
    log = stderr.decode()
    assert process.returncode == 1, log
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    assert re.fullmatch(
        r"chatpulse: error: spill segment \S+/000000000001a\.spill cannot be read: "
        r"\[Errno 21\] Is a directory: .*",
        last,
    ), last


async def test_a_missing_topic_dead_letters_nothing_and_every_record_lands_once_it_is_back(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # librdkafka answers "unknown topic" for every record while the messages topic is gone
    # (deleted, about to be recreated): the topic's fault, not the records'. They are kept and
    # retried with a backoff; once the topic is back they land once, none dead-lettered.
    # (Deleting it under an open transaction is another story: its records time out after
    # the transaction timeout and the broker ends the producer, INVALID_TXN_STATE.)
    topics = Topics.from_settings(settings)
    admin = admin_client(settings.kafka_bootstrap_servers)
    delete_topics(admin, [topics.messages])
    producer = IngestProducer(
        settings.kafka_bootstrap_servers,
        topics,
        Spill(tmp_path / "spill"),
        IngestMetrics(),
        buffer_messages=10_000,
        txn_id=f"{settings.topic_prefix}missing-topic",
        # No auto-creation (the broker's is on); an absent topic is reported after 1 s.
        config_overrides={
            "allow.auto.create.topics": False,
            "topic.metadata.propagation.max.ms": 1000,
        },
    )
    now = int(time.time() * 1000)
    messages = [_now_message(i, now + i) for i in range(100)]

    def polled_and(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            producer.poll()
            return condition()

        return check

    try:
        for message in messages:
            producer.send(topics.messages, b"xqcow", encode(message), message.sent_at)
        await until(
            polled_and(lambda: "Kafka does not take the records" in caplog.text),
            60,
            "the held records reported",
        )
        assert "Unknown topic" in caplog.text  # the log says what Kafka answered
        await asyncio.sleep(2)  # a backoff or two: still nothing dead-lettered
        producer.poll()
        assert producer.acked == {topics.messages: 0, topics.events: 0, topics.deadletter: 0}
        assert producer.buffered == 100
        create_topics(admin, topics.specs(settings), 1)
        keep_forever(settings)
        await until(
            polled_and(lambda: producer.acked[topics.messages] == 100),
            90,
            "the records committed once the topic is back",
        )
    finally:
        assert producer.close(timeout_s=10) == 0
    assert producer.acked[topics.deadletter] == 0
    assert read_topic(settings.kafka_bootstrap_servers, topics.deadletter) == []
    assert_exact_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages), messages)


async def test_two_hosts_with_the_same_spill_dir_path_both_produce_and_neither_is_fenced(
    settings: Settings,
) -> None:
    # Two hosts started from the same configuration: the same spill directory path (the
    # transactional id hashes its absolute path) and each its own CHATPULSE_INSTANCE_ID (the
    # host name by default). Here both run in this process over one directory, which the
    # Kafka side cannot tell from two machines; neither spills, so they never share a file.
    lines = capture_lines()
    messages, _events = expected_records(lines)
    summaries: list[IngestSummary] = []
    async with (
        FakeTwitchServer(ReplaySource(lines), speed=60) as server_a,
        FakeTwitchServer(ReplaySource(lines), speed=60) as server_b,
    ):
        conf_a = for_server(settings, server_a, ["xqcow"]).model_copy(
            update={"instance_id": "chat-host-a"}
        )
        conf_b = for_server(settings, server_b, ["xqcow"]).model_copy(
            update={"instance_id": "chat-host-b"}
        )
        assert str(conf_a.spill_dir) == str(conf_b.spill_dir)
        base = f"{settings.topic_prefix}chatpulse-ingest"
        txn_a = transactional_id(base, conf_a.spill_dir, conf_a.instance_id)
        txn_b = transactional_id(base, conf_b.spill_dir, conf_b.instance_id)
        assert txn_a != txn_b
        assert txn_a.rsplit("-", 1)[1] == txn_b.rsplit("-", 1)[1]  # the same directory hash
        async with (
            running_ingest(conf_a, summaries) as ingest_a,
            running_ingest(conf_b, summaries) as ingest_b,
        ):
            # Both commit while the other does (a fenced one would stop committing for good).
            await until(
                lambda: acked(ingest_a) > 1_000 and acked(ingest_b) > 1_000,
                30,
                "both ingests producing",
            )
            assert not (server_a.finished("xqcow") and server_b.finished("xqcow"))
            await until(
                lambda: acked(ingest_a) == len(lines) and acked(ingest_b) == len(lines),
                60,
                "both ingests acknowledged everything",
            )
            for ingest in (ingest_a, ingest_b):
                assert ingest._producer is not None
                assert ingest._producer.fatal_error is None
    assert [summary.produced for summary in summaries] == [len(lines), len(lines)]
    topics = Topics.from_settings(settings)
    got = decode_messages(read_topic(settings.kafka_bootstrap_servers, topics.messages))
    # Each host sent the whole channel once: every message twice, none lost to a fence.
    assert Counter(m.id for m in got) == Counter(m.id for m in messages + messages)
