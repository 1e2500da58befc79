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

Split by job (as aiokafka splits its producer): :mod:`~chatpulse.ingest.transaction` holds the
transaction states and their moves, :mod:`~chatpulse.ingest.sender` the records in and
around the open transaction and what Kafka refuses, :mod:`~chatpulse.ingest.deadlettering`
what becomes of a refused record, :mod:`~chatpulse.ingest.spill_drain` the spill's use.
This module runs the blocking calls and ties them together.

At shutdown the open transaction is committed if Kafka allows within the wait; otherwise it is
aborted and its records (and the pending ones) go back to the spill in their place in the
stream (:meth:`Spill.append_before`). Limits: the memory dies with the process (SIGKILL, power
loss); a commit whose outcome is unknown when the shutdown wait runs out is counted as failed,
so its records may reach Kafka twice (consumers count each (channel, id) once).
"""

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from chatpulse.deadletter import DEFAULT_RAW_MAX_BYTES
from chatpulse.ingest.deadlettering import DeadLetters
from chatpulse.ingest.entry import Entry
from chatpulse.ingest.kafka_config import producer_config
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.sender import Sender
from chatpulse.ingest.spill import Spill
from chatpulse.ingest.spill_drain import SpillDrain
from chatpulse.ingest.transaction import Transactions, TxnState
from chatpulse.logs import RateLimitedLog
from chatpulse.topics import Topics

__all__ = ["IngestProducer"]

logger = logging.getLogger(__name__)

_COMMIT_RECORDS = 20_000
_RETRY_BACKOFF_S = 1.0
_CHECKPOINT_INTERVAL_S = 1.0
_FAILURE_LOG_INTERVAL_S = 5.0
# A topic-level refusal (deleted topic, ACLs): first wait, doubled per failure up to the last.
_HOLD_FIRST_S = 1.0
_HOLD_MAX_S = 30.0
_OPEN = TxnState.OPEN


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
        deadletter_raw_max_bytes: int = DEFAULT_RAW_MAX_BYTES,
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        self._metrics = metrics
        self._kinds = {
            topics.messages: "messages",
            topics.events: "events",
            topics.deadletter: "deadletter",
        }
        config = producer_config(bootstrap_servers, buffer_messages, txn_id)
        config["error_cb"] = self._on_error
        config["logger"] = logger  # librdkafka's log through logging, not raw stderr
        deadletters = DeadLetters(
            topics.deadletter, metrics, raw_max_bytes=deadletter_raw_max_bytes
        )
        config["on_delivery"] = self._on_delivery_error
        config.update(config_overrides or {})
        self._producer = Producer(config)
        self._sender = Sender(
            self._producer,
            deadletters,
            list(self._kinds),
            txn_max=max(1, min(_COMMIT_RECORDS, buffer_messages // 2)),
            acknowledge=spill.acknowledge,
        )
        self._drain = SpillDrain(spill, self._sender)
        self._offer = self._sender.offer  # bound once: send() is the hot path
        self._spill = spill
        self._buffer_messages = buffer_messages
        self._commit_interval_s = commit_interval_s
        self._call_timeout_s = call_timeout_s
        self._txns = Transactions(retry_backoff_s=_RETRY_BACKOFF_S)
        self._reported = dict.fromkeys(self._kinds, 0)
        self._reported_lost = 0
        self._txn_started = 0.0
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ingest-txn")
        self._call: concurrent.futures.Future[None] | None = None
        self._closing = False
        self._last_checkpoint = time.monotonic()
        self._failure_log = RateLimitedLog(logger, _FAILURE_LOG_INTERVAL_S)
        self._held_log = RateLimitedLog(logger, 10.0)
        self._hold_s = 0.0  # the current backoff after a held error (0: none)
        self._hold_until = 0.0
        self._run(TxnState.INITIALIZING)

    # -- sending ---------------------------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes, timestamp: int) -> None:
        """Queue one record for Kafka, or keep it (memory, then spill); never blocks."""
        drain = self._drain
        if drain.spilling:
            drain.append(topic, key, value, timestamp)
            return
        entry = Entry(topic, key, value, timestamp, drain.slot)
        if self._offer(entry, self._txns.state is _OPEN) >= self._buffer_messages:
            drain.start_spilling()

    @property
    def fatal_error(self) -> KafkaError | None:
        """The error that ended the producer (fenced, or fatal in librdkafka), if one did."""
        return self._txns.fatal_error

    @property
    def buffered(self) -> int:
        """Records in memory not yet committed to Kafka."""
        return self._sender.waiting

    @property
    def spilling(self) -> bool:
        """True while new records go to the spill."""
        return self._drain.spilling

    @property
    def acked(self) -> dict[str, int]:
        """Records committed to Kafka so far, by topic."""
        return dict(self._sender.acked)

    def poll(self) -> None:
        """Serve reports, move the transaction on, drain the spill, update metrics."""
        try:
            self._producer.poll(0)
        except KafkaException as exc:  # raised on a fatal error (fenced): the ingest stops
            self._txns.fail(exc.args[0])
        if self._call is not None and self._call.done():
            self._finish(self._call)
        if self._call is None and self._txns.state is not TxnState.FATAL:
            self._advance()
        self._spill.flush()
        now = time.monotonic()
        if now - self._last_checkpoint >= _CHECKPOINT_INTERVAL_S:
            self._spill.checkpoint()
            self._last_checkpoint = now
            self._metrics.spill_bytes.set(self._spill.size_bytes())
        self._update_metrics()

    def _advance(self) -> None:
        txns, sender = self._txns, self._sender
        if txns.state is not _OPEN:
            call = txns.due_call()
            if call is not None:
                self._run(call)
            return
        if sender.take_broken():
            txns.move(TxnState.COMMIT_DUE)
            return
        now = time.monotonic()
        due = self._closing or sender.probing or now - self._txn_started >= self._commit_interval_s
        if sender.txn and (due or len(sender.txn) >= sender.txn_max or sender.refused):
            self._run(TxnState.COMMITTING)
            return
        if sender.held is not None:
            self._hold(sender.held)
        if now < self._hold_until:
            return  # records keep waiting (then spill) until the backoff ends
        if sender.probing:
            sender.end_probe()  # every record of the probe was dead-lettered at produce
        if not sender.txn and sender.probes:
            sender.send_probe()  # committed alone at the next poll
            return
        if not sender.fill() or sender.broken:
            return
        if self._drain.spilling and not self._closing and not sender.pending:
            self._drain.drain()

    def _hold(self, error: KafkaError) -> None:
        """Kafka does not take records for their topic (or at all): back off, say why."""
        self._sender.take_held()
        self._hold_s = min(_HOLD_MAX_S, 2 * self._hold_s) if self._hold_s else _HOLD_FIRST_S
        self._hold_until = time.monotonic() + self._hold_s
        self._held_log.error(
            "Kafka does not take the records: %s (%s); keeping %d records (memory, then the "
            "spill) and retrying in %.0fs. Check that the topics exist (chatpulse init) and "
            "that this client may write to them",
            error.name(),
            error.str(),
            self.buffered,
            self._hold_s,
        )

    # -- the transaction -------------------------------------------------------------------

    def _run(self, call: TxnState) -> None:
        """Run one blocking transactional call (init, commit, abort) in the worker thread."""
        calls: dict[TxnState, Callable[[float], None]] = {
            TxnState.INITIALIZING: self._producer.init_transactions,
            TxnState.COMMITTING: self._producer.commit_transaction,
            TxnState.ABORTING: self._producer.abort_transaction,
        }
        self._txns.move(call)
        self._call = self._worker.submit(calls[call], self._call_timeout_s)

    def _finish(self, call: "concurrent.futures.Future[None]") -> None:
        self._call = None
        txns = self._txns
        kind = txns.state
        if kind is TxnState.FATAL:  # a fatal error came while the call ran: nothing follows
            return
        try:
            call.result()
        except KafkaException as exc:
            self._failed(kind, exc.args[0])
            return
        if kind is TxnState.COMMITTING:
            if self._sender.txn and self._sender.held is None:
                self._hold_s = 0.0  # Kafka takes records again: the next hold starts short
            self._sender.committed()
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if txns.begin_failed(error) is TxnState.FATAL:
                logger.critical("Kafka producer failed (begin): %s", error.str())
            return
        txns.move(TxnState.OPEN)
        self._txn_started = time.monotonic()
        if kind is TxnState.INITIALIZING:
            logger.info("Kafka transactions ready (producer initialised)")
        elif kind is TxnState.ABORTING:
            self._sender.resend(hold=time.monotonic() < self._hold_until)

    def _failed(self, kind: TxnState, error: KafkaError) -> None:
        after = self._txns.call_failed(error)
        if after is TxnState.FATAL:
            logger.critical("Kafka producer failed (%s): %s", kind.value, error.str())
        elif after is TxnState.ABORT_DUE and kind is not TxnState.ABORTING:
            logger.warning(
                "transaction of %d records failed (%s): aborting it and sending them again",
                len(self._sender.txn),
                error.str(),
            )
        else:
            self._failure_log.warning(
                "Kafka %s not done yet (%s); retrying (%d records held)",
                kind.value,
                error.str(),
                self.buffered,
            )

    def _on_delivery_error(self, err: KafkaError | None, msg: Message) -> None:
        # Set before the Sender exists (it needs the producer); failures only: rare.
        self._sender.on_delivery_error(err, msg)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._txns.fatal_error = self._txns.fatal_error or err
            logger.critical("Kafka producer fatal error: %s", err.str())
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            logger.warning("Kafka unreachable: %s (records are kept)", err.str())
        else:
            logger.info("Kafka producer: %s", err.str())

    def _update_metrics(self) -> None:
        acked = self._sender.acked
        for topic, count in acked.items():
            delta = count - self._reported[topic]
            if delta:
                self._metrics.produced.labels(self._kinds[topic]).inc(delta)
                self._reported[topic] = count
        metrics, drain, counts = self._metrics, self._drain, self._sender.counts
        if drain.spilled:
            metrics.spilled.inc(drain.spilled)
            drain.spilled = 0
        if drain.unspilled:
            metrics.unspilled.inc(drain.unspilled)
            drain.unspilled = 0
        for name, counter in (
            ("retried", metrics.retried),
            ("failures", metrics.delivery_failures),
        ):
            if counts[name]:
                counter.inc(counts[name])
                counts[name] = 0
        if self._spill.lost != self._reported_lost:
            metrics.spill_lost.inc(self._spill.lost - self._reported_lost)
            self._reported_lost = self._spill.lost
        metrics.buffered.set(self.buffered)

    # -- shutdown ----------------------------------------------------------------------------

    def close(self, timeout_s: float) -> int:
        """Commit what Kafka takes within ``timeout_s``; spill the rest; return that count."""
        deadline = time.monotonic() + timeout_s
        self._closing = True  # commit at once, stop reading the spill
        sender = self._sender
        while time.monotonic() < deadline and self.fatal_error is None:
            self.poll()
            if self._call is None and not sender.waiting:
                break
            if self._call is not None:
                concurrent.futures.wait([self._call], max(0.0, deadline - time.monotonic()))
            else:
                time.sleep(0.01)
        if self._call is not None:  # bounded by call_timeout_s
            concurrent.futures.wait([self._call])
            self._finish(self._call)
        if sender.txn:
            logger.warning(
                "%d records of an uncommitted transaction at shutdown: aborting it, spilling them",
                len(sender.txn),
            )
            with contextlib.suppress(KafkaException):
                self._producer.abort_transaction(self._call_timeout_s)
        self._worker.shutdown(wait=True)
        put_back = self._drain.put_back(sender.take_all())
        with contextlib.suppress(KafkaException):
            self._producer.purge(in_queue=True, in_flight=True)
        self._producer.flush(0)
        self._update_metrics()
        self._spill.close()
        return put_back
