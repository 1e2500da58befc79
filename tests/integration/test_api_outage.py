"""Cassandra outage: the API answers 503 problem documents, then recovers by itself."""

import time

import httpx
import pytest
from api_support import KnownStream, running_api, wait_ready, write_rows

from chatpulse.provision import initialize
from chatpulse.settings import Settings
from chatpulse.stack import CassandraServer

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

PATHS = ["/api/v1/channels", "/api/v1/channels/alpha", "/api/v1/leaderboard?window=1m"]


def _until(client: httpx.Client, path: str, status: int, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_503_while_cassandra_is_down_then_recovery(
    settings: Settings, dedicated_cassandra: CassandraServer
) -> None:
    # No stale copies in place of errors (CHATPULSE_API_STALE_IF_ERROR_S, a node failure's
    # help; unit-tested in test_api_cache, shown by the Cassandra node kill on the cluster):
    # every read of the outage reaches Cassandra.
    own = settings.model_copy(
        update={"cassandra_port": dedicated_cassandra.port, "api_stale_if_error_s": 0.0}
    )
    initialize(own, timeout=120)  # the API itself never creates the schema
    with running_api(own, ready=False) as api:
        wait_ready(api, timeout_s=120)
        write_rows(own, KnownStream.build({"1m": 60_000}, {"alpha": 4}))
        for path in PATHS:
            assert api.get(path).status_code == 200

        dedicated_cassandra.stop(timeout=60)
        for path in PATHS:
            response = _until(api, path, 503, timeout_s=30)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["type"] == "urn:chatpulse:problem:storage-unavailable"
            assert problem["detail"] == "Cassandra is unavailable; retry later."
            # Anonymous answers name no host or address (the log does).
            for secret in ("127.0.0.1", str(dedicated_cassandra.port), "Traceback"):
                assert secret not in response.text
            assert response.headers["retry-after"] == "2"
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"].startswith("cassandra: Cassandra is unavailable")
        assert str(dedicated_cassandra.port) not in ready.text
        assert api.get("/healthz").status_code == 200

        dedicated_cassandra.start()
        dedicated_cassandra.wait_ready(timeout=180)
        for path in PATHS:
            response = _until(api, path, 200, timeout_s=60)
            assert response.status_code == 200, response.text
        assert api.get("/api/v1/channels/alpha").json()["total_messages"] == 4
        assert api.get("/readyz").status_code == 200
