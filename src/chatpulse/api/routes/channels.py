"""``/api/v1/channels``: list, summary, track and untrack."""

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from chatpulse.api import queries
from chatpulse.api.cursors import MAX_CURSOR_CHARS, token_position
from chatpulse.api.deps import ChannelName, ServicesDep, known_totals
from chatpulse.api.errors import ApiError
from chatpulse.api.routes import cached_json, problems
from chatpulse.api.schemas import (
    ChannelPage,
    ChannelSummary,
    TrackRequest,
    TrackResult,
    ms_to_datetime,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/channels", tags=["channels"])

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def _require_api_key(
    services: ServicesDep, given: Annotated[str | None, Security(_api_key_header)]
) -> None:
    expected = services.settings.api_key
    if expected is None:
        raise ApiError(
            "Writes are disabled: set CHATPULSE_API_KEY to a secret, restart the API and send "
            "that secret in the X-API-Key header.",
            status=403,
            title="Writes disabled",
            slug="writes-disabled",
        )
    secret = expected.get_secret_value().encode()
    if given is None or not hmac.compare_digest(given.encode(), secret):
        raise ApiError(
            "Send the value of CHATPULSE_API_KEY in the X-API-Key header.",
            status=401,
            title="Unauthorized",
            slug="bad-api-key",
        )


WriteAccess = Depends(_require_api_key)


@router.get(
    "",
    response_model=ChannelPage,
    response_class=JSONResponse,
    responses=problems(400, 422, 503),
)
async def list_channels(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_CHARS, description="next_cursor of the previous page"),
    ] = None,
) -> Response:
    """Every channel seen (totals) or tracked, in a stable order, one page at a time
    (answers may be up to 1 s old)."""
    after = None
    if cursor is not None:
        after = token_position(services.cursors.check("channels", cursor))

    async def page() -> ChannelPage:
        items, next_token = await queries.channel_page(
            services.db, tracked=services.tracked.channels, after_token=after, limit=limit
        )
        next_cursor = None if next_token is None else services.cursors.issue("channels", next_token)
        return ChannelPage(items=items, next_cursor=next_cursor)

    return await cached_json(services, ("channels", after, limit), page)


@router.get(
    "/{channel}",
    response_model=ChannelSummary,
    response_class=JSONResponse,
    responses=problems(404, 422, 503),
)
async def channel_summary(channel: ChannelName, services: ServicesDep) -> Response:
    """Totals and the newest window of each size (answers may be up to 1 s old)."""

    async def summary() -> ChannelSummary:
        totals = await known_totals(services, channel)
        windows = dict.fromkeys(services.windows)
        if totals.seen:
            windows = await queries.latest_windows(
                services.db, totals=totals, windows=services.windows
            )
        return ChannelSummary(
            channel=totals.channel,
            total_messages=totals.total_messages,
            first_seen=ms_to_datetime(totals.first_seen_ms) if totals.seen else None,
            last_seen=ms_to_datetime(totals.last_seen_ms) if totals.seen else None,
            tracked=services.tracked.is_tracked(totals.channel),
            windows=windows,
        )

    return await cached_json(services, ("summary", channel), summary)


@router.post(
    "",
    status_code=202,
    dependencies=[WriteAccess],
    responses=problems(400, 401, 403, 413, 422, 503),
)
async def track_channel(body: TrackRequest, services: ServicesDep) -> TrackResult:
    """Track a channel: ingest joins it (written to the compacted tracked-channels topic)."""
    await services.tracked.set_tracked(body.channel, tracked=True)
    services.cache.clear()
    return TrackResult(channel=body.channel, tracked=True)


@router.delete(
    "/{channel}",
    status_code=202,
    dependencies=[WriteAccess],
    responses=problems(401, 403, 422, 503),
)
async def untrack_channel(channel: ChannelName, services: ServicesDep) -> TrackResult:
    """Untrack a channel (a tombstone on tracked-channels); its history stays readable."""
    await services.tracked.set_tracked(channel, tracked=False)
    services.cache.clear()
    return TrackResult(channel=channel, tracked=False)
