"""Driver errors mapped to API answers: only "cannot answer now" is a retriable 503."""

import pytest
from cassandra import (
    AuthenticationFailed,
    InvalidRequest,
    OperationTimedOut,
    ReadFailure,
    ReadTimeout,
    Unauthorized,
    Unavailable,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown
from cassandra.protocol import ServerError, SyntaxException
from confluent_kafka import KafkaError

from chatpulse.api.driver_errors import SchemaNotFoundError, classify_cassandra_error
from chatpulse.api.errors import ApiError, as_api_error
from chatpulse.api.tracked import classify_kafka_error

HOST = "10.1.2.3:9042"


def _server_error(cls: type[Exception], text: str) -> Exception:
    return cls(0x2000, text, None)  # type: ignore[call-arg]


CASES: list[tuple[BaseException, int, str, bool]] = [
    (
        Unauthorized(f"User api has no SELECT permission on <table ks.messages> at {HOST}"),
        403,
        "storage-forbidden",
        False,
    ),
    (
        NoHostAvailable("Unable to connect", {HOST: AuthenticationFailed("bad credentials")}),
        403,
        "storage-forbidden",
        False,
    ),
    (
        InvalidRequest(
            'Error from server: code=2200 [Invalid query] message="Undefined column name record"'
        ),
        500,
        "storage-query-failed",
        False,
    ),
    (
        _server_error(SyntaxException, "line 1:7 no viable alternative"),
        500,
        "storage-query-failed",
        False,
    ),
    (
        _server_error(ServerError, f"java.lang.AssertionError at {HOST}"),
        500,
        "storage-query-failed",
        False,
    ),
    (
        ReadFailure("Replica(s) failed to execute read", failures=1),
        500,
        "storage-query-failed",
        False,
    ),
    (
        InvalidRequest(
            'Error from server: code=2200 [Invalid query] message="Keyspace t_x does not exist"'
        ),
        503,
        "schema-not-initialised",
        True,
    ),
    (InvalidRequest("unconfigured table messages"), 503, "schema-not-initialised", True),
    (
        InvalidRequest('code=2200 [Invalid query] message="table channel_totals does not exist"'),
        503,
        "schema-not-initialised",
        True,
    ),
    (
        SchemaNotFoundError("keyspace ks lacks the tables messages"),
        503,
        "schema-not-initialised",
        True,
    ),
    (
        Unavailable("Cannot achieve consistency level ONE", required_replicas=1, alive_replicas=0),
        503,
        "storage-unavailable",
        True,
    ),
    (
        ReadTimeout("Operation timed out - received only 0 responses."),
        503,
        "storage-unavailable",
        True,
    ),
    (
        OperationTimedOut(errors={HOST: "timed out"}, last_host=HOST),
        503,
        "storage-unavailable",
        True,
    ),
    (
        NoHostAvailable("Unable to connect", {HOST: ConnectionRefusedError(111, "refused")}),
        503,
        "storage-unavailable",
        True,
    ),
    (ConnectionShutdown(f"Connection to {HOST} was closed"), 503, "storage-unavailable", True),
    (RuntimeError(f"something new from {HOST}"), 500, "storage-query-failed", False),
]


@pytest.mark.parametrize(("exc", "status", "slug", "retriable"), CASES)
def test_cassandra_errors(exc: BaseException, status: int, slug: str, retriable: bool) -> None:
    answer = classify_cassandra_error(exc)
    assert (answer.status, answer.slug, answer.retriable) == (status, slug, retriable)
    assert ("Retry-After" in answer.headers) == retriable
    _reveals_nothing(answer)


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (
            KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Not authorized"),
            403,
            "storage-forbidden",
        ),
        (
            KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Unknown topic"),
            503,
            "schema-not-initialised",
        ),
        (KafkaError(KafkaError._MSG_TIMED_OUT, f"timed out to {HOST}"), 503, "kafka-unavailable"),
        (
            KafkaError(KafkaError.NOT_ENOUGH_REPLICAS, "retry", retriable=True),
            503,
            "kafka-unavailable",
        ),
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"), 500, "storage-query-failed"),
    ],
)
def test_kafka_write_errors(error: KafkaError, status: int, slug: str) -> None:
    answer = as_api_error(classify_kafka_error(error))
    assert (answer.status, answer.slug) == (status, slug)
    _reveals_nothing(answer)


def _reveals_nothing(answer: ApiError) -> None:
    for secret in ("10.1.2.3", "9042", "SELECT", "Undefined", "java", "Connection", "timed out"):
        assert secret not in answer.detail
