"""Readiness checks for ``chatpulse up``: a TCP port accepts, an HTTP URL answers 200."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["http_ok", "tcp_open", "wait_http_ok", "wait_tcp"]


async def tcp_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def http_ok(url: str, timeout_s: float = 2.0, ca: Path | None = None) -> bool:
    """True if GET url answers 2xx (blocking; run it in a thread); an https URL's certificate
    is checked against ``ca`` (default: the system's CAs)."""
    context = ssl.create_default_context(cafile=ca) if ca is not None else None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:  # noqa: S310 - our URL
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_tcp(host: str, port: int, interval_s: float = 0.2) -> Callable[[], Awaitable[None]]:
    """A readiness check: returns once host:port accepts connections."""

    async def check() -> None:
        while not await tcp_open(host, port):  # noqa: ASYNC110 - polling a port
            await asyncio.sleep(interval_s)

    return check


def wait_http_ok(
    url: str, interval_s: float = 0.5, ca: Path | None = None
) -> Callable[[], Awaitable[None]]:
    """A readiness check: returns once GET url answers 2xx (e.g. the API's /readyz)."""

    async def check() -> None:
        while not await asyncio.to_thread(http_ok, url, 2.0, ca):  # noqa: ASYNC110 - polling a URL
            await asyncio.sleep(interval_s)

    return check
