"""The first answer of a read sent to more than one Cassandra node ("speculative" reads).

:func:`first_answer` starts one attempt, and another each time none has answered for a delay
(at most a given number more); the first attempt that succeeds wins and the others' answers
are ignored. Why not the driver's own speculative execution: it delivers every answer of its
executions to the request's callbacks, so a read whose speculative copy also answered came
back with its rows twice (the channel list counted channels twice in the failure tests).
Here every attempt is a request of its own, with its own rows.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["first_answer"]

T = TypeVar("T")


async def first_answer(
    attempt: Callable[[int, float], Awaitable[T] | None],
    *,
    delay_s: float,
    extra: int,
    budget_s: float,
    transient: Callable[[BaseException], bool],
) -> T:
    """The result of the first of up to ``1 + extra`` attempts to succeed.

    ``attempt(n, timeout_s)`` starts attempt ``n`` (0 first) with what is left of
    ``budget_s`` and returns its awaitable, or None when it cannot be made (no other node to
    ask): then no more are started. Another attempt starts when none has answered within
    ``delay_s``, or at once when every started attempt failed with an error that
    ``transient`` accepts, while the budget lasts. Raises the first attempt's error when all
    attempts failed (or the last one's failure was not transient).
    """
    began = time.monotonic()
    first = attempt(0, budget_s)
    assert first is not None, "the first attempt always starts"
    pending: set[asyncio.Future[T]] = {asyncio.ensure_future(first)}
    started = 1
    errors: list[BaseException] = []
    try:
        while True:
            can_start = started <= extra
            done, pending = await asyncio.wait(
                pending,
                timeout=delay_s if can_start else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                error = task.exception()
                if error is None:
                    return task.result()
                errors.append(error)
            failed_all = not pending
            if failed_all and not (can_start and transient(errors[-1])):
                raise errors[0]
            left = budget_s - (time.monotonic() - began)
            if can_start and left > 0 and (failed_all or not done):
                more = attempt(started, left)
                started += 1
                if more is not None:
                    pending.add(asyncio.ensure_future(more))
                elif failed_all:
                    raise errors[0]
                else:
                    extra = started - 1  # nobody else to ask: wait for those pending
            elif failed_all:
                raise errors[0]
    finally:
        for task in pending:
            task.cancel()
