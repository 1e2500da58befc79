"""Signed cursors: round trip, and every way of forging one is refused."""

import base64

import orjson
import pytest

from chatpulse.api.cursors import CursorSigner
from chatpulse.api.errors import BadCursorError


def test_round_trip_gives_the_position_back() -> None:
    signer = CursorSigner(b"k" * 32)
    cursor = signer.issue("messages:alpha", [1_700_000_000_123, "id-1"])
    assert signer.check("messages:alpha", cursor) == [1_700_000_000_123, "id-1"]


def test_cursor_is_refused_for_another_channel_or_endpoint() -> None:
    signer = CursorSigner(b"k" * 32)
    cursor = signer.issue("messages:alpha", [1, "a"])
    with pytest.raises(BadCursorError, match="another query"):
        signer.check("messages:beta", cursor)
    with pytest.raises(BadCursorError, match="another query"):
        signer.check("channels", cursor)


def test_edited_body_is_refused() -> None:
    signer = CursorSigner(b"k" * 32)
    cursor = signer.issue("channels", 42)
    _, mac = cursor.split(".")
    forged_body = base64.urlsafe_b64encode(orjson.dumps({"s": "channels", "p": 43})).rstrip(b"=")
    with pytest.raises(BadCursorError, match="not issued"):
        signer.check("channels", f"{forged_body.decode()}.{mac}")


def test_cursor_of_another_key_is_refused() -> None:
    cursor = CursorSigner(b"a" * 32).issue("channels", 1)
    with pytest.raises(BadCursorError, match="not issued"):
        CursorSigner(b"b" * 32).check("channels", cursor)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "!!!.???", "eyJ9.AAAA"])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(BadCursorError):
        CursorSigner(b"k" * 32).check("channels", garbage)


def test_random_keys_differ_per_signer() -> None:
    cursor = CursorSigner().issue("channels", 1)
    with pytest.raises(BadCursorError):
        CursorSigner().check("channels", cursor)
