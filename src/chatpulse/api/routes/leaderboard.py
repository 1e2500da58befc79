"""``/api/v1/leaderboard``: channels of the newest window, most messages first."""

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from chatpulse.api import queries
from chatpulse.api.deps import ServicesDep, check_window
from chatpulse.api.routes import cached_json, problems
from chatpulse.api.schemas import LeaderboardOut

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["leaderboard"])


@router.get(
    "/leaderboard",
    response_model=LeaderboardOut,
    response_class=JSONResponse,
    responses=problems(422, 503),
)
async def get_leaderboard(
    services: ServicesDep,
    window: Annotated[str, Query(description="window size (configured: 1m, 10m, 1h)")] = "10m",
    limit: Annotated[int, Query(ge=1, le=100, description="most channels returned")] = 10,
) -> Response:
    """The newest window of ``window`` size across all channels (may be up to 1 s old)."""
    check_window(services, window)

    async def board() -> LeaderboardOut:
        return await queries.leaderboard(services.db, window=window, limit=limit)

    return await cached_json(services, ("leaderboard", window, limit), board)
