"""Producing to Kafka without losing or repeating a record, through outages and restarts.

Records go to librdkafka (idempotent, ``acks=all``, lz4, batched) whose queue, bounded by
``ingest_buffer_messages``, is the in-memory buffer. ``message.timeout.ms=0`` makes librdkafka
retry a record until Kafka takes it, so once a record is in that queue it is never handed to
us again and never sent twice (idempotence removes the duplicates of its own retries).

When the queue is full (Kafka is away) records go to the on-disk :class:`Spill`, and from then
on *every* new record goes there too, behind them, so order holds. When the queue has room
again the spill is read back in order into the queue; once the reader has caught up with the
writer, records go straight to the queue again. A spilled record is acknowledged in the spill
only by its delivery report, so a crash resends just the unacknowledged ones.

At shutdown whatever Kafka has not acknowledged within the wait is purged from the queue.
Purged records that came from the spill are still in it (unacknowledged); the others are
written to the spill in the place they held in the stream (:meth:`Spill.append_before`).

Limits: the memory buffer dies with the process (SIGKILL, power loss); a record that was in
flight when the shutdown wait ran out, or acknowledged by Kafka after the last spill checkpoint
before a crash, can reach Kafka twice. Consumers count each (channel, id) once.
"""

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message, Producer

from chatpulse.ingest.deadletter import deadletter_value
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.spill import Position, Spill, SpilledRecord
from chatpulse.topics import Topics

__all__ = ["IngestProducer", "producer_config"]

logger = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
_Record = tuple[str, bytes | None, bytes, int]

# Errors a retry cannot fix: the record goes to the dead-letter topic instead.
_UNRETRIABLE = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError._MSG_TIMED_OUT,  # only with a finite timeout set by an override
        KafkaError._INVALID_ARG,
    }
)
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_DRAIN_BATCH = 20_000
_RETRY_BACKOFF_S = 1.0
_CHECKPOINT_INTERVAL_S = 1.0
_FAILURE_LOG_INTERVAL_S = 5.0


class _SentAt(msgspec.Struct):
    sent_at: int = 0


_sent_at_decoder = msgspec.json.Decoder(_SentAt)


def _timestamp_of(msg: Message) -> int:
    """The record's timestamp on a failed delivery (librdkafka omits it for purged records).

    Chat records carry it as ``sent_at`` in their value; others get 0 (the broker's time).
    """
    kind, timestamp = msg.timestamp()
    if kind != TIMESTAMP_NOT_AVAILABLE and timestamp > 0:
        return int(timestamp)
    try:
        return _sent_at_decoder.decode(msg.value() or b"{}").sent_at
    except msgspec.DecodeError:
        return 0


