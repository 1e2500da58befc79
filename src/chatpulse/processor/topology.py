"""The processor's topology, built by one function and nothing else (no clients, no start-up).

messages topic (bytes) + events topic (bytes), concatenated: read in timestamp order
  -> one stateful node (keyed by channel):
       decode + validate ── bad ──> dead-letter record (reason, source topic/partition/offset, raw)
       a message: de-duplicate, windows, totals, keep it for the join -> ChannelUpdate
       spikes: each closed window of the spike size against the channel's baseline
       a CLEARMSG/CLEARCHAT: de-duplicate, window counts, join -> ModerationUpdate
         ├─> update writers, flushed before each commit (Cassandra: messages, windows, totals,
         │   deleted marks)
         └─> closed windows, spikes + throttled live updates of the smallest open window
  -> produce each output record to its topic (dead-letter or channel-stats)

Each StreamingDataFrame node costs Quix a call per record and each branch a pickle copy of
the value, so the work is folded into one node plus the producing node.
"""

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from quixstreams import Application, State
from quixstreams.context import message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic

from chatpulse.deadletter import DEFAULT_RAW_MAX_BYTES, deadletter_value
from chatpulse.models import (
    ChatEvent,
    ChatMessage,
    WindowStats,
    decode_chat_event,
    decode_chat_message,
    encode,
)
from chatpulse.processor.aggregate import MAX_EMOTES, to_window_stats
from chatpulse.processor.channel import (
    DEFAULT_CHUNK_BYTES,
    ChannelCounter,
    ChannelUpdate,
    ModerationUpdate,
)
from chatpulse.processor.metrics import ProcessorMetrics
from chatpulse.processor.quix_hooks import (
    CheckpointHook,
    concat_keeping_state,
    register_checkpoint_hooks,
)
from chatpulse.processor.sessions import DEFAULT_GAP_MS
from chatpulse.processor.spikes import SpikeDetector, SpikeRule
from chatpulse.processor.topchatters import DEFAULT_CAPACITY
from chatpulse.windows import format_duration

__all__ = [
    "DeadLetter",
    "FutureSkew",
    "LiveThrottle",
    "Output",
    "PipelineConfig",
    "PipelineTopics",
    "StateFlush",
    "UpdateWriter",
    "build_pipeline",
]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """What the topology needs from the settings."""

    window_sizes_ms: Sequence[int]
    grace_ms: int
    dedup_horizon_ms: int
    # False: no de-duplication by message id (CHATPULSE_DEDUP)
    dedup: bool = True
    live_update_interval_s: float = 1.0
    # a message stamped further ahead of the processor's clock is dead-lettered
    max_future_skew_ms: int = 5 * 60_000
    # the largest state value (see chatpulse.processor.channel)
    state_chunk_bytes: int = DEFAULT_CHUNK_BYTES
    # distinct emotes tracked per window
    max_emotes_per_window: int = MAX_EMOTES
    # counters of each window's top-chatters summary
    top_chatters_capacity: int = DEFAULT_CAPACITY
    # the raw input a dead letter keeps (CHATPULSE_DEADLETTER_RAW_MAX_BYTES)
    deadletter_raw_max_bytes: int = DEFAULT_RAW_MAX_BYTES
    # chat spikes among the closed windows of one size (None: not looked for)
    spike_rule: SpikeRule | None = None
    # how long the moderation join keeps messages and actions (CHATPULSE_MODERATION_HORIZON)
    moderation_horizon_ms: int = 10 * 60_000
    # the inactivity gap that ends a chatter session (CHATPULSE_SESSION_GAP; 0: not counted)
    session_gap_ms: int = DEFAULT_GAP_MS


@dataclass(frozen=True, slots=True)
class PipelineTopics:
    """Quix topic objects: inputs (bytes values), and the two outputs (bytes values).

    ``events`` (twitch-chat-events) must be co-partitioned with ``messages``; without it the
    processor counts messages only."""

    messages: Topic
    stats: Topic
    deadletter: Topic
    events: Topic | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be counted: the dead-letter topic's key and JSON value."""

    key: bytes
    value: bytes


def dead_letter(
    raw: bytes | None,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    *,
    raw_max_bytes: int = DEFAULT_RAW_MAX_BYTES,
) -> DeadLetter:
    """A dead-letter record with the raw input (cut to ``raw_max_bytes``) and where it came
    from."""
    value = deadletter_value(
        raw,
        reason,
        source=topic,
        partition=partition,
        offset=offset,
        raw_max_bytes=raw_max_bytes,
    )
    return DeadLetter(key=topic.encode(), value=value)


