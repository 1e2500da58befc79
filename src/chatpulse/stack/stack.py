"""A stack: one Kafka and one Cassandra sharing a data directory (which identifies the stack)."""

import fcntl
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from chatpulse.stack.cassandra import CassandraServer
from chatpulse.stack.errors import StackError
from chatpulse.stack.kafka import KafkaServer
from chatpulse.stack.process import cmdline_of
from chatpulse.stack.server import JavaServer, ServerStatus

__all__ = ["DEFAULT_DATA_DIR", "Stack", "find_running_data_dir"]

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "chatpulse" / "stack"


class Stack:
    """Kafka on ``kafka_port`` (+1 controller) and Cassandra on ``cassandra_port`` (+1 storage).

    Both keep their data through a crash (SIGKILL); ``cassandra_crash_safe=False`` trades that
    away for faster DDL and writes, for a throwaway test stack only (see ``CassandraServer``).
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
        jar_cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.kafka = KafkaServer(
            self.data_dir,
            kafka_port,
            controller_port=kafka_controller_port,
            jar_cache=jar_cache,
            progress=progress,
        )
        self.cassandra = CassandraServer(
            self.data_dir,
            cassandra_port,
            storage_port=cassandra_storage_port,
            crash_safe=cassandra_crash_safe,
            jar_cache=jar_cache,
            progress=progress,
        )
        self._lock_depth = 0
        ports = [*self.kafka.ports.values(), *self.cassandra.ports.values()]
        if len(set(ports)) != len(ports):
            raise StackError(f"the stack's ports must all differ, got {sorted(ports)}")

    @property
    def servers(self) -> tuple[JavaServer, ...]:
        return (self.kafka, self.cassandra)

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

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
        """Start what is not running and wait until both accept clients.

        Returns the names of the servers this call started (empty: it was a no-op).
        """
        with self.lock():
            # Cassandra first: it takes longest to start, so it gets a head start on Kafka.
            started = [server.name for server in reversed(self.servers) if server.start()]
            started.reverse()
            try:
                for server in self.servers:
                    server.wait_ready(timeout)
            except BaseException:
                # Leave nothing half-started behind (also on Ctrl-C): stop what this call started.
                for server in self.servers:
                    if server.name in started:
                        server.stop(timeout=10)
                raise
        return started

    def down(self, timeout: float = 60.0) -> list[str]:
        """Stop both servers (SIGTERM, SIGKILL after ``timeout``); returns the names stopped."""
        with self.lock():
            # Kafka first: its clients notice before their storage goes away.
            return [server.name for server in self.servers if server.stop(timeout)]

    def is_running(self) -> bool:
        """True when both servers run."""
        return all(server.is_running() for server in self.servers)

    def status(self) -> list[ServerStatus]:
        """One status per server."""
        return [server.status() for server in self.servers]


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
