"""Opaque, signed pagination cursors.

A cursor is ``base64url(json) + "." + base64url(hmac)``; the signed JSON names the endpoint and
the channel it was issued for, so a cursor cannot be edited, nor replayed against another
endpoint or channel. Hand-written because it is twenty lines of ``hmac`` (itsdangerous would be
a dependency for the same thing).
"""

import base64
import hashlib
import hmac
import secrets
from typing import Any

import orjson

from chatpulse.api.errors import BadCursorError

__all__ = ["CursorSigner"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    """Issues and checks cursors with one secret key (random per process unless given)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def issue(self, scope: str, position: Any) -> str:
        """A cursor for ``position`` valid only for ``scope`` (e.g. ``"messages:somechannel"``)."""
        body = orjson.dumps({"s": scope, "p": position})
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def check(self, scope: str, cursor: str) -> Any:
        """The position inside ``cursor``; BadCursorError unless it is ours and for ``scope``."""
        try:
            body_text, mac_text = cursor.split(".", 1)
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            raise BadCursorError(
                "The cursor is malformed; use a next_cursor value as given."
            ) from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise BadCursorError("The cursor was not issued by this API; use next_cursor as given.")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadCursorError("The cursor is malformed.") from None
        if not isinstance(data, dict) or data.get("s") != scope:
            raise BadCursorError("The cursor belongs to another query (endpoint or channel).")
        return data.get("p")