class FutureSkew:
    """How far ahead of this process's clock a message may be stamped, checked without
    reading the clock per message.

    ``limit_ms`` is the clock, read at the last :meth:`refresh` (the processor calls it at
    every checkpoint), plus the skew. A clock only moves forward, so a message at or below
    that limit is within the skew now too: the common case costs one comparison. Only a
    message past it reads the clock again (:meth:`ahead_ms`), so nothing is refused against
    an old reading. The check is exact both ways except after the clock is stepped back:
    then messages up to the step further ahead pass until the next refresh (one commit
    interval, CHATPULSE_COMMIT_INTERVAL_S).
    """

    __slots__ = ("_clock", "limit_ms", "skew_ms")

    def __init__(self, skew_ms: int, clock: Callable[[], float] = time.time) -> None:
        self.skew_ms = skew_ms
        self._clock = clock
        self.limit_ms = 0
        self.refresh()

    def refresh(self) -> None:
        """Read the clock again."""
        self.limit_ms = int(self._clock() * 1000) + self.skew_ms

    def ahead_ms(self, sent_at: int) -> int | None:
        """How far ``sent_at`` is ahead of the clock (read now) when that is more than the
        skew, else None. Call it only for ``sent_at > limit_ms``."""
        self.refresh()
        if sent_at <= self.limit_ms:
            return None
        return sent_at - (self.limit_ms - self.skew_ms)


