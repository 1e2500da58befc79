"""Thin routers, one per resource."""

from typing import Any

from chatpulse.api.problems import PROBLEM_MEDIA_TYPE, Problem

__all__ = ["problems"]

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
