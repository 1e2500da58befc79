"""What chatpulse.processor.quix_hooks relies on in Quix Streams, checked against the installed
version: an upgrade that changes any of it fails here by name, not at run time."""

import dataclasses
import inspect
from importlib.metadata import version
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from quixstreams import Application
from quixstreams.checkpointing import Checkpoint
from quixstreams.internal_consumer import InternalConsumer
from quixstreams.internal_consumer.buffering import InternalConsumerBuffer
from quixstreams.models.topics import TopicManager
from quixstreams.processing import ProcessingContext
from quixstreams.sinks import BaseSink, SinkManager
from quixstreams.state.base.state import TransactionState
from quixstreams.state.base.transaction import PartitionTransaction

from chatpulse.processor import quix_hooks
from chatpulse.processor.quix_hooks import (
    PROCESSED_OFFSETS_HEADER,
    QUIX_VERSION,
    STATE_TRANSACTION,
    CheckpointHook,
    transaction_is_open,
)


def test_the_installed_quix_is_the_version_the_hooks_were_checked_against() -> None:
    assert version("quixstreams") == QUIX_VERSION, (
        "Quix Streams changed: check every item of chatpulse/processor/quix_hooks.py's "
        "docstring against the new version, then update QUIX_VERSION"
    )


def test_a_state_keeps_its_transaction_in_a_slot() -> None:
    assert STATE_TRANSACTION in TransactionState.__slots__
    state = TransactionState(prefix=b"k", transaction=object())  # type: ignore[arg-type]
    assert getattr(state, STATE_TRANSACTION) is not None


@pytest.mark.parametrize("flag", ["prepared", "completed", "failed"])
def test_partition_transactions_report_their_status(flag: str) -> None:
    assert isinstance(inspect.getattr_static(PartitionTransaction, flag), property)


def test_transaction_is_open_reads_the_flags() -> None:
    class Transaction:
        prepared = completed = failed = False

    transaction = Transaction()
    assert transaction_is_open(transaction)
    for flag in ("prepared", "completed", "failed"):
        closed = Transaction()
        setattr(closed, flag, True)
        assert not transaction_is_open(closed)


def test_a_checkpoint_flushes_sinks_before_it_prepares_state() -> None:
    source = inspect.getsource(Checkpoint.commit)
    flush = source.index("sink.flush()")
    assert source.index("sink.on_paused()") < flush
    assert flush < source.index("transaction.prepare(")
    assert list(inspect.signature(SinkManager.register).parameters) == ["self", "sink"]


def test_the_sink_manager_keeps_registration_order() -> None:
    class Hook(CheckpointHook):
        def flush(self) -> None:
            pass

    manager = SinkManager()
    hooks = [Hook() for _ in range(5)]
    for hook in hooks:
        manager.register(hook)
    assert manager.sinks == hooks


def test_a_checkpoint_hook_takes_no_records() -> None:
    assert {name for name in BaseSink.__abstractmethods__} == {"add", "flush"}

    class Hook(CheckpointHook):
        def flush(self) -> None:
            pass

    with pytest.raises(TypeError, match="checkpoint hook"):
        Hook().add(b"v", b"k", 0, [], "t", 0, 0)


def test_the_processing_context_commits_and_replaces_its_checkpoint() -> None:
    fields = {field.name for field in dataclasses.fields(ProcessingContext)}
    assert "_checkpoint" in fields
    parameters = inspect.signature(ProcessingContext.commit_checkpoint).parameters
    assert list(parameters) == ["self", "force", "revoking"]
    source = inspect.getsource(ProcessingContext.commit_checkpoint)
    assert "self.init_checkpoint()" in source


def test_time_checkpoints_observes_commits_only(tmp_path: Path) -> None:
    app = Application(
        broker_address="127.0.0.1:1",
        consumer_group="unit",
        state_dir=tmp_path / "state",
        use_changelog_topics=False,
        loglevel=None,
    )
    context = app._processing_context
    assert isinstance(context, ProcessingContext)
    seen: list[float] = []
    quix_hooks.time_checkpoints(app, seen.append)
    context.init_checkpoint()
    context.commit_checkpoint()  # not expired, not forced: nothing happens
    assert seen == []
    context.commit_checkpoint(force=True)  # empty: closed, and a new checkpoint begins
    assert len(seen) == 1
    assert seen[0] >= 0


