"""Apache Cassandra 5.0.x as one node.

``cassandra.yaml`` and the logback config are generated here (Cassandra rejects unknown yaml keys,
so only keys a single node needs are written). Cassandra 5.0 must run on Java 17 (see ``java.py``);
its JVM flags are the module exports/opens upstream lists for Java 17, plus fast-start properties.
"""

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chatpulse.stack.maven import Artifact
from chatpulse.stack.process import can_connect
from chatpulse.stack.server import JavaServer

__all__ = [
    "CASSANDRA_VERSION",
    "CassandraSecurity",
    "CassandraServer",
    "cassandra_jvm_flags",
    "cassandra_yaml",
    "initial_tokens",
    "quiet_driver",
]

logger = logging.getLogger(__name__)

CASSANDRA_VERSION = "5.0.8"

_ADD_EXPORTS = [
    "java.base/jdk.internal.misc",
    "java.base/java.lang.ref",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.management/com.sun.jmx.remote.security",
    "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server",
    "java.sql/java.sql",
    "jdk.unsupported/sun.misc",
]
_ADD_OPENS = [
    *(
        f"java.base/{package}"
        for package in (
            "java.lang.module",
            "jdk.internal.loader",
            "jdk.internal.ref",
            "jdk.internal.reflect",
            "jdk.internal.math",
            "jdk.internal.module",
            "jdk.internal.util.jar",
            "sun.nio.ch",
            "java.io",
            "java.lang.reflect",
            "java.lang",
            "java.util",
            "java.nio",
        )
    ),
    "jdk.management/com.sun.management.internal",
]


# Group commit: a write is acknowledged once the commit log holding it is synced, and syncs
# happen at most every 10 ms. Periodic sync (Cassandra's default, every 10 s) acknowledges
# before that, and a crash of the process alone (SIGKILL, OOM kill) then loses the writes of
# the last seconds: the commit log replay stops at the last sync marker, even though the
# data after it is still in the OS page cache (tests/integration/test_crash_durability.py).
# A write waits for its sync in one of the ``concurrent_writes`` mutation threads: at the default
# 32 threads and a 10 ms window a node applies at most ~3,000 mutations (partitions written) a
# second however idle its CPU, and the processor writes about two per message (its minute of
# the channel, its user's history). The waiting threads cost no CPU, so there are more of them.
_CRASH_SAFE_COMMITLOG = {
    "commitlog_sync": "group",
    "commitlog_sync_group_window": "10ms",
    "concurrent_writes": 128,
}
_FAST_COMMITLOG = {"commitlog_sync": "periodic", "commitlog_sync_period": "10000ms"}


@contextmanager
def quiet_driver() -> Iterator[None]:
    """Probes expect refusals (a node still starting, the default login already replaced):
    the driver would log each one as an error with a traceback."""
    loggers = [logging.getLogger(name) for name in ("cassandra.cluster", "cassandra.connection")]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for one, level in zip(loggers, levels, strict=True):
            one.setLevel(level)


@dataclass(frozen=True, slots=True)
class CassandraSecurity:
    """A secured node: logins checked (``PasswordAuthenticator``), every statement authorized
    against the roles' grants (``CassandraAuthorizer``), and clients on TLS only.

    ``logins`` are what the readiness probe tries, in order: the stack's own superuser, then
    Cassandra's default one (which exists only until the stack's first start replaces it).
    Nodes talk to each other (gossip, storage port) without TLS, on loopback addresses.
    """

    keystore: Path  # PKCS#12: the node's key and certificate chain
    keystore_password: str
    ca_file: Path  # PEM: what clients (the probe included) trust
    logins: tuple[tuple[str, str], ...]

    def yaml_settings(self) -> dict[str, object]:
        return {
            "authenticator": "PasswordAuthenticator",
            "authorizer": "CassandraAuthorizer",
            "role_manager": "CassandraRoleManager",
            "client_encryption_options": {
                "enabled": True,
                "optional": False,  # plaintext clients are refused
                "keystore": str(self.keystore),
                "keystore_password": self.keystore_password,
                "store_type": "PKCS12",
                "require_client_auth": False,
            },
        }


def initial_tokens(nodes: int) -> list[int]:
    """Murmur3 tokens spread evenly over the ring, one per node (node i owns an equal share)."""
    step = 2**64 // nodes
    return [-(2**63) + i * step for i in range(nodes)]


