"""Who may do what on a secured stack: the Kafka ACLs and the Cassandra roles of each service.

:data:`kafka_acls` and :data:`cassandra_grants` are plain data (docs/operations.md, "Security",
shows them as tables an administrator can apply by hand); :func:`apply_access` makes them true
on a running secured stack, idempotently, as its super users. Every principal gets only what
its service does:

- ``ingest`` writes the messages, events and dead-letter topics (transactionally, under its
  transactional id prefix), reads the tracked channels (one throwaway group per start) and the
  messages topic's retention;
- ``processor`` reads the messages and events in its consumer group, writes channel stats and dead
  letters, owns Quix's changelog and repartition topics (it creates them) and its
  transactional ids; in Cassandra it reads and writes the keyspace;
- ``api`` reads channel stats (live stream) and the tracked channels, writes the tracked
  channels (POST/DELETE a channel), in groups of its prefix; in Cassandra it only reads;
- ``admin`` is Kafka's super user; ``chatpulse_admin`` creates keyspaces and owns chatpulse's.
"""

import logging
import ssl
import time
from dataclasses import dataclass

from cassandra import AuthenticationFailed
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import RoundRobinPolicy
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from chatpulse.stack.cassandra import quiet_driver
from chatpulse.stack.errors import StackError
from chatpulse.stack.secrets import CASSANDRA_ROLES, CASSANDRA_SUPERUSER, StackSecrets
from chatpulse.topics import Topics

__all__ = [
    "DEFAULT_KEYSPACE",
    "DEFAULT_PROCESSOR_GROUP",
    "KafkaAcl",
    "apply_access",
    "cassandra_grants",
    "kafka_acls",
]

logger = logging.getLogger(__name__)

DEFAULT_KEYSPACE = "chatpulse"
DEFAULT_PROCESSOR_GROUP = "chatpulse-processor"


@dataclass(frozen=True, slots=True)
class KafkaAcl:
    """ALLOW ``operations`` on the resource(s) ``name`` (a prefix when ``prefixed``)."""

    principal: str  # the SCRAM user
    resource: str  # TOPIC, GROUP or TRANSACTIONAL_ID
    name: str
    prefixed: bool
    operations: tuple[str, ...]


def kafka_acls(
    topic_prefix: str = "", processor_group: str = DEFAULT_PROCESSOR_GROUP
) -> list[KafkaAcl]:
    """Every ACL of the ingest, processor and api users (admin is a super user)."""
    t = Topics.from_prefix(topic_prefix)
    write = ("WRITE", "DESCRIBE")
    read = ("READ", "DESCRIBE")
    own = ("CREATE", "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")
    return [
        # ingest: produce chat (transactions), follow tracked-channels, read retention.
        KafkaAcl("ingest", "TOPIC", t.messages, False, (*write, "DESCRIBE_CONFIGS")),
        KafkaAcl("ingest", "TOPIC", t.events, False, (*write, "DESCRIBE_CONFIGS")),
        KafkaAcl("ingest", "TOPIC", t.deadletter, False, write),
        KafkaAcl("ingest", "TOPIC", t.tracked, False, read),
        # It checks at start that the topics exist (metadata only).
        KafkaAcl("ingest", "TOPIC", t.stats, False, ("DESCRIBE",)),
        KafkaAcl("ingest", "GROUP", "chatpulse-ingest-tracked-", True, ("READ",)),
        KafkaAcl("ingest", "TRANSACTIONAL_ID", f"{topic_prefix}chatpulse-ingest-", True, write),
        # processor: consume messages in its group, produce stats and dead letters in
        # transactions, keep Quix's state topics (created at its first start).
        KafkaAcl("processor", "TOPIC", t.messages, False, (*read, "DESCRIBE_CONFIGS")),
        KafkaAcl("processor", "TOPIC", t.stats, False, (*write, "DESCRIBE_CONFIGS")),
        KafkaAcl("processor", "TOPIC", t.deadletter, False, (*write, "DESCRIBE_CONFIGS")),
        # the moderation join reads CLEARMSG/CLEARCHAT events in the same group
        KafkaAcl("processor", "TOPIC", t.events, False, (*read, "DESCRIBE_CONFIGS")),
        KafkaAcl("processor", "TOPIC", t.tracked, False, ("DESCRIBE",)),
        KafkaAcl("processor", "TOPIC", f"changelog__{processor_group}--", True, own),
        KafkaAcl("processor", "TOPIC", f"repartition__{processor_group}--", True, own),
        KafkaAcl("processor", "GROUP", processor_group, False, read),
        KafkaAcl("processor", "TRANSACTIONAL_ID", f"{processor_group}-", True, write),
        # api: the live stream of channel stats, the tracked channels (read and change).
        KafkaAcl("api", "TOPIC", t.stats, False, read),
        KafkaAcl("api", "TOPIC", t.tracked, False, ("READ", "WRITE", "DESCRIBE")),
        KafkaAcl("api", "GROUP", "chatpulse-api-", True, ("READ",)),
    ]


