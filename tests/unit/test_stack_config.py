"""chatpulse.stack without servers: generated configs, port layout, error messages, stopping."""

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from chatpulse.stack import (
    CassandraServer,
    JavaNotFoundError,
    KafkaServer,
    MavenError,
    PortInUseError,
    ServerExitedError,
    Stack,
    StackError,
)
from chatpulse.stack import java as java_module
from chatpulse.stack import server as server_module
from chatpulse.stack.cassandra import cassandra_jvm_flags, cassandra_yaml
from chatpulse.stack.kafka import kafka_properties, new_cluster_id
from chatpulse.stack.maven import Artifact, pom_xml, resolve_jars
from chatpulse.stack.process import pid_alive, tail, terminate
from chatpulse.stack.server import JavaServer


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_kafka_properties_fit_one_node_with_transactions(tmp_path: Path) -> None:
    props = _properties(kafka_properties(port=19092, controller_port=19093, log_dir=tmp_path))

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path)
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert int(props["offsets.topic.num.partitions"]) <= 8
    assert int(props["transaction.state.log.num.partitions"]) <= 8
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_cassandra_yaml_is_a_minimal_single_node(tmp_path: Path) -> None:
    config = yaml.safe_load(cassandra_yaml(port=19042, storage_port=19043, home=tmp_path))

    assert config["native_transport_port"] == 19042
    assert config["storage_port"] == 19043
    assert config["seed_provider"][0]["parameters"] == [{"seeds": "127.0.0.1:19043"}]
    assert config["listen_address"] == config["rpc_address"] == "127.0.0.1"
    # an acknowledged write is synced: a crash of the process or the machine keeps it
    assert config["commitlog_sync"] == "group"
    assert config["commitlog_sync_group_window"] == "10ms"
    assert "commitlog_sync_period" not in config  # Cassandra refuses it with group sync
    assert config["auto_snapshot"] is False
    for key in ("commitlog_directory", "saved_caches_directory", "hints_directory"):
        assert Path(config[key]).is_relative_to(tmp_path), key
    assert [Path(d).is_relative_to(tmp_path) for d in config["data_file_directories"]] == [True]


def test_cassandra_jvm_flags_carry_jamm_and_java17_opens(tmp_path: Path) -> None:
    (tmp_path / "jamm-0.4.0.jar").touch()
    flags = cassandra_jvm_flags(lib=tmp_path, home=tmp_path / "home", log_dir=tmp_path / "logs")

    assert flags[0] == f"-javaagent:{tmp_path / 'jamm-0.4.0.jar'}"
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in flags
    assert "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED" in flags
    assert f"-Dcassandra.config=file://{tmp_path / 'home' / 'cassandra.yaml'}" in flags
    assert "-Xmx1g" in flags
    assert "-Dcassandra-foreground=yes" in flags


def test_a_stack_keeps_cassandra_crash_safe_unless_told_otherwise(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    user = Stack(tmp_path / "user", kafka_port=9092, cassandra_port=9042)
    throwaway = Stack(
        tmp_path / "test", kafka_port=19092, cassandra_port=19042, cassandra_crash_safe=False
    )

    durable = user.cassandra.java_command(tmp_path / "java", lib)
    unsafe = throwaway.cassandra.java_command(tmp_path / "java", lib)

    assert not [flag for flag in durable if "unsafesystem" in flag]
    assert "-Dcassandra.unsafesystem=true" in unsafe
    fast = yaml.safe_load(cassandra_yaml(port=1, storage_port=2, home=tmp_path, crash_safe=False))
    assert (fast["commitlog_sync"], fast["commitlog_sync_period"]) == ("periodic", "10000ms")


def test_default_and_test_stacks_use_disjoint_ports(tmp_path: Path) -> None:
    user = Stack(tmp_path / "a", kafka_port=9092, cassandra_port=9042)
    test = Stack(tmp_path / "b", kafka_port=19092, cassandra_port=19042)

    def ports(stack: Stack) -> set[int]:
        return {*stack.kafka.ports.values(), *stack.cassandra.ports.values()}

    assert ports(user) == {9092, 9093, 9042, 9043}
    assert ports(test) == {19092, 19093, 19042, 19043}


def test_overlapping_ports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="ports must all differ"):
        Stack(tmp_path, kafka_port=9042, cassandra_port=9043)


