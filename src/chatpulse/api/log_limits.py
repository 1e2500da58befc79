"""Repeated warnings of the API, logged at most once per interval and kind, with counts.

An outage or a flood of bad requests repeats the same warning per request; each kind (a
problem's slug, a statement's name, ...) gets its own :class:`~chatpulse.logs.RateLimitedLog`,
so one noisy kind does not hide another, and the line after a quiet interval says how many
were held back.
"""

import logging
import time
from collections.abc import Callable

from chatpulse.logs import RateLimitedLog

__all__ = ["LOG_INTERVAL_S", "KindedLog"]

LOG_INTERVAL_S = 10.0
# Kinds come from small fixed sets (slugs, statement names); past this many, one shared
# limiter takes the rest so the table cannot grow without bound.
_MAX_KINDS = 256


class KindedLog:
    """``warning(kind, msg, *args)``: at most one line per ``interval_s`` for each kind."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._kinds: dict[str, RateLimitedLog] = {}

    def _limiter(self, kind: str) -> RateLimitedLog:
        limiter = self._kinds.get(kind)
        if limiter is None:
            if len(self._kinds) >= _MAX_KINDS:
                kind = "(other)"
                limiter = self._kinds.get(kind)
            if limiter is None:
                limiter = RateLimitedLog(self._logger, self._interval_s, clock=self._clock)
                self._kinds[kind] = limiter
        return limiter

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless this kind was logged within the interval."""
        return self._limiter(kind).warning(msg, *args)

    def error(self, kind: str, msg: str, *args: object) -> bool:
        """As :meth:`warning`, at ERROR level."""
        return self._limiter(kind).error(msg, *args)
