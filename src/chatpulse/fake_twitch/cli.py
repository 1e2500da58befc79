"""Placeholder: being built."""

from chatpulse.errors import ChatpulseError


def fake_twitch_command() -> None:
    """Not built yet."""
    raise ChatpulseError("not built yet")
