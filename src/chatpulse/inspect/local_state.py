"""The processor's local state stores on disk (RocksDB directories under ``state_dir``).

Quix Streams (3.28) keeps one RocksDB database per store and partition at
``<state_dir>/<consumer group>/<store name>/<source topic>/<partition>/``; the changelog
topics are their backup, replayed into these directories after a crash or when a partition
moves here.
"""

from __future__ import annotations

import os
from pathlib import Path

from chatpulse.inspect.model import StoreInfo

__all__ = ["collect_stores", "directory_bytes"]


def directory_bytes(path: Path) -> int:
    """Total size of the regular files under ``path`` (0 if it vanished meanwhile)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except FileNotFoundError:  # RocksDB compaction removes files while we walk
                continue
    return total


def collect_stores(state_dir: Path, group: str | None = None) -> list[StoreInfo]:
    """Every store partition directory under ``state_dir`` with its size on disk."""
    if not state_dir.is_dir():
        return []
    stores = []
    for group_dir in sorted(p for p in state_dir.iterdir() if p.is_dir()):
        if group is not None and group_dir.name != group:
            continue
        for root, dirs, _ in os.walk(group_dir):
            here = Path(root)
            relative = here.relative_to(group_dir).parts
            if len(relative) < 2 or not here.name.isdigit():
                continue
            dirs.clear()  # RocksDB's own files below; nothing more to find
            stores.append(
                StoreInfo(
                    group=group_dir.name,
                    store=relative[0],
                    stream="/".join(relative[1:-1]),
                    partition=int(here.name),
                    path=str(here),
                    bytes=directory_bytes(here),
                )
            )
    stores.sort(key=lambda s: (s.group, s.store, s.stream, s.partition))
    return stores
