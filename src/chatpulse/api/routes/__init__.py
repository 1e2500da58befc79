"""Thin routers, one per resource."""

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from chatpulse.api.problems import PROBLEM_MEDIA_TYPE, Problem
from chatpulse.api.services import Services

__all__ = ["cached_json", "problems"]

_DESCRIPTIONS = {
    400: "Bad request (a cursor not valid for this query, or a body that is not JSON)",
    401: "Missing or wrong X-API-Key",
    403: "Writes are disabled (no CHATPULSE_API_KEY configured)",
    404: "Unknown channel",
    413: "The request body is larger than CHATPULSE_API_MAX_BODY_BYTES",
    422: "Invalid parameter",
    503: "Cassandra or Kafka is unavailable (or, for live streams, too many are open); "
    "retry after Retry-After",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem-document answers."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": Problem.model_json_schema()}},
        }
        for status in statuses
    }


async def cached_json(
    services: Services, key: Hashable, compute: Callable[[], Awaitable[BaseModel]]
) -> Response:
    """``compute()``'s JSON through the response cache, with ``Age`` when it is a copy (a
    stale one, up to CHATPULSE_API_STALE_IF_ERROR_S old, in place of a storage timeout)."""
    body, age_s = await services.cache.answer(key, compute)
    headers = {"Age": str(int(age_s))} if age_s > 0 else None
    return Response(body, media_type="application/json", headers=headers)
