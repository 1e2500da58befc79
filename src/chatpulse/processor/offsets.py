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
written again. A partition whose changelog is empty is new and starts from the beginning.
"""

import json
import logging
import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from chatpulse.processor.errors import OffsetsLostError
from chatpulse.processor.quix_hooks import PROCESSED_OFFSETS_HEADER

__all__ = ["last_processed_offset", "restore_missing_offsets"]

logger = logging.getLogger(__name__)

_TAIL_RECORDS = 256  # the changelog records read first from a partition's end
_READ_TIMEOUT_S = 30.0


def last_processed_offset(
    consumer: Consumer, changelog: str, partition: int, source: str
) -> int | None:
    """The offset of ``source`` the last committed changelog record of ``partition`` says
    was processed; None when the partition holds no record with that header."""
    low, high = consumer.get_watermark_offsets(
        TopicPartition(changelog, partition), timeout=_READ_TIMEOUT_S
    )
    window = _TAIL_RECORDS
    while high > low:
        start = max(low, high - window)
        found = _last_offset_from(consumer, TopicPartition(changelog, partition, start), high)
        if found is not None:
            return found.get(source)
        if start == low:
            return None
        window *= 16  # the tail held only aborted records or markers: read further back
    return None


def _last_offset_from(
    consumer: Consumer, start: TopicPartition, high: int
) -> dict[str, int] | None:
    consumer.assign([start])
    found: dict[str, int] | None = None
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while time.monotonic() < deadline:
        messages = consumer.consume(1_000, timeout=0.5)
        for message in messages:
            if message.error():
                continue
            header = dict(message.headers() or ()).get(PROCESSED_OFFSETS_HEADER)
            if header:
                found = json.loads(header)
        (position,) = consumer.position([TopicPartition(start.topic, start.partition)])
        # the end, or the last transaction marker (read_committed may stop before it)
        if position.offset >= high or (not messages and position.offset >= high - 1):
            break
    consumer.unassign()
    return found


def restore_missing_offsets(
    client_config: dict[str, str],
    group: str,
    source: str,
    changelog: str,
    admin: AdminClient,
) -> dict[int, int]:
    """Commit for ``group`` the offsets the state records as processed, on the partitions of
    ``source`` that have no committed offset; the offsets committed, by partition.

    Run before the processor joins its group. Raises :class:`OffsetsLostError` when they
    cannot be committed (another instance of the group is running meanwhile).
    """
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
            processed = last_processed_offset(consumer, changelog, tp.partition, source)
            if processed is not None:
                restore[tp.partition] = processed + 1
    finally:
        consumer.close()
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
