"""``/healthz`` (the process runs), ``/readyz`` (Kafka and Cassandra answer), ``/metrics``."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chatpulse.api.deps import ServicesDep
from chatpulse.api.errors import ApiError
from chatpulse.api.routes import problems
from chatpulse.api.schemas import Health

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: answers while the process serves requests."""
    return Health(status="ok")


@router.get("/readyz", responses=problems(503))
async def readyz(services: ServicesDep) -> Health:
    """Readiness: Cassandra and Kafka answer and the live stream consumer is assigned.

    The verdict is at most CHATPULSE_API_READINESS_TTL_S old (one real check per period).
    """
    reasons = await services.readiness.reasons()
    if reasons:
        raise ApiError(
            "; ".join(reasons),
            status=503,
            title="Not ready",
            slug="not-ready",
            retriable=True,
        )
    return Health(status="ready", checks={"cassandra": "ok", "kafka": "ok", "live": "ok"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
