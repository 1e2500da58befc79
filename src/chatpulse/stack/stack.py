"""A stack: Kafka and Cassandra sharing a data directory (which identifies the stack).

One node of each by default. A cluster (``kafka_nodes``/``cassandra_nodes`` above 1) keeps its
shape in ``<data_dir>/cluster.json`` (node counts and the Kafka cluster id), so later commands
without those flags act on the whole cluster; the shape of an existing stack cannot change.

Port layout, each node listening on 127.0.0.1 unless said otherwise:

- one Kafka: client ``kafka_port``, controller ``kafka_port + 1`` (as always);
- N Kafka nodes: clients ``kafka_port`` .. ``kafka_port + N - 1``, controllers the next N
  ports (``kafka_port + N`` .. ``kafka_port + 2N - 1``), one block of 2N ports;
- M Cassandra nodes: node i on 127.0.0.i, every node on CQL ``cassandra_port`` and storage
  (gossip) ``cassandra_port + 1``; node 1 is the seed.

A secured stack (``secure=True`` at its first start; remembered by ``<data_dir>/secrets/``)
takes clients only over TLS with passwords, and authorizes each request: see
:mod:`chatpulse.stack.secrets` and :mod:`chatpulse.stack.access`.
"""

import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from chatpulse.stack.cassandra import CassandraSecurity, CassandraServer, initial_tokens
from chatpulse.stack.errors import StackError
from chatpulse.stack.kafka import KafkaSecurity, KafkaServer, new_cluster_id, replication_for
from chatpulse.stack.process import cmdline_of
from chatpulse.stack.secrets import (
    CASSANDRA_SUPERUSER,
    KAFKA_USERS,
    SERVER_DN,
    StackSecrets,
)
from chatpulse.stack.server import JavaServer, ServerStatus

__all__ = ["DEFAULT_DATA_DIR", "MAX_NODES", "Stack", "find_running_data_dir"]

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "chatpulse" / "stack"
MAX_NODES = 9  # Cassandra nodes use 127.0.0.1-9; more would not fit a laptop anyway

# Heaps of a cluster's nodes: 3 + 3 of them fit a 2-core, 24 GB machine beside chatpulse
# itself (about 3 GB of heap in all). A lone node keeps its larger heap.
CLUSTER_KAFKA_HEAP = "384m"
CLUSTER_CASSANDRA_HEAP = "512m"

_LAYOUT_FILE = "cluster.json"


