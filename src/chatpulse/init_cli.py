"""Placeholder: being built."""

from chatpulse.errors import ChatpulseError


def init_command() -> None:
    """Not built yet."""
    raise ChatpulseError("not built yet")
