"""Errors of ``chatpulse up``.

ChatpulseError
 └── RunError                   chatpulse up could not bring everything up
      ├── ChildFailedError      a step or a child failed or died (carries its exit code)
      └── StartupInterruptedError   Ctrl-C/SIGTERM arrived during start-up (exit code 0)
"""

from chatpulse.errors import ChatpulseError

__all__ = ["ChildFailedError", "RunError", "StartupInterruptedError"]


class RunError(ChatpulseError):
    """``chatpulse up`` could not bring everything up."""


class ChildFailedError(RunError):
    """A step or a child process failed; the message names it."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code > 0 else 1


class StartupInterruptedError(RunError):
    """The user stopped ``chatpulse up`` before everything was ready: not a failure."""

    exit_code = 0
