"""The whole ``chatpulse up`` flow with stand-in children: a dying child stops everything."""

import asyncio
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from chatpulse.run import cli
from chatpulse.run.errors import RunError
from chatpulse.run.plan import Plan, UpOptions, build_plan
from chatpulse.run.stack_control import ClusterShape, StackControl
from chatpulse.run.supervisor import ChildSpec, Supervisor
from chatpulse.settings import Settings
from chatpulse.stack.stack import DEFAULT_DATA_DIR

PY = sys.executable
SLEEPER = "import time; print('serving', flush=True); time.sleep(60)"


class _NoStack:
    def __init__(self, settings: Settings, *_args: object, **_kwargs: object) -> None:
        self.settings = settings
        self.ensured = False
        self.released = False

    def child_environment(self) -> dict[str, str]:
        return {}

    async def ensure(self, *, external: bool) -> None:
        self.ensured = True

    async def release(self, *, keep: bool) -> None:
        self.released = True


def _patch(monkeypatch: pytest.MonkeyPatch, children: list[ChildSpec]) -> list[_NoStack]:
    stacks: list[_NoStack] = []

    def make_stack(settings: Settings, *args: object, **kwargs: object) -> _NoStack:
        stacks.append(_NoStack(settings, *args, **kwargs))
        return stacks[-1]

    def plan(_settings: Settings, _options: UpOptions) -> Plan:
        return Plan(children=children, dashboard_url="http://127.0.0.1:1/", channels=["a"])

    monkeypatch.setattr(cli, "StackControl", make_stack)
    monkeypatch.setattr(cli, "build_plan", plan)
    monkeypatch.setattr(cli, "_initialize", lambda _settings, _supervisor: None)
    return stacks


def _run(after_start: Callable[[], None] | None = None) -> int:
    async def main() -> int:
        if after_start is not None:
            asyncio.get_running_loop().call_later(2.0, after_start)
        return await cli._up(
            Settings(), UpOptions(), external=True, keep_stack=False, stop_timeout=5
        )

    return asyncio.run(main())


def test_a_child_dying_stops_the_others_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pid_file = tmp_path / "steady.pid"
    steady = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " + (
        "time.sleep(60)"
    )
    children = [
        ChildSpec(name="steady", argv=[PY, "-c", steady]),
        ChildSpec(name="fragile", argv=[PY, "-c", "import time, sys; time.sleep(1); sys.exit(4)"]),
    ]
    stacks = _patch(monkeypatch, children)
    assert _run() == 1
    out = capsys.readouterr().out
    assert "exited unexpectedly with code 4" in out
    assert "stopped steady" in out
    assert "stopped everything after a failure (exit code 1)" in out
    assert stacks[0].ensured
    assert stacks[0].released
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_sigterm_stops_cleanly_with_exit_code_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _patch(monkeypatch, [ChildSpec(name="worker", argv=[PY, "-c", SLEEPER])])
    assert _run(after_start=lambda: os.kill(os.getpid(), signal.SIGTERM)) == 0
    out = capsys.readouterr().out
    assert "SIGTERM received: stopping everything" in out
    assert "stopped worker" in out
    assert "everything stopped cleanly" in out
    assert "Dashboard" in out


async def test_remote_clusters_are_used_as_external() -> None:
    """Settings naming other hosts never start a local stack; they must answer instead."""
    out = io.StringIO()
    supervisor = Supervisor(Console(file=out, width=200, color_system=None))
    settings = Settings(kafka_bootstrap_servers="kafka.invalid:9092")
    control = StackControl(settings, supervisor)
    with pytest.raises(RunError, match=r"Kafka does not answer at kafka\.invalid:9092"):
        await control.ensure(external=False)
    assert "using them (--external)" in out.getvalue()
    assert control.started == []


def test_a_cluster_shape_points_every_child_at_all_nodes_with_three_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CHATPULSE_TOPIC_REPLICATION_FACTOR", "CHATPULSE_CASSANDRA_REPLICATION_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    supervisor = Supervisor(Console(file=io.StringIO(), width=200, color_system=None))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers="127.0.0.1:29092",
        cassandra_port=29042,
    )
    control = StackControl(settings, supervisor, ClusterShape(3, 3, tmp_path / "c"))

    assert control.settings.kafka_bootstrap_servers == (
        "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"
    )
    assert control.settings.cassandra_contact_points == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert (
        control.settings.topic_replication_factor,
        control.settings.cassandra_replication_factor,
    ) == (3, 3)
    assert control.child_environment() == {
        "CHATPULSE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094",
        "CHATPULSE_CASSANDRA_CONTACT_POINTS": "127.0.0.1,127.0.0.2,127.0.0.3",
        "CHATPULSE_CASSANDRA_PORT": "29042",
        "CHATPULSE_TOPIC_REPLICATION_FACTOR": "3",
        "CHATPULSE_CASSANDRA_REPLICATION_FACTOR": "3",
    }
    plan = build_plan(control.settings, UpOptions(env=control.child_environment()))
    for child in plan.children[1:]:  # ingest, process, api; fake-twitch needs no cluster
        assert child.env.items() >= control.child_environment().items(), child.name


def test_a_replication_factor_the_user_chose_is_kept_on_a_cluster(tmp_path: Path) -> None:
    supervisor = Supervisor(Console(file=io.StringIO(), width=200, color_system=None))
    settings = Settings(_env_file=None, topic_replication_factor=2)  # type: ignore[call-arg]
    control = StackControl(settings, supervisor, ClusterShape(3, 1, tmp_path / "c"))
    assert control.settings.topic_replication_factor == 2
    assert control.settings.cassandra_replication_factor == 1
    assert control.settings.cassandra_contact_points == ["127.0.0.1"]


def test_one_node_of_each_changes_nothing_and_keeps_the_default_data_dir() -> None:
    supervisor = Supervisor(Console(file=io.StringIO(), width=200, color_system=None))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    control = StackControl(settings, supervisor, ClusterShape())
    assert control.settings is settings
    assert control.child_environment() == {}
    assert ClusterShape().default_data_dir() == DEFAULT_DATA_DIR
    assert ClusterShape(3, 3).default_data_dir() == DEFAULT_DATA_DIR.parent / "cluster-k3-c3"


def test_external_with_node_counts_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [PY, "-m", "chatpulse", "up", "--external", "--kafka-nodes", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "chatpulse: error: --external uses the clusters the settings name: drop --*-nodes"
    )
