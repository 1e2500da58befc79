"""Readiness: one real check per period however many probes come, shared while in flight."""

import asyncio

from chatpulse.api.readiness import Readiness


class Check:
    """Counts checks; answers not ready with the check's number."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    async def __call__(self) -> list[str]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return [f"check {self.calls}"]


async def test_a_flood_within_one_period_costs_one_check() -> None:
    check = Check(delay=0.02)
    readiness = Readiness(check, ttl_s=10.0)
    answers = await asyncio.gather(*(readiness.reasons() for _ in range(200)))
    answers += [await readiness.reasons() for _ in range(200)]
    assert check.calls == 1
    assert all(answer == ["check 1"] for answer in answers)


async def test_one_check_per_period() -> None:
    check = Check()
    readiness = Readiness(check, ttl_s=0.05)
    assert await readiness.reasons() == ["check 1"]
    assert await readiness.reasons() == ["check 1"]
    await asyncio.sleep(0.07)
    assert await readiness.reasons() == ["check 2"]
    assert check.calls == 2


async def test_a_prober_that_hangs_up_does_not_cancel_the_shared_check() -> None:
    check = Check(delay=0.05)
    readiness = Readiness(check, ttl_s=10.0)
    first = asyncio.ensure_future(readiness.reasons())
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(readiness.reasons())
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == ["check 1"]
    assert check.calls == 1


async def test_zero_ttl_checks_every_time() -> None:
    check = Check()
    readiness = Readiness(check, ttl_s=0)
    await readiness.reasons()
    await readiness.reasons()
    assert check.calls == 2
