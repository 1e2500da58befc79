"""The clusters behind ``chatpulse up``: reuse running ones, start the local stack
(chatpulse.stack's Python API), start or rejoin a local cluster (``--kafka-nodes``,
``--cassandra-nodes``), or insist on the external ones the settings name."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chatpulse.run.errors import RunError, StartupInterruptedError
from chatpulse.run.plan import kafka_address
from chatpulse.run.readiness import tcp_open
from chatpulse.run.supervisor import Supervisor
from chatpulse.settings import Settings
from chatpulse.stack import JavaServer, ServerExitedError, Stack, StackError
from chatpulse.stack.kafka import replication_for
from chatpulse.stack.stack import DEFAULT_DATA_DIR

__all__ = ["ClusterShape", "StackControl", "cluster_settings"]

# `chatpulse up --secure`'s stack: apart from the plain one, which it can never become.
SECURE_DATA_DIR = DEFAULT_DATA_DIR.with_name("secure-stack")

_READY_TIMEOUT_S = 240.0
# A cluster's six JVMs start in about two minutes on 2 cores (docs/operations.md).
_CLUSTER_READY_TIMEOUT_S = 420.0
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
# Cassandra keeps this many copies of each row at most (the keyspace's replication factor).
_CASSANDRA_COPIES = 3


@dataclass(frozen=True, slots=True)
class ClusterShape:
    """How many Kafka and Cassandra nodes ``chatpulse up`` runs locally, and where."""

    kafka_nodes: int = 1
    cassandra_nodes: int = 1
    data_dir: Path | None = None  # None: the default for this shape (default_data_dir)

    @property
    def is_cluster(self) -> bool:
        return self.kafka_nodes > 1 or self.cassandra_nodes > 1

    def default_data_dir(self) -> Path:
        """The single-node stack's dir, or one per cluster shape beside it: a stack's data
        dir fixes its shape, so a cluster never lands in the single-node stack's dir."""
        if not self.is_cluster:
            return DEFAULT_DATA_DIR
        return DEFAULT_DATA_DIR.with_name(f"cluster-k{self.kafka_nodes}-c{self.cassandra_nodes}")


def cluster_settings(settings: Settings, stack: Stack) -> Settings:
    """``settings`` pointed at every node of the local cluster ``stack``, with replication to
    match it (3 copies where there are 3 nodes) unless the user chose a replication factor."""
    chosen = settings.model_fields_set
    update: dict[str, object] = {
        "kafka_bootstrap_servers": stack.kafka_bootstrap_servers,
        "cassandra_contact_points": stack.cassandra_contact_points,
        "cassandra_port": stack.cassandra.port,
    }
    if "topic_replication_factor" not in chosen:
        update["topic_replication_factor"] = replication_for(stack.kafka_nodes)[0]
    if "cassandra_replication_factor" not in chosen:
        update["cassandra_replication_factor"] = min(_CASSANDRA_COPIES, stack.cassandra_nodes)
    return settings.model_copy(update=update)