def cassandra_grants(keyspace: str = DEFAULT_KEYSPACE) -> dict[str, list[str]]:
    """The CQL permissions of each chatpulse role (``GRANT <p> ON <resource> TO <role>``)."""
    ks = f"KEYSPACE {keyspace}"
    return {
        # CREATE on all keyspaces: `init` runs CREATE KEYSPACE IF NOT EXISTS, which Cassandra
        # authorizes before it looks whether the keyspace exists.
        CASSANDRA_ROLES["admin"]: ["CREATE ON ALL KEYSPACES", f"ALL PERMISSIONS ON {ks}"],
        CASSANDRA_ROLES["process"]: [f"SELECT ON {ks}", f"MODIFY ON {ks}"],
        CASSANDRA_ROLES["api"]: [f"SELECT ON {ks}"],
    }


def apply_access(
    secrets: StackSecrets,
    *,
    bootstrap_servers: str,
    cassandra_hosts: list[str],
    cassandra_port: int,
    replication: int = 1,
    timeout: float = 120.0,
) -> None:
    """Create the Cassandra roles and the keyspace, and the Kafka ACLs (all idempotent)."""
    with quiet_driver():
        _apply_cassandra(secrets, cassandra_hosts, cassandra_port, replication, timeout)
    _apply_kafka(secrets, bootstrap_servers, timeout)


# --- Cassandra ------------------------------------------------------------------------------


def _connect(
    secrets: StackSecrets, hosts: list[str], port: int, user: str, password: str
) -> tuple[Cluster, Session]:
    cluster = Cluster(
        hosts,
        port=port,
        protocol_version=4,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
        },
        auth_provider=PlainTextAuthProvider(username=user, password=password),
        ssl_context=ssl.create_default_context(cafile=str(secrets.ca_cert)),
        connect_timeout=10,
        control_connection_timeout=10,
    )
    try:
        return cluster, cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise


def _refused_login(exc: NoHostAvailable) -> bool:
    return any(isinstance(error, AuthenticationFailed) for error in exc.errors.values())


def _superuser_session(
    secrets: StackSecrets, hosts: list[str], port: int, replication: int, timeout: float
) -> tuple[Cluster, Session]:
    """A session as the stack's superuser; at the first start, made from Cassandra's default
    ``cassandra`` superuser, which is then dropped."""
    password = secrets.password(f"cassandra:{CASSANDRA_SUPERUSER}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _connect(secrets, hosts, port, CASSANDRA_SUPERUSER, password)
        except NoHostAvailable as exc:
            if not _refused_login(exc) and time.monotonic() < deadline:
                time.sleep(1.0)  # the auth tables are not ready yet
                continue
            if not _refused_login(exc):
                raise StackError(f"Cassandra did not accept the stack's superuser: {exc}") from None
        try:
            cluster, session = _connect(secrets, hosts, port, "cassandra", "cassandra")
        except NoHostAvailable as exc:
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            raise StackError(
                f"Cassandra accepts neither the stack's superuser nor its default one: {exc}"
            ) from None
        try:
            # Before any role exists elsewhere: the roles live in system_auth, which must
            # have a copy on as many nodes as the data (one node down keeps logins working).
            session.execute(
                "ALTER KEYSPACE system_auth WITH replication = {'class': "
                f"'NetworkTopologyStrategy', 'replication_factor': {replication}}}"
            )
            session.execute(
                f"CREATE ROLE IF NOT EXISTS {CASSANDRA_SUPERUSER} WITH SUPERUSER = true "
                f"AND LOGIN = true AND PASSWORD = '{password}'"
            )
        finally:
            cluster.shutdown()
        logger.info("created Cassandra superuser %s", CASSANDRA_SUPERUSER)


def _apply_cassandra(
    secrets: StackSecrets, hosts: list[str], port: int, replication: int, timeout: float
) -> None:
    # Imported here: storage imports the settings, which the stack's CLI does not need.
    from chatpulse.storage import schema_statements  # noqa: PLC0415

    cluster, session = _superuser_session(secrets, hosts, port, replication, timeout)
    try:
        # Everyone knows the default superuser's password: it goes once ours works.
        session.execute("DROP ROLE IF EXISTS cassandra")
        for role in CASSANDRA_ROLES.values():
            password = secrets.password(f"cassandra:{role}")
            session.execute(
                f"CREATE ROLE IF NOT EXISTS {role} WITH LOGIN = true AND PASSWORD = '{password}'"
            )
        # The keyspace exists before `init` so that the roles can be granted on it.
        session.execute(schema_statements(DEFAULT_KEYSPACE, replication)[0], timeout=60)
        for role, permissions in cassandra_grants().items():
            for permission in permissions:
                session.execute(f"GRANT {permission} TO {role}")
    finally:
        cluster.shutdown()


# --- Kafka ----------------------------------------------------------------------------------


def _binding(acl: KafkaAcl, operation: str) -> AclBinding:
    return AclBinding(
        ResourceType[acl.resource],
        acl.name,
        ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL,
        f"User:{acl.principal}",
        "*",
        AclOperation[operation],
        AclPermissionType.ALLOW,
    )


def _apply_kafka(secrets: StackSecrets, bootstrap_servers: str, timeout: float) -> None:
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap_servers,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": secrets.password("kafka:admin"),
            "ssl.ca.location": str(secrets.ca_cert),
            "logger": logger,
            "log_level": 3,
        }
    )
    bindings = [_binding(acl, op) for acl in kafka_acls() for op in acl.operations]
    for binding, future in admin.create_acls(bindings, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise StackError(f"could not create the Kafka ACL {binding}: {exc}") from None
