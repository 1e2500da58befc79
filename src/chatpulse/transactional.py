"""Transactional ids of the ingest and the processor: one rule for both.

A transactional id must be stable for one instance, so that a restarted instance fences its
former self at once (instead of its open transaction blocking ``read_committed`` readers
until the broker times it out), and unique across instances, or two of them fence each
other in turn. It is ``<base>-<instance id>-<hash of the instance's directory>``: the
directory (spill or state dir) tells instances on one machine apart, the instance id
(``CHATPULSE_INSTANCE_ID``, by default the host name) machines that use the same directory.
"""

import hashlib
import socket
from pathlib import Path

__all__ = ["default_instance_id", "transactional_id"]


def default_instance_id() -> str:
    """The host name, as the instance id when ``CHATPULSE_INSTANCE_ID`` is not set."""
    return socket.gethostname() or "localhost"


def transactional_id(base: str, directory: Path, instance_id: str) -> str:
    """The transactional id of the instance ``instance_id`` keeping its data in ``directory``."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return f"{base}-{instance_id}-{digest}"
