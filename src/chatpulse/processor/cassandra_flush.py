"""Cassandra write-back: upserts the processor's results before each checkpoint commits.

:class:`CassandraFlush` is a checkpoint hook, not a Quix sink: the topology hands it each
counted message's :class:`ChannelUpdate` (``keep``) and Quix calls its ``flush`` before it
commits the Kafka transaction, so a checkpoint is committed only once its writes are
acknowledged; after a crash or a rewind they are written again, which changes nothing (every
statement is an idempotent upsert, see :mod:`chatpulse.processor.cql`). Per checkpoint it
writes each message once (its consumed record under its key columns), and only the newest
value of each window (row and leaderboard row), of the newest window start and of each
channel's totals: the batch holds one update per message.

Statements are all sent before any is waited for, at most ``in_flight`` outstanding, the
statistics first so that the numbers the API serves are sent before the raw messages. A flush
works on the batches it took at its start and its own requests, and gives up after
``flush_timeout_s`` (backpressure): Quix may abandon a slow flush on a revoke, and an abandoned
one must neither touch the next checkpoint's rows nor go on writing old values. Sending
while the processor counts instead was measured slower: the driver's I/O thread then competes
for the GIL with the counting, costing more CPU per message than the overlap saves.
A request that fails transiently is sent again, up to ``CHATPULSE_CASSANDRA_WRITE_ATTEMPTS``
sends (:class:`~chatpulse.processor.cql.InFlight` says why). A transient Cassandra error past
that raises ``SinkBackpressureError``: Quix drops the checkpoint, pauses, rewinds to its first
offsets and processes again, so nothing is lost. A missing keyspace or
table (a wiped or new cluster) is created again with the same idempotent DDL as
``chatpulse init`` and the checkpoint retried the same way; when that DDL is refused the
processor stops with one line saying what to do.
"""

import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from cassandra import InvalidRequest, Unauthorized
from quixstreams.sinks import SinkBackpressureError

from chatpulse.buckets import message_bucket, user_bucket
from chatpulse.errors import SchemaError
from chatpulse.logs import RateLimitedLog
from chatpulse.models import WindowStats, history_login
from chatpulse.processor.aggregate import WindowAggregate, top_emotes
from chatpulse.processor.binding import RowBinder
from chatpulse.processor.channel import ChannelUpdate, ModerationUpdate
from chatpulse.processor.checkpoint_bound import CheckpointBound
from chatpulse.processor.cql import (
    TRANSIENT_ERRORS,
    CassandraWriter,
    InFlight,
    batches,
    cql_date,
    schema_missing,
)
from chatpulse.processor.errors import SchemaMissingError
from chatpulse.processor.metrics import ProcessorMetrics
from chatpulse.processor.moderation import Target
from chatpulse.processor.topology import UpdateWriter
from chatpulse.windows import format_duration
from chatpulse.words import words_of

__all__ = ["CassandraFlush"]

logger = logging.getLogger(__name__)

_MESSAGES_PER_BATCH = 100
_ROWS_PER_LEADERBOARD_BATCH = 200
# Window rows and totals are one row per partition, and so are the messages of a quiet
# channel: small multi-partition batches (under Cassandra's warning threshold of 10
# partitions) still cut the driver's per-request cost ~10x when many channels are active.
_PARTITIONS_PER_BATCH = 10
_json = msgspec.json.Encoder()
# after re-creating a missing schema: retry the checkpoint soon
_SCHEMA_RETRY_AFTER_S = 0.5


def _server_message(exc: Exception) -> str:
    """The server's words in a driver error (``... message="keyspace x does not exist"``)."""
    text = str(exc)
    _, _, message = text.partition('message="')
    return message.rstrip('"') or text


Row = tuple[Any, ...]
Values = list[bytes | None]


