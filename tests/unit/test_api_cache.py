"""The API's response cache: single flight, expiry, errors never cached, bounded in bytes."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from pydantic import BaseModel

from chatpulse.api.cache import ENTRY_OVERHEAD, ResponseCache


class Answer(BaseModel):
    n: int


class Source:
    """Counts computations; each answer is the number of computations so far."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    async def __call__(self) -> Answer:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return Answer(n=self.calls)


async def test_concurrent_callers_share_one_computation() -> None:
    cache, source = ResponseCache(10.0), Source(delay=0.05)
    answers = await asyncio.gather(*(cache.json("k", source) for _ in range(20)))
    assert source.calls == 1
    assert set(answers) == {b'{"n":1}'}


async def test_copies_expire_after_the_ttl() -> None:
    cache, source = ResponseCache(0.05), Source()
    assert await cache.json("k", source) == b'{"n":1}'
    assert await cache.json("k", source) == b'{"n":1}'
    await asyncio.sleep(0.08)
    assert await cache.json("k", source) == b'{"n":2}'


async def test_keys_are_separate_and_clear_forgets() -> None:
    cache, source = ResponseCache(10.0), Source()
    assert await cache.json("a", source) == b'{"n":1}'
    assert await cache.json("b", source) == b'{"n":2}'
    cache.clear()
    assert await cache.json("a", source) == b'{"n":3}'


async def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    cache = ResponseCache(10.0)
    calls = 0

    async def failing() -> Answer:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise RuntimeError("down")

    results = await asyncio.gather(
        *(cache.json("k", failing) for _ in range(5)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        await cache.json("k", failing)
    assert calls == 2


async def test_zero_ttl_computes_every_time() -> None:
    cache, source = ResponseCache(0), Source()
    await cache.json("k", source)
    await cache.json("k", source)
    assert source.calls == 2


class Blob(BaseModel):
    text: str


def blob(size: int) -> "Callable[[], Awaitable[Blob]]":
    """A computation whose JSON is exactly ``size`` bytes (``{"text":"..."}``)."""

    async def compute() -> Blob:
        return Blob(text="x" * (size - len('{"text":""}')))

    return compute


async def test_bytes_are_bounded_least_recently_used_first() -> None:
    per_entry = 1000 + ENTRY_OVERHEAD
    cache = ResponseCache(10.0, max_bytes=3 * per_entry)
    for key in ("a", "b", "c"):
        assert len(await cache.json(key, blob(1000))) == 1000
    assert (len(cache), cache.size_bytes) == (3, 3 * per_entry)
    await cache.json("a", blob(1000))  # a hit: "a" becomes the most recently used
    await cache.json("d", blob(1000))  # evicts "b", the least recently used
    assert (len(cache), cache.size_bytes) == (3, 3 * per_entry)
    source = Source()
    assert await cache.json("b", source) == b'{"n":1}'  # evicted: computed again
    assert await cache.json("a", source) != b'{"n":2}'  # kept
    assert source.calls == 1


async def test_one_large_answer_evicts_as_many_as_it_needs() -> None:
    cache = ResponseCache(10.0, max_bytes=10_000)
    for key in range(8):
        await cache.json(key, blob(900))
    await cache.json("big", blob(6000))
    assert cache.size_bytes <= 10_000
    assert len(cache) == 4  # "big" and the three newest small ones
    assert cache.size_bytes == 6000 + 3 * 900 + 4 * ENTRY_OVERHEAD


async def test_an_answer_larger_than_the_bound_is_served_not_kept() -> None:
    cache = ResponseCache(10.0, max_bytes=2000)
    await cache.json("small", blob(500))
    assert len(await cache.json("huge", blob(5000))) == 5000
    assert len(cache) == 1
    assert cache.size_bytes == 500 + ENTRY_OVERHEAD


async def test_recomputing_a_key_replaces_its_bytes() -> None:
    cache = ResponseCache(0.01, max_bytes=100_000)
    await cache.json("k", blob(3000))
    await asyncio.sleep(0.02)
    await cache.json("k", blob(1000))
    assert (len(cache), cache.size_bytes) == (1, 1000 + ENTRY_OVERHEAD)
    cache.clear()
    assert (len(cache), cache.size_bytes) == (0, 0)


async def test_a_cancelled_computation_does_not_fail_the_waiters() -> None:
    cache, source = ResponseCache(10.0), Source(delay=0.05)
    first = asyncio.ensure_future(cache.json("k", source))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(cache.json("k", source))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await waiter == b'{"n":2}'


class Timeout(Exception):
    """Stands for a transient storage error (what ``transient`` lets a stale copy answer)."""


def stale_cache(stale_s: float) -> ResponseCache:
    return ResponseCache(
        0.02, stale_if_error_s=stale_s, transient=lambda exc: isinstance(exc, Timeout)
    )


async def test_a_transient_error_is_answered_by_the_expired_copy_with_its_age() -> None:
    cache, source = stale_cache(10.0), Source()
    assert await cache.answer("k", source) == (b'{"n":1}', 0.0)
    await asyncio.sleep(0.05)

    async def timing_out() -> Answer:
        raise Timeout

    body, age_s = await cache.answer("k", timing_out)
    assert body == b'{"n":1}'
    assert 0.05 <= age_s < 1.0
    # the copy is not refreshed by being served: once the source answers, it is fresh again
    assert await cache.answer("k", source) == (b'{"n":2}', 0.0)


async def test_waiters_of_a_failed_computation_get_the_stale_copy_too() -> None:
    cache = stale_cache(10.0)
    await cache.json("k", Source())
    await asyncio.sleep(0.05)

    async def slow_timeout() -> Answer:
        await asyncio.sleep(0.02)
        raise Timeout

    answers = await asyncio.gather(*(cache.json("k", slow_timeout) for _ in range(5)))
    assert answers == [b'{"n":1}'] * 5


async def test_no_stale_copy_for_other_errors_for_copies_too_old_or_for_new_keys() -> None:
    cache = stale_cache(0.2)
    await cache.json("k", Source())
    await asyncio.sleep(0.03)  # past the ttl: the copy is stale

    async def permanent() -> Answer:
        raise RuntimeError("schema missing")

    async def timing_out() -> Answer:
        raise Timeout

    with pytest.raises(RuntimeError):
        await cache.json("k", permanent)  # not transient: never answered from a copy
    with pytest.raises(Timeout):
        await cache.json("other", timing_out)  # nothing kept for this key
    await asyncio.sleep(0.2)
    with pytest.raises(Timeout):
        await cache.json("k", timing_out)  # the copy is older than stale_if_error_s


async def test_stale_if_error_is_off_by_default() -> None:
    cache = ResponseCache(0.01)
    await cache.json("k", Source())
    await asyncio.sleep(0.02)

    async def timing_out() -> Answer:
        raise Timeout

    with pytest.raises(Timeout):
        await cache.json("k", timing_out)
