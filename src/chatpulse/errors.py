"""The root of chatpulse's exceptions.

    ChatpulseError
     ├── ConfigError          a setting is invalid; the message names it (exit code 2)
     ├── StackError           (chatpulse.stack.errors) the local Kafka/Cassandra stack failed
     └── ...                  each service package adds its own in ``<package>/errors.py``

Every exception carries a one-line message fit to show a user as is.
"""

__all__ = ["ChatpulseError", "ConfigError"]


class ChatpulseError(Exception):
    """Root of every error chatpulse raises on purpose."""

    exit_code = 1


class ConfigError(ChatpulseError):
    """A setting or a command-line argument is invalid."""

    exit_code = 2