def _message_rows(
    binder: RowBinder,
    channel: str,
    bucket: int,
    updates: list[ChannelUpdate],
    *,
    search_index: bool = True,
) -> list[Values]:
    """One partition's message rows, serialised; its key columns only once (no words: an
    empty set, which the ``words = words + ?`` update leaves alone)."""
    # the "message" statement's bind markers, in order
    blob, word_set, text, bucket_start, timestamp, message_id = binder.serializers
    key_channel, key_bucket = text(channel), bucket_start(bucket)
    no_words = word_set([])
    return [
        [
            blob(u.record),
            word_set(words_of(u.message.text)) if search_index else no_words,
            key_channel,
            key_bucket,
            timestamp(u.message.sent_at),
            message_id(u.message.id),
        ]
        for u in updates
    ]


def _user_message_rows(binder: RowBinder, updates: list[ChannelUpdate]) -> list[Values]:
    """The ``user_messages`` rows of a checkpoint, each partition's rows next to each other
    (a message whose login is not a Twitch login has none: no API request could name it)."""
    text, login_text, bucket_start, timestamp, message_id, blob = binder.serializers
    keyed: list[tuple[str, str, int, ChannelUpdate]] = []
    for update in updates:
        message = update.message
        login = history_login(message.user_login)
        if login is not None:
            keyed.append((message.channel, login, user_bucket(message.sent_at), update))
    keyed.sort(key=lambda item: item[:3])
    return [
        [
            text(channel),
            login_text(login),
            bucket_start(bucket),
            timestamp(u.message.sent_at),
            message_id(u.message.id),
            blob(u.record),
        ]
        for channel, login, bucket, u in keyed
    ]


def _message_batches(binder: RowBinder, rows: list[Values]) -> Iterable[tuple[Any, None]]:
    # row[0]: the record, most of it; row[1]: its words, at most about as long again
    weights = (100 + len(row[0] or b"") + len(row[1] or b"") for row in rows)
    for group in batches(binder, rows, _MESSAGES_PER_BATCH, weights):
        yield group, None


def _spike_statements(
    statements: dict[str, Any], updates: list[ChannelUpdate]
) -> Iterable[tuple[Any, Any]]:
    """One upsert per chat spike (rare: at most one per channel and spike-size window)."""
    for update in updates:
        for spike in update.spikes:
            yield (
                statements["spike"],
                (
                    spike.channel,
                    spike.window_start,
                    spike.window,
                    spike.window_end,
                    spike.messages,
                    spike.baseline_median,
                    spike.factor,
                ),
            )


