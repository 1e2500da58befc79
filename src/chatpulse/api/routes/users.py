"""``/api/v1/channels/{channel}/users/{login}/messages``: one user's chat history, newest first."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from chatpulse.api import queries
from chatpulse.api.cursors import MAX_CURSOR_CHARS, message_position
from chatpulse.api.deps import CHANNEL_PATTERN, KnownChannel, ServicesDep
from chatpulse.api.errors import ApiError
from chatpulse.api.routes import problems
from chatpulse.api.routes.messages import parse_time
from chatpulse.api.routes.stats import IsoTime
from chatpulse.api.schemas import MessagePage, to_ms
from chatpulse.buckets import Position

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/channels", tags=["messages"])

_DAY_MS = 86_400_000


@router.get("/{channel}/users/{login}/messages", responses=problems(400, 404, 422, 503))
async def user_messages(
    *,
    totals: KnownChannel,
    services: ServicesDep,
    login: Annotated[
        str,
        Path(
            description="the user's Twitch login: 1-25 of a-z, 0-9, _ (case-insensitive)",
            pattern=CHANNEL_PATTERN,
            examples=["someviewer"],
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=200, description="page size")] = 50,
    before: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_CHARS,
            description="next_cursor of the previous page, or an ISO 8601 time (exclusive)",
        ),
    ] = None,
    from_: Annotated[
        IsoTime | None,
        Query(alias="from", description="messages sent at or after (ISO 8601)"),
    ] = None,
    to: Annotated[IsoTime | None, Query(description="messages sent before (ISO 8601)")] = None,
) -> MessagePage:
    """What ``login`` said in the channel, newest first; follow ``next_cursor`` (as ``before``,
    with the same ``from``/``to``) for older messages. A user who never spoke there has an
    empty page. A page reads at most 32 days of the user's history: one that spans more
    empty days comes back shorter, with a ``next_cursor`` to go on from."""
    if not services.settings.user_history:
        raise ApiError(
            "user history is switched off on this deployment (CHATPULSE_USER_HISTORY=false)",
            status=404,
            title="Not Found",
            slug="feature-off",
        )
    login = login.lower()
    from_ms = to_ms(from_) if from_ is not None else None
    to_ms_ = to_ms(to) if to is not None else None
    if from_ms is not None and to_ms_ is not None and from_ms > to_ms_:
        raise ApiError(
            "from must not be after to", status=422, title="Invalid request", slug="validation"
        )
    scope = f"user-messages:{totals.channel}:{login}"
    before_ms: int | None = None
    before_key: tuple[int, str] | None = None
    if before is not None:
        before_ms = parse_time(before)
        if before_ms is None:
            before_key = message_position(services.cursors.check(scope, before))
    if not totals.seen:
        return MessagePage(items=[], next_cursor=None)
    newest = totals.last_seen_ms + 1
    if to_ms_ is not None:
        newest = min(newest, to_ms_)
    if before_key is not None:
        start = Position(min(before_key[0], newest), before_key[1])
    else:
        start = Position(min(before_ms, newest) if before_ms is not None else newest)
    # Nothing older than the channel's first message, nor than the message TTL (see the
    # messages endpoint), nor than ``from``.
    ttl_days = services.settings.message_ttl_days
    oldest_ms = max(totals.first_seen_ms, totals.last_seen_ms - (ttl_days + 1) * _DAY_MS)
    if from_ms is not None:
        oldest_ms = max(oldest_ms, from_ms)
    if start.sent_at_ms <= oldest_ms and not start.id:
        return MessagePage(items=[], next_cursor=None)
    items, next_key = await queries.user_message_page(
        services.db,
        channel=totals.channel,
        login=login,
        start=start,
        oldest_ms=oldest_ms,
        limit=limit,
    )
    next_cursor = None if next_key is None else services.cursors.issue(scope, list(next_key))
    return MessagePage(items=items, next_cursor=next_cursor)