def cassandra_yaml(
    *,
    port: int,
    storage_port: int,
    home: Path,
    crash_safe: bool = True,
    address: str = "127.0.0.1",
    seed: str = "127.0.0.1",
    initial_token: int | None = None,
    new_cluster: bool = False,
    security: CassandraSecurity | None = None,
    overrides: Mapping[str, object] | None = None,
) -> str:
    """A minimal ``cassandra.yaml`` (JSON is valid YAML, and needs no quoting rules).

    ``crash_safe=False`` (a throwaway test stack) acknowledges writes before their commit log
    is synced: faster, and a crash loses the last seconds of writes.

    A node of a cluster listens on its own ``address`` (same ports on every node) and gets
    its ``initial_token`` (one evenly spaced token per node). ``new_cluster`` (every node
    starting for the first time, no data anywhere) turns bootstrap off: bootstrap streams a
    joining node's ranges from their current owners and refuses to run for two nodes at once,
    so nodes bootstrap one at a time, each waiting 30 s of ring delay; on an empty cluster
    there is nothing to stream, and with fixed distinct tokens nothing to negotiate, so all
    nodes can join at once. A node that has joined once never bootstraps again, so later
    starts (also of a single killed node) write no such key.

    ``security`` secures it (see :class:`CassandraSecurity`). ``overrides`` replace or add
    keys last (benchmarks compare settings with them: bench/cassandra_writes.py).
    """
    data = home / "data"
    cluster: dict[str, object] = {}
    if initial_token is not None:
        cluster["initial_token"] = str(initial_token)
    if new_cluster:
        cluster["auto_bootstrap"] = False
    config = {
        "cluster_name": "chatpulse",
        "num_tokens": 1,
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "endpoint_snitch": "SimpleSnitch",
        "seed_provider": [
            {
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [{"seeds": f"{seed}:{storage_port}"}],
            }
        ],
        "listen_address": address,
        "rpc_address": address,
        **cluster,
        "storage_port": storage_port,
        "native_transport_port": port,
        "start_native_transport": True,
        **(_CRASH_SAFE_COMMITLOG if crash_safe else _FAST_COMMITLOG),
        "data_file_directories": [str(data / "data")],
        "commitlog_directory": str(data / "commitlog"),
        "saved_caches_directory": str(data / "saved_caches"),
        "hints_directory": str(data / "hints"),
        "cdc_raw_directory": str(data / "cdc_raw"),
        "auto_snapshot": False,
        "snapshot_before_compaction": False,
        # The processor's batches hold one partition (or a few small ones) and stay under
        # 20 KB: Cassandra's efficient case. At the default 5 KiB every one of them logged a
        # warning on the server and carried it back to the driver (40k lines an hour here).
        "batch_size_warn_threshold": "32KiB",
        **(security.yaml_settings() if security else {}),
        **(overrides or {}),
    }
    return "# Generated by chatpulse stack; rewritten at every start.\n" + json.dumps(
        config, indent=2
    )


