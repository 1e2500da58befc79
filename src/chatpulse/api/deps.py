"""Dependencies as ``Annotated`` aliases: services, validated channel and window parameters."""

from typing import Annotated

from fastapi import Depends, Path, Request

from chatpulse.api.db import CassandraGateway
from chatpulse.api.errors import ApiError, NotFoundError
from chatpulse.api.queries import Totals, channel_totals
from chatpulse.api.services import Services
from chatpulse.models import normalize_channel

__all__ = [
    "CHANNEL_PATTERN",
    "ChannelName",
    "Db",
    "KnownChannel",
    "ServicesDep",
    "check_window",
    "get_services",
    "known_totals",
]

CHANNEL_PATTERN = r"^[A-Za-z0-9_]{1,25}$"


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_db(services: ServicesDep) -> CassandraGateway:
    return services.db


Db = Annotated[CassandraGateway, Depends(get_db)]


async def _channel_name(
    channel: Annotated[
        str,
        Path(
            description="Twitch login: 1-25 of a-z, 0-9, _ (case-insensitive)",
            pattern=CHANNEL_PATTERN,
            examples=["somechannel"],
        ),
    ],
) -> str:
    try:
        return normalize_channel(channel)
    except ValueError as exc:
        raise ApiError(str(exc), status=422, title="Invalid request", slug="validation") from None


ChannelName = Annotated[str, Depends(_channel_name)]


async def known_totals(services: Services, channel: str) -> Totals:
    """The channel's totals; a tracked channel not seen yet has zeros; 404 if neither."""
    totals = await channel_totals(services.db, channel=channel)
    if totals is not None:
        return totals
    if services.tracked.is_tracked(channel):
        return Totals(channel, 0, -1, -1)
    raise NotFoundError(
        f"No channel {channel!r}: it was never seen nor tracked.", slug="unknown-channel"
    )


async def _known_channel(channel: ChannelName, services: ServicesDep) -> Totals:
    return await known_totals(services, channel)


KnownChannel = Annotated[Totals, Depends(_known_channel)]


def check_window(services: Services, window: str) -> int:
    """The size in ms of a configured window; 422 problem otherwise."""
    size = services.windows.get(window)
    if size is None:
        sizes = ", ".join(services.windows)
        raise ApiError(
            f"window must be one of {sizes}, not {window!r}",
            status=422,
            title="Invalid request",
            slug="validation",
        )
    return size
