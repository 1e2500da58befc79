"""Errors of the local Kafka/Cassandra stack, each a one-line message fit to show a user.

ChatpulseError
 └── StackError              the local stack failed
      ├── JavaNotFoundError  no Java 17 to run the servers with
      ├── MavenError         no ``mvn``, or it could not resolve the jars
      ├── PortInUseError     a port the stack needs is taken by something else
      └── ServerExitedError  a server died while starting (message ends with its log's tail)
"""

from chatpulse.errors import ChatpulseError

__all__ = [
    "JavaNotFoundError",
    "MavenError",
    "PortInUseError",
    "ServerExitedError",
    "StackError",
]


class StackError(ChatpulseError):
    """The local Kafka/Cassandra stack could not be brought up, stopped or inspected."""


class JavaNotFoundError(StackError):
    """No Java 17 runtime was found."""


class MavenError(StackError):
    """Maven is missing or could not resolve a server's jars."""


class PortInUseError(StackError):
    """A port the stack needs is already bound by another process."""


class ServerExitedError(StackError):
    """A server process exited (or never became ready) while starting."""
