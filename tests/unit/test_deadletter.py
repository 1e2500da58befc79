"""Dead-letter values (shared by ingest and processor) and the ingest's refusal rule."""

import msgspec
import pytest
from confluent_kafka import KafkaError

from chatpulse.deadletter import deadletter_value
from chatpulse.ingest.deadlettering import Verdict, refused_for_good, verdict


def test_a_short_raw_input_is_kept_whole_with_its_length() -> None:
    value = msgspec.json.decode(
        deadletter_value("PRIVMSG #a :hé", "bad", source="irc", connection="3")
    )
    assert value["raw"] == "PRIVMSG #a :hé"
    assert value["raw_length"] == len("PRIVMSG #a :hé".encode())
    assert (value["source"], value["reason"], value["connection"]) == ("irc", "bad", "3")
    assert "partition" not in value


def test_a_long_raw_input_is_cut_to_the_bound_and_records_its_length() -> None:
    raw = "é" * 10_000  # 20,000 bytes; the cut falls inside a character
    encoded = deadletter_value(raw, "too long", source="irc", raw_max_bytes=1_001)
    value = msgspec.json.decode(encoded)
    assert value["raw_length"] == 20_000
    assert value["raw"] == "é" * 500 + "\\xc3"  # the cut half-character escaped, not lost
    assert len(encoded) < 1_400


def test_bytes_and_location_as_the_processor_gives_them() -> None:
    value = msgspec.json.decode(
        deadletter_value(b"\xff{", "invalid", source="t-msgs", partition=3, offset=42)
    )
    assert (value["raw"], value["raw_length"]) == ("\\xff{", 2)
    assert (value["partition"], value["offset"]) == (3, 42)
    assert value["raw"] == "\\xff{"


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE
        KafkaError.POLICY_VIOLATION,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError._INVALID_ARG,
        KafkaError._BAD_MSG,
    ],
)
def test_errors_about_the_record_refuse_it_for_good(code: int) -> None:
    assert verdict(KafkaError(code)) is Verdict.REFUSED
    assert refused_for_good(KafkaError(code))


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.UNKNOWN_TOPIC_OR_PART,  # the topic was deleted (or is being recreated)
        KafkaError.UNKNOWN_TOPIC_ID,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,  # an ACL mistake
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,  # the topic's configuration
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.UNKNOWN,  # a broker error librdkafka cannot name
        150,  # a code a newer broker adds
    ],
)
def test_errors_about_the_topic_or_permissions_or_unknown_hold_the_records(code: int) -> None:
    assert verdict(KafkaError(code)) is Verdict.HELD
    assert not refused_for_good(KafkaError(code))


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._PURGE_QUEUE,
        KafkaError._STATE,
        KafkaError._FENCED,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.PRODUCER_FENCED,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    ],
)
def test_errors_about_the_connection_or_the_producer_send_it_again(code: int) -> None:
    assert verdict(KafkaError(code)) is Verdict.RETRY
    assert not refused_for_good(KafkaError(code))
