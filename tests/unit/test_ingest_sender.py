"""The Sender's handling of failed records (no network: librdkafka's produce is a stand-in)."""

from confluent_kafka import KafkaError, KafkaException

from chatpulse.ingest.deadlettering import DeadLetters
from chatpulse.ingest.entry import Entry
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.sender import Sender
from chatpulse.ingest.spill import Position

TOPIC = "unit-messages"
DEADLETTER = "unit-deadletter"


class _Librdkafka:
    """produce() as librdkafka's; raises ``error`` while it is set."""

    def __init__(self) -> None:
        self.error: KafkaError | None = None
        self.produced: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, *, timestamp: int) -> None:
        if self.error is not None:
            raise KafkaException(self.error)
        self.produced.append(value)


class _Report:
    """The message of a delivery report: its topic and value."""

    def __init__(self, entry: Entry) -> None:
        self._entry = entry

    def topic(self) -> str:
        return self._entry.topic

    def value(self) -> bytes:
        return self._entry.value


def _sender(producer: _Librdkafka, acknowledged: list[Position]) -> Sender:
    return Sender(
        producer,  # type: ignore[arg-type]
        DeadLetters(DEADLETTER, IngestMetrics()),
        [TOPIC, DEADLETTER],
        txn_max=10,
        acknowledge=acknowledged.append,
    )


def _entries(count: int) -> list[Entry]:
    return [Entry(TOPIC, b"chan", b"m%d" % i, 1_764_770_000_000 + i, 1) for i in range(count)]


def test_a_deleted_topic_keeps_the_records_in_order_and_dead_letters_none() -> None:
    producer, acknowledged = _Librdkafka(), []
    sender = _sender(producer, acknowledged)
    entries = _entries(3)
    for entry in entries:
        assert sender.produce(entry)
    error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    for entry in entries:  # librdkafka reports each record of the partition's batch
        sender.on_delivery_error(error, _Report(entry))  # type: ignore[arg-type]

    sender.resend()  # after the abort

    assert list(sender.pending) == entries  # kept, in order, nothing dead-lettered
    assert producer.produced == [b"m0", b"m1", b"m2"]  # not sent again before the backoff
    assert sender.take_held() is error
    assert sender.take_held() is None
    assert acknowledged == []


def test_a_record_refused_for_itself_is_dead_lettered() -> None:
    producer, acknowledged = _Librdkafka(), []
    sender = _sender(producer, acknowledged)
    entries = _entries(2)
    for entry in entries:
        sender.produce(entry)
    error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    sender.on_delivery_error(error, _Report(entries[1]))  # type: ignore[arg-type]

    sender.resend()

    assert sender.held is None
    assert [entry.topic for entry in sender.pending] == [DEADLETTER]
    assert [entry.value for entry in sender.txn] == [b"m0"]  # sent again at once


def test_a_produce_refused_for_its_topic_waits_and_is_not_dead_lettered() -> None:
    producer, acknowledged = _Librdkafka(), []
    sender = _sender(producer, acknowledged)
    producer.error = KafkaError(KafkaError._UNKNOWN_TOPIC)
    (entry,) = _entries(1)

    assert sender.produce(entry) is False  # the caller keeps it
    assert sender.held is producer.error
    assert not sender.broken  # the transaction is fine: no commit to learn how it failed
    assert not sender.pending
    assert sender.txn == []
