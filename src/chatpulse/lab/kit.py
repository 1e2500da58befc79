"""Tools the experiments share: chat that looks real, producing it, a ``chatpulse process``
child to start and kill, and reading what Kafka and Cassandra hold."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from chatpulse.kafka_admin import admin_client
from chatpulse.lab.runner import LabError
from chatpulse.models import ChatMessage, encode
from chatpulse.settings import Settings
from chatpulse.storage import connect

__all__ = [
    "Chat",
    "ProcessorChild",
    "committed",
    "create_topic",
    "end_offsets",
    "make_producer",
    "produce_chat",
    "read_all",
    "read_totals",
    "stop_all",
]

_TWITCH_MAX_USER_ID = 1_200_000_000


class Chat:
    """Chat messages that look like Twitch's: uuid ids, user ids up to ~1.2e9, current time."""

    def __init__(self, seed: int = 16) -> None:
        self.rng = random.Random(seed)
        self._users = [self.rng.randint(1, _TWITCH_MAX_USER_ID) for _ in range(400)]

    def message(self, channel: str, sent_at: int, text: str | None = None) -> ChatMessage:
        user = self.rng.choice(self._users)
        return ChatMessage(
            id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            channel=channel,
            channel_id=str(10_000 + sum(map(ord, channel))),
            user_id=str(user),
            user_login=f"viewer{user}",
            display_name=f"Viewer{user}",
            text=text or self.rng.choice(["gg", "LUL", "no way", "hello chat", "W", "clip it"]),
            sent_at=sent_at,
        )


def now_ms() -> int:
    return int(time.time() * 1000)


def make_producer(settings: Settings, **extra: Any) -> Producer:
    """An idempotent producer (acks=all): each partition's order kept, nothing written twice."""
    config = {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "linger.ms": 5,
        **extra,
    }
    return Producer(config)


def produce_chat(producer: Producer, topic: str, messages: Iterable[ChatMessage]) -> int:
    """Queue each message keyed by its channel, stamped with ``sent_at``; the number queued."""
    count = 0
    for message in messages:
        while True:
            try:
                producer.produce(
                    topic,
                    key=message.channel.encode(),
                    value=encode(message),
                    timestamp=message.sent_at,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    return count


def flush(producer: Producer, timeout: float = 60.0) -> None:
    left = producer.flush(timeout)
    if left:
        raise LabError(f"{left} records were not delivered within {timeout:.0f}s")


def create_topic(
    settings: Settings, name: str, partitions: int, config: dict[str, str] | None = None
) -> None:
    """Create a topic of the lab's own (one copy: the single-node stack)."""
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    topic = NewTopic(name, partitions, settings.topic_replication_factor, config=config or {})
    for future in admin.create_topics([topic], operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            raise LabError(f"could not create topic {name}: {exc.args[0]}") from None


def _consumer(settings: Settings, **extra: Any) -> Consumer:
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.topic_prefix}reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **extra,
        }
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) watermark of each partition of ``topic``."""
    consumer = _consumer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in sorted(metadata.partitions)
        }
    finally:
        consumer.close()


def wait_for_growth(settings: Settings, topic: str, timeout_s: float) -> bool:
    """Poll ``topic``'s end offsets until they grow (True, at once) or ``timeout_s`` passes."""
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]

        def total() -> int:
            return sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)

        before = total()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if total() > before:
                return True
            time.sleep(0.02)
        return False
    finally:
        consumer.close()


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (-1: none yet)."""
    consumer = _consumer(settings, **{"group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in offsets}
    finally:
        consumer.close()


def read_all(
    settings: Settings,
    topic: str,
    *,
    isolation: str = "read_committed",
    idle_s: float = 2.0,
    timeout_s: float = 60.0,
) -> list[Any]:
    """Every record of ``topic`` from the beginning until nothing came for ``idle_s`` and every
    partition's end is reached (``confluent_kafka.Message`` objects)."""
    consumer = _consumer(settings, **{"isolation.level": isolation, "enable.partition.eof": True})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    records: list[Any] = []
    at_end: set[int] = set()
    last = time.monotonic()
    deadline = last + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.5)
            for record in batch:
                if record.error() is None:
                    records.append(record)
                    at_end.discard(record.partition())
                    last = time.monotonic()
                elif record.error().code() == -191:  # _PARTITION_EOF
                    at_end.add(record.partition())
            if len(at_end) == len(partitions) and time.monotonic() - last >= idle_s:
                return records
        raise LabError(f"could not read {topic} to its end within {timeout_s:.0f}s")
    finally:
        consumer.close()


def read_totals(settings: Settings) -> dict[str, int]:
    """Cassandra's ``channel_totals``: messages counted per channel."""
    cluster, session = connect(settings)
    try:
        # the keyspace is a validated setting (letters, digits, _)
        query = f"SELECT channel, total_messages FROM {settings.cassandra_keyspace}.channel_totals"  # noqa: S608
        rows = session.execute(query, timeout=30)
        return {row.channel: row.total_messages for row in rows}
    finally:
        cluster.shutdown()


def closed_windows(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """The closed windows in ``topic`` (channel-stats) a read_committed reader sees."""
    values = [json.loads(record.value()) for record in read_all(settings, topic)]
    return [value for value in values if value.get("closed")]


def stop_all(children: Iterable[ProcessorChild], timeout: float = 30.0) -> None:
    """SIGTERM each child still running and wait for it."""
    for child in children:
        child.stop(timeout)


class ProcessorChild:
    """``chatpulse process`` as a child process with ``settings`` (plus ``env``), logging to
    ``log``: started, stopped (SIGTERM) or killed (SIGKILL) like any real instance."""

    # Quix creates the changelog topic, then reads its metadata at once; a broker under load
    # may not list it yet and the processor stops at start. Started again up to this often.
    START_RACE_RETRIES = 2

    def __init__(
        self,
        settings: Settings,
        log: Path,
        warn: Callable[[str], None] | None = None,
        **env: str,
    ) -> None:
        self.env = {**os.environ, **settings.as_environment(), "CHATPULSE_LOG_LEVEL": "INFO"}
        self.env.update(env)
        self.log = log
        self.warn = warn
        self.proc: subprocess.Popen[bytes] | None = None
        self._retries = self.START_RACE_RETRIES
        self._log_start = 0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatpulse", "process"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the lab's terminal is the lab's to handle
            )

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """LabError when the child has stopped; one that lost the start-up race above is
        started again (said through ``warn``)."""
        if self.proc is None or self.proc.poll() is None:
            return
        with self.log.open("rb") as handle:
            handle.seek(self._log_start)
            run_log = handle.read().decode(errors="replace")
        if "TopicNotFoundError" in run_log and self._retries > 0:
            self._retries -= 1
            if self.warn is not None:
                self.warn(
                    "the processor stopped at start: its new changelog topic was not "
                    "listed by the broker yet (a race under load); starting it again"
                )
            self.start()
            return
        tail = run_log.strip().splitlines()[-3:]
        raise LabError(f"the processor stopped (exit {self.proc.returncode}): {' | '.join(tail)}")

    def kill(self) -> None:
        """SIGKILL: no checkpoint, no goodbye to the group, as a crash."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: the last checkpoint is committed and the group is left at once."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_count(self, text: str) -> int:
        """How many lines of the log contain ``text``."""
        if not self.log.exists():
            return 0
        return sum(text in line for line in self.log.read_text(errors="replace").splitlines())
