"""The producer's memory/spill hand-off with no broker reachable (nothing listens on port 1).

With no broker the transactions never initialise: records wait in memory up to the buffer
bound, then go to the spill in order; nothing is ever handed to librdkafka.
"""

from pathlib import Path

from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.producer import IngestProducer
from chatpulse.ingest.spill import Spill
from chatpulse.topics import Topics

TOPICS = Topics.from_prefix("unit-")
NO_BROKER = "127.0.0.1:1"


def _producer(spill: Spill, buffer: int) -> IngestProducer:
    return IngestProducer(
        NO_BROKER,
        TOPICS,
        spill,
        IngestMetrics(),
        buffer_messages=buffer,
        txn_id="unit-ingest",
        call_timeout_s=0.2,
        config_overrides={"log_level": 0},
    )


def _value(index: int) -> bytes:
    # Chat records carry their timestamp as sent_at: the producer reads it back on a purge.
    return b'{"n":%d,"sent_at":%d}' % (index, 1_000 + index)


def _drain_values(directory: Path) -> list[bytes]:
    spill = Spill(directory)
    values = []
    while (record := spill.next_record()) is not None:
        values.append(record.value)
    spill.close()
    return values


def test_full_buffer_spills_and_shutdown_keeps_everything_in_order(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    producer = _producer(spill, buffer=10)
    for i in range(9):
        producer.send(TOPICS.messages, b"chan", _value(i), 1_000 + i)
    assert not producer.spilling
    assert producer.buffered == 9  # held in memory while Kafka has not answered
    for i in range(9, 25):
        producer.send(TOPICS.messages, b"chan", _value(i), 1_000 + i)
    assert producer.spilling  # the bound was reached: memory went to disk first, in order
    assert producer.buffered == 0
    assert spill.records_written == 25

    assert producer.close(timeout_s=0.2) == 0  # nothing left in memory to put back

    reopened = Spill(tmp_path)
    records = []
    while (record := reopened.next_record()) is not None:
        records.append((record.topic, record.key, record.value, record.timestamp))
    reopened.close()
    assert records == [(TOPICS.messages, b"chan", _value(i), 1_000 + i) for i in range(25)]


def test_restart_with_a_spill_keeps_spilling_behind_it(tmp_path: Path) -> None:
    first = Spill(tmp_path)
    producer = _producer(first, buffer=3)
    for i in range(5):
        producer.send(TOPICS.messages, b"chan", b"a%d" % i, i)
    producer.close(timeout_s=0.1)

    second = Spill(tmp_path)
    restarted = _producer(second, buffer=3)
    assert restarted.spilling  # old records first: new ones queue behind them on disk
    restarted.send(TOPICS.events, b"chan", b"new", 99)
    restarted.poll()  # no transaction can open: the old records stay where they are
    assert second.records_written == 1
    restarted.close(timeout_s=0.1)

    assert _drain_values(tmp_path) == [b"a0", b"a1", b"a2", b"a3", b"a4", b"new"]


def test_records_are_sent_directly_while_the_buffer_has_room(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    producer = _producer(spill, buffer=100)
    for i in range(5):
        producer.send(TOPICS.messages, b"chan", b"x%d" % i, i)
    assert not producer.spilling
    assert spill.records_written == 0
    assert producer.close(timeout_s=0.1) == 5
    assert _drain_values(tmp_path) == [b"x%d" % i for i in range(5)]
