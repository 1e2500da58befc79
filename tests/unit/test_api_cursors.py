"""Cursors: stateless round trip, scope checks, and every malformed value refused as a 400."""

import base64

import orjson
import pytest

from chatpulse.api.cursors import MAX_ID_CHARS, Cursors, message_position, token_position
from chatpulse.api.errors import BadCursorError


def _raw(document: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(document)).rstrip(b"=").decode()


def test_a_cursor_from_one_instance_is_read_by_another() -> None:
    cursor = Cursors().issue("messages:alpha", [1_700_000_000_123, "id-1"])
    position = Cursors().check("messages:alpha", cursor)
    assert message_position(position) == (1_700_000_000_123, "id-1")
    token = Cursors().issue("channels", -(2**63))
    assert token_position(Cursors().check("channels", token)) == -(2**63)


def test_a_cursor_of_an_earlier_signed_version_is_still_read() -> None:
    body = _raw({"s": "channels", "p": 42})
    assert token_position(Cursors().check("channels", f"{body}.c2lnbmF0dXJl")) == 42


def test_cursor_is_refused_for_another_channel_or_endpoint() -> None:
    cursor = Cursors().issue("messages:alpha", [1, "a"])
    with pytest.raises(BadCursorError, match="another query"):
        Cursors().check("messages:beta", cursor)
    with pytest.raises(BadCursorError, match="another query"):
        Cursors().check("channels", cursor)


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b.c", "!!!.???", "eyJ9.AAAA", "é", ".x", _raw([1, 2]), _raw({"s": "channels"})],
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(BadCursorError, match="malformed"):
        Cursors().check("channels", garbage)


def test_an_overlong_cursor_is_refused() -> None:
    cursor = Cursors().issue("channels", "x" * 600)
    with pytest.raises(BadCursorError, match="malformed"):
        Cursors().check("channels", cursor)


@pytest.mark.parametrize("position", [2**63, -(2**63) - 1, 1.5, "1", True, None, [1]])
def test_edited_channel_positions_are_refused(position: object) -> None:
    with pytest.raises(BadCursorError):
        token_position(position)


@pytest.mark.parametrize(
    "position",
    [
        [1, 2],
        ["1", "a"],
        [True, "a"],
        [1.0, "a"],
        [253_402_300_800_000, "a"],
        [-62_135_596_800_001, "a"],
        [1, "a" * (MAX_ID_CHARS + 1)],
        [1, "a", "b"],
        {"sent_at": 1, "id": "a"},
    ],
)
def test_edited_message_positions_are_refused(position: object) -> None:
    with pytest.raises(BadCursorError):
        message_position(position)
