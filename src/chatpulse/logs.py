"""Logging set-up, called once by each entry point (never at import)."""

import logging
import os
import sys

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str | None = None) -> None:
    """Log to stderr, one line per record; ``CHATPULSE_LOG_LEVEL`` or ``level`` sets the level."""
    chosen = (level or os.environ.get("CHATPULSE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=chosen, format=_FORMAT, stream=sys.stderr, force=True)
    # The drivers are chatty at INFO about things a user need not act on.
    for noisy in ("cassandra", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
