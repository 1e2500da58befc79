"""``/api/v1/channels/{channel}/live``: Server-Sent Events of the channel's WindowStats updates.

Uses FastAPI's own SSE support (``EventSourceResponse``), which also sends a ``: ping`` comment
after 15 s without an event and cancels this generator when the client goes away.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from chatpulse.api.deps import KnownChannel, ServicesDep, check_window
from chatpulse.api.routes import problems

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/channels", tags=["live"])


async def _window_filter(
    services: ServicesDep,
    window: Annotated[str | None, Query(description="only updates of this window size")] = None,
) -> str | None:
    # Checked here, not in the generator: once streaming starts no error answer is possible.
    if window is not None:
        check_window(services, window)
    return window


async def _stream_slot(services: ServicesDep) -> AsyncIterator[None]:
    """One of the instance's live-stream places, held until the stream ends (503 if none)."""
    # async: a sync dependency would run in a worker thread, racing for the last place.
    with services.hub.slot():
        yield


@router.get(
    "/{channel}/live",
    response_class=EventSourceResponse,
    # First, so a request past the cap costs no Cassandra query; held until the stream ends.
    dependencies=[Depends(_stream_slot, scope="request")],
    responses=problems(404, 422, 503),
)
async def live_stats(
    totals: KnownChannel,
    services: ServicesDep,
    window: Annotated[str | None, Depends(_window_filter)],
) -> AsyncIterator[ServerSentEvent]:
    """Each WindowStats update (JSON in ``data``) as it is produced, and each chat spike as an
    event named ``spike`` (a SpikeOut in ``data``); comments as heartbeats."""
    async with services.hub.subscribe(totals.channel) as updates:
        yield ServerSentEvent(comment="connected", retry=2000)
        while True:
            size, event, payload = await updates.get()
            if window is None or size == window:
                yield ServerSentEvent(raw_data=payload, event=event or None)
