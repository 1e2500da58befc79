"""Prometheus metrics of the HTTP layer: requests and latency per route template.

A plain ASGI middleware (not ``BaseHTTPMiddleware``) so it adds microseconds, and labels use the
route template (``/api/v1/channels/{channel}``) so label values stay few.
"""

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MetricsMiddleware"]

REQUESTS = Counter(
    "chatpulse_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "chatpulse_api_request_seconds",
    "Time to the response's first byte",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        recorded = False

        def record() -> None:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            LATENCY.labels(method, template).observe(time.perf_counter() - started)
            REQUESTS.labels(method, template, str(status)).inc()

        async def send_and_measure(message: Message) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = message["status"]
                record()
                recorded = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_measure)
        finally:
            if not recorded:
                record()
