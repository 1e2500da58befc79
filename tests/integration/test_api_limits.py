"""The API's bounds under anonymous load, on a real server: bodies, live streams, /readyz."""

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from api_support import running_api
from pydantic import SecretStr

from chatpulse.settings import Settings

pytestmark = pytest.mark.timeout(180)

LIMIT = 1024
MAX_STREAMS = 3
READY_TTL_S = 0.5


@pytest.fixture
def api(settings: Settings) -> Iterator[httpx.Client]:
    bounded = settings.model_copy(
        update={
            "api_key": SecretStr("k3y"),
            "api_max_body_bytes": LIMIT,
            "api_max_live_connections": MAX_STREAMS,
            "api_readiness_ttl_s": READY_TTL_S,
        }
    )
    with running_api(bounded) as client:
        yield client


def _connect(api: httpx.Client) -> socket.socket:
    url = urlsplit(str(api.base_url))
    assert url.hostname is not None
    assert url.port is not None
    return socket.create_connection((url.hostname, url.port), timeout=10)


def _head(extra: str) -> bytes:
    return (
        "POST /api/v1/channels HTTP/1.1\r\nHost: test\r\nX-API-Key: k3y\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def _assert_too_large(status: int, headers: dict[str, str], problem: dict[str, Any]) -> None:
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert problem["type"] == "urn:chatpulse:problem:body-too-large"
    assert problem["status"] == 413
    assert (
        problem["detail"] == f"The request body is larger than the {LIMIT} bytes this API accepts."
    )


def test_small_bodies_pass(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/channels", json={"channel": "somechannel"}, headers={"X-API-Key": "k3y"}
    )
    assert response.status_code == 202, response.text
    padded = json.dumps({"channel": "somechannel", "pad": "x" * (LIMIT - 60)})
    assert len(padded) <= LIMIT
    response = api.post(
        "/api/v1/channels",
        content=padded,
        headers={"X-API-Key": "k3y", "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    api: httpx.Client,
) -> None:
    with _connect(api) as sock:
        # Announce 10 MB, send 10 bytes and wait: the answer must come without the rest.
        sock.sendall(_head("Content-Length: 10000000\r\n") + b'{"channel"')
        _assert_too_large(*_read_response(sock))


def test_an_endless_chunked_body_is_refused_once_it_passes_the_limit(api: httpx.Client) -> None:
    chunk = b"x" * 256
    sent = 0
    with _connect(api) as sock:
        sock.sendall(_head("Transfer-Encoding: chunked\r\n"))
        # Keep sending chunks, never the last (zero-length) one, until the server answers.
        while not select.select([sock], [], [], 0.05)[0]:
            assert sent < 1_000_000, "no answer after 1 MB of body"
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        _assert_too_large(*_read_response(sock))
    assert sent > LIMIT


@contextmanager
def _stream(base_url: str) -> Iterator[httpx.Response]:
    """An open live stream (its ``connected`` comment read), or the refusal answer."""
    with (
        httpx.Client(base_url=base_url, timeout=10) as client,
        client.stream("GET", "/api/v1/channels/somechannel/live") as response,
    ):
        if response.status_code == 200:
            lines = response.iter_lines()
            assert next(lines) == ": connected"
        else:
            response.read()
        yield response


def test_live_streams_past_the_cap_get_503_with_retry_after(api: httpx.Client) -> None:
    base_url = str(api.base_url)
    api.post("/api/v1/channels", json={"channel": "somechannel"}, headers={"X-API-Key": "k3y"})
    with ExitStack() as open_streams:
        for _ in range(MAX_STREAMS):
            assert open_streams.enter_context(_stream(base_url)).status_code == 200
        with _stream(base_url) as refused:
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "5"
            problem = refused.json()
            assert problem["type"] == "urn:chatpulse:problem:live-streams-full"
            assert str(MAX_STREAMS) in problem["detail"]
        # Other answers are not affected by the cap.
        assert api.get("/api/v1/channels/somechannel").status_code == 200
    # Closed streams give their places back (the server notices the hang-up).
    deadline = time.monotonic() + 10
    while True:
        with ExitStack() as reopened:
            statuses = [
                reopened.enter_context(_stream(base_url)).status_code for _ in range(MAX_STREAMS)
            ]
            if statuses == [200] * MAX_STREAMS:
                break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)
    assert _metric(api, "chatpulse_api_live_refused_total") >= 1


def _metric(api: httpx.Client, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_a_readyz_flood_costs_at_most_one_check_per_period(api: httpx.Client) -> None:
    base_url = str(api.base_url)
    before = _metric(api, "chatpulse_api_readiness_checks_total")
    statuses: list[int] = []
    # Let any cached verdict (from an earlier test's /readyz) expire, so the flood must check.
    time.sleep(READY_TTL_S + 0.1)

    def flood() -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            statuses.extend(client.get("/readyz").status_code for _ in range(100))

    started = time.monotonic()
    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    checks = _metric(api, "chatpulse_api_readiness_checks_total") - before
    assert statuses == [200] * 400
    # One check per started period, plus the one that may have been in flight at the start.
    assert 1 <= checks <= elapsed // READY_TTL_S + 2, (checks, elapsed)


def test_history_and_search_switched_off_answer_404_naming_the_setting(
    settings: Settings,
) -> None:
    lean = settings.model_copy(
        update={"api_key": SecretStr("k3y"), "user_history": False, "search_index": False}
    )
    channel = f"lean{int(time.time() * 1000) % 10**9}"
    with running_api(lean) as api:
        response = api.post(
            "/api/v1/channels", json={"channel": channel}, headers={"X-API-Key": "k3y"}
        )
        assert response.status_code == 202
        deadline = time.monotonic() + 30
        while api.get(f"/api/v1/channels/{channel}/messages").status_code != 200:
            assert time.monotonic() < deadline, "the tracked channel never became known"
            time.sleep(0.2)
        for path, setting in (
            (f"/api/v1/channels/{channel}/users/someviewer/messages", "CHATPULSE_USER_HISTORY"),
            (f"/api/v1/channels/{channel}/messages?q=hello", "CHATPULSE_SEARCH_INDEX"),
        ):
            answer = api.get(path)
            assert answer.status_code == 404, (path, answer.text)
            problem = answer.json()
            assert problem["type"].endswith(":feature-off"), problem
            assert f"{setting}=false" in problem["detail"]
