"""Security headers on every answer, and the OpenAPI pages under their own policy.

The dashboard loads only its own files (no inline script or style), so its content security
policy allows ``'self'`` and nothing else. ``/docs`` and ``/redoc`` are FastAPI's pages: they
load Swagger UI / ReDoc from a CDN and carry one inline script or style each, so they get a
policy of their own that allows those origins and exactly those inline blocks (by hash) plus
inline styles (which the two libraries set at run time). Any other answer keeps the strict one.
"""

import base64
import hashlib
import re
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "HSTS",
    "SecurityHeadersMiddleware",
    "add_docs_pages",
    "page_policy",
]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Sent over HTTPS only: over plain HTTP a browser ignores it, and a proxy terminating TLS in
# front of the API sets its own.
HSTS = "max-age=31536000"
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers without CSP level 2
)
_CSP = b"content-security-policy"
_CDN = "https://cdn.jsdelivr.net"


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP answer (streams included, at their start).

    A content security policy the route set itself (the OpenAPI pages) is kept.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, https=https)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_headers(message: MutableMapping[str, Any], *, https: bool) -> None:
    headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
    present = {name.lower() for name, _ in headers}
    added = [(name, value) for name, value in _ALWAYS if name not in present]
    if _CSP not in present:
        added.append((_CSP, CONTENT_SECURITY_POLICY.encode()))
    if https and b"strict-transport-security" not in present:
        added.append((b"strict-transport-security", HSTS.encode()))
    message["headers"] = headers + added


def _hashes(html: str, tag: str) -> list[str]:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"
        for block in blocks
    ]


def page_policy(html: str) -> str:
    """The policy of an OpenAPI page: its CDN, its own inline blocks by hash, inline styles."""
    scripts = " ".join(["'self'", _CDN, *_hashes(html, "script")])
    return (
        f"default-src 'self'; script-src {scripts}; "
        f"style-src 'self' 'unsafe-inline' {_CDN} https://fonts.googleapis.com; "
        f"img-src 'self' data: {_CDN} https://fastapi.tiangolo.com; "
        "font-src 'self' https://fonts.gstatic.com; worker-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["content-security-policy"] = page_policy(bytes(page.body).decode())
    return page


def add_docs_pages(app: FastAPI, title: str) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their own policy; the app is made with
    ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _with_policy(get_swagger_ui_html(openapi_url=openapi_url, title=title))

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _with_policy(get_redoc_html(openapi_url=openapi_url, title=title))
