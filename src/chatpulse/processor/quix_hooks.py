"""Every use the processor makes of Quix Streams beyond its documented API, in one module.

Quix Streams has no hook before a checkpoint commits, no checkpoint timing and no way to ask
which state transaction a ``State`` belongs to. The processor needs all three, so it reaches
into the pinned version (:data:`QUIX_VERSION`, pinned in pyproject.toml) here and nowhere
else. ``tests/unit/test_quix_hooks.py`` checks every name, slot and signature below against
the installed Quix, so an upgrade that changes one fails that test by name instead of
miscounting at run time.

What is relied on:

1. **State transactions.** The ``State`` a stateful function receives is a
   ``TransactionState`` bound for good to one ``PartitionTransaction``, kept in its
   ``_transaction`` slot; the transaction reports ``prepared``, ``completed`` and ``failed``.
   The counter ties its in-memory working copies to that transaction
   (:data:`STATE_TRANSACTION`, :func:`transaction_is_open`).
2. **Pre-commit hooks.** ``Checkpoint.commit`` flushes the sink manager's sinks first, in
   the order they were registered, before it prepares the state transactions (changelog) and
   commits the Kafka transaction; when one sink raises ``SinkBackpressureError``, every later
   one gets ``on_paused()`` instead of ``flush()``. :class:`CheckpointHook` is such a "sink"
   that takes no records: Quix only calls its ``flush``/``on_paused``
   (:func:`register_checkpoint_hooks`).
3. **Checkpoint timing.** ``Application._processing_context`` is the ``ProcessingContext``
   whose ``commit_checkpoint(force, revoking)`` ends a checkpoint and replaces its
   ``_checkpoint`` by a new one (:func:`time_checkpoints`).
4. **Changelog.** ``Application._topic_manager.changelog_topics`` maps a dataframe's stream
   id (its topic's name) to its stores' changelog topics; every changelog record carries the
   processed offsets of its checkpoint (``{topic: last processed offset}``, JSON) in the header
   ``quixstreams.state.metadata.CHANGELOG_PROCESSED_OFFSETS_MESSAGE_HEADER``
   (:func:`changelog_topic`, :data:`PROCESSED_OFFSETS_HEADER`).
5. **Concatenation under the old name.** ``StreamingDataFrame.concat`` of dataframes over two
   topics reads them in timestamp order (per partition number) and names the result's
   stream id, hence its state store and changelog topic, after both topics. The processor's
   state is older than its second input: ``__dataframe_clone__(stream=..., stream_id=...)``
   keeps the messages topic's stream id, so an existing state and changelog are used as
   they are (:func:`concat_keeping_state`).
6. **Backpressure rewinds buffered reads.** A concatenating application reads through the
   ``InternalConsumer``'s buffer (``_buffer``: ``_partition_groups`` by partition number,
   each ``_partition_buffers`` by topic, each a deque ``_messages`` of fetched, unprocessed
   records). On sink backpressure ``Checkpoint.commit`` calls
   ``consumer.trigger_backpressure(offsets_to_seek=..., resume_after=...)`` with the first
   offsets the checkpoint *processed*; the consumer pauses every data partition, clears its
   buffer, and seeks only those. A partition that had records buffered but none processed in
   the checkpoint is not sought back, so its cleared records were skipped for good (their
   offsets were committed over by the next checkpoint): counts lost in a Cassandra outage.
   :func:`rewind_buffered_reads` also seeks such a partition to its first buffered record.
7. **Checkpoints ended early.** The same ``commit_checkpoint(force, revoking)`` commits before
   the interval ends when ``force`` is true (:func:`end_checkpoints_early`).
"""

import abc
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.sinks import BaseSink
from quixstreams.state.metadata import CHANGELOG_PROCESSED_OFFSETS_MESSAGE_HEADER

__all__ = [
    "PROCESSED_OFFSETS_HEADER",
    "QUIX_VERSION",
    "STATE_TRANSACTION",
    "CheckpointHook",
    "buffered_starts",
    "changelog_topic",
    "concat_keeping_state",
    "end_checkpoints_early",
    "register_checkpoint_hooks",
    "rewind_buffered_reads",
    "time_checkpoints",
    "transaction_is_open",
]

QUIX_VERSION: Final = "3.28.1"
# The slot of quixstreams.state.base.state.TransactionState holding its PartitionTransaction.
STATE_TRANSACTION: Final = "_transaction"
_CLOSED_FLAGS: Final = ("prepared", "completed", "failed")
PROCESSED_OFFSETS_HEADER: Final[str] = CHANGELOG_PROCESSED_OFFSETS_MESSAGE_HEADER


def transaction_is_open(transaction: object) -> bool:
    """False for a Quix transaction already prepared, completed or failed (an aborted
    checkpoint's, met when flushing after a bounded revoke gave up on it). Any other object
    (a test's store standing in for a transaction) counts as open."""
    return not any(getattr(transaction, flag, False) for flag in _CLOSED_FLAGS)


