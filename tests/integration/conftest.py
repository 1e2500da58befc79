"""Fixtures of the integration tests: the shared test stack, per-test settings, dedicated servers.

- ``stack`` (session): the shared test stack (Kafka 127.0.0.1:19092, Cassandra 127.0.0.1:19042,
  data in ``<repo>/build/test-stack``), started if not running, else reused (also one that
  another checkout started on these ports). Each pytest session
  holds a lease on it; the last session to leave stops it only if a test session started it.
- ``settings`` (function): Settings pointing at that stack with a unique topic prefix
  (``t<hex>-``), keyspace (``t_<hex>``) and processor group, state/spill dirs in ``tmp_path``;
  topics and schema created by ``chatpulse.provision.initialize``; topics and keyspace dropped
  after.
- ``dedicated_kafka`` / ``dedicated_cassandra`` (function): a server of their own on free ports
  with data in ``tmp_path``, for tests that stop, kill and restart a server; stopped after the
  test. They keep schema and data through a SIGKILL, as the user's stack does (the shared
  stack's Cassandra, when this fixture starts it, trades that for faster DDL).

- ``cluster_stack`` (session): a 3 + 3 cluster (``chatpulse stack up --kafka-nodes 3
  --cassandra-nodes 3``) on free ports, data in a session tmp dir, started by the first test
  that asks for it (tests marked ``cluster``) and stopped at the end of the session.

- ``secure_stack`` (session): a secured single-node stack (``chatpulse stack up --secure``:
  TLS, SCRAM logins, ACLs, Cassandra roles) on free ports, data in a session tmp dir,
  topics and schema made by ``init`` as the admin; stopped at the end of the session
  (tests marked ``secure``; ``pytest -m secure`` runs them alone).

Every test under tests/integration gets the ``integration`` marker; tests marked ``cluster``
run last, so the cluster is up only at the end of a session.
"""

import logging
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatpulse.kafka_admin import admin_client, delete_topics
from chatpulse.ports import free_ports, is_port_free
from chatpulse.provision import initialize
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import CassandraServer, KafkaServer, Stack
from chatpulse.stack.stack import find_running_data_dir
from chatpulse.storage import connect

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TEST_STACK_DIR = REPO / "build" / "test-stack"
TEST_KAFKA_PORT = 19092
TEST_CASSANDRA_PORT = 19042
_HERE = Path(__file__).resolve().parent
_STARTED_BY_TESTS = "started-by-tests"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
    # Cluster tests last: the session's 3 + 3 cluster (six more JVMs on the machine) then
    # starts after every single-node test has run, instead of slowing them all down.
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


def _live_leases(leases: Path) -> list[Path]:
    return [lease for lease in leases.glob("*") if Path(f"/proc/{lease.name}").exists()]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The shared test stack, up and answering clients."""
    # A test stack another checkout started on the same ports is reused (its data dir wins).
    data_dir = find_running_data_dir(TEST_KAFKA_PORT) or TEST_STACK_DIR
    # Throwaway data: a Cassandra this fixture starts skips making schema changes durable,
    # which takes the fixture's schema creation from 1.5-5.5 s to 0.3-1.7 s per test
    # (docs/operations.md), and acknowledges writes before it syncs them. A crash then
    # loses the keyspaces created since its start and the last seconds of writes: tests
    # that kill a server use the dedicated servers below, which keep everything (as the
    # user's stack does).
    shared = Stack(
        data_dir,
        kafka_port=TEST_KAFKA_PORT,
        cassandra_port=TEST_CASSANDRA_PORT,
        cassandra_crash_safe=False,
    )
    leases = shared.data_dir / "leases"
    lease = leases / str(os.getpid())
    with shared.lock():
        if shared.up():
            (shared.data_dir / _STARTED_BY_TESTS).touch()
        leases.mkdir(exist_ok=True)
        lease.touch()
    yield shared
    with shared.lock():
        lease.unlink(missing_ok=True)
        # Other sessions may still be using it: the last one out stops it, and only a stack
        # that a test session started (never one a developer started by hand).
        marker = shared.data_dir / _STARTED_BY_TESTS
        if marker.exists() and not _live_leases(leases):
            shared.down()
            marker.unlink(missing_ok=True)


def _unique_token() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(stack: Stack, tmp_path: Path) -> Iterator[Settings]:
    """Settings isolated to this test, with its topics and keyspace created."""
    token = _unique_token()
    prefix = f"t{token}-"
    test_settings = load_settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        topic_prefix=prefix,
        cassandra_contact_points="127.0.0.1",
        cassandra_port=stack.cassandra.port,
        cassandra_keyspace=f"t_{token}",
        processor_group=f"{prefix}processor",
        state_dir=tmp_path / "state",
        spill_dir=tmp_path / "spill",
    )
    initialize(test_settings, timeout=120)
    yield test_settings
    _drop_test_data(test_settings, prefix)


def _drop_test_data(test_settings: Settings, prefix: str) -> None:
    """Keep the shared stack small: delete this test's topics (any containing its prefix,
    e.g. Quix changelog topics named after the group) and its keyspace."""
    try:
        admin = admin_client(test_settings.kafka_bootstrap_servers)
        names = [name for name in admin.list_topics(timeout=10).topics if prefix in name]
        delete_topics(admin, names)
    except Exception:
        logger.exception("could not delete the test topics of %s", prefix)
    try:
        cluster, session = connect(test_settings)
        try:
            session.execute(
                f"DROP KEYSPACE IF EXISTS {test_settings.cassandra_keyspace}", timeout=60
            )
        finally:
            cluster.shutdown()
    except Exception:
        logger.exception("could not drop keyspace %s", test_settings.cassandra_keyspace)


@pytest.fixture
def dedicated_kafka(tmp_path: Path) -> Iterator[KafkaServer]:
    """A Kafka of this test's own (data in tmp_path); ``stop()`` then ``start()`` keeps its data."""
    (port,) = free_ports(1)
    server = KafkaServer(tmp_path / "dedicated", port)
    server.start()
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop(timeout=20)


