"""Errors of the API service, each rendered as an RFC 9457 problem document.

ChatpulseError
 └── ApiError                  an HTTP answer other than 2xx, with a problem ``type`` slug
      ├── NotFoundError               404, e.g. an unknown channel
      ├── BadCursorError              400, a cursor that is not ours or not for this query
      ├── StorageUnavailableError     503, Cassandra cannot answer right now (retry later)
      └── LiveStreamsFullError        503, the cap on open live streams is reached

A retriable error (``retriable`` True) tells the client to try again: its answer carries
``Retry-After``. Errors raised below the API by shared modules (``KafkaUnavailableError``,
``CassandraUnavailableError``, ...) become answers through :func:`as_api_error`: 503 with
``Retry-After`` when retriable, 500 otherwise.
"""

from typing import Any

from chatpulse.errors import CassandraUnavailableError, ChatpulseError, KafkaUnavailableError

__all__ = [
    "ApiError",
    "BadCursorError",
    "LiveStreamsFullError",
    "NotFoundError",
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


class StorageUnavailableError(ApiError):
    status = 503
    title = "Storage unavailable"
    slug = "storage-unavailable"
    retriable = True


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
