"""Opaque pagination cursors: unsigned, fully validated, valid on every instance and restart.

A cursor is ``base64url(json {"s": scope, "p": position})``. The scope names the endpoint and
channel it was issued for, so a cursor of another query is refused with a clear 400.

Why not signed: a position is a point in public data that any client may ask for anyway (the
messages endpoint takes ``before=<time>``, the channel list is in token order), so a signature
protects nothing, while it needs one secret shared by every instance and kept across restarts
(a per-process random key made every cursor fail after a restart or on another worker). What
keeps an edited cursor harmless is validation: the scope, the types, the ranges and the length
of every value are checked (:func:`token_position`, :func:`message_position`), so a crafted
cursor is a 400, never a 5xx nor a costlier query than a legitimate one. Cursors issued by
earlier versions (``body.mac``) are still read: the body is the same, the MAC is ignored.
"""

import base64
import binascii
from typing import Any

import orjson

from chatpulse.api.errors import BadCursorError

__all__ = ["MAX_CURSOR_CHARS", "Cursors", "message_position", "time_position", "token_position"]

# Longer than any cursor issued (a scope, a 20-digit time and a message id of up to MAX_ID_CHARS).
MAX_CURSOR_CHARS = 512
MAX_ID_CHARS = 128
_INT64 = (-(2**63), 2**63 - 1)
# Epoch ms of 0001-01-01 and 9999-12-31: what a Cassandra timestamp written by chatpulse holds.
_SENT_AT = (-62_135_596_800_000, 253_402_300_799_999)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cursors:
    """Issues cursors and reads them back (stateless: any instance reads any instance's)."""

    def issue(self, scope: str, position: Any) -> str:
        """A cursor for ``position`` valid only for ``scope`` (e.g. ``"messages:somechannel"``)."""
        return _b64(orjson.dumps({"s": scope, "p": position}))

    def check(self, scope: str, cursor: str) -> Any:
        """The position inside ``cursor``; BadCursorError unless it is well formed for ``scope``."""
        # base64url has no ".": a cursor of an earlier version is "body.mac".
        body = cursor.split(".", 1)[0]
        if not body or len(cursor) > MAX_CURSOR_CHARS:
            raise BadCursorError("The cursor is malformed; use a next_cursor value as given.")
        try:
            data = orjson.loads(_unb64(body))
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            raise BadCursorError(
                "The cursor is malformed; use a next_cursor value as given."
            ) from None
        if not isinstance(data, dict) or "p" not in data:
            raise BadCursorError("The cursor is malformed; use a next_cursor value as given.")
        if data.get("s") != scope:
            raise BadCursorError("The cursor belongs to another query (endpoint or channel).")
        return data["p"]


def _is_int(value: Any, bounds: tuple[int, int]) -> bool:
    return type(value) is int and bounds[0] <= value <= bounds[1]


def token_position(position: Any) -> int:
    """A channel-list position: a Cassandra token (64-bit integer)."""
    if not _is_int(position, _INT64):
        raise BadCursorError("The cursor is malformed; use a next_cursor value as given.")
    return int(position)


def time_position(position: Any) -> int:
    """A position in time (a chat spike's window start): epoch ms."""
    if not _is_int(position, _SENT_AT):
        raise BadCursorError("The cursor is malformed; use a next_cursor value as given.")
    return int(position)


def message_position(position: Any) -> tuple[int, str]:
    """A messages position: ``[sent_at ms, message id]``."""
    if not (
        isinstance(position, list)
        and len(position) == 2
        and _is_int(position[0], _SENT_AT)
        and isinstance(position[1], str)
        and len(position[1]) <= MAX_ID_CHARS
    ):
        raise BadCursorError("The cursor is malformed; use a next_cursor value as given.")
    return position[0], position[1]
