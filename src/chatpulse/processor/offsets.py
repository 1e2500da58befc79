"""Resume from what the state holds when the group's committed offsets are gone.

Kafka deletes a consumer group's committed offsets once the group has been empty longer than
the broker's ``offsets.retention.minutes`` (7 days by default), and an operator can delete
them by hand. A processor restarted then would start over from the earliest message
(``auto.offset.reset``) while its state already counts them: every message still in the
topic would be counted again, the de-duplication horizon being far shorter than the topic's
retention.

The state knows where it stands: every changelog record carries, in a header Quix writes
(:data:`~chatpulse.processor.quix_hooks.PROCESSED_OFFSETS_HEADER`), the offset of the last
message its checkpoint processed. Before the processor joins its group,
:func:`restore_missing_offsets` looks for partitions without a committed offset whose
changelog partition holds records, reads the last committed record's header and commits that
offset + 1 for the group. The messages after it that changed no state (duplicates, dead
letters) are read again: duplicates stay duplicates (the state is the same), dead letters are
written again. A partition whose changelog holds no committed record (none at all, or only
an aborted first checkpoint's) is new and starts from the beginning.

The processor never falls back to the earliest message silently: a changelog partition that
holds committed records but no readable offset (no record with the header, a header without
the source topic, not read within the deadline) raises :class:`OffsetsLostError`, and Kafka
not answering raises :class:`~chatpulse.errors.KafkaUnavailableError`, both with one line
saying what to do.
"""

import json
import logging
import time
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from chatpulse.errors import KafkaUnavailableError
from chatpulse.processor.errors import OffsetsLostError
from chatpulse.processor.quix_hooks import PROCESSED_OFFSETS_HEADER

__all__ = ["last_processed_offset", "restore_missing_offsets"]

logger = logging.getLogger(__name__)

_TAIL_RECORDS = 256  # the changelog records read first from a partition's end
_READ_TIMEOUT_S = 30.0
_TRANSIENT_RETRY_S = 60.0
# Answers that pass on their own (leadership moving, a coordinator loading); librdkafka does
# not flag every one of them retriable when they come from a watermark or committed read.
_TRANSIENT_CODES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


@dataclass(slots=True)
class _Tail:
    """What one read of a changelog partition's tail found."""

    offsets: dict[str, int] | None = None  # the last processed-offsets header read
    records: bool = False  # a committed record was read (with the header or not)
    complete: bool = False  # read up to the end before the deadline
    error: str = ""  # the last error Kafka reported meanwhile


def last_processed_offset(
    consumer: Consumer, changelog: str, partition: int, source: str
) -> int | None:
    """The offset of ``source`` the last committed changelog record of ``partition`` says
    was processed; None when the partition holds no committed record (a new state).

    Raises :class:`OffsetsLostError` when it holds committed records but none says it (no
    record with the header, or a header without ``source``), or when it could not be read
    within the deadline; :class:`KafkaException` when Kafka does not answer.
    """
    low, high = consumer.get_watermark_offsets(
        TopicPartition(changelog, partition), timeout=_READ_TIMEOUT_S
    )
    window = _TAIL_RECORDS
    records = False
    while high > low:
        start = max(low, high - window)
        tail = _read_tail(consumer, TopicPartition(changelog, partition, start), high)
        if not tail.complete:
            raise OffsetsLostError(
                f"the changelog {changelog} partition {partition} could not be read within "
                f"{_READ_TIMEOUT_S:g} s" + (f" ({tail.error})" if tail.error else "")
            )
        if tail.offsets is not None:
            if source not in tail.offsets:
                raise OffsetsLostError(
                    f"the last processed offsets in the changelog {changelog} partition "
                    f"{partition} name no offset of {source}"
                )
            return tail.offsets[source]
        records = records or tail.records
        if start == low:
            break
        window *= 16  # the tail held only aborted records, markers or no offsets: read further
    if records:
        raise OffsetsLostError(
            f"the changelog {changelog} partition {partition} holds records but none carries "
            f"the processed offsets (header {PROCESSED_OFFSETS_HEADER})"
        )
    return None


def _read_tail(consumer: Consumer, start: TopicPartition, high: int) -> _Tail:
    consumer.assign([start])
    tail = _Tail()
    deadline = time.monotonic() + _READ_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            messages = consumer.consume(1_000, timeout=0.5)
            for message in messages:
                error = message.error()
                if error is not None:
                    tail.error = _describe(error)
                    continue
                tail.records = True
                header = dict(message.headers() or ()).get(PROCESSED_OFFSETS_HEADER)
                offsets = json.loads(header) if header else None
                if isinstance(offsets, dict):  # maintenance records carry null: skipped
                    tail.offsets = offsets
            (position,) = consumer.position([TopicPartition(start.topic, start.partition)])
            # the end, or the last transaction marker (read_committed may stop before it)
            if position.offset >= high or (not messages and position.offset >= high - 1):
                tail.complete = True
                break
    finally:
        consumer.unassign()
    return tail


