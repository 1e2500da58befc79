"""Apache Kafka 4.x as KRaft nodes, each broker and controller in one JVM.

The configuration is generated here from our settings (no upstream file is copied). On one node,
transactions need the transaction-state topic to fit one broker (replication 1, min ISR 1); on a
cluster every topic, internal ones included, gets replication min(3, nodes) and min ISR one less
(2 of 3), so one broker may die without losing an acknowledged (acks=all) write or blocking
producers. The internal topics get few partitions and consumer groups no initial rebalance
delay, so a test stack starts fast.
"""

import base64
import logging
import subprocess
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from chatpulse.stack.errors import StackError
from chatpulse.stack.maven import Artifact
from chatpulse.stack.process import can_connect
from chatpulse.stack.server import JavaServer

__all__ = [
    "KAFKA_VERSION",
    "KafkaSecurity",
    "KafkaServer",
    "kafka_properties",
    "log4j2_properties",
    "new_cluster_id",
    "replication_for",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
# Kafka 4.1 logs through slf4j 1.7 to log4j2; the binding ships in the release tarball, not the POM.
_LOG4J_VERSION = "2.24.3"

KAFKA_JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-Djava.awt.headless=true",
]


def replication_for(nodes: int) -> tuple[int, int]:
    """(replication factor, min in-sync replicas) of a Kafka of ``nodes`` brokers.

    Three copies where there are three brokers; min ISR one less, so an acks=all write
    survives the loss of any one broker and producers keep going while one is down.
    """
    replication = min(3, nodes)
    return replication, max(1, replication - 1)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """A secured node: clients on ``SASL_SSL`` with SCRAM-SHA-512, nodes calling each other's
    controller listener with mutual TLS (``super_users`` names the certificate's principal),
    every request checked by the ``StandardAuthorizer`` (no ACL: denied).

    ``users`` maps each SCRAM user to its password; ``admin`` among them is a super user and
    the identity of a broker talking to other brokers.
    """

    keystore: Path  # PKCS#12: the node's key and certificate chain
    keystore_password: str
    ca_file: Path  # PEM: what a node trusts when it calls another node
    users: Mapping[str, str]
    super_users: tuple[str, ...] = ("User:admin",)

    def server_settings(self, port: int, controller_port: int) -> dict[str, str]:
        admin = self.users["admin"]
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="admin" password="{admin}";'
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            # The controller listener takes only nodes, which show the stack's certificate.
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": ";".join(self.super_users),
        }

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create every user in the new cluster."""
        arguments: list[str] = []
        for user, password in sorted(self.users.items()):
            arguments += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        return arguments

    def client_config(self, user: str = "admin") -> dict[str, str]:
        """librdkafka properties that connect as ``user``."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": self.users[user],
            "ssl.ca.location": str(self.ca_file),
        }


