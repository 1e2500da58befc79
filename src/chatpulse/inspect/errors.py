"""Errors of ``chatpulse inspect``.

ChatpulseError
 └── InspectError
      └── TransactionLogError   a ``__transaction_state`` record this reader cannot decode
"""

from chatpulse.errors import ChatpulseError

__all__ = ["InspectError", "TransactionLogError"]


class InspectError(ChatpulseError):
    """An error of ``chatpulse inspect``."""


class TransactionLogError(InspectError):
    """A transaction log record that is truncated or of an unknown version."""
