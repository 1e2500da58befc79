"""Twitch IRC protocol: line parser and asyncio client."""

from chatpulse.ingest.irc.client import Received, TwitchChatClient, TwitchLoginError
from chatpulse.ingest.irc.parser import IrcMessage, IrcParseError, format_line, parse_line

__all__ = [
    "IrcMessage",
    "IrcParseError",
    "Received",
    "TwitchChatClient",
    "TwitchLoginError",
    "format_line",
    "parse_line",
]
