"""What a Cassandra driver error means for the API's answer.

Only "Cassandra cannot answer now" is a 503 worth retrying: no replica up, a timeout, no
connection. A permission the API's role lacks is a 403 and a query Cassandra refuses is a 500,
both permanent until an operator acts; a keyspace or table that does not exist is a 503
"schema not initialised" (it appears when ``chatpulse init`` runs). The driver's own message
(hosts, addresses, CQL) is for the log, never for the answer.
"""

from cassandra import (
    AuthenticationFailed,
    OperationTimedOut,
    RequestValidationException,
    Timeout,
    Unauthorized,
    Unavailable,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionBusy, ConnectionException
from cassandra.protocol import IsBootstrappingErrorMessage

from chatpulse.api.errors import (
    ApiError,
    SchemaMissingError,
    StorageForbiddenError,
    StorageQueryError,
    StorageUnavailableError,
)

__all__ = ["SchemaNotFoundError", "classify_cassandra_error", "is_schema_missing"]

_TRANSIENT = (
    Unavailable,
    Timeout,
    OperationTimedOut,
    ConnectionException,
    ConnectionBusy,
    IsBootstrappingErrorMessage,
)


def is_schema_missing(exc: BaseException) -> bool:
    """Whether Cassandra refused a statement because its keyspace or table does not exist."""
    if not isinstance(exc, RequestValidationException):
        return False
    text = str(exc).lower()
    # Cassandra 3/4 say "unconfigured table x", 5 "table x does not exist" or "keyspace x
    # does not exist".
    return "unconfigured table" in text or (
        "does not exist" in text and ("keyspace" in text or "table" in text)
    )


class SchemaNotFoundError(Exception):
    """The driver's schema metadata lacks the keyspace or a table the API reads."""


def classify_cassandra_error(exc: BaseException) -> ApiError:
    """The API error to answer for ``exc`` raised by the driver (any exception accepted)."""
    if isinstance(exc, SchemaNotFoundError):
        return SchemaMissingError()
    if _login_refused(exc):
        return StorageForbiddenError(
            "Cassandra refused the API's login: an operator must check its credentials "
            "(see the API's log)."
        )
    if isinstance(exc, Unauthorized):
        return StorageForbiddenError()
    if is_schema_missing(exc):
        return SchemaMissingError()
    if isinstance(exc, (NoHostAvailable, *_TRANSIENT)):
        return StorageUnavailableError()
    # A query Cassandra refuses (RequestValidationException: invalid, syntax, configuration),
    # replicas failing it (CoordinationFailure, FunctionFailure) and anything unknown: retrying
    # the same request will not help.
    return StorageQueryError()


def _login_refused(exc: BaseException) -> bool:
    if isinstance(exc, NoHostAvailable):
        causes = list(exc.errors.values())
        return bool(causes) and all(isinstance(c, AuthenticationFailed) for c in causes)
    return isinstance(exc, AuthenticationFailed)
