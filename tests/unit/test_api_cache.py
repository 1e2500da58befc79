"""The API's response cache: single flight, expiry, errors never cached, bounded size."""

import asyncio

import pytest
from pydantic import BaseModel

from chatpulse.api.cache import ResponseCache


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


async def test_size_is_bounded_oldest_first() -> None:
    cache, source = ResponseCache(10.0, max_entries=2), Source()
    for key in ("a", "b", "c"):
        await cache.json(key, source)
    assert await cache.json("c", source) == b'{"n":3}'  # kept
    assert await cache.json("a", source) == b'{"n":4}'  # evicted, computed again


async def test_a_cancelled_computation_does_not_fail_the_waiters() -> None:
    cache, source = ResponseCache(10.0), Source(delay=0.05)
    first = asyncio.ensure_future(cache.json("k", source))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(cache.json("k", source))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await waiter == b'{"n":2}'