def kafka_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    node_id: int = 1,
    voters: dict[int, int] | None = None,
    security: KafkaSecurity | None = None,
) -> str:
    """``server.properties`` of node ``node_id``; ``voters`` maps each node id of the
    controller quorum to its controller port (default: this node alone); ``security``
    secures it (see :class:`KafkaSecurity`)."""
    quorum = voters or {node_id: controller_port}
    replication, min_isr = (str(n) for n in replication_for(len(quorum)))
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": ",".join(
            f"{voter}@127.0.0.1:{voter_port}" for voter, voter_port in sorted(quorum.items())
        ),
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "num.recovery.threads.per.data.dir": "2",
    }
    if security is not None:
        settings.update(security.server_settings(port, controller_port))
    lines = ["# Generated by chatpulse stack; rewritten at every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


# Loggers that write several lines per partition created or deleted: tests create thousands.
_PER_PARTITION_LOGGERS = (
    "state.change.logger",
    "kafka.request.logger",
    "kafka.log",
    "kafka.cluster.Partition",
    "kafka.server.ReplicaFetcherManager",
    "kafka.server.ReplicaAlterLogDirsManager",
    "kafka.server.metadata.DynamicConfigPublisher",
    "org.apache.kafka.storage.internals.log",
    "org.apache.kafka.controller.ReplicationControlManager",
    "org.apache.kafka.controller.ConfigurationControlManager",
)


def log4j2_properties() -> str:
    """Log at INFO to stdout (redirected to the stack's log file); per-partition chatter at WARN."""
    return """# Generated by chatpulse stack.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# Each request the authorizer refuses, at INFO (what is allowed is DEBUG, not logged).
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
""" + "".join(
        f"logger.quiet{n}.name = {name}\nlogger.quiet{n}.level = WARN\n"
        for n, name in enumerate(_PER_PARTITION_LOGGERS)
    )


def new_cluster_id() -> str:
    """16 random bytes, url-safe base64 without padding, as Kafka's own tool makes them.

    Never starting with '-', which the storage tool's argument parser would take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaServer(JavaServer):
    """One Kafka node; ``controller_port`` defaults to ``port + 1``.

    Alone (``voters`` None) it is named ``kafka`` and lives in ``<data_dir>/kafka``; as node
    ``node_id`` of a quorum it is ``kafka-<node_id>`` in ``<data_dir>/kafka-<node_id>``, and all
    nodes must be formatted with the same ``cluster_id``.
    """

    kind = "kafka"
    name = "kafka"
    version = KAFKA_VERSION
    artifacts = (
        Artifact("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
        Artifact("org.apache.logging.log4j", "log4j-slf4j-impl", _LOG4J_VERSION),
    )

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        *,
        controller_port: int | None = None,
        node_id: int = 1,
        voters: dict[int, int] | None = None,
        cluster_id: str | None = None,
        heap: str = "512m",
        security: KafkaSecurity | None = None,
        jar_cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(data_dir, port, jar_cache=jar_cache, progress=progress)
        self.security = security
        self.controller_port = controller_port if controller_port is not None else port + 1
        self.node = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self.heap = heap
        if voters is not None:
            self.name = f"kafka-{node_id}"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.home / "data"

    @property
    def ports(self) -> dict[str, int]:
        return {"client": self.port, "controller": self.controller_port}

    def write_config(self) -> None:
        text = kafka_properties(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.log_dir,
            node_id=self.node,
            voters=self.voters,
            security=self.security,
        )
        # A secured node's file holds passwords: its owner alone reads it.
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)
        self.config_file.write_text(text, encoding="utf-8")
        (self.home / "log4j2.properties").write_text(log4j2_properties(), encoding="utf-8")

    def before_start(self, java: Path, lib: Path) -> None:
        """Format the KRaft storage once (a new cluster id per data dir)."""
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or new_cluster_id()
        command = [
            str(java),
            *self._log_flags(),
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
            "--ignore-formatted",
            *(self.security.scram_arguments() if self.security else []),
        ]
        done = subprocess.run(  # noqa: S603 - our own command line, no shell
            command, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise StackError(f"kafka storage format failed: {tail}")
        logger.info("formatted kafka storage in %s (cluster id %s)", self.log_dir, cluster_id)

    def _log_flags(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
        ]

    def java_command(self, java: Path, lib: Path) -> list[str]:
        return [
            str(java),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            *KAFKA_JVM_FLAGS,
            *self._log_flags(),
            "-cp",
            f"{lib}/*",
            "kafka.Kafka",
            str(self.config_file),
        ]

    def answers(self) -> bool:
        if not can_connect(self.port):
            return False
        # Imported here: the package's pure parts (config generation) need no client library.
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "logger": logger,
                "log_level": 3,
                **(self.security.client_config() if self.security else {}),
            }
        )
        try:
            metadata = admin.list_topics(timeout=5)
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        # In a cluster the node has (re)joined once it is an unfenced broker in the metadata
        # (a fenced one is left out): it then takes partitions and replicates again.
        return self.voters is None or self.node in metadata.brokers
