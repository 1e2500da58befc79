"""``/healthz`` (the process runs), ``/readyz`` (Kafka and Cassandra answer), ``/metrics``."""

import asyncio

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


async def _check(name: str, probe: "asyncio.Future[None] | asyncio.Task[None]") -> str | None:
    try:
        await asyncio.wait_for(probe, timeout=3.0)
    except ApiError as exc:
        return f"{name}: {exc.detail}"
    except TimeoutError:
        return f"{name}: no answer within 3 s"
    return None


@router.get("/readyz", responses=problems(503))
async def readyz(services: ServicesDep) -> Health:
    """Readiness: Cassandra and Kafka answer and the live stream consumer is assigned."""
    failures = await asyncio.gather(
        _check("cassandra", asyncio.ensure_future(services.db.ping())),
        _check("kafka", asyncio.ensure_future(asyncio.to_thread(services.tracked.ping))),
    )
    reasons = [reason for reason in failures if reason]
    if not reasons and not services.hub.assigned.is_set():
        reasons.append("live: the channel-stats consumer is not assigned yet")
    if reasons:
        raise ApiError(
            "; ".join(reasons),
            status=503,
            title="Not ready",
            slug="not-ready",
            headers={"Retry-After": "2"},
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
