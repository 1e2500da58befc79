"""A short-lived cache of serialised read answers, with one computation per key at a time.

The processor updates a channel's numbers about once a second (its commit and live-update
interval), so answering hot reads from a copy at most ``ttl_s`` old loses nothing a reader could
notice and spares Cassandra N identical queries: under 50 concurrent clients one request per key
and TTL reaches Cassandra, the others wait for it ("single flight") or read the copy. Errors are
never cached. Hand-written: the few lines of asyncio here do not justify a dependency.

Memory is bounded in bytes, not entries (answers range from a few hundred bytes to a few
hundred KiB): each copy counts its body plus :data:`ENTRY_OVERHEAD`; storing a copy past
``max_bytes`` evicts the least recently used copies first, expired or not, and a single answer
larger than the whole bound is served but never kept.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

from pydantic import BaseModel

__all__ = ["ENTRY_OVERHEAD", "ResponseCache"]

# What a copy costs besides its body: its key tuple, the dict slot, the bytes object header.
ENTRY_OVERHEAD = 256


class ResponseCache:
    """JSON bytes of response models by key, kept ``ttl_s`` seconds (0 turns caching off),
    at most ``max_bytes`` in all (least recently used copies go first)."""

    def __init__(self, ttl_s: float, *, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}

    async def json(self, key: Hashable, compute: Callable[[], Awaitable[BaseModel]]) -> bytes:
        """The cached JSON of ``key``, or ``compute()``'s, stored for the next callers."""
        if self._ttl_s <= 0:
            return (await compute()).model_dump_json().encode()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            self._entries.move_to_end(key)
            return entry[1]
        pending = self._pending.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request itself was cancelled
                # The computing request went away: compute it here instead.
        return await self._compute(key, compute)

    @property
    def size_bytes(self) -> int:
        """What the kept copies count against ``max_bytes``."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every copy (after a write this instance made, so it reads its own writes)."""
        self._entries.clear()
        self._bytes = 0

    async def _compute(self, key: Hashable, compute: Callable[[], Awaitable[BaseModel]]) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            body = (await compute()).model_dump_json().encode()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; nobody waiting is fine too
            raise
        finally:
            self._pending.pop(key, None)
        self._store(key, body)
        future.set_result(body)
        return body

    def _store(self, key: Hashable, body: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1]) + ENTRY_OVERHEAD
        cost = len(body) + ENTRY_OVERHEAD
        if cost > self._max_bytes:
            return  # larger than the whole bound: served, not kept
        while self._entries and self._bytes + cost > self._max_bytes:
            _key, (_expires, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted) + ENTRY_OVERHEAD
        self._entries[key] = (time.monotonic() + self._ttl_s, body)
        self._bytes += cost
