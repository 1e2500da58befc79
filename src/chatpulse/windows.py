"""Window sizes: parsing ``1m``/``10m``/``1h`` and epoch-aligned tumbling window maths."""

import re

__all__ = ["format_duration", "parse_duration", "window_start"]

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")


def parse_duration(text: str) -> int:
    """Parse ``"10m"`` into milliseconds; raise ValueError on anything else."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {text!r} (use a positive number and ms, s, m, h or d)")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact name of a duration: 60000 -> ``"1m"``."""
    if ms <= 0:
        raise ValueError(f"not a positive duration: {ms}")
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def window_start(timestamp_ms: int, size_ms: int) -> int:
    """Start of the epoch-aligned tumbling window of ``size_ms`` holding ``timestamp_ms``."""
    return timestamp_ms - timestamp_ms % size_ms