def decode_event(
    value: Any,
    key: Any,
    future_skew: FutureSkew | None = None,
    raw_max_bytes: int = DEFAULT_RAW_MAX_BYTES,
) -> ChatEvent | DeadLetter:
    """Decode and validate one record of the events topic, as :func:`decode_record` does a
    message (the same dead letters: not JSON, not a ChatEvent, a key that is not its channel,
    stamped too far ahead)."""
    reason: str | None = None
    if not isinstance(value, bytes) or not value:
        reason = "empty value"
    else:
        try:
            event = decode_chat_event(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reason = f"invalid ChatEvent: {exc}"
        else:
            if key != event.channel.encode():
                reason = f"record key {key!r} is not the event's channel {event.channel!r}"
            elif (
                future_skew is not None
                and event.sent_at > future_skew.limit_ms
                and (ahead := future_skew.ahead_ms(event.sent_at)) is not None
            ):
                reason = (
                    f"sent_at {event.sent_at} is {ahead} ms ahead of the processor's clock, "
                    f"more than CHATPULSE_MAX_FUTURE_SKEW ({future_skew.skew_ms} ms)"
                )
            else:
                return event
    ctx = message_context()
    return dead_letter(
        value,
        reason or "invalid",
        ctx.topic,
        ctx.partition,
        ctx.offset,
        raw_max_bytes=raw_max_bytes,
    )


def decode_record(
    value: Any,
    key: Any,
    future_skew: FutureSkew | None = None,
    raw_max_bytes: int = DEFAULT_RAW_MAX_BYTES,
) -> ChatMessage | DeadLetter:
    """Decode and validate one record; anything wrong becomes a DeadLetter (keeping at most
    ``raw_max_bytes`` of the record).

    With ``future_skew``, a message stamped further than its skew ahead of this process's
    clock is wrong too: it would open windows early and move its channel's time (closing
    the open windows) for good.
    """
    reason: str | None = None
    message: ChatMessage | None = None
    if not isinstance(value, bytes) or not value:
        reason = "empty value"
    else:
        try:
            message = decode_chat_message(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reason = f"invalid ChatMessage: {exc}"
    if message is not None:
        expected = message.channel.encode()
        if key != expected:
            reason = f"record key {key!r} is not the message's channel {message.channel!r}"
        elif (
            future_skew is not None
            and message.sent_at > future_skew.limit_ms
            and (ahead := future_skew.ahead_ms(message.sent_at)) is not None
        ):
            reason = (
                f"sent_at {message.sent_at} is {ahead} ms ahead of the processor's clock, "
                f"more than CHATPULSE_MAX_FUTURE_SKEW ({future_skew.skew_ms} ms)"
            )
        else:
            return message
    ctx = message_context()
    return dead_letter(
        value,
        reason or "invalid",
        ctx.topic,
        ctx.partition,
        ctx.offset,
        raw_max_bytes=raw_max_bytes,
    )


class LiveThrottle:
    """Live updates of the smallest open window, at most one per channel per interval."""

    def __init__(
        self, size_ms: int, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._size_ms = size_ms
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def live_update(self, update: ChannelUpdate) -> WindowStats | None:
        for size, start, aggregate in update.windows:
            if size != self._size_ms:
                continue
            channel = update.message.channel
            now = self._clock()
            last = self._last.get(channel)
            if last is not None and now - last < self._interval_s:
                return None
            self._last[channel] = now
            return to_window_stats(channel, size, start, aggregate, closed=False)
        return None


class StateFlush(CheckpointHook):
    """Writes the counter's working copies into the state before each commit.

    Registered before any other hook, so it runs at every commit attempt, before Quix
    prepares the state transactions (changelog) and commits the Kafka transaction.
    """

    def __init__(self, counter: ChannelCounter, future_skew: FutureSkew | None = None) -> None:
        super().__init__()
        self._counter = counter
        self._future_skew = future_skew

    def flush(self) -> None:
        self._counter.flush()
        if self._future_skew is not None:
            self._future_skew.refresh()  # the clock read once per checkpoint

    def on_paused(self) -> None:
        self._counter.discard()


class UpdateWriter(CheckpointHook):
    """Takes each counted message's :class:`ChannelUpdate` and writes them out before the
    checkpoint commits (in ``flush``)."""

    @abc.abstractmethod
    def keep(self, update: ChannelUpdate, partition: int) -> None:
        """Keep ``update`` (of a message read from ``partition``) for this checkpoint."""

    def keep_moderation(self, update: ModerationUpdate, partition: int) -> None:
        """Keep ``update`` (of a moderation event read from ``partition``); ignored unless
        the writer overrides it."""


class Output(bytes):
    """An output record's value, tagged with its topic and key: one linear chain of nodes
    produces both dead letters and channel-stats (a branch would make Quix pickle and
    unpickle every record for each extra branch)."""

    topic: Topic
    key: bytes | None


def _output(value: bytes, topic: Topic, key: bytes | None) -> Output:
    out = Output(value)
    out.topic = topic
    out.key = key
    return out


def _counter(config: PipelineConfig, metrics: ProcessorMetrics) -> ChannelCounter:
    """The counting step of ``config``, counting its tallies into ``metrics``."""
    counter = ChannelCounter(
        list(config.window_sizes_ms),
        config.grace_ms,
        config.dedup_horizon_ms,
        dedup=config.dedup,
        chunk_bytes=config.state_chunk_bytes,
        max_emotes=config.max_emotes_per_window,
        top_capacity=config.top_chatters_capacity,
        join_horizon_ms=config.moderation_horizon_ms,
        session_gap_ms=config.session_gap_ms,
    )
    if counter.sessions is not None:
        counter.sessions.skipped = metrics.session_skipped
    counter.untracked_emotes = metrics.untracked_emotes
    counter.untracked_chatters = metrics.untracked_chatters
    counter.unmatched = metrics.moderation_unmatched
    return counter


def build_pipeline(
    app: Application,
    topics: PipelineTopics,
    config: PipelineConfig,
    writers: Sequence[UpdateWriter] = (),
    metrics: ProcessorMetrics | None = None,
) -> StreamingDataFrame:
    """Build the processor's dataframe over ``topics.messages`` on ``app``.

    One stateful node decodes, counts, hands each :class:`ChannelUpdate` to the writers and
    yields the output records; one node produces them. Returns that dataframe.
    """
    metrics = metrics or ProcessorMetrics()
    counter = _counter(config, metrics)
    events_topic = topics.events.name if topics.events is not None else None
    throttle = LiveThrottle(min(config.window_sizes_ms), config.live_update_interval_s)
    late_labels = {size: format_duration(size) for size in config.window_sizes_ms}
    future_skew = FutureSkew(config.max_future_skew_ms)
    raw_max_bytes = config.deadletter_raw_max_bytes
    spikes = SpikeDetector(config.spike_rule) if config.spike_rule is not None else None
    for label in late_labels.values():
        metrics.late[label].value += 0  # every label exists before a scrape can iterate

    def moderate(value: Any, key: Any, state: State[bytes, bytes], partition: int) -> list[Output]:
        event = decode_event(value, key, future_skew, raw_max_bytes)
        if isinstance(event, DeadLetter):
            metrics.deadlettered.inc()
            return [_output(event.value, topics.deadletter, event.key)]
        update = counter.moderate(event, state, partition)
        if update is None:
            return []  # another kind of event, or a duplicate
        metrics.moderation_events.inc()
        metrics.moderation_marks.value += len(update.marks)
        for size in update.late_sizes:
            metrics.late[late_labels[size]].inc()
        for writer in writers:
            writer.keep_moderation(update, partition)
        return []

    def process(
        value: Any, key: Any, timestamp: int, headers: Any, state: State[bytes, bytes]
    ) -> list[Output]:
        ctx = message_context()
        if ctx.topic == events_topic:
            return moderate(value, key, state, ctx.partition)
        metrics.consumed.inc()
        record = decode_record(value, key, future_skew, raw_max_bytes)
        if isinstance(record, DeadLetter):
            metrics.deadlettered.inc()
            return [_output(record.value, topics.deadletter, record.key)]
        update = counter.process(record, state, ctx.partition)
        if update is None:
            metrics.duplicates.inc()
            return []
        update.record = value
        metrics.processed.inc()
        if update.deleted:
            metrics.moderation_marks.inc()
        for size in update.late_sizes:
            metrics.late[late_labels[size]].inc()
        if spikes is not None and update.closed:
            update.spikes = spikes.observe(update.closed, state)
        for writer in writers:
            writer.keep(update, ctx.partition)
        outputs = [_output(encode(final), topics.stats, key) for final in update.closed]
        outputs.extend(_output(encode(spike), topics.stats, key) for spike in update.spikes)
        live = throttle.live_update(update)
        if live is not None:
            outputs.append(_output(encode(live), topics.stats, key))
        return outputs

    sdf = app.dataframe(topics.messages)
    if topics.events is not None:
        sdf = concat_keeping_state(sdf, app.dataframe(topics.events))
    register_checkpoint_hooks(sdf, (StateFlush(counter, future_skew), *writers))
    sdf = sdf.apply(process, stateful=True, metadata=True, expand=True)
    sdf.to_topic(lambda value, _key, _ts, _headers: value.topic, key=lambda value: value.key)
    return sdf
