"""``chatpulse up --secure`` end to end on the session's secured stack, then Ctrl-C.

``up`` runs in a subprocess with ``--data-dir`` naming the ``secure_stack`` fixture's stack,
which it finds running and leaves running. The simulated chat must come out exact: every
message ingest wrote (read back from the messages topic as the admin) is what the API, as its
own principal over HTTPS, serves per channel, once the chat is paused and the processor has
caught up.
"""

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from test_up import CHILDREN, alive, in_sessions

from chatpulse.fake_twitch.simulate import channel_names
from chatpulse.lab.kit import read_all
from chatpulse.models import decode_chat_message
from chatpulse.ports import free_port
from chatpulse.settings import Settings
from chatpulse.stack import Stack
from chatpulse.stack.cli import stack_environment
from chatpulse.stack.secrets import CASSANDRA_ROLES, CASSANDRA_SUPERUSER, KAFKA_USERS
from chatpulse.storage import connect
from chatpulse.topics import Topics
from conftest import principal_settings

pytestmark = [pytest.mark.secure, pytest.mark.timeout(480)]

T = TypeVar("T")

SIM_CHANNELS = 4
# Each child's Kafka user and Cassandra role (None: it has no business there).
PRINCIPALS = {
    "fake-twitch": (None, None),
    "ingest": ("ingest", None),
    "process": ("processor", CASSANDRA_ROLES["process"]),
    "api": ("api", CASSANDRA_ROLES["api"]),
}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw if entry)
    return {name: value for name, _, value in pairs}


def _totals(url: str, ca: Path) -> dict[str, int]:
    """The simulated channels' total messages the API serves (empty while it is not up)."""
    try:
        response = httpx.get(url, timeout=5, verify=ssl.create_default_context(cafile=ca))
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    wanted = set(channel_names(SIM_CHANNELS))
    return {
        item["channel"]: item["total_messages"]
        for item in response.json()["items"]
        if item["channel"] in wanted and item["total_messages"] > 0
    }


