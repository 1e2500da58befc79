"""``chatpulse api``: serve the REST API, the live stream and the dashboard with uvicorn."""

import os
from typing import Annotated

import typer
import uvicorn

from chatpulse.api.app import CACHE_TTL_ENV, create_app
from chatpulse.api.server import tls_options
from chatpulse.logs import configure_logging
from chatpulse.settings import load_settings

__all__ = ["api_command"]

# Live streams never end by themselves: on Ctrl-C/SIGTERM they get this long, then are closed.
_GRACE_S = 3
_WORKER_HEALTHCHECK_S = 60


def api_command(
    host: Annotated[
        str | None, typer.Option(help="bind address (default CHATPULSE_API_HOST, 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port (default CHATPULSE_API_PORT, 8000)", min=0, max=65535)
    ] = None,
    workers: Annotated[
        int, typer.Option(help="uvicorn worker processes (each has its own Kafka consumer)", min=1)
    ] = 1,
    cache_ttl: Annotated[
        float,
        typer.Option(
            help="seconds a summary/stats/leaderboard answer may be reused (0: off)", min=0
        ),
    ] = 1.0,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /docs), live SSE streams and the dashboard at /.

    HTTPS when CHATPULSE_API_TLS_CERT and CHATPULSE_API_TLS_KEY are set. Ctrl-C or SIGTERM
    stops it gracefully (open live streams are closed).
    """
    configure_logging()
    settings = load_settings(api_host=host, api_port=port)
    if workers == 1:
        app = create_app(settings, cache_ttl_s=cache_ttl)
        uvicorn.run(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            timeout_graceful_shutdown=_GRACE_S,
            **tls_options(settings),
        )
        return
    # Worker processes build their own app from the environment: share the overrides with
    # them (cursors need nothing shared: any instance reads any instance's).
    os.environ[CACHE_TTL_ENV] = str(cache_ttl)
    os.environ["CHATPULSE_API_HOST"] = settings.api_host
    os.environ["CHATPULSE_API_PORT"] = str(settings.api_port)
    uvicorn.run(
        "chatpulse.api.app:app_from_env",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        log_config=None,
        timeout_graceful_shutdown=_GRACE_S,
        # uvicorn kills a worker that misses a 5 s health ping; a worker's start (imports, the
        # Cassandra session) takes longer than that on a busy 2-core machine.
        timeout_worker_healthcheck=_WORKER_HEALTHCHECK_S,
        **tls_options(settings),
    )
