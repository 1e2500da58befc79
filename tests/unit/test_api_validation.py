"""Validation and problem documents of the API, with no cluster reachable.

The app is real (routes, handlers, lifespan, served by uvicorn on a loopback port); Kafka and
Cassandra point at a closed local port, so every data endpoint must answer a 503 problem
document and validation must answer first.
"""

from collections.abc import Iterator

import httpx
import pytest

from chatpulse.api.app import create_app
from chatpulse.api.server import serve_in_thread
from chatpulse.settings import load_settings

PROBLEM = "application/problem+json"


def _client(**overrides: object) -> Iterator[httpx.Client]:
    settings = load_settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        cassandra_contact_points="127.0.0.1",
        cassandra_port=1,
        **overrides,
    )
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    yield from _client()


@pytest.fixture(scope="module")
def keyed_client() -> Iterator[httpx.Client]:
    yield from _client(api_key="s3cret")


def _assert_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) >= {"type", "title", "status", "detail", "instance"}
    assert body["status"] == status
    assert body["instance"] == response.request.url.raw_path.decode().split("?")[0]  # type: ignore[attr-defined]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/channels/bad-name",
        "/api/v1/channels/" + "a" * 26,
        "/api/v1/channels/caf%C3%A9",
        "/api/v1/channels/a%20b/stats",
        "/api/v1/channels/x.y/messages",
        "/api/v1/channels/%23/live",
    ],
)
def test_malformed_channel_is_422(client: httpx.Client, path: str) -> None:
    body = _assert_problem(client.get(path), 422)
    assert body["type"] == "urn:chatpulse:problem:validation"
    assert "channel" in str(body["detail"])


@pytest.mark.parametrize(
    "query",
    ["window=7m", "window=", "limit=0", "limit=101", "limit=x", "window=1M"],
)
def test_bad_leaderboard_parameters_are_422(client: httpx.Client, query: str) -> None:
    _assert_problem(client.get(f"/api/v1/leaderboard?{query}"), 422)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=abc"])
def test_bad_channel_list_parameters_are_422(client: httpx.Client, query: str) -> None:
    _assert_problem(client.get(f"/api/v1/channels?{query}"), 422)


def test_forged_channel_cursor_is_400(client: httpx.Client) -> None:
    body = _assert_problem(client.get("/api/v1/channels?cursor=abc.def"), 400)
    assert body["type"] == "urn:chatpulse:problem:invalid-cursor"


def test_unknown_route_and_method_are_problems(client: httpx.Client) -> None:
    _assert_problem(client.get("/api/v1/nothing"), 404)
    _assert_problem(client.put("/api/v1/leaderboard"), 405)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/channels", "/api/v1/channels/alpha", "/api/v1/leaderboard?window=1m"],
)
def test_data_endpoints_answer_503_while_cassandra_is_down(client: httpx.Client, path: str) -> None:
    body = _assert_problem(client.get(path), 503)
    assert body["type"] == "urn:chatpulse:problem:storage-unavailable"
    assert "Traceback" not in str(body["detail"])


def test_liveness_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    body = _assert_problem(client.get("/readyz"), 503)
    assert "cassandra" in str(body["detail"])
    assert "kafka" in str(body["detail"])


def test_writes_without_configured_key_are_403_saying_how(client: httpx.Client) -> None:
    body = _assert_problem(client.post("/api/v1/channels", json={"channel": "alpha"}), 403)
    assert "CHATPULSE_API_KEY" in str(body["detail"])
    _assert_problem(client.delete("/api/v1/channels/alpha", headers={"X-API-Key": "x"}), 403)


def test_writes_need_the_right_key(keyed_client: httpx.Client) -> None:
    _assert_problem(keyed_client.post("/api/v1/channels", json={"channel": "alpha"}), 401)
    wrong = {"X-API-Key": "s3cret-not"}
    _assert_problem(
        keyed_client.post("/api/v1/channels", json={"channel": "a"}, headers=wrong), 401
    )
    _assert_problem(keyed_client.delete("/api/v1/channels/alpha", headers=wrong), 401)
    right = {"X-API-Key": "s3cret"}
    body = _assert_problem(
        keyed_client.post("/api/v1/channels", json={"channel": "no-way"}, headers=right), 422
    )
    assert "channel" in str(body["detail"])
    _assert_problem(keyed_client.post("/api/v1/channels", content=b"{", headers=right), 422)


def test_openapi_documents_every_endpoint_and_the_window_sizes(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/api/v1/channels",
        "/api/v1/channels/{channel}",
        "/api/v1/channels/{channel}/stats",
        "/api/v1/channels/{channel}/messages",
        "/api/v1/channels/{channel}/live",
        "/api/v1/leaderboard",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    params = schema["paths"]["/api/v1/leaderboard"]["get"]["parameters"]
    window = next(p for p in params if p["name"] == "window")
    assert window["schema"]["enum"] == ["1m", "10m", "1h"]
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_per_route_template(client: httpx.Client) -> None:
    client.get("/api/v1/channels/bad-name")
    text = client.get("/metrics").text
    assert (
        'chatpulse_api_requests_total{method="GET",route="/api/v1/channels/{channel}",status="422"}'
        in text
    )


def test_dashboard_is_served(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200


@pytest.mark.parametrize("query", ["from=0.0", "from=1700000000", "to=-5", "to=1e9", "from=.5"])
def test_stats_times_are_iso_8601_not_numbers(client: httpx.Client, query: str) -> None:
    body = _assert_problem(client.get(f"/api/v1/channels/somechannel/stats?{query}"), 422)
    assert "ISO 8601" in str(body["detail"])


def test_stats_accepts_iso_8601_times(client: httpx.Client) -> None:
    response = client.get("/api/v1/channels/somechannel/stats?from=2026-11-27T12:00:00Z")
    assert response.status_code == 503  # past validation; Cassandra is down in these tests
