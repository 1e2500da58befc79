"""The lifecycle shared by both servers: a Java process with a config dir, a log and a pid file.

A subclass says what to resolve from Maven, which files to write, how to launch the JVM and when
the server answers clients; this base class starts it in the background, waits for it, and stops it.
"""

import logging
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatpulse.ports import is_port_free
from chatpulse.stack.errors import PortInUseError, ServerExitedError, StackError
from chatpulse.stack.java import find_java
from chatpulse.stack.maven import Artifact, resolve_jars
from chatpulse.stack.process import (
    PidRecord,
    kill_now,
    pid_alive,
    read_pid_record,
    tail,
    terminate,
    write_pid_record,
)

__all__ = ["JavaServer", "ServerStatus"]

logger = logging.getLogger(__name__)

_MAX_LOG_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One line of ``chatpulse stack status``."""

    name: str
    running: bool
    version: str
    pid: int | None
    port: int
    data_dir: Path
    node: int = 1
    address: str = "127.0.0.1"


class JavaServer(ABC):
    """A server run as a background ``java`` process under ``<data_dir>/<name>``.

    ``kind`` names the software (and its jar cache); ``name`` this node: the same as ``kind``
    for a single node, ``<kind>-<n>`` for node n of a cluster.
    """

    kind: str
    name: str
    version: str
    artifacts: Sequence[Artifact]
    node: int = 1
    address: str = "127.0.0.1"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        jar_cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.jar_cache = jar_cache
        self.progress = progress or logger.info

    # --- what a subclass provides -------------------------------------------------------------

    @property
    @abstractmethod
    def config_file(self) -> Path:
        """The main config file; its path also identifies the process (pid file marker)."""

    @property
    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Every port this server binds, by role (checked free before start)."""

    @abstractmethod
    def write_config(self) -> None:
        """Write the generated configuration files under :attr:`home`."""

    @abstractmethod
    def java_command(self, java: Path, lib: Path) -> list[str]:
        """The full command line that runs the server."""

    @abstractmethod
    def answers(self) -> bool:
        """True when the server accepts clients (one quick probe)."""

    def before_start(self, java: Path, lib: Path) -> None:  # noqa: B027 - optional hook
        """Run once before the first start (e.g. format storage)."""

    # --- paths --------------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.data_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    # --- lifecycle ----------------------------------------------------------------------------

    def _record(self) -> PidRecord | None:
        record = read_pid_record(self.pid_file)
        if record is None or not pid_alive(record.pid, record.marker):
            return None
        return record

    @property
    def pid(self) -> int | None:
        """The running server's pid, or None."""
        record = self._record()
        return record.pid if record else None

    def is_running(self) -> bool:
        """True while our server process for this data dir is alive."""
        return self._record() is not None

    def resolve(self) -> Path:
        """The directory of this server's jars (downloaded once)."""
        java = find_java()
        return resolve_jars(
            self.kind,
            self.version,
            self.artifacts,
            cache_dir=self.jar_cache,
            java_home=java.parent.parent,
            progress=self.progress,
        )

    def start(self) -> bool:
        """Start the server in the background; False (a no-op) when it already runs."""
        if self.is_running():
            return False
        for role, port in self.ports.items():
            if not is_port_free(port, self.address):
                where = port if self.address == "127.0.0.1" else f"{self.address}:{port}"
                raise PortInUseError(
                    f"{self.name} cannot start: port {where} ({role}) is already in use by "
                    f"another process; stop it or choose other ports"
                )
        java = find_java()
        lib = self.resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.before_start(java, lib)
        if self.log_file.exists() and self.log_file.stat().st_size > _MAX_LOG_BYTES:
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        command = self.java_command(java, lib)
        with self.log_file.open("ab") as log:
            log.write(f"--- chatpulse: starting {self.name} {self.version}\n".encode())
            log.flush()
            child = subprocess.Popen(  # noqa: S603 - our own command line, no shell
                command,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives us; Ctrl-C in our terminal does not reach it
            )
        # Between fork and exec the child still shows our command line: wait for the exec, so
        # is_running() (which trusts only a command line naming our config) is true from now on.
        marker = str(self.config_file)
        deadline = time.monotonic() + 10
        while not pid_alive(child.pid, marker) and child.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        # A waiting thread reaps the child when it exits, so no zombie outlives it in our process.
        threading.Thread(target=child.wait, name=f"reap-{self.name}", daemon=True).start()
        write_pid_record(self.pid_file, PidRecord(child.pid, self.version, self.port, marker))
        logger.info("started %s %s pid=%d port=%d", self.name, self.version, child.pid, self.port)
        return True

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Block until the server answers clients; raise if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                raise ServerExitedError(
                    f"{self.name} exited during start; last lines of {self.log_file}: "
                    f"{tail(self.log_file)}"
                )
            if self.answers():
                return
            if time.monotonic() > deadline:
                raise ServerExitedError(
                    f"{self.name} did not accept clients within {timeout:.0f}s; "
                    f"last lines of {self.log_file}: {tail(self.log_file)}"
                )
            time.sleep(0.5)

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; False when it was not running."""
        record = self._record()
        if record is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate(record.pid, record.marker, timeout)
        if pid_alive(record.pid, record.marker):
            raise StackError(f"{self.name} (pid {record.pid}) did not stop")
        self.pid_file.unlink(missing_ok=True)
        logger.info("stopped %s pid=%d", self.name, record.pid)
        return True

    def kill(self) -> bool:
        """SIGKILL the server (no shutdown at all, as a crash); False when it was not running."""
        record = self._record()
        if record is None:
            return False
        kill_now(record.pid, record.marker)
        if pid_alive(record.pid, record.marker):
            raise StackError(f"{self.name} (pid {record.pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        logger.info("killed %s pid=%d", self.name, record.pid)
        return True

    def status(self) -> ServerStatus:
        """Running or not, version, pid, port, data dir, node number and address."""
        record = self._record()
        return ServerStatus(
            name=self.name,
            running=record is not None,
            version=record.version if record else self.version,
            pid=record.pid if record else None,
            port=record.port if record else self.port,
            data_dir=self.home,
            node=self.node,
            address=self.address,
        )
