"""Storage failures on real servers: clear answers that reveal no host, and no DDL from the API."""

import logging
import time
import uuid
from typing import Any

import httpx
import pytest
from api_support import KnownStream, running_api, wait_ready, write_rows
from pydantic import SecretStr

from chatpulse.kafka_admin import admin_client
from chatpulse.ports import free_ports
from chatpulse.provision import initialize
from chatpulse.settings import Settings
from chatpulse.storage import connect

pytestmark = pytest.mark.timeout(300)

KEY = {"X-API-Key": "k3y"}


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:chatpulse:problem:{slug}"
    return problem


def _until(client: httpx.Client, path: str, status: int, timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_an_outage_answers_reveal_no_host_or_address(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    cassandra_port, kafka_port = free_ports(2)  # nothing listens on them
    down = settings.model_copy(
        update={
            "cassandra_port": cassandra_port,
            "kafka_bootstrap_servers": f"127.0.0.1:{kafka_port}",
            "api_key": SecretStr("k3y"),
        }
    )
    caplog.set_level(logging.WARNING, logger="chatpulse")
    with running_api(down, ready=False) as api:
        time.sleep(3)  # a connection attempt to each has failed
        answers = [
            api.get("/readyz"),
            api.get("/api/v1/channels"),
            api.get("/api/v1/channels/somechannel"),
            api.get("/api/v1/channels/somechannel/messages"),
            api.get("/api/v1/leaderboard"),
            api.post("/api/v1/channels", json={"channel": "somechannel"}, headers=KEY),
        ]
        flood = [api.get("/api/v1/channels/somechannel").status_code for _ in range(300)]
    assert flood == [503] * 300
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "2"
        for secret in ("127.0.0.1", str(cassandra_port), str(kafka_port), "refused", "Errno"):
            assert secret not in response.text, response.text
    assert _problem(answers[1], 503, "storage-unavailable")["detail"] == (
        "Cassandra is unavailable; retry later."
    )
    assert _problem(answers[-1], 503, "kafka-unavailable")["detail"] == (
        "Kafka is unavailable; retry later."
    )
    # The specifics are in the log, for the operator, and the log stays readable: the 300
    # answers of the flood are one line (the next one, after 10 s, would count the others).
    logged = caplog.text
    assert f"127.0.0.1:{cassandra_port}" in logged
    answered = [
        r.getMessage()
        for r in caplog.records
        if r.name == "chatpulse.api.problems" and "answered 503: Cassandra" in r.getMessage()
    ]
    assert 1 <= len(answered) <= 2, answered


def _schema_of(settings: Settings, keyspace: str) -> list[tuple[str, str]]:
    cluster, session = connect(settings)
    try:
        keyspaces = session.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (keyspace,),
        )
        tables = session.execute(
            "SELECT keyspace_name, table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (keyspace,),
        )
        return [(row.keyspace_name, "") for row in keyspaces] + [
            (row.keyspace_name, row.table_name) for row in tables
        ]
    finally:
        cluster.shutdown()


def _drop_keyspace(settings: Settings, keyspace: str) -> None:
    cluster, session = connect(settings)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    finally:
        cluster.shutdown()


def test_the_api_creates_no_schema_and_says_to_run_init(settings: Settings) -> None:
    fresh = settings.model_copy(
        update={
            "cassandra_keyspace": f"t_{uuid.uuid4().hex[:10]}_fresh",
            # Inside the fixture's prefix: its clean-up deletes these topics too.
            "topic_prefix": f"{settings.topic_prefix}fresh-",
            "api_key": SecretStr("k3y"),
        }
    )
    keyspace = fresh.cassandra_keyspace
    admin = admin_client(fresh.kafka_bootstrap_servers)
    try:
        with running_api(fresh, ready=False) as api:
            time.sleep(5)  # two connection attempts (every 2 s)
            # Keyspace missing.
            listing = _problem(_until(api, "/api/v1/channels", 503), 503, "schema-not-initialised")
            assert "run `chatpulse init`" in listing["detail"]
            assert api.get("/api/v1/channels").headers["retry-after"] == "10"
            ready = _problem(api.get("/readyz"), 503, "not-ready")
            assert "chatpulse init" in ready["detail"]
            write = api.post("/api/v1/channels", json={"channel": "somechannel"}, headers=KEY)
            assert (
                "run `chatpulse init`" in _problem(write, 503, "schema-not-initialised")["detail"]
            )
            assert _schema_of(fresh, keyspace) == []
            topics = admin.list_topics(timeout=10).topics
            assert not [name for name in topics if name.startswith(fresh.topic_prefix)]

            # A keyspace without tables.
            cluster, session = connect(fresh)
            try:
                session.execute(
                    f"CREATE KEYSPACE {keyspace} WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}"
                )
            finally:
                cluster.shutdown()
            time.sleep(5)
            _problem(api.get("/api/v1/channels/somechannel"), 503, "schema-not-initialised")
            assert _schema_of(fresh, keyspace) == [(keyspace, "")]

            # Once an operator initialises, the API serves by itself.
            initialize(fresh, timeout=120)
            wait_ready(api, timeout_s=60)
            assert api.get("/api/v1/channels").status_code == 200
            write = api.post("/api/v1/channels", json={"channel": "somechannel"}, headers=KEY)
            assert write.status_code == 202, write.text
    finally:
        _drop_keyspace(fresh, keyspace)


def test_a_query_cassandra_refuses_is_a_500_not_a_503(settings: Settings) -> None:
    write_rows(settings, KnownStream.build({"1m": 60_000}, {"alpha": 4}))
    with running_api(settings) as api:
        assert api.get("/api/v1/channels/alpha/messages").status_code == 200
        # A column the API reads disappears: every read of it is refused for good.
        cluster, session = connect(settings)
        try:
            session.execute(
                f"ALTER TABLE {settings.cassandra_keyspace}.messages_bucketed DROP record"
            )
        finally:
            cluster.shutdown()
        response = _until(api, "/api/v1/channels/alpha/messages", 500, timeout_s=30)
        problem = _problem(response, 500, "storage-query-failed")
        assert "retry-after" not in response.headers
        assert problem["detail"] == (
            "Cassandra refused the API's request; retrying will not help. The reason is in the "
            "API's log."
        )
        # Other reads still work.
        assert api.get("/api/v1/channels/alpha").status_code == 200
