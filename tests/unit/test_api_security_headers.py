"""Security headers on every answer of the API and the dashboard, over HTTP and HTTPS.

The app is real and served by uvicorn on a loopback port (over TLS with a test CA where
HTTPS is tested); Kafka and Cassandra point at a closed port, so data endpoints answer 503.
"""

import base64
import hashlib
import re
import ssl
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from chatpulse.api.app import STATIC_DIR, create_app
from chatpulse.api.security import CONTENT_SECURITY_POLICY, HSTS
from chatpulse.api.server import serve_in_thread, tls_options
from chatpulse.settings import Settings, load_settings
from pki_support import Pki

API_KEY = "Xk2-secret-9f"
# One of each kind of answer: the dashboard, its files, the OpenAPI document, a problem from
# validation, a 503 from a missing cluster, a 404, a metrics page.
PATHS = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/openapi.json",
    "/api/v1/channels/bad-name",
    "/api/v1/channels",
    "/no/such/page",
    "/metrics",
]


def _settings(**overrides: object) -> Settings:
    return load_settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        cassandra_port=1,
        api_key=API_KEY,
        **overrides,
    )


@pytest.fixture(scope="module")
def plain() -> Iterator[httpx.Client]:
    with (
        serve_in_thread(create_app(_settings())) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    server = pki.issue("api", password="pem-pass")
    settings = _settings(
        api_tls_cert=server.cert, api_tls_key=server.key, api_tls_key_password="pem-pass"
    )
    with (
        serve_in_thread(create_app(settings), tls=tls_options(settings)) as url,
        httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=pki.ca_cert)) as client,
    ):
        yield client


def _assert_common(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("path", PATHS)
def test_every_answer_over_http_has_the_headers_but_no_hsts(plain: httpx.Client, path: str) -> None:
    response = plain.get(path)

    _assert_common(response)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize("path", PATHS)
def test_every_answer_over_https_also_has_hsts(secure: httpx.Client, path: str) -> None:
    response = secure.get(path)

    assert str(response.url).startswith("https://127.0.0.1:")
    _assert_common(response)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["strict-transport-security"] == HSTS


def test_the_policy_allows_only_the_sites_own_files() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))

    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


class _Inline(HTMLParser):
    """Everything in a page that a policy without 'unsafe-inline' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if tag == "a" and name == "href" and (value or "").startswith("javascript:"):
                self.found.append("javascript: link")
        if tag == "style":
            self.found.append("<style>")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.found.append("inline <script>")

    def handle_endtag(self, tag: str) -> None:
        self._tag = None


def test_the_dashboard_page_has_nothing_inline() -> None:
    parser = _Inline()
    parser.feed((STATIC_DIR / "index.html").read_text())

    assert parser.found == []
    # Nor does its script write HTML with handlers or styles in it.
    script = (STATIC_DIR / "app.js").read_text()
    assert (
        re.findall(r"innerHTML|insertAdjacentHTML|setAttribute\(\s*[\"']style|eval\(", script) == []
    )


@pytest.mark.parametrize(("path", "library"), [("/docs", "swagger-ui"), ("/redoc", "redoc")])
def test_openapi_pages_allow_their_cdn_and_exactly_their_inline_script(
    secure: httpx.Client, path: str, library: str
) -> None:
    response = secure.get(path)

    assert response.status_code == 200
    assert library in response.text
    _assert_common(response)
    assert response.headers["strict-transport-security"] == HSTS
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    inline = re.findall(r"<script>(.*?)</script>", response.text, flags=re.DOTALL)
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"
        for block in inline
    ]
    assert policy["script-src"].split() == ["'self'", "https://cdn.jsdelivr.net", *hashes]
    assert len(hashes) == (1 if path == "/docs" else 0)
    assert policy["frame-ancestors"] == "'none'"


def test_the_api_key_works_over_https(secure: httpx.Client) -> None:
    bad_name = {"channel": "no-way"}  # refused by validation, which runs after the key check
    missing = secure.post("/api/v1/channels", json=bad_name)
    wrong = secure.post("/api/v1/channels", json=bad_name, headers={"X-API-Key": "nope"})
    right = secure.post("/api/v1/channels", json=bad_name, headers={"X-API-Key": API_KEY})

    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 422)
    assert right.headers["strict-transport-security"] == HSTS


def test_a_client_without_the_ca_is_refused(secure: httpx.Client) -> None:
    with (
        httpx.Client(base_url=secure.base_url) as untrusting,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get("/healthz")
