"""A short-lived cache of serialised read answers, with one computation per key at a time.

The processor updates a channel's numbers about once a second (its commit and live-update
interval), so answering hot reads from a copy at most ``ttl_s`` old loses nothing a reader could
notice and spares Cassandra N identical queries: under 50 concurrent clients one request per key
and TTL reaches Cassandra, the others wait for it ("single flight") or read the copy. Errors are
never cached. Hand-written: the few lines of asyncio here do not justify a dependency.

Stale if error (RFC 5861's ``stale-if-error``): when computing an answer fails with an error
``transient`` calls passing (Cassandra could not answer in time) and a copy stored at most
``stale_if_error_s`` ago is still kept, that copy is the answer, and its age goes with it (the
routes send it as ``Age``). Why: a Cassandra node that dies is asked for reads by its peers until
gossip convicts it, up to ~20 s; a token-range scan (the channel list) then waits for it past the
API's 2 s on every coordinator (:mod:`chatpulse.api.db`), and a live dashboard is better served
numbers a few seconds old, said to be so, than a 503. A permanent error (missing schema,
forbidden) is never answered from a copy.

Memory is bounded in bytes, not entries (answers range from a few hundred bytes to a few
hundred KiB): each copy counts its body plus :data:`ENTRY_OVERHEAD`; storing a copy past
``max_bytes`` evicts the least recently used copies first, expired or not, and a single answer
larger than the whole bound is served but never kept.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import NamedTuple

from pydantic import BaseModel

__all__ = ["ENTRY_OVERHEAD", "Cached", "ResponseCache"]

# What a copy costs besides its body: its key tuple, the dict slot, the bytes object header.
ENTRY_OVERHEAD = 256


class Cached(NamedTuple):
    """An answer's JSON and how old it is (0 when just computed; > ttl when served stale)."""

    body: bytes
    age_s: float


def _never(_exc: Exception) -> bool:
    return False


class ResponseCache:
    """JSON bytes of response models by key, kept ``ttl_s`` seconds (0 turns caching off),
    at most ``max_bytes`` in all (least recently used copies go first); a copy up to
    ``stale_if_error_s`` old answers in place of an error ``transient`` says may pass."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_bytes: int = 32 * 1024 * 1024,
        stale_if_error_s: float = 0.0,
        transient: Callable[[Exception], bool] = _never,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._stale_s = stale_if_error_s
        self._transient = transient
        self._bytes = 0
        # key -> (stored at, body): fresh until stored + ttl, usable stale until + stale_s
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[Cached]] = {}

    async def json(self, key: Hashable, compute: Callable[[], Awaitable[BaseModel]]) -> bytes:
        """The cached JSON of ``key``, or ``compute()``'s, stored for the next callers."""
        return (await self.answer(key, compute)).body

    async def answer(self, key: Hashable, compute: Callable[[], Awaitable[BaseModel]]) -> Cached:
        """As :meth:`json`, with the answer's age (a stale copy's, after a transient error)."""
        if self._ttl_s <= 0:
            return Cached((await compute()).model_dump_json().encode(), 0.0)
        entry = self._entries.get(key)
        if entry is not None and entry[0] + self._ttl_s > time.monotonic():
            self._entries.move_to_end(key)
            return Cached(entry[1], time.monotonic() - entry[0])
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

    async def _compute(self, key: Hashable, compute: Callable[[], Awaitable[BaseModel]]) -> Cached:
        future: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            body = (await compute()).model_dump_json().encode()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            stale = self._stale(key, exc)
            if stale is not None:
                future.set_result(stale)
                return stale
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; nobody waiting is fine too
            raise
        finally:
            self._pending.pop(key, None)
        self._store(key, body)
        fresh = Cached(body, 0.0)
        future.set_result(fresh)
        return fresh

    def _stale(self, key: Hashable, exc: Exception) -> Cached | None:
        """The kept copy of ``key`` to answer in place of ``exc``, if one may."""
        entry = self._entries.get(key)
        if entry is None or not self._transient(exc):
            return None
        age_s = time.monotonic() - entry[0]
        return Cached(entry[1], age_s) if age_s <= self._stale_s else None

    def _store(self, key: Hashable, body: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1]) + ENTRY_OVERHEAD
        cost = len(body) + ENTRY_OVERHEAD
        if cost > self._max_bytes:
            return  # larger than the whole bound: served, not kept
        while self._entries and self._bytes + cost > self._max_bytes:
            _key, (_stored, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted) + ENTRY_OVERHEAD
        self._entries[key] = (time.monotonic(), body)
        self._bytes += cost
