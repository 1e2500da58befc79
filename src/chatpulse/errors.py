"""The root of chatpulse's exceptions, and the errors of the modules every service shares.

    ChatpulseError                 retriable = False unless a subclass says otherwise
     ├── ConfigError               a setting is invalid; the message names it (exit code 2)
     ├── KafkaUnavailableError     retriable: Kafka did not answer (in time)
     ├── CassandraUnavailableError retriable: Cassandra did not accept a session (in time)
     ├── AccessRefusedError        a cluster refused the login or its certificate is untrusted
     ├── SchemaError               the keyspace holds tables chatpulse cannot use as they are
     ├── TopicMissingError         retriable: a topic does not exist (yet: ``chatpulse init``)
     ├── TopicLayoutError          topics that must be co-partitioned are not
     ├── TrackedRecordError        a tracked-channels record that is not a channel entry
     ├── ApiError                  (chatpulse.api.errors) an HTTP error answer
     ├── IngestError               (chatpulse.ingest.errors) IRC lines, logins, conversion
     ├── ProcessorError            (chatpulse.processor.errors) the Cassandra write-back
     ├── InspectError              (chatpulse.inspect.errors) what ``chatpulse inspect`` reads
     ├── FakeTwitchError           (chatpulse.fake_twitch.errors) the local chat server
     ├── RunError                  (chatpulse.run.errors) ``chatpulse up``
     └── StackError                (chatpulse.stack.errors) the local Kafka/Cassandra stack

Every exception carries a one-line message fit to show a user as is. ``retriable`` tells the
caller what to do, as in aiokafka: True when the same call may succeed later (a cluster that
is down or slow), False when trying again cannot help (a refused login, a bad setting). The
IRC shards reconnect or stop on it, and the API answers 503 with ``Retry-After`` or not.
"""

__all__ = [
    "AccessRefusedError",
    "CassandraUnavailableError",
    "ChatpulseError",
    "ConfigError",
    "KafkaUnavailableError",
    "SchemaError",
    "TopicLayoutError",
    "TopicMissingError",
    "TrackedRecordError",
]


class ChatpulseError(Exception):
    """Root of every error chatpulse raises on purpose."""

    exit_code = 1
    retriable = False


class ConfigError(ChatpulseError):
    """A setting or a command-line argument is invalid."""

    exit_code = 2


class KafkaUnavailableError(ChatpulseError):
    """The Kafka cluster did not answer, or not in time."""

    retriable = True


class CassandraUnavailableError(ChatpulseError):
    """The Cassandra cluster did not accept a session, or not in time."""

    retriable = True


class AccessRefusedError(ChatpulseError):
    """A cluster refused our login (user, password) or we refused its certificate (CA): the
    same settings cannot succeed later, so nothing waits or retries."""


class SchemaError(ChatpulseError):
    """The keyspace holds tables chatpulse cannot use as they are."""


class TopicMissingError(ChatpulseError):
    """The cluster answered: the topic does not exist (``chatpulse init`` creates it)."""

    retriable = True


class TrackedRecordError(ChatpulseError):
    """A tracked-channels record that is not a valid channel entry; ``channel`` is its key's
    channel (None when the key is not a channel login)."""

    def __init__(self, reason: str, channel: str | None) -> None:
        super().__init__(reason)
        self.channel = channel


class TopicLayoutError(ChatpulseError):
    """Existing topics are laid out in a way chatpulse cannot process correctly."""
