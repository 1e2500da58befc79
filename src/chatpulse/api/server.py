"""Running the app on a real socket inside this process (tests, benchmarks, embedding).

``uvicorn.run`` owns the main thread and signals; this runs a ``uvicorn.Server`` in a daemon
thread instead and hands back its URL once it accepts connections.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from chatpulse.settings import Settings

__all__ = ["serve_in_thread", "tls_options"]


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's arguments for HTTPS with CHATPULSE_API_TLS_* (empty: plain HTTP)."""
    if settings.api_tls_cert is None or settings.api_tls_key is None:
        return {}
    password = settings.api_tls_key_password
    return {
        "ssl_certfile": str(settings.api_tls_cert),
        "ssl_keyfile": str(settings.api_tls_key),
        "ssl_keyfile_password": password.get_secret_value() if password else None,
    }


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_s: float = 30.0,
    tls: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Serve ``app`` (lifespan included) until the block ends; yields ``http://host:port``,
    or ``https://`` with ``tls`` (:func:`tls_options`)."""
    # Live streams never end by themselves: give them 3 s on shutdown, then cancel them.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=3,
        **(tls or {}),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