def _wait(
    what: str,
    check: Callable[[], T | None],
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 240,
) -> T:
    """``check()``'s first truthy value, polled each second while ``up`` runs."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"chatpulse up exited early:\n{log.read_text()[-4000:]}"
        value = check()
        if value:
            return value
        tail = log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s:\n{tail}"
        time.sleep(1)


def _connected_roles(stack: Stack) -> set[str]:
    """The Cassandra roles with a client connection now (its virtual table, as superuser)."""
    superuser = principal_settings(
        stack_environment(stack, "admin"),
        cassandra_username=CASSANDRA_SUPERUSER,
        cassandra_password=stack.secrets.password(f"cassandra:{CASSANDRA_SUPERUSER}"),
    )
    cluster, session = connect(superuser)
    try:
        rows = session.execute("SELECT username FROM system_views.clients", timeout=30)
        return {row.username for row in rows if row.username}
    finally:
        cluster.shutdown()


def _in_topic(admin: Settings) -> dict[str, int]:
    """Messages per simulated channel in the messages topic (read as the admin)."""
    records = read_all(admin, Topics.from_settings(admin).messages, idle_s=0.5, timeout_s=60)
    counts = Counter(decode_chat_message(record.value()).channel for record in records)
    wanted = set(channel_names(SIM_CHANNELS))
    return {channel: n for channel, n in counts.items() if channel in wanted}


def test_up_secure_runs_each_service_as_its_principal_exactly_then_sigint(
    secure_stack: Stack, tmp_path: Path
) -> None:
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPULSE_")}
    # As a user sets it: the ports only; `up --secure` finds every credential in the stack.
    env.update(
        {
            "CHATPULSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{secure_stack.kafka.port}",
            "CHATPULSE_CASSANDRA_PORT": str(secure_stack.cassandra.port),
            "CHATPULSE_STATE_DIR": str(tmp_path / "state"),
            "CHATPULSE_SPILL_DIR": str(tmp_path / "spill"),
            "CHATPULSE_API_PORT": str(api_port),
            "CHATPULSE_INGEST_METRICS_PORT": str(free_port()),
            "CHATPULSE_PROCESSOR_METRICS_PORT": str(free_port()),
            "NO_COLOR": "1",
        }
    )
    ca = secure_stack.secrets.ca_cert
    url = f"https://127.0.0.1:{api_port}/api/v1/channels"
    log = tmp_path / "up.log"
    argv = [sys.executable, "-m", "chatpulse", "up", "--secure"]
    argv += ["--data-dir", str(secure_stack.data_dir), "--sim-channels", str(SIM_CHANNELS)]
    argv += ["--sim-rate", "40", "--stop-timeout", "30"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        first = _wait("counts over HTTPS", lambda: _totals(url, ca), proc, log)
        # The dashboard's address, printed once `up` saw /readyz answer over HTTPS.
        address = f"https://127.0.0.1:{api_port}/"
        _wait("dashboard address", lambda: address in log.read_text(), proc, log, 60)
        text = log.read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", text)}
        assert set(pids) == CHILDREN

        # Each child holds its own principal's credentials and no one else's.
        secrets = secure_stack.secrets
        passwords = {f"kafka:{user}": secrets.password(f"kafka:{user}") for user in KAFKA_USERS}
        passwords |= {
            f"cassandra:{role}": secrets.password(f"cassandra:{role}")
            for role in (*CASSANDRA_ROLES.values(), CASSANDRA_SUPERUSER)
        }
        for name, (user, role) in PRINCIPALS.items():
            child = _environ(pids[name])
            assert child.get("CHATPULSE_KAFKA_SASL_USERNAME") == user, name
            assert child.get("CHATPULSE_CASSANDRA_USERNAME") == role, name
            own = {f"kafka:{user}", f"cassandra:{role}"}
            held = {key for key, secret in passwords.items() if secret in child.values()}
            assert held == own & set(passwords), name
        # Cassandra sees the processor's and the API's roles connected (ingest has none).
        wanted = {CASSANDRA_ROLES["process"], CASSANDRA_ROLES["api"]}
        roles = _wait(
            "roles connected", lambda: _connected_roles(secure_stack) >= wanted or None, proc, log
        )
        assert roles is True

        # Counts rise while it runs.
        risen = _wait(
            "rising counts",
            lambda: t if sum((t := _totals(url, ca)).values()) > sum(first.values()) else None,
            proc,
            log,
        )
        assert all(risen[channel] >= n for channel, n in first.items())

        # Exact: pause the chat source (SIGSTOP fake-twitch) so the topic stops growing; the
        # API must then serve, per channel, exactly the messages ingest wrote to Kafka.
        admin = principal_settings(stack_environment(secure_stack, "admin"))
        os.kill(pids["fake-twitch"], signal.SIGSTOP)
        try:
            seen: list[tuple[dict[str, int], dict[str, int]]] = []

            def exact() -> dict[str, int] | None:
                wrote, served = _in_topic(admin), _totals(url, ca)
                seen[:] = [(wrote, served)]
                return served if served == wrote else None

            try:
                counted = _wait("exact counts", exact, proc, log, 180)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nlast seen (topic, API): {seen}") from None
        finally:
            os.kill(pids["fake-twitch"], signal.SIGCONT)
        assert set(counted) == set(risen)
        assert all(counted[channel] >= n for channel, n in risen.items())

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=150) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "SIGINT received: stopping everything" in text
    for name, pid in pids.items():
        # uvicorn re-raises the SIGTERM it shut down on (-15), after its graceful shutdown
        codes = ("0", "-15") if name == "api" else ("0",)
        assert any(f"stopped {name} (pid {pid}, exit code {c})" in text for c in codes), name
        assert not alive(pid), f"{name} (pid {pid}) still running"
    assert in_sessions(set(pids.values())) == []
    assert "everything stopped cleanly" in text
    assert "Application shutdown complete" in text
    assert "stopping the local" not in text  # it started no server, so it stopped none
    assert secure_stack.is_running()
