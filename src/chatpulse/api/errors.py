"""Errors of the API service, each rendered as an RFC 9457 problem document.

ChatpulseError
 └── ApiError                  an HTTP answer other than 2xx, with a problem ``type`` slug
      ├── NotFoundError               404, e.g. an unknown channel
      ├── BadCursorError              400, a cursor that is not ours or not for this query
      ├── StorageUnavailableError     503, Cassandra cannot answer right now (retry later)
      ├── KafkaUnavailableError       503, Kafka cannot take or give records right now
      └── LiveStreamsFullError        503, the cap on open live streams is reached
"""

from typing import Any

from chatpulse.errors import ChatpulseError

__all__ = [
    "ApiError",
    "BadCursorError",
    "KafkaUnavailableError",
    "LiveStreamsFullError",
    "NotFoundError",
    "StorageUnavailableError",
]


class ApiError(ChatpulseError):
    """An error answer: ``status``, a short ``title``, a ``slug`` naming its type, a ``detail``."""

    status = 500
    title = "Internal Server Error"
    slug = "internal"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status or self.status
        self.title = title or self.title
        self.slug = slug or self.slug
        self.headers = headers or {}
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

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "2"})


class KafkaUnavailableError(ApiError):
    status = 503
    title = "Kafka unavailable"
    slug = "kafka-unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "2"})


class LiveStreamsFullError(ApiError):
    status = 503
    title = "Too many live streams"
    slug = "live-streams-full"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This API instance already serves its limit of {limit} live streams; retry later.",
            headers={"Retry-After": "5"},
        )
