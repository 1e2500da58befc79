"""Errors of the ingest service: IRC lines, Twitch logins, records.

ChatpulseError
 └── IngestError
      ├── IrcParseError     a line that is not valid IRC (dead-lettered with its reason)
      ├── ConvertError      a data line that cannot become a record (dead-lettered)
      ├── TwitchLoginError  Twitch refused the login: not retriable, the client stops
      ├── ProducerFailedError  the Kafka producer failed for good (fenced, fatal): the ingest stops
      └── SpillError        the spill cannot be read (or written, other than a full disk): stops

A connection that cannot be opened or is lost raises ``OSError``/``TimeoutError``:
:func:`retriable` treats those as worth another try, like a ChatpulseError whose
``retriable`` is True.
"""

from chatpulse.errors import ChatpulseError

__all__ = [
    "ConvertError",
    "IngestError",
    "IrcParseError",
    "ProducerFailedError",
    "SpillError",
    "TwitchLoginError",
    "retriable",
]

_MAX_REASON_LINE = 512


class IngestError(ChatpulseError):
    """An error of the ingest service."""


class IrcParseError(IngestError):
    """A line that is not valid IRC; ``reason`` says why, ``line`` is the raw input."""

    def __init__(self, reason: str, line: str) -> None:
        shown = line if len(line) <= _MAX_REASON_LINE else line[:_MAX_REASON_LINE] + "..."
        super().__init__(f"malformed IRC line ({reason}): {shown!r}")
        self.reason = reason
        self.line = line


class ConvertError(IngestError):
    """A PRIVMSG/USERNOTICE/CLEARCHAT/CLEARMSG that cannot become a record."""

    def __init__(self, reason: str, line: str) -> None:
        super().__init__(f"cannot convert IRC line ({reason}): {line[:_MAX_REASON_LINE]!r}")
        self.reason = reason
        self.line = line


class TwitchLoginError(IngestError):
    """Twitch refused the login (bad token or nick); retrying with the same token won't help."""

    retriable = False


class ProducerFailedError(IngestError):
    """The Kafka producer failed for good (fenced by another instance, or a fatal error)."""


class SpillError(IngestError):
    """The on-disk spill cannot be read (or written for another reason than a full disk)."""


def retriable(exc: BaseException) -> bool:
    """Whether a connection attempt that failed with ``exc`` may succeed when tried again."""
    if isinstance(exc, ChatpulseError):
        return exc.retriable
    return isinstance(exc, OSError | TimeoutError)
