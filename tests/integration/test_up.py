"""``chatpulse up`` end to end in simulated mode, then Ctrl-C: counts arrive, nothing is left.

Runs against the shared test stack with ``--external`` (so no second stack starts), with
this test's own topic prefix, keyspace, group, state dir and free ports for the API and the
metrics endpoints. ``up --kafka-nodes 3 --cassandra-nodes 3`` runs on the session's cluster
(its data dir), which it finds running and leaves running.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cassandra.cluster import Cluster
from confluent_kafka.admin import AdminClient, ConfigResource

from chatpulse.ports import free_port
from chatpulse.settings import Settings
from chatpulse.stack import Stack

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


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def in_sessions(sessions: set[int]) -> list[int]:
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


def _start_up(log: Path, env: dict[str, str], *flags: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatpulse",
                "up",
                *flags,
                "--sim-channels",
                "6",
                "--sim-rate",
                "40",
                "--stop-timeout",
                "30",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _sigint(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Ctrl-C: ``up`` exits 0 having stopped every child; its output."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0, log.read_text()[-4000:]
    return log.read_text()


def test_up_simulated_then_sigint_stops_everything(settings: Settings, tmp_path: Path) -> None:
    api_port = free_port()
    log = tmp_path / "up.log"
    proc = _start_up(log, _env(settings, api_port), "--external")
    try:
        items = _wait_for_counts(f"http://127.0.0.1:{api_port}/api/v1/channels", proc, log)
        assert all(item["channel"].startswith("streamer") for item in items)
        text = log.read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", text)}
        assert set(pids) == CHILDREN
        assert all(alive(pid) for pid in pids.values())
        # the dashboard address is printed once `up` sees /readyz answer, which may come a
        # moment after the API already serves counts
        address = f"http://127.0.0.1:{api_port}/"
        deadline = time.monotonic() + 60
        while address not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert address in log.read_text()
        text = _sigint(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "SIGINT received: stopping everything" in text
    for name, pid in pids.items():
        assert f"stopped {name} (pid {pid}, exit code" in text
        assert not alive(pid), f"{name} (pid {pid}) still running"
    assert in_sessions(set(pids.values())) == []
    assert "everything stopped cleanly" in text
    # The processor's state is tied to this cluster (moved aside if the cluster changes).
    assert (settings.state_dir / "kafka-cluster-id").read_text().strip()


@pytest.mark.cluster
def test_up_on_a_local_cluster_runs_everything_with_three_copies(
    cluster_stack: Stack, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    prefix, keyspace, api_port = f"t{token}-", f"t_{token}", free_port()
    # As a user sets it: only the first node's port; no replication factor (up picks 3).
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPULSE_")}
    env.update(
        {
            "CHATPULSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{cluster_stack.kafka.port}",
            "CHATPULSE_CASSANDRA_PORT": str(cluster_stack.cassandra.port),
            "CHATPULSE_TOPIC_PREFIX": prefix,
            "CHATPULSE_CASSANDRA_KEYSPACE": keyspace,
            "CHATPULSE_PROCESSOR_GROUP": f"{prefix}processor",
            "CHATPULSE_STATE_DIR": str(tmp_path / "state"),
            "CHATPULSE_SPILL_DIR": str(tmp_path / "spill"),
            "CHATPULSE_API_PORT": str(api_port),
            "CHATPULSE_INGEST_METRICS_PORT": str(free_port()),
            "CHATPULSE_PROCESSOR_METRICS_PORT": str(free_port()),
            "NO_COLOR": "1",
        }
    )
    log = tmp_path / "up.log"
    flags = ("--kafka-nodes", "3", "--cassandra-nodes", "3", "--data-dir")
    proc = _start_up(log, env, *flags, str(cluster_stack.data_dir))
    try:
        items = _wait_for_counts(f"http://127.0.0.1:{api_port}/api/v1/channels", proc, log)
        assert all(item["channel"].startswith("streamer") for item in items)
        text = log.read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", text)}
        assert set(pids) == CHILDREN
        admin = AdminClient({"bootstrap.servers": cluster_stack.kafka_bootstrap_servers})
        topics = [name for name in admin.list_topics(timeout=30).topics if name.startswith(prefix)]
        # the contract's four topics and the processor's changelog(s)
        assert len(topics) >= 5, topics
        for topic in topics:
            partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions.values()
            assert {len(p.replicas) for p in partitions} == {3}, topic
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            (described,) = admin.describe_configs([resource]).values()
            assert described.result(30)["min.insync.replicas"].value == "2", topic
        text = _sigint(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "reusing the local cluster already running; it stays up on exit" in text
    assert "cluster: topics with 3 copies, keyspace with 3, consistency LOCAL_QUORUM" in text
    assert "stopping the local" not in text
    assert "everything stopped cleanly" in text
    assert not any(alive(pid) for pid in pids.values())
    assert cluster_stack.is_running()  # up started no node, so it stopped none
    cluster = Cluster(cluster_stack.cassandra_contact_points, port=cluster_stack.cassandra.port)
    try:
        row = (
            cluster.connect()
            .execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                (keyspace,),
            )
            .one()
        )
    finally:
        cluster.shutdown()
    assert row is not None
    assert dict(row.replication) == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        "datacenter1": "3",
    }
