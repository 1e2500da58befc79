"""Dead-letter records, for the ingest and the processor alike: bad input kept with the reason.

A dead-letter value is a JSON object: ``source`` (where the input came from: ``irc`` or a
topic name), ``raw`` (the input, UTF-8 with undecodable bytes as ``\\xNN``), ``raw_length``
(its length in bytes before truncation), ``reason``, ``at`` (epoch ms) and, when known, where
it was read (``connection``; ``partition`` and ``offset``). ``raw`` is cut to a bound
(``CHATPULSE_DEADLETTER_RAW_MAX_BYTES``) so one absurd input cannot make a record the
dead-letter topic refuses.
"""

import time

from chatpulse.models import encode

__all__ = ["DEFAULT_RAW_MAX_BYTES", "IRC_KEY", "deadletter_value"]

IRC_KEY = b"irc"
# Twitch lines are ~2 KB at most; 16 KiB keeps any real line whole, far under Kafka's 1 MB.
DEFAULT_RAW_MAX_BYTES = 16_384


def deadletter_value(
    raw: str | bytes | None,
    reason: str,
    *,
    source: str,
    raw_max_bytes: int = DEFAULT_RAW_MAX_BYTES,
    connection: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> bytes:
    """JSON value of a dead-letter record: the raw input (bounded), why it was refused, when."""
    data = (raw.encode("utf-8", errors="surrogateescape") if isinstance(raw, str) else raw) or b""
    kept = data[:raw_max_bytes]
    # A cut through a multi-byte character leaves a partial one: escaped like any bad byte.
    value: dict[str, object] = {
        "source": source,
        "raw": kept.decode("utf-8", errors="backslashreplace"),
        "raw_length": len(data),
        "reason": reason,
        "at": int(time.time() * 1000),
    }
    if connection is not None:
        value["connection"] = connection
    if partition is not None:
        value["partition"] = partition
    if offset is not None:
        value["offset"] = offset
    return encode(value)
