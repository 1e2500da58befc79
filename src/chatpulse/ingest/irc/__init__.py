"""Twitch IRC protocol: line parser and asyncio client."""

from chatpulse.ingest.errors import IrcParseError, TwitchLoginError
from chatpulse.ingest.irc.client import Received, TwitchChatClient
from chatpulse.ingest.irc.parser import IrcMessage, format_line, parse_line

__all__ = [
    "IrcMessage",
    "IrcParseError",
    "Received",
    "TwitchChatClient",
    "TwitchLoginError",
    "format_line",
    "parse_line",
]
