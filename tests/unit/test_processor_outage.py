"""The processor waits out a Kafka outage in its own process and stops on anything else."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from quixstreams.models.topics.exceptions import CreateTopicFailure, CreateTopicTimeout

from chatpulse.processor.app import run_through_outages
from chatpulse.processor.outage import is_kafka_outage


def _kafka(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "x", **flags))


@pytest.mark.parametrize(
    "exc",
    [
        # what two dead brokers of three did to Application.run(): an abort that timed out
        _kafka(KafkaError._TIMED_OUT),
        _kafka(KafkaError.NOT_ENOUGH_REPLICAS),
        _kafka(KafkaError.COORDINATOR_NOT_AVAILABLE),
        _kafka(KafkaError._MSG_TIMED_OUT, txn_requires_abort=True),
        _kafka(KafkaError.UNKNOWN, retriable=True),
        # Quix's app.topic() while the controller quorum is gone
        CreateTopicFailure(
            "Failed to create topics: {'c': 'Failed while waiting for controller: Local: "
            "Timed out'}"
        ),
        CreateTopicTimeout("Timed out waiting for creation status for topics: ['c']"),
    ],
)
def test_kafka_unavailable_is_an_outage(exc: Exception) -> None:
    assert is_kafka_outage(exc)


def test_the_cause_counts() -> None:
    outer = RuntimeError("commit failed")
    outer.__cause__ = _kafka(KafkaError._TRANSPORT)
    assert is_kafka_outage(outer)
    assert not is_kafka_outage(RuntimeError("commit failed"))


@pytest.mark.parametrize(
    "exc",
    [
        _kafka(KafkaError._FENCED, fatal=True),  # a newer instance took over: stop
        _kafka(KafkaError._TIMED_OUT, fatal=True),
        _kafka(KafkaError.TOPIC_AUTHORIZATION_FAILED),
        _kafka(KafkaError.INVALID_CONFIG),
        CreateTopicFailure("Failed to create topics: {'c': 'Topic authorization failed'}"),
        ValueError("a bug"),
    ],
)
def test_anything_else_is_not(exc: Exception) -> None:
    assert not is_kafka_outage(exc)


class _Run:
    """A stand-in processor: raises the next of ``failures`` or returns (a clean stop)."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.builds = 0

    def build(self) -> "_Run":
        self.builds += 1
        return self

    def run(self) -> None:
        if self.failures:
            raise self.failures.pop(0)


def test_an_outage_rebuilds_the_pipeline_with_a_doubling_backoff() -> None:
    stub = _Run([_kafka(KafkaError._TIMED_OUT)] * 7)
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        return False

    assert run_through_outages(stub.build, sleep=sleep) == 7  # type: ignore[arg-type]
    assert stub.builds == 8
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_another_error_stops_the_processor_at_once() -> None:
    stub = _Run([_kafka(KafkaError._TIMED_OUT), ValueError("a bug")])
    with pytest.raises(ValueError, match="a bug"):
        run_through_outages(stub.build, sleep=lambda _s: False)  # type: ignore[arg-type]
    assert stub.builds == 2


def test_a_stop_during_the_backoff_ends_it_cleanly() -> None:
    stub = _Run([_kafka(KafkaError._TIMED_OUT)] * 3)
    assert run_through_outages(stub.build, sleep=lambda _s: True) == 0  # type: ignore[arg-type]
    assert stub.builds == 1