class Stack:
    """Kafka on ``kafka_port`` and Cassandra on ``cassandra_port`` (layout: module docstring).

    Both keep their data through a crash (SIGKILL); ``cassandra_crash_safe=False`` trades that
    away for faster DDL and writes, for a throwaway test stack only (see ``CassandraServer``).
    ``kafka_nodes``/``cassandra_nodes`` None: as remembered in the data dir, else 1.
    ``secure`` True makes (at its first start) or keeps a secured stack; None: as the data
    dir says. A plain stack's data dir cannot become a secured one.
    """

    def __init__(
        self,
        data_dir: Path = DEFAULT_DATA_DIR,
        *,
        kafka_port: int = 9092,
        cassandra_port: int = 9042,
        kafka_controller_port: int | None = None,
        cassandra_storage_port: int | None = None,
        cassandra_crash_safe: bool = True,
        kafka_nodes: int | None = None,
        cassandra_nodes: int | None = None,
        secure: bool | None = None,
        jar_cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._lock_depth = 0
        layout = self._read_layout()
        self.kafka_nodes = _node_count("Kafka", kafka_nodes, layout.get("kafka_nodes"))
        self.cassandra_nodes = _node_count(
            "Cassandra", cassandra_nodes, layout.get("cassandra_nodes")
        )
        self._kafka_cluster_id = str(layout.get("kafka_cluster_id") or new_cluster_id())
        self.secrets = StackSecrets(self.data_dir / "secrets")
        self.secure = self._secure(secure)
        self.kafka_servers = self._kafka_servers(
            kafka_port, kafka_controller_port, jar_cache, progress
        )
        self.cassandra_servers = self._cassandra_servers(
            cassandra_port, cassandra_storage_port, cassandra_crash_safe, jar_cache, progress
        )
        ports = [
            (server.address, port) for server in self.servers for port in server.ports.values()
        ]
        if len(set(ports)) != len(ports):
            numbers = sorted(port for _, port in ports)
            raise StackError(f"the stack's ports must all differ, got {numbers}")

    def _secure(self, wanted: bool | None) -> bool:
        """Whether this stack is secured; makes its secrets when it becomes so."""
        if self.secrets.exists():
            if wanted is False:
                raise StackError(f"{self.data_dir} holds a secured stack; it stays secured")
            return True
        if not wanted:
            return False
        homes = [*self.data_dir.glob("kafka*"), *self.data_dir.glob("cassandra*")]
        if any(home.is_dir() for home in homes):
            raise StackError(
                f"{self.data_dir} holds a plain stack: a secured one needs a new --data-dir"
            )
        with self.lock():
            self.secrets.ensure(f"127.0.0.{node}" for node in range(1, self.cassandra_nodes + 1))
        return True

    def _kafka_security(self) -> KafkaSecurity | None:
        if not self.secure:
            return None
        return KafkaSecurity(
            keystore=self.secrets.keystore,
            keystore_password=self.secrets.password("keystore"),
            ca_file=self.secrets.ca_cert,
            users={user: self.secrets.password(f"kafka:{user}") for user in KAFKA_USERS},
            super_users=("User:admin", f"User:{SERVER_DN}"),
        )

    def _cassandra_security(self) -> CassandraSecurity | None:
        if not self.secure:
            return None
        return CassandraSecurity(
            keystore=self.secrets.keystore,
            keystore_password=self.secrets.password("keystore"),
            ca_file=self.secrets.ca_cert,
            logins=(
                (CASSANDRA_SUPERUSER, self.secrets.password(f"cassandra:{CASSANDRA_SUPERUSER}")),
                ("cassandra", "cassandra"),
            ),
        )

    def _kafka_servers(
        self,
        port: int,
        controller_port: int | None,
        jar_cache: Path | None,
        progress: Callable[[str], None] | None,
    ) -> list[KafkaServer]:
        if self.kafka_nodes == 1:
            return [
                KafkaServer(
                    self.data_dir,
                    port,
                    controller_port=controller_port,
                    security=self._kafka_security(),
                    jar_cache=jar_cache,
                    progress=progress,
                )
            ]
        first_controller = (
            controller_port if controller_port is not None else port + self.kafka_nodes
        )
        voters = {node: first_controller + node - 1 for node in range(1, self.kafka_nodes + 1)}
        return [
            KafkaServer(
                self.data_dir,
                port + node - 1,
                controller_port=voters[node],
                node_id=node,
                voters=voters,
                cluster_id=self._kafka_cluster_id,
                heap=CLUSTER_KAFKA_HEAP,
                security=self._kafka_security(),
                jar_cache=jar_cache,
                progress=progress,
            )
            for node in voters
        ]

    def _cassandra_servers(
        self,
        port: int,
        storage_port: int | None,
        crash_safe: bool,
        jar_cache: Path | None,
        progress: Callable[[str], None] | None,
    ) -> list[CassandraServer]:
        if self.cassandra_nodes == 1:
            return [
                CassandraServer(
                    self.data_dir,
                    port,
                    storage_port=storage_port,
                    crash_safe=crash_safe,
                    security=self._cassandra_security(),
                    jar_cache=jar_cache,
                    progress=progress,
                )
            ]
        return [
            CassandraServer(
                self.data_dir,
                port,
                storage_port=storage_port,
                crash_safe=crash_safe,
                node=node,
                address=f"127.0.0.{node}",
                initial_token=token,
                peers=self.cassandra_nodes - 1,
                heap=CLUSTER_CASSANDRA_HEAP,
                security=self._cassandra_security(),
                jar_cache=jar_cache,
                progress=progress,
            )
            for node, token in enumerate(initial_tokens(self.cassandra_nodes), start=1)
        ]

    # --- the cluster's shape, remembered in the data dir ---------------------------------------

    @property
    def is_cluster(self) -> bool:
        return self.kafka_nodes > 1 or self.cassandra_nodes > 1

    def _read_layout(self) -> dict[str, object]:
        path = self.data_dir / _LAYOUT_FILE
        if not path.exists():
            return {}
        try:
            layout = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot read {path}: {exc}") from None
        if not isinstance(layout, dict):
            raise StackError(f"{path} does not hold a JSON object")
        return layout

    def _remember_layout(self) -> None:
        if not self.is_cluster:
            return  # a single-node stack's data dir stays as it always was
        path = self.data_dir / _LAYOUT_FILE
        if path.exists():
            return
        layout = {
            "kafka_nodes": self.kafka_nodes,
            "cassandra_nodes": self.cassandra_nodes,
            "kafka_cluster_id": self._kafka_cluster_id,
        }
        homes = [*self.data_dir.glob("kafka*"), *self.data_dir.glob("cassandra*")]
        if any(home.is_dir() for home in homes):
            raise StackError(
                f"{self.data_dir} holds a single-node stack: a cluster needs a new --data-dir"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(layout, indent=2) + "\n", encoding="utf-8")

    # --- servers --------------------------------------------------------------------------------

    @property
    def kafka(self) -> KafkaServer:
        """The first Kafka node (the only one of a single-node stack)."""
        return self.kafka_servers[0]

    @property
    def cassandra(self) -> CassandraServer:
        """The first Cassandra node, the seed (the only one of a single-node stack)."""
        return self.cassandra_servers[0]

    @property
    def servers(self) -> tuple[JavaServer, ...]:
        return (*self.kafka_servers, *self.cassandra_servers)

    @property
    def kafka_bootstrap_servers(self) -> str:
        return ",".join(server.bootstrap_servers for server in self.kafka_servers)

    @property
    def cassandra_contact_points(self) -> list[str]:
        return [server.address for server in self.cassandra_servers]

    def server(self, name: str) -> JavaServer:
        """The node called ``name`` (``kafka-2``, ``cassandra-3``; ``kafka-1`` also names a
        single-node stack's ``kafka``)."""
        for server in self.servers:
            if name in (server.name, f"{server.kind}-{server.node}"):
                return server
        known = ", ".join(server.name for server in self.servers)
        raise StackError(f"no node {name!r} in this stack (it has: {known})")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialize up/down of this stack across processes (e.g. parallel pytest sessions).

        Re-entrant within one ``Stack`` object, so a caller may hold it around ``up()``.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "stack.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    def up(self, timeout: float = 240.0) -> list[str]:
        """Start the nodes that are not running and wait until every node accepts clients
        (a Kafka node of a cluster: until it is an unfenced broker again).

        Returns the names of the servers this call started (empty: it was a no-op).
        """
        with self.lock():
            self._remember_layout()
            new_cluster = len(self.cassandra_servers) > 1 and not any(
                node.has_joined_before for node in self.cassandra_servers
            )
            for node in self.cassandra_servers:
                node.new_cluster = new_cluster
            # Cassandra first: it takes longest to start, so it gets a head start on Kafka.
            started = [
                server.name
                for server in (*self.cassandra_servers, *self.kafka_servers)
                if server.start()
            ]
            try:
                deadline = time.monotonic() + timeout
                for server in self.servers:
                    server.wait_ready(max(1.0, deadline - time.monotonic()))
                if self.secure and started:
                    self.apply_access(max(10.0, deadline - time.monotonic()))
            except BaseException:
                # Leave nothing half-started behind (also on Ctrl-C): stop what this call started.
                for server in self.servers:
                    if server.name in started:
                        server.stop(timeout=10)
                raise
        return [server.name for server in self.servers if server.name in started]

    def apply_access(self, timeout: float = 120.0) -> None:
        """Make the roles and ACLs of :mod:`chatpulse.stack.access` true (idempotent)."""
        # Imported here: it loads both drivers, which a plain stack's commands do not need.
        from chatpulse.stack.access import apply_access  # noqa: PLC0415

        apply_access(
            self.secrets,
            bootstrap_servers=self.kafka_bootstrap_servers,
            cassandra_hosts=self.cassandra_contact_points,
            cassandra_port=self.cassandra.port,
            replication=replication_for(self.cassandra_nodes)[0],
            timeout=timeout,
        )
        logger.info("roles and ACLs in place on the secured stack %s", self.data_dir)

    def down(self, timeout: float = 60.0) -> list[str]:
        """Stop every node (SIGTERM, SIGKILL after ``timeout``); returns the names stopped."""
        with self.lock():
            # Kafka first: its clients notice before their storage goes away. The nodes of a
            # cluster stop together: one by one, the last Kafka nodes would wait out their
            # timeout for a controller quorum that has already gone.
            stopped: list[str] = []
            for group in (self.kafka_servers, self.cassandra_servers):
                with ThreadPoolExecutor(max_workers=len(group)) as pool:
                    results = list(pool.map(lambda server: server.stop(timeout), group))
                stopped += [
                    server.name for server, done in zip(group, results, strict=True) if done
                ]
            return stopped

    def kill(self, name: str) -> bool:
        """SIGKILL the node ``name`` (a crash, for experiments); False when it was not running."""
        return self.server(name).kill()

    def is_running(self) -> bool:
        """True when every node runs."""
        return all(server.is_running() for server in self.servers)

    def status(self) -> list[ServerStatus]:
        """One status per node."""
        return [server.status() for server in self.servers]


def _node_count(what: str, given: int | None, remembered: object) -> int:
    if given is not None and not 1 <= given <= MAX_NODES:
        raise StackError(f"{what} nodes must be 1 to {MAX_NODES}, got {given}")
    if remembered is None:
        return given if given is not None else 1
    if not isinstance(remembered, int) or not 1 <= remembered <= MAX_NODES:
        raise StackError(f"the stack's cluster.json holds a bad {what} node count: {remembered!r}")
    if given is not None and given != remembered:
        raise StackError(
            f"this stack has {remembered} {what} node(s), not {given}: a cluster keeps its "
            "shape; use another --data-dir for another one"
        )
    return remembered


def find_running_data_dir(kafka_port: int) -> Path | None:
    """The data dir of a running chatpulse stack whose Kafka listens on ``kafka_port``, if any.

    Lets a second checkout (e.g. a fresh clone running ``make test``) reuse a test stack that
    another checkout started on the same ports, instead of failing on ports in use.
    """
    wanted = f"PLAINTEXT://127.0.0.1:{kafka_port},"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        args = cmdline_of(int(proc.name)).split()
        if "kafka.Kafka" not in args or not args[-1].endswith("/kafka/server.properties"):
            continue
        config = Path(args[-1])
        try:
            listeners = config.read_text(encoding="utf-8")
        except OSError:
            continue
        if f"listeners={wanted}" in listeners:
            return config.parent.parent
    return None