def test_checkpoints_end_early_when_full_says_so(tmp_path: Path) -> None:
    app = Application(
        broker_address="127.0.0.1:1",
        consumer_group="unit",
        state_dir=tmp_path / "state",
        use_changelog_topics=False,
        loglevel=None,
    )
    context = app._processing_context
    full = False
    quix_hooks.end_checkpoints_early(app, lambda: full)
    context.init_checkpoint()
    first = context._checkpoint
    context.commit_checkpoint()  # not expired, not full: the same checkpoint goes on
    assert context._checkpoint is first
    full = True
    context.commit_checkpoint()  # full: ended (it was empty: closed) and a new one begun
    assert context._checkpoint is not first


def test_changelog_records_carry_their_checkpoints_processed_offsets() -> None:
    source = inspect.getsource(PartitionTransaction._prepare)
    assert "json_dumps(processed_offsets)" in source
    assert "CHANGELOG_PROCESSED_OFFSETS_MESSAGE_HEADER:" in source
    # the checkpoint hands each store transaction the last offset it processed, by topic
    commit = inspect.getsource(Checkpoint.commit)
    assert "transaction.prepare(processed_offsets=processed_offsets)" in commit
    assert PROCESSED_OFFSETS_HEADER == "__processed_tp_offsets__"


def test_the_topic_manager_lists_changelog_topics_by_stream() -> None:
    assert isinstance(inspect.getattr_static(TopicManager, "changelog_topics"), property)
    app = Application(
        broker_address="127.0.0.1:1", consumer_group="unit", loglevel=None, auto_create_topics=False
    )
    assert hasattr(app, "_topic_manager")
    assert isinstance(app._topic_manager, TopicManager)


class _Record:
    """The part of a confluent_kafka.Message that Quix's consumer buffer reads."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._where[2])

    def error(self) -> None:
        return None


def _buffer_holding(records: list[_Record]) -> InternalConsumerBuffer:
    buffer = InternalConsumerBuffer(max_partition_buffer_size=100)
    buffer.assign_partitions(
        [TopicPartition(t, p) for t in ("messages", "events") for p in range(3)]
    )
    buffer.feed(messages=records, high_watermarks={})  # type: ignore[arg-type]
    return buffer


def test_buffered_starts_names_each_partitions_first_buffered_record() -> None:
    records = [_Record("messages", 0, o) for o in (7, 8, 9)] + [_Record("events", 2, 40)]
    buffer = _buffer_holding(records)
    assert quix_hooks.buffered_starts(buffer) == {("messages", 0): 7, ("events", 2): 40}
    # events[0] is known to be empty, so messages[0]'s oldest record is the next one read
    buffer.feed(messages=[], high_watermarks={("events", 0): 0, ("messages", 0): 10})
    popped = buffer.pop()
    assert popped is not None
    assert popped.offset() == 7
    assert quix_hooks.buffered_starts(buffer)[("messages", 0)] == 8  # ... 8 is next


def test_backpressure_rewinds_buffered_partitions_the_checkpoint_did_not_process() -> None:
    """What Checkpoint.commit calls, and what the consumer does with it, is what the hook
    assumes; the wrapped call seeks buffered-only partitions to their first record."""
    commit = inspect.getsource(Checkpoint.commit)
    assert "trigger_backpressure(" in commit
    assert "offsets_to_seek=" in commit
    trigger = inspect.getsource(InternalConsumer.trigger_backpressure)
    assert "self._buffer.clear(" in trigger
    assert "offsets_to_seek.get(" in trigger

    seen: list[dict[tuple[str, int], int]] = []

    class Consumer:
        _buffer = _buffer_holding(
            [_Record("messages", 0, 7), _Record("messages", 1, 3), _Record("events", 1, 11)]
        )

        def trigger_backpressure(
            self, offsets_to_seek: dict[tuple[str, int], int], resume_after: float
        ) -> None:
            seen.append(offsets_to_seek)

    app = type("App", (), {"_consumer": Consumer()})()
    quix_hooks.rewind_buffered_reads(app)  # type: ignore[arg-type]
    # the checkpoint processed messages[0] from offset 5: that offset wins over the buffer's
    app._consumer.trigger_backpressure(offsets_to_seek={("messages", 0): 5}, resume_after=0.5)
    assert seen == [{("messages", 0): 5, ("messages", 1): 3, ("events", 1): 11}]
