"""The API answers from an error's ``retriable``: 503 with Retry-After, or a plain error."""

import httpx
import pytest
from fastapi import FastAPI

from chatpulse.api.errors import ApiError, LiveStreamsFullError, NotFoundError, as_api_error
from chatpulse.api.problems import install_problem_handlers
from chatpulse.errors import (
    CassandraUnavailableError,
    ChatpulseError,
    KafkaUnavailableError,
    SchemaError,
)

ERRORS: dict[str, ChatpulseError] = {
    "kafka": KafkaUnavailableError("Kafka is unreachable: timed out"),
    "cassandra": CassandraUnavailableError("Cassandra did not accept a session within 60s"),
    "schema": SchemaError("table chatpulse.messages has an older layout"),
    "missing": NotFoundError("No channel 'zzz'"),
    "full": LiveStreamsFullError(100),
    "retry-me": ApiError("busy", status=503, retriable=True),
}


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/raise/{name}")
    async def raise_it(name: str) -> None:
        raise ERRORS[name]

    return app


@pytest.mark.parametrize(
    ("name", "status", "slug", "retry_after"),
    [
        ("kafka", 503, "kafka-unavailable", "2"),
        ("cassandra", 503, "storage-unavailable", "2"),
        ("schema", 500, "internal", None),
        ("missing", 404, "not-found", None),
        ("full", 503, "live-streams-full", "5"),
        ("retry-me", 503, "internal", "2"),
    ],
)
async def test_the_answer_follows_retriable(
    name: str, status: int, slug: str, retry_after: str | None
) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get(f"/raise/{name}")
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    body = response.json()
    assert body["type"] == f"urn:chatpulse:problem:{slug}"
    assert body["detail"] == str(ERRORS[name])


def test_shared_errors_become_api_errors_once() -> None:
    missing = ERRORS["missing"]
    assert isinstance(missing, ApiError)
    assert as_api_error(missing) is missing
    kafka = as_api_error(KafkaUnavailableError("down"))
    assert (kafka.status, kafka.title, kafka.retriable) == (503, "Kafka unavailable", True)
    schema = as_api_error(SchemaError("old table"))
    assert (schema.status, schema.retriable, schema.headers) == (500, False, {})