def producer_config(bootstrap_servers: str, buffer_messages: int) -> dict[str, Any]:
    """librdkafka settings of the ingest producer (see the module docstring for why)."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "chatpulse-ingest",
        "enable.idempotence": True,
        "acks": "all",
        # One request in flight: with several, a failure of the first makes the broker answer
        # OUT_OF_ORDER_SEQUENCE to the next ones and librdkafka bumps the producer epoch,
        # re-sending records that may be persisted already (librdkafka issue #4953).
        "max.in.flight.requests.per.connection": 1,
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "message.timeout.ms": 0,
        "queue.buffering.max.messages": buffer_messages,
        "queue.buffering.max.kbytes": 2_097_151,
        "reconnect.backoff.max.ms": 2_000,
    }


class IngestProducer:
    """Sends records to Kafka, spilling to disk while Kafka cannot take them."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        spill: Spill,
        metrics: IngestMetrics,
        *,
        buffer_messages: int,
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        config = producer_config(bootstrap_servers, buffer_messages)
        config["error_cb"] = self._on_error
        config["logger"] = logger  # librdkafka's log through logging, not raw stderr
        config.update(config_overrides or {})
        self._producer = Producer(config)
        self._spill = spill
        self._metrics = metrics
        self._topics = topics
        self._kinds = {
            topics.messages: "messages",
            topics.events: "events",
            topics.deadletter: "deadletter",
        }
        self._low_mark = max(1, buffer_messages // 2)
        self._acked = dict.fromkeys(self._kinds, 0)
        self._reported = dict.fromkeys(self._kinds, 0)
        self._retries: deque[tuple[float, _Record, int | None, DeliveryCallback]] = deque()
        self._held: SpilledRecord | None = None
        self._purged: dict[int, list[_Record]] = {}
        self._closing = False
        self._last_checkpoint = time.monotonic()
        self._last_failure_log = float("-inf")
        self._failures = 0
        self.fatal_error: KafkaError | None = None
        self._spilling = not spill.empty
        self._slot = spill.next_slot
        self._direct_callback = self._make_direct_callback(self._slot)

    # -- sending ---------------------------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes, timestamp: int) -> None:
        """Queue one record for Kafka, or spill it while Kafka is behind; never blocks."""
        if self._spilling:
            self._spill.append(topic, key, value, timestamp)
            self._metrics.spilled.inc()
            return
        try:
            self._producer.produce(
                topic, value, key, timestamp=timestamp, on_delivery=self._direct_callback
            )
        except BufferError:
            logger.warning(
                "Kafka is not keeping up (%d records buffered): spilling to %s",
                len(self._producer),
                self._spill.directory,
            )
            self._spilling = True
            self._spill.append(topic, key, value, timestamp)
            self._metrics.spilled.inc()

    def poll(self) -> None:
        """Serve delivery reports, retry failed records, drain the spill, update metrics."""
        self._producer.poll(0)
        if self._retries:
            self._retry_due()
        if self._spilling:
            self._drain()
        self._spill.flush()
        now = time.monotonic()
        if now - self._last_checkpoint >= _CHECKPOINT_INTERVAL_S:
            self._spill.checkpoint()
            self._last_checkpoint = now
            self._metrics.spill_bytes.set(self._spill.size_bytes())
        self._update_metrics()

    @property
    def buffered(self) -> int:
        """Records in librdkafka's memory not yet acknowledged (or not yet reported)."""
        return len(self._producer)

    @property
    def spilling(self) -> bool:
        """True while new records go to the spill."""
        return self._spilling

    @property
    def acked(self) -> dict[str, int]:
        """Records Kafka acknowledged so far, by topic."""
        return dict(self._acked)

    # -- delivery reports ------------------------------------------------------------------

    def _make_direct_callback(self, slot: int) -> DeliveryCallback:
        # One callback per slot, not one object per record: this is the hot path.
        acked = self._acked

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                acked[msg.topic()] += 1
            else:
                self._failed(err, msg, _timestamp_of(msg), delivered, slot=slot)

        return delivered

    def _spill_delivered(self, record: SpilledRecord, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._acked[msg.topic()] += 1
            self._spill.acknowledge(record.position)
        else:
            callback = functools.partial(self._spill_delivered, record)
            self._failed(err, msg, record.timestamp, callback, position=record.position)

    def _failed(
        self,
        err: KafkaError,
        msg: Message,
        timestamp: int,
        callback: DeliveryCallback,
        *,
        slot: int | None = None,
        position: Position | None = None,
    ) -> None:
        record: _Record = (msg.topic(), msg.key(), msg.value(), timestamp)
        if err.code() in _PURGED and self._closing:
            if slot is not None:
                self._purged.setdefault(slot, []).append(record)
            return
        self._metrics.delivery_failures.inc()
        self._failures += 1
        if err.code() in _UNRETRIABLE and record[0] != self._topics.deadletter:
            logger.error(
                "Kafka refused a record for good (topic %s, key %r): %s; dead-lettering it",
                record[0],
                record[1],
                err.str(),
            )
            self._deadletter_refused(record, err)
            if position is not None:
                self._spill.acknowledge(position)  # the dead letter holds it now
            return
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:  # one line, not a flood
            self._last_failure_log = now
            logger.warning(
                "delivery failed (topic %s, key %r): %s; retrying (%d failures so far)",
                record[0],
                record[1],
                err.str(),
                self._failures,
            )
        self._retries.append((time.monotonic() + _RETRY_BACKOFF_S, record, slot, callback))

    def _deadletter_refused(self, record: _Record, err: KafkaError) -> None:
        topic, _key, value, _timestamp = record
        raw = value[:10_000].decode("utf-8", errors="backslashreplace")
        self.send(
            self._topics.deadletter,
            topic.encode(),
            deadletter_value(raw, f"kafka refused the record: {err.str()}", source=topic),
            0,
        )
        self._metrics.deadlettered.labels("kafka").inc()

    def _retry_due(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _due, (topic, key, value, timestamp), _slot, callback = self._retries[0]
            try:
                self._producer.produce(topic, value, key, timestamp=timestamp, on_delivery=callback)
            except BufferError:
                return
            self._retries.popleft()
            self._metrics.retried.inc()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal_error = err
            logger.critical("Kafka producer fatal error: %s", err.str())
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            logger.warning("Kafka unreachable: %s (records are kept)", err.str())
        else:
            logger.info("Kafka producer: %s", err.str())

    # -- the spill ---------------------------------------------------------------------------

    def _drain(self) -> None:
        if len(self._producer) > self._low_mark:
            return
        for _ in range(_DRAIN_BATCH):
            record = self._held or self._spill.next_record()
            self._held = None
            if record is None:
                self._caught_up()
                return
            try:
                self._producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    timestamp=record.timestamp,
                    on_delivery=functools.partial(self._spill_delivered, record),
                )
            except BufferError:
                self._held = record
                return
            self._metrics.unspilled.inc()

    def _caught_up(self) -> None:
        """The spill reader reached the writer: close it and send new records directly."""
        self._spill.close_writer()
        if self._spill.next_record() is not None:  # pragma: no cover - close adds nothing
            raise AssertionError("spill grew after close")
        self._spilling = False
        self._slot = self._spill.next_slot
        self._direct_callback = self._make_direct_callback(self._slot)
        logger.info("spill read back into the producer: sending records directly again")

    def _update_metrics(self) -> None:
        for topic, count in self._acked.items():
            delta = count - self._reported[topic]
            if delta:
                self._metrics.produced.labels(self._kinds[topic]).inc(delta)
                self._reported[topic] = count
        self._metrics.buffered.set(len(self._producer))

    # -- shutdown ----------------------------------------------------------------------------

    def close(self, timeout_s: float) -> int:
        """Flush for up to ``timeout_s``; spill what Kafka did not take; return that count."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (len(self._producer) or self._retries):
            self.poll()
            self._producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
        self._closing = True
        left = len(self._producer)
        if left:
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.flush(min(2.0, timeout_s))
        if len(self._producer):
            logger.warning(
                "%d records were in flight at shutdown: spilled; Kafka may also have them "
                "(consumers count each (channel, id) once)",
                len(self._producer),
            )
            self._producer.purge(in_queue=True, in_flight=True)
            self._producer.flush(0)
        for _due, record, slot, _callback in self._retries:
            if slot is not None:
                self._purged.setdefault(slot, []).append(record)
        self._retries.clear()
        spilled = 0
        for slot in sorted(self._purged):
            records = self._purged[slot]
            self._spill.append_before(slot, records)
            spilled += len(records)
        self._purged.clear()
        self._update_metrics()
        self._spill.close()
        return spilled
