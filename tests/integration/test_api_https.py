"""``chatpulse api`` over HTTPS on the real stack: the real command (uvicorn with the
CHATPULSE_API_TLS_* files of a test CA), fetched by a client that verifies the certificate."""

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import KnownStream, iso, wait_ready, write_rows

from chatpulse.api.security import CONTENT_SECURITY_POLICY, HSTS
from chatpulse.ports import free_ports
from chatpulse.settings import Settings
from pki_support import Pki

pytestmark = pytest.mark.timeout(180)

KEY_PASSWORD = "Pem-9x-pass"
API_KEY = "Kx-https-4411"
COUNTS = {"alpha": 12, "beta": 7}


def _command_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {**os.environ, **settings.as_environment(), "CHATPULSE_API_KEY": API_KEY}
    env.update(extra)
    return env


@pytest.fixture
def https_api(settings: Settings, pki: Pki, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The running command's base URL (by host name, so the name check is exercised too) and
    its log file."""
    server = pki.issue("api", password=KEY_PASSWORD)
    (port,) = free_ports(1)
    log = tmp_path / "api.log"
    env = _command_env(
        settings,
        CHATPULSE_API_TLS_CERT=str(server.cert),
        CHATPULSE_API_TLS_KEY=str(server.key),
        CHATPULSE_API_TLS_KEY_PASSWORD=KEY_PASSWORD,
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatpulse", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"https://localhost:{port}", log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_listening(client: httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            wait_ready(client, timeout_s)
            return
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_api_command_serves_https_only_to_clients_trusting_the_ca(
    settings: Settings, pki: Pki, https_api: tuple[str, Path]
) -> None:
    url, log = https_api
    windows = dict(zip(settings.windows, settings.window_sizes_ms, strict=True))
    stream = KnownStream.build(windows, COUNTS)
    write_rows(settings, stream)
    trusting = ssl.create_default_context(cafile=pki.ca_cert)

    with httpx.Client(base_url=url, verify=trusting, timeout=10) as client:
        _wait_listening(client)
        summary = client.get("/api/v1/channels/alpha")
        dashboard = client.get("/")
        refused = client.post("/api/v1/channels", json={"channel": "gamma"})
        tracked = client.post(
            "/api/v1/channels", json={"channel": "gamma"}, headers={"X-API-Key": API_KEY}
        )
    with (
        httpx.Client(base_url=url, verify=ssl.create_default_context(), timeout=10) as untrusting,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get("/healthz")
    # Plain HTTP to the HTTPS port is dropped without an answer.
    with (
        httpx.Client(base_url=url.replace("https:", "http:"), timeout=10) as plain,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        plain.get("/healthz")

    sent = [m.sent_at for m in stream.of("alpha")]
    assert summary.status_code == 200, summary.text
    assert (summary.json()["total_messages"], summary.json()["last_seen"]) == (12, iso(max(sent)))
    assert summary.headers["strict-transport-security"] == HSTS
    assert dashboard.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "<title>chatpulse" in dashboard.text
    assert refused.status_code == 401
    assert (tracked.status_code, tracked.json()) == (202, {"channel": "gamma", "tracked": True})
    # Neither the key's password nor the API key reach the log.
    text = log.read_text()
    assert "Uvicorn running on https://" in text
    assert KEY_PASSWORD not in text
    assert API_KEY not in text


def test_a_key_of_another_certificate_stops_the_command_with_one_line(
    settings: Settings, pki: Pki
) -> None:
    one, other = pki.issue("one"), pki.issue("other")
    env = _command_env(
        settings, CHATPULSE_API_TLS_CERT=str(one.cert), CHATPULSE_API_TLS_KEY=str(other.key)
    )

    result = subprocess.run(
        [sys.executable, "-m", "chatpulse", "api", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr == (
        f"chatpulse: error: invalid settings: CHATPULSE_API_TLS_KEY ({other.key}) is not the "
        f"key of CHATPULSE_API_TLS_CERT ({one.cert})\n"
    )
