"""Errors of the processor.

ChatpulseError
 └── ProcessorError
      └── FlushTimeout   retriable: a checkpoint's Cassandra writes outlived their deadline
"""

from chatpulse.errors import ChatpulseError

__all__ = ["FlushTimeout", "ProcessorError"]


class ProcessorError(ChatpulseError):
    """An error of the processor."""


class FlushTimeout(ProcessorError):  # noqa: N818 - named for what happened
    """A checkpoint's writes did not all complete before its deadline (processed again)."""

    retriable = True