class CassandraFlush(UpdateWriter):
    """Writes messages, window statistics (open and closed), chat spikes and channel totals."""

    def __init__(
        self,
        writer: CassandraWriter,
        metrics: ProcessorMetrics | None = None,
        *,
        retry_after_s: float = 5.0,
        in_flight: int = 64,
        flush_timeout_s: float = 20.0,
        user_history: bool = True,
        search_index: bool = True,
        write_attempts: int = 3,
    ) -> None:
        super().__init__()
        self._writer = writer
        # sends of one request before its transient failure fails the flush (InFlight)
        self._write_attempts = write_attempts
        self._retry_log = RateLimitedLog(logger)  # a loaded cluster times out many at once
        self._metrics = metrics or ProcessorMetrics()
        self._retry_after_s = retry_after_s
        self._in_flight = in_flight
        # Below the Kafka transaction timeout (30 s) and Quix's bounded flush on a revoke
        # (60 s): a flush gives up by itself rather than be abandoned while it still writes.
        self._flush_timeout_s = flush_timeout_s
        self._user_history = user_history
        self._search_index = search_index
        # commits a checkpoint early while Cassandra writes slowly (checkpoint_bound says why)
        self.bound = CheckpointBound()
        self._generation = 0  # bumped by every flush and pause: an older flush stops sending
        # this checkpoint's updates by source partition
        self._updates: dict[int, list[ChannelUpdate]] = {}
        # this checkpoint's moderation events (few: no partition grouping needed)
        self._moderation: list[ModerationUpdate] = []

    def setup(self) -> None:
        """Connect and prepare the statements (the schema is created at start-up)."""
        self._writer.setup()

    def keep(self, update: ChannelUpdate, partition: int) -> None:
        """Keep one message's update for the checkpoint's flush."""
        updates = self._updates.get(partition)
        if updates is None:
            updates = self._updates[partition] = []
        updates.append(update)
        self.bound.held += 1

    def keep_moderation(self, update: ModerationUpdate, partition: int) -> None:
        """Keep one moderation event's update (window counts, marks) for the flush."""
        self._moderation.append(update)

    def flush(self) -> None:
        """Upsert every partition's rows of this checkpoint and wait for them; transient
        failures become backpressure."""
        updates, self._updates = self._updates, {}
        moderation, self._moderation = self._moderation, []
        self._write(updates, moderation)

    def on_paused(self) -> None:
        """An earlier hook backpressured: this checkpoint is dropped and will be processed
        again."""
        self._updates = {}
        self._moderation = []
        self._generation += 1
        self.bound.dropped()

    def _write(
        self, batches: dict[int, list[ChannelUpdate]], moderation: list[ModerationUpdate]
    ) -> None:
        self._generation += 1
        generation = self._generation
        start = time.perf_counter()
        deadline = time.monotonic() + self._flush_timeout_s
        in_flight = InFlight(
            self._writer.session,
            self._in_flight,
            deadline,
            attempts=self._write_attempts,
            on_retry=self._retrying,
        )
        try:
            statements = [self._statements_for(updates) for updates in batches.values()]
            marks = bool(moderation) or any(u.deleted for us in batches.values() for u in us)
            if marks:
                statements.append(self._moderation_statements(batches, moderation))
            for number, group in enumerate(statements):
                if marks and number == len(statements) - 1:
                    # a mark only once its message's rows are acknowledged: it never lands
                    # on a row that is not there (an UPDATE would make one without a record)
                    in_flight.wait()
                for statement, parameters in group:
                    if generation != self._generation:
                        logger.warning("an abandoned Cassandra flush stopped sending")
                        return
                    if not in_flight.submit(statement, parameters):
                        break  # a request failed: wait() raises it
                if in_flight.error is not None:
                    break
            in_flight.wait()
        except TRANSIENT_ERRORS as exc:
            self._metrics.sink_backpressure.inc()
            self.bound.failed()
            logger.warning(
                "Cassandra write failed (%s: %s); pausing %.1fs and processing the "
                "checkpoint again",
                exc.__class__.__name__,
                exc,
                self._retry_after_s,
            )
            raise SinkBackpressureError(retry_after=self._retry_after_s) from exc
        except InvalidRequest as exc:
            if not schema_missing(exc):
                raise
            self._recreate_schema(exc)
            self.bound.dropped()
            raise SinkBackpressureError(retry_after=_SCHEMA_RETRY_AFTER_S) from exc
        self.bound.written()
        self._metrics.sink_write_seconds.observe(time.perf_counter() - start)

    def _retrying(self, exc: Exception) -> None:
        """A request failed transiently and is sent again (on the driver's thread)."""
        self._metrics.cassandra_write_retries.inc()
        self._retry_log.log(
            logging.INFO, "Cassandra write failed (%s); sending it again", exc.__class__.__name__
        )

    def _recreate_schema(self, cause: InvalidRequest) -> None:
        """A wiped or new cluster: create the keyspace and tables again (idempotent DDL), or
        stop with one line saying what to do."""
        keyspace = self._writer.keyspace
        logger.warning(
            "Cassandra answered %r: keyspace %s or a table of it is missing (a wiped or new "
            "cluster?); creating the schema and writing the checkpoint again",
            _server_message(cause),
            keyspace,
        )
        try:
            self._writer.create_schema()
        except (InvalidRequest, Unauthorized, SchemaError) as exc:
            raise SchemaMissingError(
                f"Cassandra keyspace {keyspace} or a table of it is missing and the processor "
                f"could not create it ({_server_message(exc)}); run `chatpulse init` with a "
                "role allowed to create it, then start `chatpulse process` again"
            ) from None
        except TRANSIENT_ERRORS:
            pass  # Cassandra is away: the retried checkpoint meets the missing schema again

    def _statements_for(self, updates: list[ChannelUpdate]) -> Iterable[tuple[Any, Any]]:
        st = self._writer.binders
        windows: dict[tuple[str, int, int], WindowAggregate | WindowStats] = {}
        totals: dict[str, ChannelUpdate] = {}
        by_partition: dict[tuple[str, int], list[ChannelUpdate]] = {}
        for update in updates:
            message = update.message
            channel = message.channel
            bucket = message_bucket(message.sent_at)
            partition = by_partition.get((channel, bucket))
            if partition is None:
                partition = by_partition[(channel, bucket)] = []
            partition.append(update)
            totals[channel] = update
            for final in update.closed:
                size = final.window_end - final.window_start
                windows[(final.channel, size, final.window_start)] = final
        # A checkpoint's changed windows are in its last update of each channel: those still
        # open are in the channel's open windows (and the closed ones in ``closed`` above).
        for channel, update in totals.items():
            for (size, start), aggregate in list(update.open_windows.items()):
                windows[(channel, size, start)] = aggregate

        # statistics first: the numbers the API serves are visible before the raw messages
        yield from self._window_statements(windows)
        yield from _spike_statements(self._writer.statements, updates)
        totals_rows = [
            (channel, update.total_messages, update.first_seen, update.last_seen)
            for channel, update in totals.items()
        ]
        totals_binder = st["totals"]
        totals_values = map(totals_binder.values, totals_rows)
        for group in batches(totals_binder, totals_values, _PARTITIONS_PER_BATCH):
            yield group, None
        # the index of non-empty buckets, before the messages (as the statistics, for the
        # API's sake; the checkpoint commits only once every write is acknowledged anyway)
        bucket_binder = st["bucket"]
        bucket_values = map(bucket_binder.values, by_partition)
        for group in batches(bucket_binder, bucket_values, _PARTITIONS_PER_BATCH):
            yield group, None
        # busy partitions in batches of their own, quiet ones up to ten to a batch
        messages = st["message"]
        quiet: list[Values] = []
        quiet_partitions = 0
        for (channel, bucket), partition_updates in by_partition.items():
            rows = _message_rows(
                messages, channel, bucket, partition_updates, search_index=self._search_index
            )
            if len(rows) * 4 >= _MESSAGES_PER_BATCH:
                yield from _message_batches(messages, rows)
                continue
            quiet.extend(rows)
            quiet_partitions += 1
            if quiet_partitions == _PARTITIONS_PER_BATCH:
                yield from _message_batches(messages, quiet)
                quiet, quiet_partitions = [], 0
        if quiet:
            yield from _message_batches(messages, quiet)
        if self._user_history:
            yield from self._user_history_statements(updates)

    def _user_history_statements(self, updates: list[ChannelUpdate]) -> Iterable[tuple[Any, Any]]:
        # mostly one row per (user, day) partition in a checkpoint: batches of at most ten
        # partitions' rows
        user_messages = self._writer.binders["user_message"]
        rows = _user_message_rows(user_messages, updates)
        weights = (100 + len(row[5] or b"") for row in rows)
        for group in batches(user_messages, rows, _PARTITIONS_PER_BATCH, weights):
            yield group, None

    def _moderation_statements(
        self, partitions: dict[int, list[ChannelUpdate]], moderation: list[ModerationUpdate]
    ) -> Iterable[tuple[Any, Any]]:
        """The windows moderation events changed, and the deleted marks: of the messages
        the events' join found, and of messages read after an event that deletes them."""
        windows: dict[tuple[str, int, int], WindowAggregate | WindowStats] = {}
        marks: dict[tuple[str, str], Target] = {}
        for event_update in moderation:
            channel = event_update.event.channel
            for (size, start), aggregate in list(event_update.open_windows.items()):
                windows[(channel, size, start)] = aggregate
            for target in event_update.marks:
                marks[(channel, target.id)] = target
        for updates in partitions.values():
            for update in updates:
                if update.deleted:
                    message = update.message
                    marks[(message.channel, message.id)] = Target(
                        message.id, message.sent_at, message.user_id, message.user_login
                    )
        if windows:
            yield from self._window_statements(windows)
        yield from self._mark_statements(marks)

    def _mark_statements(self, marks: dict[tuple[str, str], Target]) -> Iterable[tuple[Any, Any]]:
        """``deleted = true`` on each message's row and user-history row."""
        st = self._writer.binders
        ttl_s, now_ms = self._writer.message_ttl_s, int(time.time() * 1000)
        message_rows: list[Row] = []
        user_rows: list[Row] = []
        for (channel, _), target in sorted(marks.items()):
            # the TTL the row has left (it was written with the full TTL at or after sent_at)
            left = ttl_s - max(now_ms - target.sent_at, 0) // 1000
            if left <= 0:
                continue
            sent_at = target.sent_at
            message_rows.append((left, channel, message_bucket(sent_at), sent_at, target.id))
            login = history_login(target.login)
            if login is not None:
                user_rows.append((left, channel, login, user_bucket(sent_at), sent_at, target.id))
        for name, rows in (("mark_message", message_rows), ("mark_user_message", user_rows)):
            binder = st[name]
            for group in batches(binder, map(binder.values, rows), _PARTITIONS_PER_BATCH):
                yield group, None

    def _window_statements(
        self, windows: dict[tuple[str, int, int], WindowAggregate | WindowStats]
    ) -> Iterable[tuple[Any, Any]]:
        st = self._writer.binders
        latest: dict[str, int] = {}
        leaderboards: dict[tuple[str, int], list[Row]] = {}
        window_rows: list[Row] = []
        for (channel, size, start), value in windows.items():
            name = format_duration(size)
            sessions: tuple[int, int, float | None, int | None]
            if isinstance(value, WindowStats):
                closed, emotes, chatters = True, value.top_emotes, value.top_chatters
                moderation = (value.deleted_messages, value.timeouts, value.bans)
                sessions = (
                    value.sessions_started,
                    value.sessions_ended,
                    value.session_mean_s,
                    value.session_p90_s,
                )
            else:
                closed, emotes, chatters = False, top_emotes(value.emotes), value.talkers.top()
                moderation = value.moderation()
                counts = value.sessions
                sessions = (
                    (0, 0, None, None)
                    if counts is None
                    else (counts.started, counts.ended, counts.mean_s, counts.p90_s)
                )
            row = (
                channel,
                name,
                cql_date(start),
                start,
                start + size,
                value.messages,
                value.unique_chatters,
                _json.encode(emotes).decode(),
                closed,
                _json.encode(chatters).decode(),
                *moderation,
                *sessions,
            )
            window_rows.append(row)
            if value.messages:  # (a window of ended chatter sessions alone ranks nowhere)
                leaderboards.setdefault((name, start), []).append(
                    (name, start, channel, value.messages, value.unique_chatters)
                )
            latest[name] = max(latest.get(name, start), start)
        weights = (200 + len(row[7]) + len(row[9]) for row in window_rows)
        window = st["window"]
        rows = map(window.values, window_rows)
        for group in batches(window, rows, _PARTITIONS_PER_BATCH, weights):
            yield group, None
        # one leaderboard partition per window: its rows go in single-partition batches
        leaderboard = st["leaderboard"]
        for partition in leaderboards.values():
            rows = map(leaderboard.values, partition)
            for group in batches(leaderboard, rows, _ROWS_PER_LEADERBOARD_BATCH):
                yield group, None
        for name, start in latest.items():
            yield self._writer.statements["latest"], (name, start, start * 1000)
