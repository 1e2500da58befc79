"""A bound on request bodies, enforced before a body is read in full (pure ASGI middleware).

A declared ``Content-Length`` over the bound is answered 413 at once, before the app runs or a
byte of the body is read; a chunked body is counted as the app reads it and refused the moment
it passes the bound. The app then sees the client as gone (``http.disconnect``) and whatever it
answers is dropped. The server closes the connection after the 413, so the rest is never read.

Not Starlette's ``RequestBodyLimitMiddleware`` (``FastAPI(max_body_size=...)``): it replaces
the answer to a declared length over the bound with a plain-text one, not a problem document.
"""

from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatpulse.api.problems import PROBLEM_MEDIA_TYPE, problem_document

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not (started or refused):
                        refused = True
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's answer to a body it could not read: already answered 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        raw = scope.get("raw_path")
        document: dict[str, Any] = problem_document(
            status=413,
            detail=f"The request body is larger than the {self.max_bytes} bytes this API accepts.",
            instance=raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"],
            title="Content Too Large",
            slug="body-too-large",
        )
        body = orjson.dumps(document)
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
