"""What the API holds for its lifetime: the gateway, the live hub, the tracked set, the cursors.

Built by the app factory's lifespan and reached by routes through :mod:`chatpulse.api.deps`.
"""

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from chatpulse.api.cache import ResponseCache
from chatpulse.api.cursors import Cursors
from chatpulse.api.db import CassandraGateway
from chatpulse.api.errors import StorageUnavailableError
from chatpulse.api.hub import LiveHub
from chatpulse.api.readiness import Readiness, cluster_check
from chatpulse.api.tracked import TrackedChannels
from chatpulse.settings import Settings
from chatpulse.topics import Topics

__all__ = ["Services", "running_services"]

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: CassandraGateway
    hub: LiveHub
    tracked: TrackedChannels
    cursors: Cursors
    cache: ResponseCache
    readiness: Readiness
    windows: dict[str, int] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def running_services(settings: Settings, cache_ttl_s: float) -> AsyncIterator[Services]:
    """Start every background part (none blocks on a cluster being up) and stop them after."""
    topics = Topics.from_settings(settings)
    db = CassandraGateway(settings)
    hub = LiveHub(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=topics.stats,
        max_streams=settings.api_max_live_connections,
        security=settings.kafka_security_config(),
    )
    tracked = TrackedChannels(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=topics.tracked,
        security=settings.kafka_security_config(),
    )
    services = Services(
        settings=settings,
        db=db,
        hub=hub,
        tracked=tracked,
        readiness=Readiness(cluster_check(db, tracked, hub), ttl_s=settings.api_readiness_ttl_s),
        cursors=Cursors(),
        cache=ResponseCache(
            cache_ttl_s,
            max_bytes=settings.api_cache_max_bytes,
            stale_if_error_s=settings.api_stale_if_error_s,
            transient=lambda exc: isinstance(exc, StorageUnavailableError),
        ),
        windows=dict(zip(settings.windows, settings.window_sizes_ms, strict=True)),
    )
    # No topic or table is created here: the API reads with the least rights (DDL belongs to
    # ``chatpulse init`` and the processor) and says "schema not initialised" until it exists.
    services.db.start()
    services.hub.start()
    services.tracked.start()
    try:
        yield services
    finally:
        await services.hub.stop()
        await services.tracked.stop()
        await services.db.close()
