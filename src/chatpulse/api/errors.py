"""Errors of the API service, each rendered as an RFC 9457 problem document.

ChatpulseError
 └── ApiError                  an HTTP answer other than 2xx, with a problem ``type`` slug
      ├── NotFoundError               404, e.g. an unknown channel
      ├── BadCursorError              400, a cursor that is not ours or not for this query
      ├── StorageForbiddenError       403, the API's Cassandra/Kafka principal lacks a permission
      ├── StorageQueryError           500, Cassandra or Kafka refused a request for good
      ├── StorageUnavailableError     503, Cassandra cannot answer right now (retry later)
      ├── SchemaMissingError          503, keyspace, tables or topics not created: run ``init``
      └── LiveStreamsFullError        503, the cap on open live streams is reached

A retriable error (``retriable`` True) tells the client to try again: its answer carries
``Retry-After``. Errors raised below the API by shared modules (``KafkaUnavailableError``,
``CassandraUnavailableError``, ...) become answers through :func:`as_api_error`: 503 with
``Retry-After`` when retriable, 500 otherwise.

Details are read by anonymous clients: they say what failed in general words, never a host, an
address or a driver's message (those go to the API's log).
"""

from typing import Any

from chatpulse.errors import CassandraUnavailableError, ChatpulseError, KafkaUnavailableError

__all__ = [
    "ApiError",
    "BadCursorError",
    "LiveStreamsFullError",
    "NotFoundError",
    "SchemaMissingError",
    "StorageForbiddenError",
    "StorageQueryError",
    "StorageUnavailableError",
    "as_api_error",
]


class ApiError(ChatpulseError):
    """An error answer: ``status``, a short ``title``, a ``slug`` naming its type, a ``detail``.

    ``retriable`` (the class's, unless given) adds ``Retry-After: retry_after_s``.
    """

    status = 500
    title = "Internal Server Error"
    slug = "internal"
    retry_after_s = 2

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        retriable: bool | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status or self.status
        self.title = title or self.title
        self.slug = slug or self.slug
        if retriable is not None:
            self.retriable = retriable
        self.headers = dict(headers or {})
        if self.retriable:
            self.headers.setdefault("Retry-After", str(self.retry_after_s))
        self.extra = extra or {}


class NotFoundError(ApiError):
    status = 404
    title = "Not Found"
    slug = "not-found"


class BadCursorError(ApiError):
    status = 400
    title = "Invalid cursor"
    slug = "invalid-cursor"


class StorageForbiddenError(ApiError):
    status = 403
    title = "Storage access denied"
    slug = "storage-forbidden"

    def __init__(
        self,
        detail: str = "Cassandra refused the API this read: its role lacks a permission an "
        "operator must grant (see the API's log).",
    ) -> None:
        super().__init__(detail)


class StorageQueryError(ApiError):
    status = 500
    title = "Storage query failed"
    slug = "storage-query-failed"

    def __init__(self, what: str = "Cassandra") -> None:
        super().__init__(
            f"{what} refused the API's request; retrying will not help. The reason is in the "
            "API's log."
        )


class StorageUnavailableError(ApiError):
    status = 503
    title = "Storage unavailable"
    slug = "storage-unavailable"
    retriable = True

    def __init__(self, detail: str = "Cassandra is unavailable; retry later.") -> None:
        super().__init__(detail)


class SchemaMissingError(ApiError):
    status = 503
    title = "Schema not initialised"
    slug = "schema-not-initialised"
    retriable = True  # once an operator has run ``chatpulse init``
    retry_after_s = 10

    def __init__(self, what: str = "the Cassandra keyspace or its tables") -> None:
        super().__init__(
            f"Schema not initialised: {what} do not exist; an operator must run `chatpulse init`."
        )


class LiveStreamsFullError(ApiError):
    status = 503
    title = "Too many live streams"
    slug = "live-streams-full"
    retriable = True
    retry_after_s = 5

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This API instance already serves its limit of {limit} live streams; retry later."
        )


# (title, slug) of the shared errors the API lets through
_SHARED: tuple[tuple[type[ChatpulseError], str, str], ...] = (
    (KafkaUnavailableError, "Kafka unavailable", "kafka-unavailable"),
    (CassandraUnavailableError, "Storage unavailable", "storage-unavailable"),
)


def as_api_error(exc: ChatpulseError) -> ApiError:
    """The answer to ``exc``: itself for an ApiError, else 503 (retriable) or 500."""
    if isinstance(exc, ApiError):
        return exc
    title, slug = next(((t, s) for kind, t, s in _SHARED if isinstance(exc, kind)), (None, None))
    return ApiError(
        str(exc),
        status=503 if exc.retriable else 500,
        title=title,
        slug=slug,
        retriable=exc.retriable,
    )
