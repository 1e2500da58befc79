"""``chatpulse up`` end to end in simulated mode, then Ctrl-C: counts arrive, nothing is left.

Runs against the shared test stack with ``--external`` (so no second stack starts), with
this test's own topic prefix, keyspace, group, state dir and free ports for the API and the
metrics endpoints.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chatpulse.ports import free_port
from chatpulse.settings import Settings

pytestmark = pytest.mark.timeout(420)

CHILDREN = {"fake-twitch", "ingest", "process", "api"}


def _env(settings: Settings, api_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPULSE_")}
    env.update(settings.as_environment())
    env.update(
        {
            "CHATPULSE_API_PORT": str(api_port),
            "CHATPULSE_INGEST_METRICS_PORT": str(free_port()),
            "CHATPULSE_PROCESSOR_METRICS_PORT": str(free_port()),
            "NO_COLOR": "1",
        }
    )
    return env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _in_sessions(sessions: set[int]) -> list[int]:
    """Live processes whose session is one of ``sessions`` (the children and their children:
    each child runs in its own session, with its pid as the session id)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) in sessions and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _wait_for_counts(url: str, proc: subprocess.Popen[bytes], log: Path) -> list[dict]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"chatpulse up exited early:\n{log.read_text()[-4000:]}"
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                items = [i for i in response.json()["items"] if i["total_messages"] > 0]
                if items:
                    return items
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"no counts within 300 s:\n{log.read_text()[-4000:]}")


def test_up_simulated_then_sigint_stops_everything(settings: Settings, tmp_path: Path) -> None:
    api_port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatpulse",
                "up",
                "--external",
                "--sim-channels",
                "6",
                "--sim-rate",
                "40",
                "--stop-timeout",
                "30",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(settings, api_port),
        )
    try:
        items = _wait_for_counts(f"http://127.0.0.1:{api_port}/api/v1/channels", proc, log)
        assert all(item["channel"].startswith("streamer") for item in items)
        text = log.read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", text)}
        assert set(pids) == CHILDREN
        assert all(_alive(pid) for pid in pids.values())
        # the dashboard address is printed once `up` sees /readyz answer, which may come a
        # moment after the API already serves counts
        address = f"http://127.0.0.1:{api_port}/"
        deadline = time.monotonic() + 60
        while address not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert address in log.read_text()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "SIGINT received: stopping everything" in text
    for name, pid in pids.items():
        assert f"stopped {name} (pid {pid}, exit code" in text
        assert not _alive(pid), f"{name} (pid {pid}) still running"
    assert _in_sessions(set(pids.values())) == []
    assert "everything stopped cleanly" in text
    # The processor's state is tied to this cluster (moved aside if the cluster changes).
    assert (settings.state_dir / "kafka-cluster-id").read_text().strip()
