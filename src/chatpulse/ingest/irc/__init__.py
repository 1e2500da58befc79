"""Twitch IRC protocol: line parser and asyncio client."""
