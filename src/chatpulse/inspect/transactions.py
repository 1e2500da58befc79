"""Transactional producers, read from the transaction coordinator's own log.

confluent-kafka 2.12 has no ``list_transactions``/``describe_transactions`` admin calls
(librdkafka lacks the ListTransactions and DescribeTransactions APIs), and Kafka's
``kafka-transactions.sh`` tool is not among the jars the local stack downloads. The
coordinator keeps each transactional id's state in the compacted internal topic
``__transaction_state`` (key: the transactional id; value: producer id, epoch, state,
partitions in the transaction, timestamps), so we read that topic to the end and decode the
last record per key. That is also a lesson in itself: Kafka stores its own state in Kafka.

Record layout (Kafka's ``TransactionLogKey``/``TransactionLogValue`` message schemas): each
key and value starts with an int16 schema version; value version 0 uses classic encoding,
version 1 the "flexible" one (compact arrays/strings, tagged fields). Written by hand because
no maintained Python library decodes coordinator records.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from chatpulse.inspect.errors import TransactionLogError
from chatpulse.inspect.model import TransactionInfo, TransactionsView

__all__ = [
    "TRANSACTION_STATES",
    "collect_transactions",
    "decode_key",
    "decode_value",
]

TRANSACTION_TOPIC = "__transaction_state"
TRANSACTION_STATES = {
    0: "Empty",
    1: "Ongoing",
    2: "PrepareCommit",
    3: "PrepareAbort",
    4: "CompleteCommit",
    5: "CompleteAbort",
    6: "Dead",
    7: "PrepareEpochFence",
}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise TransactionLogError("record ends early")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            byte = self.take(">B")
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise TransactionLogError("record ends early")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def string(self, *, compact: bool) -> str:
        size = self.uvarint() - 1 if compact else self.take(">h")
        return self.raw(size).decode("utf-8")

    def array_len(self, *, compact: bool) -> int:
        return self.uvarint() - 1 if compact else self.take(">i")

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.raw(self.uvarint())


def decode_key(data: bytes) -> str:
    """The transactional id of a ``__transaction_state`` key."""
    reader = _Reader(data)
    version = reader.take(">h")
    if version != 0:
        raise TransactionLogError(f"unknown transaction log key version {version}")
    return reader.string(compact=False)


def decode_value(transactional_id: str, data: bytes) -> TransactionInfo:
    """Decode a ``__transaction_state`` value (schema versions 0 and 1)."""
    reader = _Reader(data)
    version = reader.take(">h")
    if version not in (0, 1):
        raise TransactionLogError(f"unknown transaction log value version {version}")
    flexible = version >= 1
    producer_id = reader.take(">q")
    epoch = reader.take(">h")
    timeout_ms = reader.take(">i")
    status = reader.take(">b")
    partitions: list[tuple[str, int]] = []
    for _ in range(max(reader.array_len(compact=flexible), 0)):
        topic = reader.string(compact=flexible)
        count = reader.array_len(compact=flexible)
        partitions += [(topic, reader.take(">i")) for _ in range(max(count, 0))]
        if flexible:
            reader.skip_tagged_fields()
    last_update_ms = reader.take(">q")
    start_ms = reader.take(">q")
    return TransactionInfo(
        transactional_id=transactional_id,
        producer_id=producer_id,
        producer_epoch=epoch,
        state=TRANSACTION_STATES.get(status, f"unknown({status})"),
        timeout_ms=timeout_ms,
        partitions=sorted(partitions),
        last_update_ms=last_update_ms,
        start_ms=start_ms,
    )


def collect_transactions(
    bootstrap_servers: str, timeout: float = 10.0, security: Mapping[str, str] | None = None
) -> TransactionsView:
    """Every live transactional id, newest activity first, from ``__transaction_state``."""
    consumer = Consumer(
        {
            **(security or {}),
            "bootstrap.servers": bootstrap_servers,
            # assign() only, never commits: no group is created on the broker.
            "group.id": f"chatpulse-inspect-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(TRANSACTION_TOPIC, timeout=timeout)
        topic = metadata.topics.get(TRANSACTION_TOPIC)
        if topic is None or topic.error is not None or not topic.partitions:
            return TransactionsView(
                source=TRANSACTION_TOPIC,
                transactions=[],
                note="no transaction has been started on this cluster yet",
            )
        latest: dict[str, TransactionInfo | None] = {}
        pending = set()
        assignment = []
        for pid in topic.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(TRANSACTION_TOPIC, pid), timeout=timeout
            )
            if high > low:
                pending.add(pid)
                assignment.append(TopicPartition(TRANSACTION_TOPIC, pid, OFFSET_BEGINNING))
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        skipped = 0
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                        continue
                    raise KafkaException(error)
                key = message.key()
                if key is None:
                    continue
                try:
                    tid = decode_key(key)
                    value = message.value()
                    latest[tid] = None if value is None else decode_value(tid, value)
                except TransactionLogError:
                    skipped += 1
        live = [info for info in latest.values() if info is not None]
        live.sort(key=lambda info: info.last_update_ms, reverse=True)
        notes = []
        if pending:
            notes.append(f"stopped reading after {timeout:.0f}s; the list may be incomplete")
        if skipped:
            notes.append(f"{skipped} records in an unknown format were skipped")
        return TransactionsView(source=TRANSACTION_TOPIC, transactions=live, note="; ".join(notes))
    finally:
        consumer.close()
