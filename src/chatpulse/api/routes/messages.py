"""``/api/v1/channels/{channel}/messages``: recent chat, newest first, paged by cursor."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from chatpulse.api import queries
from chatpulse.api.cursors import MAX_CURSOR_CHARS, message_position
from chatpulse.api.deps import KnownChannel, ServicesDep
from chatpulse.api.errors import ApiError
from chatpulse.api.routes import problems
from chatpulse.api.schemas import MessagePage, to_ms
from chatpulse.words import MAX_QUERY_CHARS, MAX_QUERY_WORDS, MAX_WORD_CHARS, query_words

__all__ = ["parse_time", "router"]

router = APIRouter(prefix="/api/v1/channels", tags=["messages"])

_DAY_MS = 86_400_000


def parse_time(text: str) -> int | None:
    """Epoch ms of an ISO 8601 time, or None when ``text`` is not one (a cursor)."""
    try:
        return to_ms(datetime.fromisoformat(text))
    except ValueError:
        return None


@router.get("/{channel}/messages", responses=problems(400, 404, 422, 503))
async def channel_messages(
    totals: KnownChannel,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200, description="page size")] = 50,
    before: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_CHARS,
            description="next_cursor of the previous page, or an ISO 8601 time (exclusive)",
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_QUERY_CHARS,
            description=f"search: only messages with every word of q (case-insensitive whole "
            f"words; at most {MAX_QUERY_WORDS} words of at most {MAX_WORD_CHARS} characters)",
        ),
    ] = None,
) -> MessagePage:
    """Messages newest first; follow ``next_cursor`` (as ``before``) for older ones.

    With ``q``, a search: the messages holding every word of ``q``. A page looks through at
    most 32 minutes of the channel's chat, so a search for something rare can answer fewer
    than ``limit`` items (even none) with a ``next_cursor``: follow it until it is null.
    """
    words: list[str] | None = None
    if q is not None:
        if not services.settings.search_index:
            raise ApiError(
                "search is switched off on this deployment (CHATPULSE_SEARCH_INDEX=false)",
                status=404,
                title="Not Found",
                slug="feature-off",
            )
        try:
            words = query_words(q)
        except ValueError as exc:
            raise ApiError(
                str(exc), status=422, title="Invalid request", slug="validation"
            ) from None
    before_ms: int | None = None
    before_key: tuple[int, str] | None = None
    scope = f"messages:{totals.channel}"
    if before is not None:
        before_ms = parse_time(before)
        if before_ms is None:
            before_key = message_position(services.cursors.check(scope, before))
    if not totals.seen or (before_ms is not None and before_ms <= totals.first_seen_ms):
        return MessagePage(items=[], next_cursor=None)
    # Messages expire (TTL) about message_ttl_days after they were written, which is soon
    # after they were sent: no need to walk further back than that from the newest.
    ttl_days = services.settings.message_ttl_days
    oldest_ms = totals.last_seen_ms - (ttl_days + 1) * _DAY_MS
    items, next_key = await queries.message_page(
        services.db,
        totals=totals,
        before_ms=before_ms,
        before_key=before_key,
        limit=limit,
        oldest_ms=oldest_ms,
        words=words,
    )
    next_cursor = None if next_key is None else services.cursors.issue(scope, list(next_key))
    return MessagePage(items=items, next_cursor=next_cursor)
