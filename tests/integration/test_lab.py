"""Every lab of ``chatpulse lab`` runs against the shared test stack (``--no-pause --quick``,
the real CLI in a subprocess) and must print PASS; it leaves none of its topics behind.

The replication lab runs with the cluster tests (marker ``cluster``) on the session's cluster,
the security lab with the secured stack's tests (marker ``secure``) on the session's secured
stack.
"""

import re
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from chatpulse.kafka_admin import admin_client
from chatpulse.settings import Settings
from chatpulse.stack import Stack
from chatpulse.stack.cli import stack_environment
from conftest import principal_settings

LAB_TIMEOUT_S = 240


def run_lab(name: str, *options: str) -> tuple[int, list[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "chatpulse", "lab", name, "--no-pause", "--quick", *options],
        capture_output=True,
        text=True,
        timeout=LAB_TIMEOUT_S,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return done.returncode, lines, time.monotonic() - began


def stack_options(stack: Stack) -> list[str]:
    return [
        "--kafka-port",
        str(stack.kafka.port),
        "--cassandra-port",
        str(stack.cassandra.port),
        "--data-dir",
        str(stack.data_dir),
    ]


def assert_passed(name: str, code: int, lines: list[str], bootstrap: str) -> None:
    assert lines, "the lab printed nothing"
    assert lines[-1].startswith(f"lab {name}: PASS - "), "\n".join(lines[-40:])
    assert code == 0
    topics = admin_client(bootstrap).list_topics(timeout=10).topics
    left = [topic for topic in topics if f"lab-{name}-" in topic]
    assert left == [], f"the lab left its topics: {left}"


def show(capsys: pytest.CaptureFixture[str], verdict: str, took: float) -> None:
    """The lab's verdict line and time in the test run's output (what each lab measured)."""
    with capsys.disabled():
        print(f"\n    {verdict} [{took:.1f}s]", flush=True)


def _acls(admin: Settings) -> set[str]:
    """Every ACL on the (secured) stack, as text."""
    client = admin_client(admin.kafka_bootstrap_servers, admin.kafka_security_config())
    every = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    return {str(binding) for binding in client.describe_acls(every).result()}


@pytest.mark.parametrize(
    "name",
    [
        "partitions",
        "consumer-groups",
        "exactly-once",
        "changelog",
        "transactions",
        "compaction",
        "late-data",
    ],
)
def test_lab_passes(stack: Stack, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, took = run_lab(name, *stack_options(stack))
    show(capsys, lines[-1] if lines else name, took)
    assert_passed(name, code, lines, stack.kafka_bootstrap_servers)


@pytest.mark.cluster
def test_replication_lab_passes_on_the_session_cluster(
    cluster_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, took = run_lab("replication", *stack_options(cluster_stack))
    show(capsys, lines[-1] if lines else "replication", took)
    assert_passed("replication", code, lines, cluster_stack.kafka_bootstrap_servers)
    # the lab brought the broker it killed back: the cluster is whole for the tests after it
    assert all(server.is_running() for server in cluster_stack.kafka_servers)


@pytest.mark.secure
def test_security_lab_passes_on_the_session_secured_stack(
    secure_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = principal_settings(stack_environment(secure_stack, "admin"))
    before = _acls(admin)
    code, lines, took = run_lab("security", *stack_options(secure_stack))
    show(capsys, lines[-1] if lines else "security", took)
    assert lines, "the lab printed nothing"
    assert lines[-1].startswith("lab security: PASS - "), "\n".join(lines[-40:])
    assert code == 0
    text = re.sub(r"\s+", " ", " ".join(lines))  # (the narration wraps at 80 columns)
    # the broker's authorizer logged the refusal the lab provoked, and the lab showed it
    assert "User:chatpulse-lab is Denied operation = " in text, text
    measured = re.search(
        r"without an ACL: TOPIC_AUTHORIZATION_FAILED; ACL added: accepted after ([\d.]+)s; "
        r"ACL removed: TOPIC_AUTHORIZATION_FAILED after ([\d.]+)s; (\d+) of (\d+) acknowledged",
        lines[-1],
    )
    assert measured, lines[-1]
    assert measured[3] == measured[4] != "0"
    # Cleaned up: its topic and its ACLs are gone, the stack's own ACLs untouched; its user
    # stays, without any ACL (deleting it broke the stack's next restart: the lab's LAB_USER).
    client = admin_client(admin.kafka_bootstrap_servers, admin.kafka_security_config())
    assert [t for t in client.list_topics(timeout=10).topics if "lab-security-" in t] == []
    assert _acls(admin) == before
    assert "chatpulse-lab" in client.describe_user_scram_credentials().result()
