"""SpillDrain with a real Spill on disk and a Sender whose producer is a stand-in (no network)."""

from pathlib import Path

from chatpulse.ingest.deadlettering import DeadLetters
from chatpulse.ingest.entry import Entry
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.sender import Sender
from chatpulse.ingest.spill import Spill
from chatpulse.ingest.spill_drain import SpillDrain

TOPIC = "unit-messages"
DEADLETTER = "unit-deadletter"


class _Librdkafka:
    """produce() as librdkafka's: takes records until its queue is full (``full``)."""

    def __init__(self) -> None:
        self.full = False
        self.produced: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, *, timestamp: int) -> None:
        if self.full:
            raise BufferError("queue full")
        self.produced.append(value)


def _sender(producer: _Librdkafka, spill: Spill) -> Sender:
    return Sender(
        producer,  # type: ignore[arg-type]
        DeadLetters(DEADLETTER, IngestMetrics()),
        [TOPIC, DEADLETTER],
        txn_max=10,
        acknowledge=spill.acknowledge,
    )


def _values_on_disk(directory: Path) -> list[bytes]:
    spill = Spill(directory)
    values = []
    while (record := spill.next_record()) is not None:
        values.append(record.value)
    spill.close()
    return values


def test_a_record_read_from_the_spill_is_never_spilled_again(tmp_path: Path) -> None:
    first = Spill(tmp_path)
    first.append(TOPIC, b"chan", b"from the spill", 1_000)
    first.close()

    spill = Spill(tmp_path)  # a restart: the record waits in the spill, unacknowledged
    producer = _Librdkafka()
    sender = _sender(producer, spill)
    drain = SpillDrain(spill, sender)
    assert drain.spilling
    drain.drain()  # read into the open transaction; the reader caught up with the writer
    assert producer.produced == [b"from the spill"]
    assert not drain.spilling

    producer.full = True  # Kafka away: the abort's resend cannot hand it to librdkafka
    sender.resend()
    assert [entry.value for entry in sender.pending] == [b"from the spill"]
    sender.pending.append(Entry(TOPIC, b"chan", b"sent directly", 2_000, drain.slot))
    drain.start_spilling()  # memory full
    assert drain.spilling
    # The spill-read record stays in memory, first in line; only the direct one is spilled.
    assert [entry.value for entry in sender.pending] == [b"from the spill"]
    spill.close()  # the process ends before Kafka is back (the pending record is not put back)

    assert _values_on_disk(tmp_path) == [b"from the spill", b"sent directly"]