class CheckpointHook(BaseSink):
    """Code Quix runs before every checkpoint commit. Not a sink: it takes no records.

    Quix's only pre-commit call is a sink's ``flush``, so a hook subclasses ``BaseSink`` and
    refuses ``add``. ``flush`` runs before the state transactions are prepared and the Kafka
    transaction commits; raising ``SinkBackpressureError`` there drops the checkpoint and
    rewinds to its first offsets. ``on_paused`` means the checkpoint is dropped (an earlier
    hook backpressured) and will be processed again.
    """

    def add(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} is a checkpoint hook: it takes no records")

    @abc.abstractmethod
    def flush(self) -> None:
        """Run before the checkpoint's state and Kafka transactions are committed."""

    def on_paused(self) -> None:
        """The checkpoint is dropped: forget what was kept for it."""


def register_checkpoint_hooks(sdf: StreamingDataFrame, hooks: Iterable[CheckpointHook]) -> None:
    """Have Quix flush ``hooks`` before each commit, in this order, before any sink.

    What ``StreamingDataFrame.sink()`` does, without the dataframe branch it adds (a branch
    costs a pickle copy of every record).
    """
    manager = sdf.processing_context.sink_manager
    for hook in hooks:
        manager.register(hook)


class CommitWatch(Protocol):
    """Told when each call of ``commit_checkpoint`` begins (a ``time.perf_counter()``
    reading) and ends (see chatpulse.processor.watchdog)."""

    def started(self, at: float) -> None: ...

    def ended(self) -> None: ...


def time_checkpoints(
    app: Application, observe: Callable[[float], None], watch: CommitWatch | None = None
) -> None:
    """Call ``observe(seconds)`` after each checkpoint commit (not after no-op calls), and
    tell ``watch`` when each call begins and ends.

    Wraps the context's ``commit_checkpoint``; a commit happened when the context holds a
    new checkpoint object afterwards.
    """
    context: Any = app._processing_context
    commit = context.commit_checkpoint

    def timed_commit(force: bool = False, revoking: bool = False) -> None:
        before = context._checkpoint
        start = time.perf_counter()
        if watch is None:
            commit(force=force, revoking=revoking)
        else:
            watch.started(start)
            try:
                commit(force=force, revoking=revoking)
            finally:
                watch.ended()
        if context._checkpoint is not before:
            observe(time.perf_counter() - start)

    context.commit_checkpoint = timed_commit


def end_checkpoints_early(app: Application, full: Callable[[], bool]) -> None:
    """Commit the checkpoint before its interval ends whenever ``full()`` says so.

    Quix calls the context's ``commit_checkpoint()`` after every message it processes and
    commits when the checkpoint has expired; this wrapper forces the commit when ``full()``
    is true too (:mod:`chatpulse.processor.checkpoint_bound`)."""
    context: Any = app._processing_context
    commit = context.commit_checkpoint

    def bounded_commit(force: bool = False, revoking: bool = False) -> None:
        commit(force=force or full(), revoking=revoking)

    context.commit_checkpoint = bounded_commit


def changelog_topic(app: Application, source: str) -> str:
    """The name of the changelog topic of the (one, default) state store of the dataframe
    over topic ``source``."""
    manager: Any = app._topic_manager
    (topic,) = manager.changelog_topics[source].values()
    return str(topic.name)


def concat_keeping_state(left: StreamingDataFrame, right: StreamingDataFrame) -> StreamingDataFrame:
    """``left.concat(right)`` (both topics read as one stream, in timestamp order), whose
    stateful steps use ``left``'s state store and changelog topic.

    Quix checks that the topics are co-partitioned (same partition count) when the store is
    registered, and refuses to start otherwise.
    """
    merged: Any = left.concat(right)
    clone: StreamingDataFrame = merged.__dataframe_clone__(
        stream=merged.stream, stream_id=left.stream_id
    )
    return clone


def buffered_starts(buffer: Any) -> dict[tuple[str, int], int]:
    """``{(topic, partition): offset}`` of the first record each partition of a Quix
    ``InternalConsumerBuffer`` holds (partitions with nothing buffered are left out)."""
    starts: dict[tuple[str, int], int] = {}
    for group in buffer._partition_groups.values():
        for topic, partition_buffer in group._partition_buffers.items():
            if partition_buffer._messages:
                starts[(topic, group.partition)] = partition_buffer._messages[0].offset()
    return starts


def rewind_buffered_reads(app: Application) -> None:
    """On sink backpressure, also seek back every partition whose buffered records the
    consumer is about to drop although the checkpoint processed none of them (item 6 above).

    A partition the checkpoint processed keeps its offset (its first processed record, which
    comes before anything buffered); one with nothing buffered is already at its next record.
    """
    consumer: Any = app._consumer
    trigger = consumer.trigger_backpressure

    def trigger_rewinding_buffers(
        offsets_to_seek: dict[tuple[str, int], int], resume_after: float
    ) -> None:
        offsets = buffered_starts(consumer._buffer) | offsets_to_seek
        trigger(offsets_to_seek=offsets, resume_after=resume_after)

    consumer.trigger_backpressure = trigger_rewinding_buffers
