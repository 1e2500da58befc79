"""Dead-letter records: bad input is kept with the reason, never silently dropped."""

import time

from chatpulse.models import encode

__all__ = ["IRC_KEY", "deadletter_value"]

IRC_KEY = b"irc"


def deadletter_value(
    raw: str | bytes, reason: str, *, source: str = "irc", connection: str | None = None
) -> bytes:
    """JSON value of a dead-letter record: the raw input, why it was refused, and when."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="backslashreplace")
    value: dict[str, object] = {
        "source": source,
        "raw": text,
        "reason": reason,
        "at": int(time.time() * 1000),
    }
    if connection is not None:
        value["connection"] = connection
    return encode(value)
