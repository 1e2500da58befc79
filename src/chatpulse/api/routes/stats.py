"""``/api/v1/channels/{channel}/stats``: windows of one size over a bounded time range."""

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from chatpulse.api import queries
from chatpulse.api.deps import ChannelName, ServicesDep, check_window, known_totals
from chatpulse.api.errors import ApiError
from chatpulse.api.queries import Totals
from chatpulse.api.routes import cached_json, problems
from chatpulse.api.schemas import StatsOut, to_ms
from chatpulse.api.services import Services

__all__ = ["MAX_SPAN", "router"]

router = APIRouter(prefix="/api/v1/channels", tags=["stats"])

MAX_SPAN = timedelta(days=31)


def _invalid(detail: str) -> ApiError:
    return ApiError(detail, status=422, title="Invalid request", slug="validation")


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _iso_8601_only(value: Any) -> Any:
    """Pydantic would read ``from=0.0`` as a Unix time; the API documents ISO 8601 only."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 time such as 2026-11-27T12:00:00Z, not a number")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_8601_only)]


@router.get(
    "/{channel}/stats",
    response_model=StatsOut,
    response_class=JSONResponse,
    responses=problems(404, 422, 503),
)
async def channel_stats(
    *,
    channel: ChannelName,
    services: ServicesDep,
    window: Annotated[str, Query(description="window size (configured: 1m, 10m, 1h)")] = "1m",
    from_: Annotated[
        IsoTime | None,
        Query(
            alias="from",
            description="windows starting at or after (ISO 8601; default to - 31 days)",
        ),
    ] = None,
    to: Annotated[
        IsoTime | None,
        Query(
            description="windows starting before (ISO 8601; default after last_seen, <= from+31d)"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1440, description="most windows returned")] = 60,
) -> Response:
    """Windows of ``window`` size starting in ``[from, to)``, newest first (span at most 31 days).

    Times without a zone are UTC. Answers may be up to 1 s old.
    """
    size_ms = check_window(services, window)

    async def stats() -> StatsOut:
        totals = await known_totals(services, channel)
        return await _stats(
            services, totals, window=window, size_ms=size_ms, from_=from_, to=to, limit=limit
        )

    return await cached_json(services, ("stats", channel, window, from_, to, limit), stats)


async def _stats(
    services: Services,
    totals: Totals,
    *,
    window: str,
    size_ms: int,
    from_: datetime | None,
    to: datetime | None,
    limit: int,
) -> StatsOut:
    span_ms = MAX_SPAN // timedelta(milliseconds=1)
    newest_ms = max(totals.last_seen_ms, 0) + 1
    if from_ is None:
        to_ms_ = to_ms(to) if to is not None else newest_ms
        from_ms = to_ms_ - span_ms
    else:
        from_ms = to_ms(from_)
        to_ms_ = to_ms(to) if to is not None else min(from_ms + span_ms, max(newest_ms, from_ms))
    if from_ms > to_ms_:
        raise _invalid("from must not be after to")
    if to_ms_ - from_ms > span_ms:
        raise _invalid(f"from..to may span at most {MAX_SPAN.days} days")
    items = []
    if totals.seen:
        items = await queries.window_stats(
            services.db,
            totals=totals,
            window=window,
            size_ms=size_ms,
            from_ms=from_ms,
            to_ms=to_ms_,
            limit=limit,
        )
    return StatsOut(channel=totals.channel, window=window, items=items)
