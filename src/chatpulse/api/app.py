"""The FastAPI application factory: routers, problem documents, metrics, dashboard, lifespan."""

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from chatpulse.api.limits import BodyLimitMiddleware
from chatpulse.api.metrics import MetricsMiddleware
from chatpulse.api.problems import install_problem_handlers
from chatpulse.api.routes import (
    channels,
    health,
    leaderboard,
    live,
    messages,
    spikes,
    stats,
    users,
)
from chatpulse.api.security import SecurityHeadersMiddleware, add_docs_pages
from chatpulse.api.services import running_services
from chatpulse.settings import Settings, load_settings

__all__ = ["CACHE_TTL_ENV", "app_from_env", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
CACHE_TTL_ENV = "CHATPULSE_API_CACHE_TTL"


def create_app(settings: Settings, *, cache_ttl_s: float = 1.0) -> FastAPI:
    """A ready-to-serve app; Cassandra and Kafka are connected by its lifespan.

    ``cache_ttl_s``: how old a cached summary/stats/leaderboard answer may be (0: no cache).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_services(settings, cache_ttl_s) as services:
            app.state.services = services
            yield

    app = FastAPI(
        title="chatpulse",
        summary="Real-time Twitch chat analytics: REST API, live stream and dashboard.",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,  # added below, under their own content security policy
        redoc_url=None,
    )
    install_problem_handlers(app)
    # Inside the metrics (so refusals are counted), outside everything that reads a body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    # Outermost: every answer gets the headers, refusals of the inner layers included.
    app.add_middleware(SecurityHeadersMiddleware)
    for module in (channels, stats, spikes, messages, users, live, leaderboard, health):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    add_docs_pages(app, app.title)
    _document_windows(app, settings.windows)
    return app


def _document_windows(app: FastAPI, windows: list[str]) -> None:
    """Make the configured window sizes an enum in the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for parameter in operation.get("parameters", []):
                        if parameter.get("name") == "window":
                            target = parameter["schema"]
                            for option in target.get("anyOf", [target]):
                                if option.get("type") == "string":
                                    option["enum"] = list(windows)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one per worker process): settings from the env."""
    ttl = float(os.environ.get(CACHE_TTL_ENV, "1.0"))
    return create_app(load_settings(), cache_ttl_s=ttl)
