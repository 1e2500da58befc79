"""Keep the processor from starting on local state that belongs to another Kafka cluster.

The processor's RocksDB state records the changelog offsets it has seen. After the Kafka
cluster is replaced (a wiped local stack, other settings), those offsets are ahead of the new
changelog topics and Quix stops with ``InvalidChangelogOffset``. ``chatpulse process`` remembers
the cluster id next to the state and moves state of another cluster aside (never deletes it);
the changelog topics of the new cluster then rebuild it.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["MARKER", "check_state_dir"]

MARKER = "kafka-cluster-id"


def check_state_dir(state_dir: Path, cluster_id: str) -> Path | None:
    """Ensure ``state_dir`` belongs to ``cluster_id``; return where stale state was moved.

    An empty or missing directory, or one marked with the same id, is used as is (and marked).
    State marked with another id is renamed to ``<state_dir>.stale-<time>``. Unmarked state
    (from before this check existed) is left alone: nothing tells which cluster it saw.
    """
    marker = state_dir / MARKER
    moved: Path | None = None
    if marker.exists():
        if marker.read_text().strip() != cluster_id:
            moved = state_dir.with_name(f"{state_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            state_dir.rename(moved)
    elif state_dir.exists() and any(state_dir.iterdir()):
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(cluster_id + "\n")
    return moved
