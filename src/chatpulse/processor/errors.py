"""Errors of the processor.

ChatpulseError
 └── ProcessorError
      ├── FlushTimeout        retriable: a checkpoint's Cassandra writes outlived their deadline
      ├── OffsetsLostError    the group's offsets are gone and the state cannot restore them
      └── SchemaMissingError  the keyspace or a table is missing and could not be created
"""

from chatpulse.errors import ChatpulseError

__all__ = ["FlushTimeout", "OffsetsLostError", "ProcessorError", "SchemaMissingError"]


class ProcessorError(ChatpulseError):
    """An error of the processor."""


class FlushTimeout(ProcessorError):  # noqa: N818 - named for what happened
    """A checkpoint's writes did not all complete before its deadline (processed again)."""

    retriable = True


class SchemaMissingError(ProcessorError):
    """The Cassandra keyspace or a table is missing and the processor could not create it."""


class OffsetsLostError(ProcessorError):
    """The group's offsets are missing and could not be restored from the state."""
