"""Reading the processed offset from a changelog partition's tail; never a silent restart.

The changelog reads go through a stand-in consumer (records, watermarks, positions); the
Kafka-down case uses a real librdkafka consumer pointed at a closed port.
"""

import json
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from chatpulse.errors import ChatpulseError, KafkaUnavailableError
from chatpulse.processor import offsets
from chatpulse.processor.errors import OffsetsLostError
from chatpulse.processor.offsets import last_processed_offset, restore_missing_offsets
from chatpulse.processor.quix_hooks import PROCESSED_OFFSETS_HEADER

SOURCE = "p-twitch-chat-messages"
CHANGELOG = "changelog__p-processor--p-twitch-chat-messages--default"


class Record:
    def __init__(self, headers: list[tuple[str, bytes]] | None, error: Any = None) -> None:
        self._headers = headers
        self._error = error

    def error(self) -> Any:
        return self._error

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def processed(offsets_by_topic: dict[str, int] | None) -> Record:
    header = json.dumps(offsets_by_topic).encode()
    return Record([("__cf_name__", b"default"), (PROCESSED_OFFSETS_HEADER, header)])


class Changelog:
    """One changelog partition as a read_committed consumer sees it: ``records[i]`` at
    offset ``low + i`` (None: an aborted record or a transaction marker, never delivered)."""

    def __init__(self, records: list[Record | None], low: int = 0, stall: bool = False) -> None:
        self.records = records
        self.low = low
        self.high = low + len(records)
        self.stall = stall  # delivers nothing and never gets further (a stuck fetch)
        self._position = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        assert tp.topic == CHANGELOG
        return self.low, self.high

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._position = partitions[0].offset

    def unassign(self) -> None:
        self._position = -1

    def consume(self, num_messages: int, timeout: float) -> list[Record]:
        if self.stall:
            return [Record(None, KafkaError(KafkaError._TRANSPORT, "broker down"))]
        batch: list[Record] = []
        while self._position < self.high and len(batch) < num_messages:
            record = self.records[self._position - self.low]
            self._position += 1
            if record is not None:
                batch.append(record)
        return batch

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(partitions[0].topic, partitions[0].partition, self._position)]


def read(changelog: Changelog) -> int | None:
    return last_processed_offset(changelog, CHANGELOG, 0, SOURCE)  # type: ignore[arg-type]


def test_the_last_records_header_says_the_processed_offset() -> None:
    records = [processed({SOURCE: n}) for n in (10, 20, 30)]
    assert read(Changelog(records, low=5)) == 30


def test_a_changelog_without_committed_records_is_a_new_state() -> None:
    assert read(Changelog([])) is None
    # a first checkpoint that was aborted: its records and marker are never delivered
    assert read(Changelog([None, None, None])) is None


def test_the_header_is_found_before_a_long_tail_without_it() -> None:
    # read further back than the first 256 records: aborted ones fill the tail
    records: list[Record | None] = [processed({SOURCE: 7}), *([None] * 1_000)]
    assert read(Changelog(records)) == 7


def test_records_without_the_header_stop_with_what_to_do() -> None:
    records: list[Record | None] = [Record(None), Record([("__cf_name__", b"default")]), None]
    with pytest.raises(OffsetsLostError) as caught:
        read(Changelog(records))
    assert str(caught.value) == (
        f"the changelog {CHANGELOG} partition 0 holds records but none carries the processed "
        f"offsets (header {PROCESSED_OFFSETS_HEADER})"
    )


def test_records_with_only_null_offsets_stop_too() -> None:
    with pytest.raises(OffsetsLostError, match="none carries the processed offsets"):
        read(Changelog([processed(None), processed(None)]))


def test_a_header_without_the_source_topic_stops() -> None:
    with pytest.raises(OffsetsLostError) as caught:
        read(Changelog([processed({SOURCE: 3}), processed({"other-topic": 9})]))
    assert str(caught.value) == (
        f"the last processed offsets in the changelog {CHANGELOG} partition 0 name no offset "
        f"of {SOURCE}"
    )


def test_a_changelog_not_read_within_the_deadline_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offsets, "_READ_TIMEOUT_S", 0.2)
    with pytest.raises(OffsetsLostError) as caught:
        read(Changelog([processed({SOURCE: 3})], stall=True))
    assert str(caught.value) == (
        f"the changelog {CHANGELOG} partition 0 could not be read within 0.2 s (broker down)"
    )


def test_kafka_not_answering_ends_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offsets, "_READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(offsets, "_TRANSIENT_RETRY_S", 0.0)  # give up at the first answer
    config = {"bootstrap.servers": "127.0.0.1:1", "socket.connection.setup.timeout.ms": "1000"}
    admin = AdminClient(config)
    with pytest.raises(KafkaUnavailableError) as caught:
        restore_missing_offsets(config, "p-processor", SOURCE, CHANGELOG, admin)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(
        f"could not read the committed offsets of group p-processor or the changelog {CHANGELOG} ("
    )
    assert text.endswith("); start the processor again once Kafka answers")
    assert isinstance(caught.value, ChatpulseError)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def _failing_then(errors: list[KafkaError], result: dict[int, int]) -> Any:
    """A stand-in for offsets._find_processed: raises ``errors`` in turn, then answers."""
    calls: list[int] = []

    def find(*_args: Any) -> dict[int, int]:
        calls.append(1)
        if len(calls) <= len(errors):
            raise KafkaException(errors[len(calls) - 1])
        return result

    find.calls = calls  # type: ignore[attr-defined]
    return find


def test_a_moving_leader_is_read_again_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    # A changelog another instance has just created answers NOT_LEADER_FOR_PARTITION for a
    # moment (seen in the two-instance recovery test on a loaded machine).
    find = _failing_then(
        [
            KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION),
            KafkaError(KafkaError.LEADER_NOT_AVAILABLE),
        ],
        {0: 42},
    )
    monkeypatch.setattr(offsets, "_find_processed", find)
    monkeypatch.setattr(offsets.time, "sleep", lambda _s: None)
    assert offsets._find_processed_retrying({}, "g", SOURCE, CHANGELOG) == {0: 42}
    assert len(find.calls) == 3


def test_a_lasting_error_is_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    find = _failing_then([KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)], {0: 42})
    monkeypatch.setattr(offsets, "_find_processed", find)
    monkeypatch.setattr(offsets.time, "sleep", lambda _s: None)
    with pytest.raises(KafkaException):
        offsets._find_processed_retrying({}, "g", SOURCE, CHANGELOG)
    assert len(find.calls) == 1


def test_a_passing_error_gives_up_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    find = _failing_then([KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)] * 1000, {})
    monkeypatch.setattr(offsets, "_find_processed", find)
    monkeypatch.setattr(offsets, "_TRANSIENT_RETRY_S", 0.0)
    with pytest.raises(KafkaException):
        offsets._find_processed_retrying({}, "g", SOURCE, CHANGELOG)
    assert len(find.calls) == 1
