"""Logging set-up, called once by each entry point (never at import)."""

import logging
import os
import sys
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog", "configure_logging"]

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str | None = None) -> None:
    """Log to stderr, one line per record; ``CHATPULSE_LOG_LEVEL`` or ``level`` sets the level."""
    chosen = (level or os.environ.get("CHATPULSE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=chosen, format=_FORMAT, stream=sys.stderr, force=True)
    # The drivers are chatty at INFO about things a user need not act on.
    for noisy in ("cassandra", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


class RateLimitedLog:
    """One kind of repeated warning, logged at most once per interval.

    The first occurrence is logged at once; the ones within the next ``interval_s`` are only
    counted, and the next one logged after it says how many were held back. Keeps the log
    readable under a flood (a chat server sending thousands of bad lines a second) while
    every occurrence is still counted (metrics count them exactly).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._next = float("-inf")
        self.suppressed = 0

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless one was logged within the interval; True when logged."""
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        if self.suppressed:
            msg += " (and %d more like it in the last %gs)"
            args = (*args, self.suppressed, self._interval_s)
        self._logger.log(level, msg, *args)
        self._next = now + self._interval_s
        self.suppressed = 0
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)
