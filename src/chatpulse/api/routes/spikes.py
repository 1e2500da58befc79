"""``/api/v1/channels/{channel}/spikes``: the channel's chat spikes, newest first."""

from typing import Annotated

from fastapi import APIRouter, Query

from chatpulse.api import queries
from chatpulse.api.cursors import MAX_CURSOR_CHARS, time_position
from chatpulse.api.deps import KnownChannel, ServicesDep
from chatpulse.api.routes import problems
from chatpulse.api.routes.messages import parse_time
from chatpulse.api.schemas import SpikePage

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/channels", tags=["stats"])


@router.get("/{channel}/spikes", responses=problems(400, 404, 422, 503))
async def channel_spikes(
    totals: KnownChannel,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200, description="page size")] = 50,
    before: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_CHARS,
            description="next_cursor of the previous page, or an ISO 8601 time: spikes whose "
            "window started before it",
        ),
    ] = None,
) -> SpikePage:
    """Windows whose message count was far above the channel's recent baseline (see
    docs/api.md), newest first; follow ``next_cursor`` (as ``before``) for older ones. Kept
    CHATPULSE_STATS_TTL_DAYS."""
    scope = f"spikes:{totals.channel}"
    before_ms: int | None = None
    if before is not None:
        before_ms = parse_time(before)
        if before_ms is None:
            before_ms = time_position(services.cursors.check(scope, before))
    if not totals.seen:
        return SpikePage(items=[], next_cursor=None)
    items, next_ms = await queries.spike_page(
        services.db, channel=totals.channel, before_ms=before_ms, limit=limit
    )
    next_cursor = None if next_ms is None else services.cursors.issue(scope, next_ms)
    return SpikePage(items=items, next_cursor=next_cursor)