def test_explicit_second_ports(tmp_path: Path) -> None:
    kafka = KafkaServer(tmp_path, 20000, controller_port=25000)
    cassandra = CassandraServer(tmp_path, 21000, storage_port=26000)
    assert kafka.ports == {"client": 20000, "controller": 25000}
    assert cassandra.ports == {"CQL": 21000, "storage": 26000}


def test_pom_lists_the_artifacts() -> None:
    pom = pom_xml("kafka", [Artifact("org.apache.kafka", "kafka_2.13", "4.1.1")])
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.1</version>" in pom


def _fake_java(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    java = directory / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-01-01' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


def test_no_java_17_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java25 = _fake_java(tmp_path / "jdk25" / "bin", "25.0.1")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk25"))
    monkeypatch.setenv("PATH", str(java25.parent))
    monkeypatch.setattr(java_module, "_DEBIAN_JAVA17", tmp_path / "missing")
    java_module.find_java.cache_clear()
    try:
        with pytest.raises(JavaNotFoundError) as caught:
            java_module.find_java()
    finally:
        java_module.find_java.cache_clear()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Java 17 is required")
    assert f"{java25} is Java 25" in message


def test_java_17_is_preferred_over_a_newer_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java25 = _fake_java(tmp_path / "jdk25" / "bin", "25.0.1")
    java17 = _fake_java(tmp_path / "jdk17" / "bin", "17.0.15")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(java25.parent))
    monkeypatch.setattr(java_module, "_DEBIAN_JAVA17", tmp_path / "jdk17")
    java_module.find_java.cache_clear()
    try:
        assert java_module.find_java() == java17
    finally:
        java_module.find_java.cache_clear()
    assert java_module.java_major_version(java25) == 25


def test_no_maven_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    # An interrupted download (a temporary dir) is not taken for complete.
    (tmp_path / "cache" / ".kafka-4.1.1.abcd" / "lib").mkdir(parents=True)
    with pytest.raises(MavenError, match=r"^Maven \(mvn\) is required"):
        resolve_jars("kafka", "4.1.1", [], cache_dir=tmp_path / "cache")


def test_cached_jars_are_used_without_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    lib = tmp_path / "cache" / "kafka-4.1.1" / "lib"
    lib.mkdir(parents=True)
    assert resolve_jars("kafka", "4.1.1", [], cache_dir=tmp_path / "cache") == lib


def test_port_taken_by_another_process_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            KafkaServer(tmp_path, port).start()
    assert str(caught.value) == (
        f"kafka cannot start: port {port} (client) is already in use by another process; "
        "stop it or choose other ports"
    )


class _CrashingServer(JavaServer):
    """A 'server' that prints a fatal line and exits, to exercise the start-up failure path."""

    name = "crasher"
    version = "0"
    artifacts = ()

    @property
    def config_file(self) -> Path:
        return self.home / "crasher.conf"

    @property
    def ports(self) -> dict[str, int]:
        return {}

    def write_config(self) -> None:
        self.config_file.write_text("")

    def resolve(self) -> Path:
        return self.home

    def java_command(self, java: Path, lib: Path) -> list[str]:
        script = "echo 'starting'; echo 'FATAL: bad config line 3'; sleep 0.3; exit 3"
        return ["/bin/sh", "-c", script, str(self.config_file)]

    def answers(self) -> bool:
        return False


def test_server_exiting_during_start_reports_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "find_java", lambda: Path("/bin/false"))
    crasher = _CrashingServer(tmp_path, 1)
    assert crasher.start() is True
    with pytest.raises(ServerExitedError) as caught:
        crasher.wait_ready(timeout=30)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("crasher exited during start; last lines of ")
    assert message.endswith("starting | FATAL: bad config line 3")
    assert not crasher.is_running()


def test_terminate_escalates_to_sigkill_and_leaves_nothing(tmp_path: Path) -> None:
    marker = str(tmp_path / "stubborn-marker")
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not pid_alive(child.pid, marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let it install its SIGTERM handler
        started = time.monotonic()
        terminate(child.pid, marker, timeout=1.0)
        assert child.wait(timeout=5) == -signal.SIGKILL
        assert time.monotonic() - started >= 1.0
        assert not pid_alive(child.pid, marker)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def test_tail_fits_on_one_line(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    assert tail(log, lines=3) == "line 97 | line 98 | line 99"
    assert tail(tmp_path / "missing.log") == "(no log)"


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(cluster_id) == 22 and not cluster_id.startswith("-") for cluster_id in ids)
