"""Running the app on a real socket inside this process (tests, benchmarks, embedding).

``uvicorn.run`` owns the main thread and signals; this runs a ``uvicorn.Server`` in a daemon
thread instead and hands back its URL once it accepts connections.
"""

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

__all__ = ["serve_in_thread"]


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0
) -> Iterator[str]:
    """Serve ``app`` (lifespan included) until the block ends; yields ``http://host:port``."""
    # Live streams never end by themselves: give them 3 s on shutdown, then cancel them.
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, lifespan="on", timeout_graceful_shutdown=3
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
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
