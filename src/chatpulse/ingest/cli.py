"""Placeholder: being built."""

from chatpulse.errors import ChatpulseError


def ingest_command() -> None:
    """Not built yet."""
    raise ChatpulseError("not built yet")
