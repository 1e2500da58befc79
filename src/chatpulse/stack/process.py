"""Background processes: pid files, liveness, and stopping without strays.

Hand-written on purpose: the servers must outlive the ``chatpulse`` process that started them
(``start_new_session``), so later commands find them again through a pid file, and the pid is
trusted only while ``/proc/<pid>/cmdline`` still names our config file (pids are reused).
"""

import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "PidRecord",
    "can_connect",
    "cmdline_of",
    "kill_now",
    "pid_alive",
    "read_pid_record",
    "tail",
    "terminate",
    "write_pid_record",
]


@dataclass(frozen=True, slots=True)
class PidRecord:
    """What a pid file holds: who runs, which version, on which port."""

    pid: int
    version: str
    port: int
    marker: str  # a string the process's command line contains (its config path)


def write_pid_record(path: Path, record: PidRecord) -> None:
    """Write the pid file atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
    tmp.replace(path)


def read_pid_record(path: Path) -> PidRecord | None:
    """The pid file's record, or None when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PidRecord(
            pid=int(data["pid"]),
            version=str(data["version"]),
            port=int(data["port"]),
            marker=str(data["marker"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cmdline_of(pid: int) -> str:
    """The process's command line joined by spaces ('' when gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def pid_alive(pid: int, marker: str) -> bool:
    """True while ``pid`` runs and is the process we started (its command line has ``marker``)."""
    return marker in cmdline_of(pid)


def can_connect(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _shorten(line: str, limit: int = 240) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def tail(path: Path, lines: int = 10) -> str:
    """The last lines of a log file, joined by `` | `` to fit on one line."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    # Long lines (Cassandra logs whole paths) are cut so the message stays readable.
    kept = [_shorten(line.strip()) for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(empty log)"


def _wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return True
        time.sleep(0.1)
    return not pid_alive(pid, marker)


def terminate(pid: int, marker: str, timeout: float) -> None:
    """SIGTERM ``pid``; after ``timeout`` seconds SIGKILL its whole process group; wait till gone.

    The server was started as a session leader, so its process group holds it and anything it
    spawned: killing the group leaves no stray process.
    """
    if not pid_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, marker, timeout):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, marker, 10.0)


def kill_now(pid: int, marker: str, timeout: float = 10.0) -> None:
    """SIGKILL ``pid``'s process group at once (a simulated crash) and wait till it is gone."""
    if not pid_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, marker, timeout)
