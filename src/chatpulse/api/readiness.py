"""Readiness that a flood of probes cannot amplify: one real check per period, shared.

``/readyz`` is anonymous; checking Cassandra and Kafka on every request would turn N probes into
N round-trips to each cluster (and N blocked threads while Kafka is away). The verdict, ready or
not, is kept ``ttl_s`` seconds and concurrent callers wait for the one check in flight.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from chatpulse.api.db import CassandraGateway
from chatpulse.api.errors import SchemaMissingError
from chatpulse.api.hub import LiveHub
from chatpulse.api.tracked import TOPICS_MISSING, TrackedChannels
from chatpulse.errors import ChatpulseError

__all__ = ["READINESS_CHECKS", "Readiness", "cluster_check"]

_PROBE_TIMEOUT_S = 3.0

READINESS_CHECKS = Counter(
    "chatpulse_api_readiness_checks_total",
    "Readiness checks that reached Cassandra and Kafka (one per readiness TTL at most)",
)


class Readiness:
    """``await reasons()``: why the API is not ready (empty when it is), at most ``ttl_s`` old."""

    def __init__(self, check: Callable[[], Awaitable[list[str]]], *, ttl_s: float) -> None:
        self._check = check
        self._ttl_s = ttl_s
        self._verdict: list[str] = []
        self._expires = 0.0
        self._pending: asyncio.Future[list[str]] | None = None

    async def reasons(self) -> list[str]:
        if time.monotonic() < self._expires:
            return list(self._verdict)
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._run())
        # Shielded: a prober that hangs up must not cancel the check the others wait for.
        return list(await asyncio.shield(self._pending))

    async def _run(self) -> list[str]:
        try:
            READINESS_CHECKS.inc()
            verdict = await self._check()
            self._verdict, self._expires = verdict, time.monotonic() + self._ttl_s
            return verdict
        finally:
            self._pending = None


def cluster_check(
    db: CassandraGateway, tracked: TrackedChannels, hub: LiveHub
) -> Callable[[], Awaitable[list[str]]]:
    """The real check: Cassandra and Kafka answer, and the live-stream consumer is assigned."""

    async def check() -> list[str]:
        failures = await asyncio.gather(
            _probe("cassandra", db.ping()),
            _probe("kafka", asyncio.to_thread(tracked.ping)),
        )
        reasons = [reason for reason in failures if reason]
        if tracked.topic_missing:
            reasons.append(f"kafka: {SchemaMissingError(TOPICS_MISSING).detail}")
        if not reasons and not hub.assigned.is_set():
            reasons.append("live: the channel-stats consumer is not assigned yet")
        return reasons

    return check


async def _probe(name: str, probe: Awaitable[None]) -> str | None:
    try:
        await asyncio.wait_for(probe, timeout=_PROBE_TIMEOUT_S)
    except ChatpulseError as exc:
        return f"{name}: {exc}"
    except TimeoutError:
        return f"{name}: no answer within {_PROBE_TIMEOUT_S:.0f} s"
    return None
