"""The ingest service: Twitch IRC lines in, Kafka records out, until asked to stop.

One asyncio task takes the IRC client's lines one socket read at a time and turns each line
into a record handed to the :class:`IngestProducer` (never blocking: the producer holds or
spills); counters are updated per read, not per line. A second task ticks a few times a second
to move the producer's transactions on, drain the spill, follow ``tracked-channels`` and log
progress. Bad lines go to the dead-letter topic. Stopping closes the IRC connections first
(nothing more is read), then commits for a bounded time and spills the rest.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

import msgspec
from confluent_kafka import KafkaError, KafkaException

from chatpulse.deadletter import IRC_KEY, deadletter_value
from chatpulse.gc_tuning import rarer_collections
from chatpulse.ingest.convert import KNOWN_COMMANDS, to_record
from chatpulse.ingest.errors import ConvertError, ProducerFailedError
from chatpulse.ingest.irc.client import Received, TwitchChatClient
from chatpulse.ingest.irc.parser import DATA_COMMANDS
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.producer import IngestProducer
from chatpulse.ingest.replacement import Replacements
from chatpulse.ingest.spill import Spill
from chatpulse.ingest.timestamps import SentAtWindow, read_retention_ms
from chatpulse.kafka_admin import admin_client
from chatpulse.logs import RateLimitedLog
from chatpulse.models import ChatMessage
from chatpulse.settings import Settings
from chatpulse.topics import Topics
from chatpulse.tracked import BadTrackedRecord, TrackedChannelsFollower
from chatpulse.transactional import transactional_id

__all__ = ["IngestService", "IngestSummary"]

logger = logging.getLogger(__name__)

_TICK_S = 0.05
_TRACKED_EVERY_S = 0.5
_PROGRESS_EVERY_S = 10.0
_POLL_EVERY_RECORDS = 2_000
_RETENTION_EVERY_S = 600.0  # topic retention re-read (an operator may change it)
_RETENTION_RETRY_S = 30.0  # while it could not be read yet
_ENCODER = msgspec.json.Encoder()  # the same JSON as chatpulse.models.encode, one call less


# Young collections while the service runs (CPython's default: 700): each line allocates a
# few containers that live until its socket read is handled; at the default a collection ran
# every ~150 lines and promoted them. 15x rarer saved ~3-4 us CPU per record (bench/ingest.py).
GC_YOUNG_THRESHOLD = 10_000


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """What one run did, logged at shutdown and returned to the caller."""

    lines: int
    messages: int
    events: int
    deadlettered: int
    produced: int
    spilled_at_exit: int
    seconds: float


class IngestService:
    """Reads Twitch chat into Kafka; ``await run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        flush_timeout_s: float = 15.0,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.metrics = metrics or IngestMetrics()
        self.flush_timeout_s = flush_timeout_s
        self.static_channels = set(settings.channels)
        self.lines = 0
        self.messages = 0
        self.events = 0
        self.deadlettered = 0
        self._reported_lines = 0
        self._sent_messages = self.metrics.records_sent.labels("messages")
        self._sent_events = self.metrics.records_sent.labels("events")
        self._producer: IngestProducer | None = None
        self._replacements = Replacements(settings.ingest_producer_replacements)
        self._acked_before = 0  # by producers replaced after a fatal error
        self._client: TwitchChatClient | None = None
        self._tracked: TrackedChannelsFollower | None = None
        self._bad_tracked: list[BadTrackedRecord] = []  # dead-lettered at each follow
        self._joined: set[str] = set()
        self._live_connections: set[str] = set()
        self._stopping = False
        self._window = SentAtWindow(settings.max_future_skew_ms)
        self._next_retention = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._deadletter_log = RateLimitedLog(logger, 10.0)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> IngestSummary:
        """Run until ``stop`` is set (or the IRC client ends); return the summary."""
        started = time.monotonic()
        settings = self.settings
        self._producer = self._new_producer()
        self._tracked = TrackedChannelsFollower(
            settings.kafka_bootstrap_servers,
            self.topics.tracked,
            client_id="chatpulse-ingest-tracked",
            security=settings.kafka_security_config(),
            on_bad=self._bad_tracked.append,
        )
        tracked = await asyncio.to_thread(self._tracked.load, 10.0)
        await self._read_retention()
        self._client = TwitchChatClient(
            settings.twitch_irc_url,
            login=settings.twitch_login,
            token=settings.twitch_token,
            channels_per_connection=settings.channels_per_connection,
            join_rate=settings.join_rate,
            join_window_s=settings.join_window_s,
            max_line_bytes=settings.irc_max_line_bytes,
        )
        await self._client.start()
        self._join(self.static_channels | tracked)
        logger.info(
            "ingest started: %s -> Kafka %s (%d channels, topic prefix %r)",
            settings.twitch_irc_url,
            settings.kafka_bootstrap_servers,
            len(self._joined),
            settings.topic_prefix,
        )
        reader = asyncio.create_task(self._read(), name="ingest-read")
        ticker = asyncio.create_task(self._tick(), name="ingest-tick")
        stopper = asyncio.create_task(stop.wait(), name="ingest-stop")
        try:
            with rarer_collections(GC_YOUNG_THRESHOLD):
                await asyncio.wait({reader, ticker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stopping = True
            logger.info("ingest stopping: closing IRC connections")
            await self._client.stop()
            if not reader.done():  # it ends after handling the lines already received
                await asyncio.wait({reader}, timeout=self.flush_timeout_s)
            for task in (reader, ticker, stopper, *self._background):
                task.cancel()
            # Their errors are raised below, after the shutdown flush.
            await asyncio.gather(reader, ticker, stopper, *self._background, return_exceptions=True)
            spilled = await asyncio.to_thread(self._producer.close, self.flush_timeout_s)
            self._tracked.close()
        for task in (reader, ticker):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        summary = IngestSummary(
            lines=self.lines,
            messages=self.messages,
            events=self.events,
            deadlettered=self.deadlettered,
            produced=self._acked_before + sum(self._producer.acked.values()),
            spilled_at_exit=spilled,
            seconds=time.monotonic() - started,
        )
        logger.info(
            "ingest stopped after %.1fs: %d lines, %d chat messages, %d events, "
            "%d dead-lettered, %d records acknowledged by Kafka, %d spilled to %s",
            summary.seconds,
            summary.lines,
            summary.messages,
            summary.events,
            summary.deadlettered,
            summary.produced,
            summary.spilled_at_exit,
            settings.spill_dir,
        )
        return summary

    def _new_producer(self) -> IngestProducer:
        """A transactional producer; it starts by sending what the spill holds."""
        settings = self.settings
        return IngestProducer(
            settings.kafka_bootstrap_servers,
            self.topics,
            Spill(settings.spill_dir),
            self.metrics,
            buffer_messages=settings.ingest_buffer_messages,
            txn_id=transactional_id(
                f"{settings.topic_prefix}chatpulse-ingest", settings.spill_dir, settings.instance_id
            ),
            deadletter_raw_max_bytes=settings.deadletter_raw_max_bytes,
            config_overrides=dict(settings.kafka_security_config()),
        )

    def _after_fatal(self, error: KafkaError) -> None:
        """Replace the failed producer (:mod:`chatpulse.ingest.replacement`) or stop."""
        assert self._producer is not None
        if not self._replacements.allow(error):
            raise ProducerFailedError(_fatal_message(error, self.settings))
        failed = self._producer
        # On the event loop, not in a thread: no batch may reach the failed producer while its
        # records go back to the spill (bounded by its call timeout, about a second).
        put_back = failed.close(0.0)
        self._acked_before += sum(failed.acked.values())
        self._producer = self._new_producer()
        logger.error(
            "the Kafka producer failed (%s): replaced by a new one (%d of at most %d in 10 "
            "minutes); its %d held records went back to the spill and are sent again",
            error.str(),
            self._replacements.recent,
            self._replacements.limit,
            put_back,
        )

    # -- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._client is not None
        assert self._producer is not None
        since_poll = 0
        async for batch in self._client.batches():
            self._handle_batch(batch)
            since_poll += len(batch)
            if since_poll >= _POLL_EVERY_RECORDS:
                self._producer.poll()  # (not kept in a local: a failed one is replaced)
                since_poll = 0
        if not self._stopping:
            logger.warning("the IRC client stopped delivering lines")

    def _handle_batch(self, batch: list[Received]) -> None:
        """The hot path: one socket read's lines to records. Counts are kept per batch."""
        assert self._producer is not None
        send, messages_topic, events_topic = (
            self._producer.send,
            self.topics.messages,
            self.topics.events,
        )
        data_commands, chat_message, encode = DATA_COMMANDS, ChatMessage, _ENCODER.encode
        known_commands = KNOWN_COMMANDS
        window = self._window
        window.advance()  # once per socket read: a clock call per record would cost more
        latest = window.latest
        earliest_message = window.earliest(messages_topic)
        earliest_event = window.earliest(events_topic)
        messages = events = 0
        for received in batch:
            msg = received.msg
            if msg is None:
                error = received.error
                reason = error.reason if error is not None else "unparsable line"
                self._deadletter(received.raw, reason, "parse", received.connection)
                continue
            if msg.command not in data_commands:
                if msg.command not in known_commands:
                    self._unknown_command(received, msg.command)
                continue
            try:
                record = to_record(msg)
            except ConvertError as exc:
                self._deadletter(received.raw, exc.reason, "convert", received.connection)
                continue
            if record is None:
                continue
            sent_at = record.sent_at
            if record.__class__ is chat_message:
                if sent_at > latest or sent_at < earliest_message:
                    reason = window.reason(messages_topic, sent_at)
                    self._deadletter(received.raw, reason, "timestamp", received.connection)
                    continue
                send(messages_topic, record.channel.encode(), encode(record), sent_at)
                messages += 1
            else:
                if sent_at > latest or sent_at < earliest_event:
                    reason = window.reason(events_topic, sent_at)
                    self._deadletter(received.raw, reason, "timestamp", received.connection)
                    continue
                send(events_topic, record.channel.encode(), encode(record), sent_at)
                events += 1
        self.lines += len(batch)
        self.messages += messages
        self.events += events
        # Per read, not per record: a prometheus_client inc() takes a lock.
        if messages:
            self._sent_messages.inc(messages)
        if events:
            self._sent_events.inc(events)

    def _unknown_command(self, received: Received, command: str) -> None:
        if not command.isdigit():  # numerics (001, 353, ...) are known as a class
            reason = f"unknown command {command[:40]!r}"
            self._deadletter(received.raw, reason, "parse", received.connection)

    def _deadletter(self, raw: str, reason: str, kind: str, connection: object) -> None:
        assert self._producer is not None
        self._deadletter_log.warning(
            "dead-lettering a line from connection %s: %s", connection, reason
        )
        value = deadletter_value(
            raw,
            reason,
            source="irc",
            raw_max_bytes=self.settings.deadletter_raw_max_bytes,
            connection=str(connection),
        )
        self._producer.send(self.topics.deadletter, IRC_KEY, value, 0)
        self.metrics.records_sent.labels("deadletter").inc()
        self.metrics.deadlettered.labels(kind).inc()
        self.deadlettered += 1

    # -- housekeeping ------------------------------------------------------------------------

    async def _tick(self) -> None:
        assert self._producer is not None
        next_tracked = next_progress = time.monotonic()
        while True:
            await asyncio.sleep(_TICK_S)
            self._producer.poll()
            fatal = self._producer.fatal_error
            if fatal is not None:
                self._after_fatal(fatal)
            self.metrics.lines_received.inc(self.lines - self._reported_lines)
            self._reported_lines = self.lines
            now = time.monotonic()
            if now >= next_tracked:
                next_tracked = now + _TRACKED_EVERY_S
                await self._follow_tracked()
                self._connection_metrics()
            if now >= self._next_retention:
                # In the background: while Kafka is away the read takes its timeout, and the
                # tick must keep moving the producer and the spill.
                self._next_retention = float("inf")  # set again when the read ends
                retention = asyncio.create_task(self._read_retention(), name="ingest-retention")
                self._background.add(retention)
                retention.add_done_callback(self._background.discard)
            if now >= next_progress:
                next_progress = now + _PROGRESS_EVERY_S
                self._log_progress()

    async def _read_retention(self) -> None:
        """Read the data topics' retention into the sent_at window (see ingest.timestamps)."""
        settings = self.settings
        admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
        try:
            for topic in (self.topics.messages, self.topics.events):
                retention = await asyncio.to_thread(read_retention_ms, admin, topic, 5.0)
                self._window.set_retention(topic, retention)
        except (KafkaException, TimeoutError, KeyError, ValueError) as exc:  # keep the last value
            logger.warning(
                "could not read the retention of the data topics (%s); retrying in %.0fs",
                exc,
                _RETENTION_RETRY_S,
            )
            self._next_retention = time.monotonic() + _RETENTION_RETRY_S
        else:
            self._next_retention = time.monotonic() + _RETENTION_EVERY_S

    async def _follow_tracked(self) -> None:
        assert self._tracked is not None
        assert self._producer is not None
        # In a thread: while Kafka is away, finding the topic blocks for a while.
        added, removed = await asyncio.to_thread(self._tracked.poll)
        self._join(added)
        self._part(removed - self.static_channels)
        for bad in self._bad_tracked:
            value = deadletter_value(
                bad.raw,
                bad.reason,
                source=self.topics.tracked,
                raw_max_bytes=self.settings.deadletter_raw_max_bytes,
            )
            self._producer.send(self.topics.deadletter, self.topics.tracked.encode(), value, 0)
            self.metrics.deadlettered.labels("tracked").inc()
            self.deadlettered += 1
        self._bad_tracked.clear()

    def _connection_metrics(self) -> None:
        assert self._client is not None
        live = {str(conn.id) for conn in self._client.connections}
        for connection in live:
            self.metrics.connection_state.labels(connection).set(1)
        for connection in self._live_connections - live:
            self.metrics.connection_state.remove(connection)  # ids are never reused
        self._live_connections = live
        self.metrics.reconnects.set(self._client.reconnects)
        self.metrics.duplicates_dropped.set(self._client.duplicates_dropped)

    def _join(self, channels: set[str]) -> None:
        assert self._client is not None
        for channel in sorted(channels - self._joined):
            logger.info("joining #%s", channel)
            self._client.join(channel)
            self._joined.add(channel)
        self.metrics.channels.set(len(self._joined))

    def _part(self, channels: set[str]) -> None:
        assert self._client is not None
        for channel in sorted(channels & self._joined):
            logger.info("parting #%s (untracked)", channel)
            self._client.part(channel)
            self._joined.discard(channel)
        self.metrics.channels.set(len(self._joined))

    def _log_progress(self) -> None:
        assert self._producer is not None
        acked = self._producer.acked
        logger.info(
            "progress: %d lines, %d messages, %d events, %d dead-lettered; Kafka acknowledged "
            "%d; %d buffered%s",
            self.lines,
            self.messages,
            self.events,
            self.deadlettered,
            self._acked_before + sum(acked.values()),
            self._producer.buffered,
            "; SPILLING to disk" if self._producer.spilling else "",
        )


def _fatal_message(error: KafkaError, settings: Settings) -> str:
    """One line saying what failed and, when known, what to do."""
    text = f"the Kafka producer failed for good: {error.str()}"
    if error.code() in (KafkaError.PRODUCER_FENCED, KafkaError._FENCED):
        text += (
            "; another ingest with the same transactional id took over (same "
            f"CHATPULSE_INSTANCE_ID {settings.instance_id!r} and CHATPULSE_SPILL_DIR): "
            "run one ingest per spill directory and instance id"
        )
    return text
