"""Producing to Kafka exactly once, through outages and restarts: a transactional producer.

Why transactions: an idempotent producer alone cannot promise "every message once". After a
broker restart librdkafka may bump the producer epoch (KIP-360) while a batch whose outcome is
unknown (sent, connection lost before the answer) is still queued; re-sent under the new epoch
the broker cannot recognise it, and it lands twice (librdkafka issue #4953, where the
maintainers name transactions as the only way to exactly once). Our outage test saw it in about
one run in four. With a transaction, whatever the producer did before the failure is aborted
and invisible to ``read_committed`` readers (the processor under exactly-once), and we send the
transaction's records again in a new one, so each record is committed exactly once. How the
broker goes down (SIGTERM as in the test, or SIGKILL) only decides whether a request in flight
gets its answer; either way its outcome can be unknown, the case transactions cover. Cost
(bench/ingest.py): a bare producer is no slower transactional than idempotent, the ingest's
commits run on a worker thread, and records reach ``read_committed`` readers up to ~0.1 s later.

How: records go to librdkafka inside an open transaction (``transactional.id`` stable per spill
directory, so a restarted ingest fences its former self and aborts its open transaction). Every
``commit_interval_s`` (0.1 s) or ``_COMMIT_RECORDS`` records the transaction is committed by a
worker thread; the blocking calls (init, commit, abort) never run on the event loop. While one
runs, new records wait in memory (``_pending``); the open transaction's records are kept too,
to be sent again if it aborts. Kafka "acknowledged" a record when its transaction committed.

The memory bound is ``ingest_buffer_messages``: past it (Kafka is away, the commit cannot
finish) records go to the on-disk :class:`Spill`, and from then on *every* new record goes
there too, behind them, so order holds. Once a transaction is open again the spill is read back
in order; a spilled record is acknowledged in the spill only when its transaction commits.
Once the reader has caught up with the writer, records go straight to Kafka again.

At shutdown the open transaction is committed if Kafka allows within the wait; otherwise it is
aborted and its records (and the pending ones) go back to the spill in their place in the
stream (:meth:`Spill.append_before`). Limits: the memory dies with the process (SIGKILL, power
loss); a commit whose outcome is unknown when the shutdown wait runs out is counted as failed,
so its records may reach Kafka twice (consumers count each (channel, id) once).
"""

import collections
import concurrent.futures
import contextlib
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from chatpulse.ingest.deadletter import deadletter_value
from chatpulse.ingest.kafka_config import producer_config
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.spill import Position, Spill
from chatpulse.topics import Topics

__all__ = ["IngestProducer"]

logger = logging.getLogger(__name__)

# A record and where it came from: its spill position (acknowledged there once committed) or,
# for one sent directly, the spill slot it sorts before (see Spill.append_before).
_Entry = tuple[str, bytes | None, bytes, int, Position | int]

# Errors a retry cannot fix: the record goes to the dead-letter topic instead.
_UNRETRIABLE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError._INVALID_ARG}
)
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_COMMIT_RECORDS = 20_000
_RETRY_BACKOFF_S = 1.0
_CHECKPOINT_INTERVAL_S = 1.0
_FAILURE_LOG_INTERVAL_S = 5.0