@pytest.fixture
def dedicated_cassandra(tmp_path: Path) -> Iterator[CassandraServer]:
    """A Cassandra of this test's own (data in tmp_path); ``stop()`` then ``start()`` keeps data."""
    (port,) = free_ports(1)
    server = CassandraServer(tmp_path / "dedicated", port)
    server.start()
    try:
        server.wait_ready(timeout=180)
        yield server
    finally:
        server.stop(timeout=30)


CLUSTER_NODES = 3


def _free_run(length: int, hosts: tuple[str, ...] = ("127.0.0.1",), taken: range = range(0)) -> int:
    """The first of ``length`` consecutive ports free on every host (below the ephemeral range),
    none of them in ``taken`` (a run already chosen: a free port is free until a server binds)."""
    while True:
        first = random.randrange(20000, 31000 - length)
        run = range(first, first + length)
        if any(port in taken for port in run):
            continue
        if all(is_port_free(port, host) for port in run for host in hosts):
            return first


@pytest.fixture(scope="session")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A 3 + 3 cluster of this session: Kafka clients on P..P+2 (controllers P+3..P+5),
    Cassandra on 127.0.0.1-3, same CQL port. Stopped after the session."""
    addresses = tuple(f"127.0.0.{node}" for node in range(1, CLUSTER_NODES + 1))
    kafka_port = _free_run(2 * CLUSTER_NODES)
    cluster = Stack(
        tmp_path_factory.mktemp("cluster"),
        kafka_port=kafka_port,
        cassandra_port=_free_run(2, addresses, range(kafka_port, kafka_port + 2 * CLUSTER_NODES)),
        kafka_nodes=CLUSTER_NODES,
        cassandra_nodes=CLUSTER_NODES,
    )
    try:
        cluster.up(timeout=300)
        yield cluster
    finally:
        cluster.down(timeout=30)


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A secured single-node stack of this session, initialized as its admin."""
    # Imported here: the secured stack's CLI helpers are only for these tests.
    from chatpulse.stack.cli import stack_environment  # noqa: PLC0415

    kafka_port = _free_run(2)  # client and controller
    secured = Stack(
        tmp_path_factory.mktemp("secure"),
        kafka_port=kafka_port,
        cassandra_port=_free_run(2, taken=range(kafka_port, kafka_port + 2)),  # CQL, storage
        cassandra_crash_safe=False,  # throwaway: faster DDL, as the shared stack
        secure=True,
    )
    try:
        secured.up(timeout=400)
        admin = principal_settings(stack_environment(secured, "admin"))
        initialize(admin, timeout=120)
        yield secured
    finally:
        secured.down(timeout=30)


def principal_settings(environment: dict[str, str], **overrides: object) -> Settings:
    """Settings from ``CHATPULSE_*`` variables (``chatpulse stack env``), overrides winning."""
    given: dict[str, object] = {
        name.removeprefix("CHATPULSE_").lower(): value for name, value in environment.items()
    }
    return Settings(**{**given, **overrides})