def _describe(error: object) -> str:
    return error.str() if isinstance(error, KafkaError) else str(error)


def _find_processed(
    client_config: dict[str, str], group: str, source: str, changelog: str
) -> dict[int, int]:
    """The next offset to process by partition of ``source``, for the partitions without a
    committed offset whose changelog says one."""
    consumer = Consumer(
        {
            **client_config,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        topics = consumer.list_topics(timeout=_READ_TIMEOUT_S).topics
        if source not in topics or changelog not in topics:
            return {}  # a new deployment: nothing to resume from
        partitions = [TopicPartition(source, p) for p in sorted(topics[source].partitions)]
        committed = consumer.committed(partitions, timeout=_READ_TIMEOUT_S)
        restore: dict[int, int] = {}
        for tp in committed:
            if tp.offset >= 0 or tp.partition not in topics[changelog].partitions:
                continue
            try:
                processed = last_processed_offset(consumer, changelog, tp.partition, source)
            except OffsetsLostError as exc:
                raise OffsetsLostError(
                    f"group {group} has no committed offset for {source} partition "
                    f"{tp.partition} and {exc}; rather than count that partition again from "
                    "its earliest message the processor stops: set the offset by hand "
                    f"(kafka-consumer-groups.sh --group {group} --reset-offsets --topic "
                    f"{source}:{tp.partition} --to-offset <first offset not counted> --execute,"
                    " or --to-latest to skip to new chat), then start it again"
                ) from None
            if processed is not None:
                restore[tp.partition] = processed + 1
        return restore
    finally:
        consumer.close()


def _find_processed_retrying(
    client_config: dict[str, str], group: str, source: str, changelog: str
) -> dict[int, int]:
    """:func:`_find_processed`, read again while Kafka answers with a passing error.

    A partition whose leader is moving or not yet elected (a changelog topic another instance
    has just created, a broker restarting) answers NOT_LEADER_FOR_PARTITION or
    LEADER_NOT_AVAILABLE for a moment; that is no reason to stop the processor.
    """
    deadline = time.monotonic() + _TRANSIENT_RETRY_S
    while True:
        try:
            return _find_processed(client_config, group, source, changelog)
        except KafkaException as exc:
            error = exc.args[0]
            passing = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _TRANSIENT_CODES
            )
            if not passing or time.monotonic() >= deadline:
                raise
            logger.info("reading the committed offsets again: %s", _describe(error))
            time.sleep(1.0)


def restore_missing_offsets(
    client_config: dict[str, str],
    group: str,
    source: str,
    changelog: str,
    admin: AdminClient,
) -> dict[int, int]:
    """Commit for ``group`` the offsets the state records as processed, on the partitions of
    ``source`` that have no committed offset; the offsets committed, by partition.

    Run before the processor joins its group. Raises :class:`OffsetsLostError` when the
    state does not say them (see the module's docstring) or they cannot be committed
    (another instance of the group is running meanwhile), and
    :class:`~chatpulse.errors.KafkaUnavailableError` when Kafka does not answer.
    """
    try:
        restore = _find_processed_retrying(client_config, group, source, changelog)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"could not read the committed offsets of group {group} or the changelog "
            f"{changelog} ({_describe(exc.args[0])}); start the processor again once Kafka "
            "answers"
        ) from None
    if not restore:
        return {}
    offsets = [TopicPartition(source, p, offset) for p, offset in sorted(restore.items())]
    try:
        for future in admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, offsets)]
        ).values():
            future.result()
    except KafkaException as exc:
        raise OffsetsLostError(
            f"group {group} has no committed offsets for {source} partitions "
            f"{sorted(restore)} and they could not be restored from the state "
            f"({exc.args[0]}); stop every instance of the group and start one again"
        ) from None
    logger.warning(
        "group %s had no committed offsets for %s partitions %s (expired after the group was "
        "empty longer than the broker's offsets.retention.minutes, or deleted): resuming "
        "from the offsets its state records as processed, %s",
        group,
        source,
        sorted(restore),
        ", ".join(f"{p}:{offset}" for p, offset in sorted(restore.items())),
    )
    return restore
