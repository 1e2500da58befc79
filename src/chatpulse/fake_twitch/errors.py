"""Errors of the local Twitch chat server.

ChatpulseError
 └── FakeTwitchError
      └── CaptureError   a capture file to replay cannot be read
"""

from chatpulse.errors import ChatpulseError

__all__ = ["CaptureError", "FakeTwitchError"]


class FakeTwitchError(ChatpulseError):
    """An error of ``chatpulse fake-twitch``."""


class CaptureError(FakeTwitchError):
    """A capture file cannot be read."""