def logback_xml() -> str:
    """INFO to stdout, which the stack redirects into its log file."""
    return """<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by chatpulse stack. -->
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <!-- Several lines per table created, flushed or compacted: tests create thousands. -->
  <logger name="org.apache.cassandra.db" level="WARN"/>
  <logger name="org.apache.cassandra.io.sstable" level="WARN"/>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


def cassandra_jvm_flags(
    *, lib: Path, home: Path, log_dir: Path, heap: str = "1g", unsafe_system: bool = False
) -> list[str]:
    """Heap, Java 17 module access, the jamm agent and the fast-start system properties.

    ``unsafe_system`` adds ``-Dcassandra.unsafesystem=true``: Cassandra then neither writes
    schema changes to the commit log nor flushes them, which makes DDL faster and a SIGKILL
    fatal to every keyspace created since the last clean stop ("keyspace ... does not
    exist" while ``system_schema`` lists it; the commit-log replay drops its rows as
    "unknown CF"). Only for a throwaway test stack, never one that keeps data.
    """
    jamm = sorted(lib.glob("jamm-*.jar"))
    flags = [
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-Xss256k",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.net.preferIPv4Stack=true",
        "-Djdk.attach.allowAttachSelf=true",
        "-Dio.netty.tryReflectionSetAccessible=true",
        *(f"--add-exports={item}=ALL-UNNAMED" for item in _ADD_EXPORTS),
        *(f"--add-opens={item}=ALL-UNNAMED" for item in _ADD_OPENS),
        f"-Dcassandra.config=file://{home / 'cassandra.yaml'}",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.storagedir={home / 'data'}",
        f"-Dcassandra.logdir={log_dir}",
        f"-Dcassandra.triggers_dir={home / 'triggers'}",
        f"-Dlogback.configurationFile={home / 'logback.xml'}",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.superuser_setup_delay_ms=0",
    ]
    if unsafe_system:
        flags.append("-Dcassandra.unsafesystem=true")
    if jamm:
        flags.insert(0, f"-javaagent:{jamm[-1]}")
    return flags


class CassandraServer(JavaServer):
    """One Cassandra node; ``storage_port`` (gossip) defaults to ``port + 1``.

    Alone (``initial_token`` None) it is named ``cassandra`` and lives in
    ``<data_dir>/cassandra`` on 127.0.0.1; as node ``node`` of a cluster it is
    ``cassandra-<node>`` in ``<data_dir>/cassandra-<node>`` on ``address``, gossiping with
    ``seed``.

    Schema and every acknowledged write survive a SIGKILL (and a power cut) unless
    ``crash_safe`` is False, which only a throwaway test stack may ask for: then schema
    changes are not made durable (``-Dcassandra.unsafesystem=true``, see
    :func:`cassandra_jvm_flags`) and the commit log is synced every 10 s, after the writes
    are acknowledged.
    """

    kind = "cassandra"
    name = "cassandra"
    version = CASSANDRA_VERSION
    artifacts = (Artifact("org.apache.cassandra", "cassandra-all", CASSANDRA_VERSION),)

    def __init__(
        self,
        data_dir: Path,
        port: int = 9042,
        *,
        storage_port: int | None = None,
        heap: str = "1g",
        crash_safe: bool = True,
        node: int = 1,
        address: str = "127.0.0.1",
        seed: str = "127.0.0.1",
        initial_token: int | None = None,
        peers: int = 0,
        security: CassandraSecurity | None = None,
        jar_cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
        yaml_overrides: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(data_dir, port, jar_cache=jar_cache, progress=progress)
        self.security = security
        self.yaml_overrides = dict(yaml_overrides or {})
        self.storage_port = storage_port if storage_port is not None else port + 1
        self.heap = heap
        self.crash_safe = crash_safe
        self.node = node
        self.address = address
        self.seed = seed
        self.initial_token = initial_token
        # The other nodes of its cluster: ready only once it knows them all (see answers()).
        self.peers = peers
        # Set by the stack when every node of a cluster starts for the first time.
        self.new_cluster = False
        if initial_token is not None:
            self.name = f"cassandra-{node}"

    @property
    def config_file(self) -> Path:
        return self.home / "cassandra.yaml"

    @property
    def ports(self) -> dict[str, int]:
        return {"CQL": self.port, "storage": self.storage_port}

    def write_config(self) -> None:
        (self.home / "triggers").mkdir(exist_ok=True)
        # A secured node's file holds the keystore password: its owner alone reads it.
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)
        self.config_file.write_text(
            cassandra_yaml(
                port=self.port,
                storage_port=self.storage_port,
                home=self.home,
                crash_safe=self.crash_safe,
                address=self.address,
                seed=self.seed,
                initial_token=self.initial_token,
                new_cluster=self.new_cluster,
                security=self.security,
                overrides=self.yaml_overrides,
            ),
            encoding="utf-8",
        )
        (self.home / "logback.xml").write_text(logback_xml(), encoding="utf-8")

    def java_command(self, java: Path, lib: Path) -> list[str]:
        flags = cassandra_jvm_flags(
            lib=lib,
            home=self.home,
            log_dir=self.log_file.parent,
            heap=self.heap,
            unsafe_system=not self.crash_safe,
        )
        return [
            str(java),
            *flags,
            "-cp",
            f"{lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    @property
    def has_joined_before(self) -> bool:
        """True once the node has data (it then never bootstraps again)."""
        return (self.home / "data" / "data").exists()

    def answers(self) -> bool:
        if not can_connect(self.port, self.address):
            return False
        if self.security is None:
            return self._answers_as(None)
        with quiet_driver():
            return any(self._answers_as(login) for login in self.security.logins)

    def _answers_as(self, login: tuple[str, str] | None) -> bool:
        # Imported here: the package's pure parts (config generation) need no driver.
        import ssl  # noqa: PLC0415

        from cassandra.auth import PlainTextAuthProvider  # noqa: PLC0415
        from cassandra.cluster import (  # noqa: PLC0415
            EXEC_PROFILE_DEFAULT,
            Cluster,
            ExecutionProfile,
        )
        from cassandra.policies import WhiteListRoundRobinPolicy  # noqa: PLC0415

        # Only this node answers (in a cluster the driver would else take any other one).
        policy = WhiteListRoundRobinPolicy([self.address])
        profile = ExecutionProfile(load_balancing_policy=policy, request_timeout=5)
        auth, context = None, None
        if self.security is not None and login is not None:
            auth = PlainTextAuthProvider(username=login[0], password=login[1])
            context = ssl.create_default_context(cafile=str(self.security.ca_file))
        cluster = Cluster(
            [self.address],
            port=self.port,
            protocol_version=5,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=5,
            control_connection_timeout=5,  # the 2 s default is too short on a loaded machine
            auth_provider=auth,
            ssl_context=context,
        )
        try:
            session = cluster.connect()
            session.execute("SELECT release_version FROM system.local", timeout=5)
            # A node of a new cluster answers clients before gossip has told it of the others:
            # a keyspace created then gets one copy ("replication factor 3 ... higher than the
            # number of nodes 1") and the other nodes never hear of it. Ready once every
            # other node is among its peers (a row is written when a peer joins the ring).
            if self.peers:
                known = session.execute("SELECT peer FROM system.peers", timeout=5).all()
                if len(known) < self.peers:
                    return False
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        finally:
            cluster.shutdown()
        return True