class IngestProducer:
    """Sends records to Kafka in transactions, spilling to disk while Kafka cannot take them."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        spill: Spill,
        metrics: IngestMetrics,
        *,
        buffer_messages: int,
        txn_id: str,
        commit_interval_s: float = 0.1,
        call_timeout_s: float = 1.0,
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        config = producer_config(bootstrap_servers, buffer_messages, txn_id)
        config["error_cb"] = self._on_error
        config["on_delivery"] = self._on_delivery_error
        config["logger"] = logger  # librdkafka's log through logging, not raw stderr
        config.update(config_overrides or {})
        self._producer = Producer(config)
        self._spill = spill
        self._metrics = metrics
        self._topics = topics
        self._buffer_messages = buffer_messages
        self._txn_max = max(1, min(_COMMIT_RECORDS, buffer_messages // 2))
        self._commit_interval_s = commit_interval_s
        self._call_timeout_s = call_timeout_s
        self._kinds = {
            topics.messages: "messages",
            topics.events: "events",
            topics.deadletter: "deadletter",
        }
        self._acked = dict.fromkeys(self._kinds, 0)
        self._reported = dict.fromkeys(self._kinds, 0)
        self._counts = collections.Counter[str]()  # spilled, unspilled, retried, failures
        self._txn: list[_Entry] = []  # the open transaction's records, in order
        self._txn_started = 0.0
        self._pending: collections.deque[_Entry] = collections.deque()
        self._refused: dict[tuple[str, bytes | None], KafkaError] = {}
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ingest-txn")
        self._call: concurrent.futures.Future[None] | None = None
        self._call_kind = ""
        self._next_call = "init"  # what to run when no transaction is open
        self._retry_at = 0.0
        self._in_txn = False
        self._closing = False
        self._last_checkpoint = time.monotonic()
        self._last_failure_log = float("-inf")
        self.fatal_error: KafkaError | None = None
        self._spilling = not spill.empty
        self._slot = spill.next_slot
        self._start(self._next_call)

    # -- sending ---------------------------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes, timestamp: int) -> None:
        """Queue one record for Kafka, or keep it (memory, then spill); never blocks."""
        if self._spilling:
            self._spill.append(topic, key, value, timestamp)
            self._counts["spilled"] += 1
        elif self._in_txn and not self._pending and len(self._txn) < self._txn_max:
            self._produce((topic, key, value, timestamp, self._slot))
        else:
            self._pending.append((topic, key, value, timestamp, self._slot))
            if len(self._pending) >= self._buffer_messages:
                self._start_spilling()

    def _produce(self, entry: _Entry) -> bool:
        """Produce into the open transaction; False when the record has to wait."""
        topic, key, value, timestamp, _origin = entry
        try:
            self._producer.produce(topic, value, key, timestamp=timestamp)
        except BufferError:
            self._pending.appendleft(entry)
            return False
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in _UNRETRIABLE and topic != self._topics.deadletter:
                self._deadletter_refused(entry, error)
                return True
            # The transaction failed already (abortable state): commit it to learn how.
            self._pending.appendleft(entry)
            self._in_txn, self._next_call = False, "commit"
            return False
        self._txn.append(entry)
        return True

    def _start_spilling(self) -> None:
        logger.warning(
            "Kafka is not keeping up (%d records held in memory): spilling to %s",
            len(self._txn) + len(self._pending),
            self._spill.directory,
        )
        for topic, key, value, timestamp, _origin in self._pending:
            self._spill.append(topic, key, value, timestamp)
        self._counts["spilled"] += len(self._pending)
        self._pending.clear()
        self._spilling = True

    def poll(self) -> None:
        """Serve reports, move the transaction on, drain the spill, update metrics."""
        self._producer.poll(0)
        if self._call is not None and self._call.done():
            self._finish(self._call)
        if self._call is None and self.fatal_error is None:
            self._advance()
        self._spill.flush()
        now = time.monotonic()
        if now - self._last_checkpoint >= _CHECKPOINT_INTERVAL_S:
            self._spill.checkpoint()
            self._last_checkpoint = now
            self._metrics.spill_bytes.set(self._spill.size_bytes())
        self._update_metrics()

    def _advance(self) -> None:
        now = time.monotonic()
        if not self._in_txn:
            if now >= self._retry_at:
                self._start(self._next_call)
            return
        due = self._closing or now - self._txn_started >= self._commit_interval_s
        if self._txn and (due or len(self._txn) >= self._txn_max or self._refused):
            self._start("commit")
            return
        while self._pending and len(self._txn) < self._txn_max:
            if not self._produce(self._pending.popleft()) or not self._in_txn:
                return
        if self._spilling and not self._closing:
            self._drain()

    @property
    def buffered(self) -> int:
        """Records in memory not yet committed to Kafka."""
        return len(self._txn) + len(self._pending)

    @property
    def spilling(self) -> bool:
        """True while new records go to the spill."""
        return self._spilling

    @property
    def acked(self) -> dict[str, int]:
        """Records committed to Kafka so far, by topic."""
        return dict(self._acked)

    # -- the transaction -------------------------------------------------------------------

    def _start(self, kind: str) -> None:
        """Run one blocking transactional call (init, commit, abort) in the worker thread."""
        calls = {
            "init": self._producer.init_transactions,
            "commit": self._producer.commit_transaction,
            "abort": self._producer.abort_transaction,
        }
        self._in_txn = False
        self._call_kind = kind
        self._call = self._worker.submit(calls[kind], self._call_timeout_s)

    def _finish(self, call: "concurrent.futures.Future[None]") -> None:
        self._call = None
        kind = self._call_kind
        try:
            call.result()
        except KafkaException as exc:
            self._failed_call(kind, exc.args[0])
            return
        if kind == "commit":
            self._committed()
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            self._failed_call("begin", exc.args[0])
            return
        self._in_txn, self._txn_started = True, time.monotonic()
        if kind == "init":
            logger.info("Kafka transactions ready (producer initialised)")
        elif kind == "abort":
            self._resend()

    def _failed_call(self, kind: str, error: KafkaError) -> None:
        if error.fatal() or not (error.retriable() or error.txn_requires_abort()):
            self.fatal_error = error
            logger.critical("Kafka producer failed (%s): %s", kind, error.str())
            return
        if error.txn_requires_abort():
            logger.warning(
                "transaction of %d records failed (%s): aborting it and sending them again",
                len(self._txn),
                error.str(),
            )
            self._next_call = "abort"
            return
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:  # one line, not a flood
            self._last_failure_log = now
            logger.warning(
                "Kafka %s not done yet (%s); retrying (%d records held)",
                kind,
                error.str(),
                self.buffered,
            )
        self._next_call = "init" if kind == "init" else "commit"
        self._retry_at = now + _RETRY_BACKOFF_S

    def _committed(self) -> None:
        acked = self._acked
        acknowledge = self._spill.acknowledge
        for topic, _key, _value, _timestamp, origin in self._txn:
            acked[topic] += 1
            if type(origin) is Position:
                acknowledge(origin)
        self._txn.clear()

    def _resend(self) -> None:
        """After an abort: the aborted transaction's records again, in order, in the new one."""
        entries, self._txn = self._txn, []
        self._counts["retried"] += len(entries)
        for index, entry in enumerate(entries):
            error = self._refused.pop((entry[0], entry[2]), None)
            if error is not None and entry[0] != self._topics.deadletter:
                logger.error(
                    "Kafka refused a record for good (topic %s, key %r): %s; dead-lettering it",
                    entry[0],
                    entry[1],
                    error.str(),
                )
                self._deadletter_refused(entry, error)
            elif not self._produce(entry):
                # It waits first in _pending; the rest of the transaction right behind it.
                self._pending.extendleft(reversed([self._pending.popleft(), *entries[index + 1 :]]))
                break
        self._refused.clear()

    def _deadletter_refused(self, entry: _Entry, err: KafkaError) -> None:
        topic, _key, value, _timestamp, origin = entry
        raw = value[:10_000].decode("utf-8", errors="backslashreplace")
        reason = f"kafka refused the record: {err.str()}"
        dead = deadletter_value(raw, reason, source=topic)
        # It takes the refused record's origin: a spilled record is done once this commits.
        self._pending.appendleft((self._topics.deadletter, topic.encode(), dead, 0, origin))
        self._metrics.deadlettered.labels("kafka").inc()

    def _on_delivery_error(self, err: KafkaError | None, msg: Message) -> None:
        # Only failures are reported (delivery.report.only.error); each one aborts the
        # transaction at its commit, and the records are sent again.
        if err is None or err.code() in _PURGED:
            return
        self._counts["failures"] += 1
        if err.code() in _UNRETRIABLE:
            self._refused[(msg.topic() or "", msg.value())] = err

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
        for _ in range(self._txn_max - len(self._txn)):
            record = self._spill.next_record()
            if record is None:
                self._caught_up()
                return
            entry = (record.topic, record.key, record.value, record.timestamp, record.position)
            self._counts["unspilled"] += 1
            if not self._produce(entry) or self._pending:
                return  # it waits in _pending, ahead of the spill's next records

    def _caught_up(self) -> None:
        """The spill reader reached the writer: close it and send new records directly."""
        self._spill.close_writer()
        if self._spill.next_record() is not None:  # pragma: no cover - close adds nothing
            raise AssertionError("spill grew after close")
        self._spilling = False
        self._slot = self._spill.next_slot
        logger.info("spill read back into the producer: sending records directly again")

    def _update_metrics(self) -> None:
        for topic, count in self._acked.items():
            delta = count - self._reported[topic]
            if delta:
                self._metrics.produced.labels(self._kinds[topic]).inc(delta)
                self._reported[topic] = count
        counts, metrics = self._counts, self._metrics
        for name, counter in (
            ("spilled", metrics.spilled),
            ("unspilled", metrics.unspilled),
            ("retried", metrics.retried),
            ("failures", metrics.delivery_failures),
        ):
            if counts[name]:
                counter.inc(counts[name])
                counts[name] = 0
        metrics.buffered.set(self.buffered)

    # -- shutdown ----------------------------------------------------------------------------

    def close(self, timeout_s: float) -> int:
        """Commit what Kafka takes within ``timeout_s``; spill the rest; return that count."""
        deadline = time.monotonic() + timeout_s
        self._closing = True  # commit at once, stop reading the spill
        while time.monotonic() < deadline and self.fatal_error is None:
            self.poll()
            if self._call is None and not self._txn and not self._pending:
                break
            if self._call is not None:
                concurrent.futures.wait([self._call], max(0.0, deadline - time.monotonic()))
            else:
                time.sleep(0.01)
        if self._call is not None:  # bounded by call_timeout_s
            concurrent.futures.wait([self._call])
            self._finish(self._call)
        if self._txn:
            logger.warning(
                "%d records of an uncommitted transaction at shutdown: aborting it, spilling them",
                len(self._txn),
            )
            with contextlib.suppress(KafkaException):
                self._producer.abort_transaction(self._call_timeout_s)
        self._worker.shutdown(wait=True)
        # Spilled ones stay unacknowledged in the spill; the others go back in their place.
        by_slot: dict[int, list[tuple[str, bytes | None, bytes, int]]] = {}
        for topic, key, value, timestamp, origin in [*self._txn, *self._pending]:
            if type(origin) is int:
                by_slot.setdefault(origin, []).append((topic, key, value, timestamp))
        for slot in sorted(by_slot):
            self._spill.append_before(slot, by_slot[slot])
        self._txn.clear()
        self._pending.clear()
        with contextlib.suppress(KafkaException):
            self._producer.purge(in_queue=True, in_flight=True)
        self._producer.flush(0)
        self._update_metrics()
        self._spill.close()
        return sum(len(records) for records in by_slot.values())
