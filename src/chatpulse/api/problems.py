"""RFC 9457 problem documents: the one shape of every error answer, including FastAPI's own.

Handlers are installed for our errors (any ChatpulseError, answered as :func:`as_api_error`
says), Starlette's ``HTTPException`` (404 of unknown routes, 405), FastAPI's request
validation errors (422) and, as a last resort, any other exception (500, logged with its
traceback, never shown to the client).
"""

import logging
import traceback
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatpulse.api.errors import as_api_error
from chatpulse.api.log_limits import KindedLog
from chatpulse.errors import ChatpulseError

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "install_problem_handlers",
    "problem_document",
    "problem_response",
]

logger = logging.getLogger(__name__)
# One line per problem kind and interval: an outage answers every request with the same 503.
_answers = KindedLog(logger)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:chatpulse:problem:"


class Problem(BaseModel):
    """An RFC 9457 problem document (extension members allowed)."""

    model_config = {"extra": "allow"}

    type: str = Field(description="URI naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request path that failed")


def _instance(request: Request) -> str:
    """The request path as sent (percent-encoded: ``instance`` is a URI reference)."""
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path


def problem_document(
    *, status: int, detail: str, instance: str, title: str | None = None, slug: str | None = None
) -> dict[str, Any]:
    """The members of a problem document; ``type`` is ``about:blank`` when no slug names a kind."""
    return {
        "type": f"{TYPE_BASE}{slug}" if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }


def problem_response(
    request: Request,
    *,
    status: int,
    detail: str,
    title: str | None = None,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem document answer (see :func:`problem_document`)."""
    body = problem_document(
        status=status, detail=detail, instance=_instance(request), title=title, slug=slug
    )
    if extra:
        body.update(jsonable_encoder(extra))
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


async def _api_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChatpulseError)
    exc = as_api_error(exc)
    if exc.status >= 500:
        _answers.warning(
            exc.slug,
            "%s %s answered %d: %s",
            request.method,
            request.url.path,
            exc.status,
            exc,
        )
    return problem_response(
        request,
        status=exc.status,
        detail=exc.detail,
        title=exc.title,
        slug=exc.slug,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).description
    if status == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, status=status, detail=detail, headers=headers)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": error.get("type"),
        }
        for error in exc.errors()
    ]
    detail = "; ".join(_describe(error) for error in errors) or "invalid request"
    return problem_response(
        request,
        status=422,
        detail=detail,
        title="Invalid request",
        slug="validation",
        extra={"errors": errors},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A request that hits a bug can be repeated by anyone: one traceback per kind and interval.
    _answers.error(
        f"unexpected:{type(exc).__module__}.{type(exc).__qualname__}",
        "unhandled error on %s %s\n%s",
        request.method,
        request.url.path,
        "".join(traceback.format_exception(exc)).rstrip(),
    )
    return problem_response(request, status=500, detail="An unexpected error occurred.")


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error answer of ``app`` a problem document."""
    app.add_exception_handler(ChatpulseError, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