class StackControl:
    """Starts the local stack when needed and, at the end, stops only the servers it started.

    With a cluster ``shape``, :attr:`settings` point at every node of the local cluster (the
    children must get them: :meth:`child_environment`).
    """

    def __init__(
        self,
        settings: Settings,
        supervisor: Supervisor,
        shape: ClusterShape | None = None,
        *,
        secure: bool = False,
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.started: list[JavaServer] = []
        self._stack: Stack | None = None
        self._cancel = threading.Event()
        self._cluster: Stack | None = None
        self._shape = shape or ClusterShape()
        if secure:
            return  # ensure_secure starts its own stack, of this shape
        if shape is not None and shape.is_cluster:
            _, kafka_port = kafka_address(settings)
            self._cluster = Stack(
                shape.data_dir or shape.default_data_dir(),
                kafka_port=kafka_port,
                cassandra_port=settings.cassandra_port,
                kafka_nodes=shape.kafka_nodes,
                cassandra_nodes=shape.cassandra_nodes,
                progress=self._progress,
            )
            self.settings = cluster_settings(settings, self._cluster)

    def child_environment(self) -> dict[str, str]:
        """What the children need to reach a local cluster (empty without one): the
        ``CHATPULSE_*`` variables that :func:`cluster_settings` changed."""
        if self._cluster is None:
            return {}
        names = (
            "kafka_bootstrap_servers",
            "cassandra_contact_points",
            "cassandra_port",
            "topic_replication_factor",
            "cassandra_replication_factor",
        )
        env = self.settings.as_environment()
        return {key: env[key] for key in (f"CHATPULSE_{name.upper()}" for name in names)}

    def _progress(self, message: str) -> None:
        self.supervisor.say_as("stack", message, style="bright_black")

    def _local(self) -> bool:
        """Whether the settings point at this machine (where a local stack can serve them)."""
        hosts = [kafka_address(self.settings)[0], *self.settings.cassandra_contact_points]
        return all(host in _LOCAL_HOSTS for host in hosts)

    async def _answering(self) -> tuple[bool, bool]:
        kafka_host, kafka_port = kafka_address(self.settings)
        cassandra_host = self.settings.cassandra_contact_points[0]
        return (
            await tcp_open(kafka_host, kafka_port),
            await tcp_open(cassandra_host, self.settings.cassandra_port),
        )

    async def ensure_secure(self) -> Stack:
        """Start (or reuse) the secured local stack of the shape on the settings' ports, with
        its roles and ACLs; :attr:`settings` then point at every node. Returns it."""
        shape = self._shape
        if shape.data_dir is not None:
            data_dir = shape.data_dir
        elif shape.is_cluster:
            data_dir = SECURE_DATA_DIR.with_name(
                f"secure-cluster-k{shape.kafka_nodes}-c{shape.cassandra_nodes}"
            )
        else:
            data_dir = SECURE_DATA_DIR
        _, kafka_port = kafka_address(self.settings)
        began = time.monotonic()
        try:
            secured = Stack(
                data_dir,
                kafka_port=kafka_port,
                cassandra_port=self.settings.cassandra_port,
                kafka_nodes=shape.kafka_nodes,
                cassandra_nodes=shape.cassandra_nodes,
                secure=True,
                progress=self._progress,
            )
            self._progress(
                f"secured stack in {secured.data_dir} (TLS, SCRAM logins, ACLs, roles; secrets "
                "in its secrets/; first run downloads the jars)"
            )
            # Not interruptible: Stack.up holds the stack's lock and stops what it started if
            # it fails; a Ctrl-C meanwhile is acted on when it returns.
            timeout = _CLUSTER_READY_TIMEOUT_S if secured.is_cluster else _READY_TIMEOUT_S
            started = await asyncio.to_thread(secured.up, timeout)
            self.started = [secured.server(name) for name in started]
            # Roles and ACLs (idempotent: also on a stack that was already running).
            await asyncio.to_thread(secured.apply_access)
        except StackError as exc:
            raise RunError(f"secured stack: {exc}") from None
        if started:
            self._progress(f"started {', '.join(started)} in {time.monotonic() - began:.1f}s")
        self.settings = cluster_settings(self.settings, secured)
        return secured

    async def ensure(self, *, external: bool) -> None:
        """Make sure Kafka and Cassandra answer; start the local stack unless ``external``."""
        if self._cluster is not None:
            if external:
                raise RunError("--external uses the clusters the settings name: drop --*-nodes")
            await self._ensure_cluster(self._cluster)
            return
        kafka_up, cassandra_up = await self._answering()
        bootstrap = self.settings.kafka_bootstrap_servers
        cassandra = f"{self.settings.cassandra_contact_points[0]}:{self.settings.cassandra_port}"
        if not external and not self._local():
            self.supervisor.say(
                "the settings name clusters on other hosts: using them (--external)"
            )
            external = True
        if external:
            if not kafka_up:
                raise RunError(
                    f"--external: Kafka does not answer at {bootstrap} "
                    "(CHATPULSE_KAFKA_BOOTSTRAP_SERVERS)"
                )
            if not cassandra_up:
                raise RunError(
                    f"--external: Cassandra does not answer at {cassandra} "
                    "(CHATPULSE_CASSANDRA_CONTACT_POINTS / CHATPULSE_CASSANDRA_PORT)"
                )
            self.supervisor.say(
                f"using external clusters: Kafka {bootstrap}, Cassandra {cassandra}"
            )
            return
        if kafka_up and cassandra_up:
            self.supervisor.say(
                f"reusing the Kafka ({bootstrap}) and Cassandra ({cassandra}) already running; "
                "they stay up on exit"
            )
            return
        _, kafka_port = kafka_address(self.settings)
        self._stack = Stack(
            kafka_port=kafka_port,
            cassandra_port=self.settings.cassandra_port,
            progress=self._progress,
        )
        self._progress(f"local stack in {self._stack.data_dir} (first run downloads the jars)")
        stop_watch = asyncio.create_task(self._cancel_on_stop())
        try:
            await asyncio.to_thread(self._start_stack, self._stack)
        except StackError as exc:
            if self.supervisor.stop_requested:
                raise StartupInterruptedError("interrupted while starting the stack") from None
            raise RunError(f"local stack: {exc}") from None
        finally:
            stop_watch.cancel()

    async def _ensure_cluster(self, cluster: Stack) -> None:
        """Start the cluster's nodes that are not running and wait until each has joined."""
        self._progress(
            f"local cluster in {cluster.data_dir}: {cluster.kafka_nodes} Kafka "
            f"({cluster.kafka_bootstrap_servers}), {cluster.cassandra_nodes} Cassandra "
            f"({', '.join(cluster.cassandra_contact_points)} port {cluster.cassandra.port})"
        )
        began = time.monotonic()
        try:
            # Not interruptible: Stack.up holds the stack's lock and stops what it started
            # if it fails; a Ctrl-C meanwhile is acted on when it returns.
            started = await asyncio.to_thread(cluster.up, _CLUSTER_READY_TIMEOUT_S)
        except StackError as exc:
            raise RunError(f"local cluster: {exc}") from None
        self.started = [cluster.server(name) for name in started]
        if started:
            self._progress(f"started {', '.join(started)} in {time.monotonic() - began:.1f}s")
        else:
            self.supervisor.say("reusing the local cluster already running; it stays up on exit")
        self.supervisor.say(
            f"cluster: topics with {self.settings.topic_replication_factor} copies, keyspace "
            f"with {self.settings.cassandra_replication_factor}, "
            f"consistency {self.settings.cassandra_consistency}"
        )
        if self.supervisor.stop_requested:
            raise StartupInterruptedError("interrupted while starting the cluster")

    async def _cancel_on_stop(self) -> None:
        while not self.supervisor.stop_requested:  # noqa: ASYNC110 - mirrors into a thread event
            await asyncio.sleep(0.2)
        self._cancel.set()

    def _start_stack(self, stack: Stack) -> None:
        """Runs in a worker thread: start the servers (Cassandra, the slowest, first, so both
        boot in parallel), then wait for each, reporting progress."""
        began = time.monotonic()
        with stack.lock():
            for server in reversed(stack.servers):
                if server.start():
                    self.started.insert(0, server)
                    self._progress(f"starting {server.name} {server.version} on port {server.port}")
                else:
                    self._progress(f"{server.name} already running (pid {server.pid})")
            for server in stack.servers:
                self._wait_ready(server)
                self._progress(f"{server.name} ready after {time.monotonic() - began:.1f}s")

    def _wait_ready(self, server: JavaServer) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if self._cancel.is_set():
                raise StackError(f"interrupted while {server.name} was starting")
            try:
                server.wait_ready(timeout=1.0)
            except ServerExitedError:
                if not server.is_running() or time.monotonic() > deadline:
                    raise
            else:
                return

    async def release(self, *, keep: bool) -> None:
        """Stop the servers this run started (unless ``keep``)."""
        if not self.started:
            return
        names = ", ".join(server.name for server in self.started)
        if keep:
            self.supervisor.say(
                f"leaving {names} running (--keep-stack); `chatpulse stack down` stops them"
            )
            return
        self.supervisor.say(f"stopping the local {names} it started")
        if self._cluster is not None and len(self.started) == len(self._cluster.servers):
            # Together, as `chatpulse stack down` does: one by one, the last Kafka nodes
            # would wait out their timeout for a controller quorum already gone.
            await asyncio.to_thread(self._cluster.down, 60.0)
            self._progress(f"stopped {names}")
            return
        for server in self.started:  # Kafka first, as `chatpulse stack down` does
            try:
                await asyncio.to_thread(server.stop, 60.0)
            except StackError as exc:
                self.supervisor.say(f"could not stop {server.name}: {exc}", style="bold red")
            else:
                self._progress(f"stopped {server.name}")
