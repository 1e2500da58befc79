"""The API's reads are sent to another Cassandra node too when the first is slow
(chatpulse.api.speculation.first_answer): which attempts start when, and which answer wins.
Attempts here are plain asyncio futures the test resolves (no Cassandra)."""

import asyncio
from typing import Any

import pytest

from chatpulse.api.db import STATEMENTS
from chatpulse.api.speculation import first_answer
from chatpulse.errors import ConfigError
from chatpulse.settings import load_settings

DELAY = 0.05


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


class Attempts:
    """Records each started attempt; the test resolves them."""

    def __init__(self, hosts: int = 3) -> None:
        self.started: list[tuple[int, float]] = []
        self.futures: list[asyncio.Future[list[str]]] = []
        self.hosts = hosts
        self._started = asyncio.Event()

    async def until_started(self, count: int) -> None:
        while len(self.started) < count:
            self._started.clear()
            await asyncio.wait_for(self._started.wait(), 5)

    def __call__(self, number: int, timeout_s: float) -> "asyncio.Future[list[str]] | None":
        if number >= self.hosts:
            return None
        self.started.append((number, timeout_s))
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        self._started.set()
        return future


def _run(attempts: Attempts, *, extra: int = 2, budget_s: float = 2.0) -> "asyncio.Task[Any]":
    return asyncio.ensure_future(
        first_answer(
            attempts,
            delay_s=DELAY,
            extra=extra,
            budget_s=budget_s,
            transient=lambda exc: isinstance(exc, Transient),
        )
    )


def test_every_api_statement_is_a_read() -> None:
    # Sending a statement twice is harmless only while none writes.
    assert {cql.split(maxsplit=1)[0] for cql in STATEMENTS.values()} == {"SELECT"}


async def test_a_prompt_answer_asks_one_node() -> None:
    attempts = Attempts()
    task = _run(attempts)
    await asyncio.sleep(0)
    attempts.futures[0].set_result(["a"])
    assert await task == ["a"]
    await asyncio.sleep(3 * DELAY)
    assert [number for number, _ in attempts.started] == [0]


async def test_a_slow_node_is_overtaken_and_its_late_answer_ignored() -> None:
    attempts = Attempts()
    task = _run(attempts)
    await attempts.until_started(2)
    attempts.futures[1].set_result(["b"])
    assert await task == ["b"]
    # the first answers later: nothing of it reaches the caller, and it was cancelled
    assert attempts.futures[0].cancelled()
    first_budget, second_budget = attempts.started[0][1], attempts.started[1][1]
    assert first_budget == 2.0
    assert 2.0 - 2 * DELAY - 0.5 < second_budget < 2.0 - DELAY + 0.01  # what was left


async def test_at_most_extra_more_attempts_then_it_waits() -> None:
    attempts = Attempts(hosts=10)
    task = _run(attempts, extra=2)
    await asyncio.sleep(10 * DELAY)
    assert [number for number, _ in attempts.started] == [0, 1, 2]
    attempts.futures[0].set_result(["a"])
    assert await task == ["a"]


async def test_no_other_node_to_ask_waits_for_the_first() -> None:
    attempts = Attempts(hosts=1)
    task = _run(attempts)
    await asyncio.sleep(5 * DELAY)
    assert not task.done()
    attempts.futures[0].set_result(["a"])
    assert await task == ["a"]


async def test_a_transient_failure_asks_another_node_at_once() -> None:
    attempts = Attempts()
    task = _run(attempts)
    await asyncio.sleep(0)
    attempts.futures[0].set_exception(Transient("timed out"))
    await attempts.until_started(2)
    attempts.futures[1].set_result(["b"])
    assert await task == ["b"]


async def test_a_permanent_failure_is_raised_without_asking_again() -> None:
    attempts = Attempts()
    task = _run(attempts)
    await asyncio.sleep(0)
    attempts.futures[0].set_exception(Permanent("invalid query"))
    with pytest.raises(Permanent):
        await task
    assert len(attempts.started) == 1


async def test_when_every_attempt_fails_the_first_error_is_raised() -> None:
    attempts = Attempts()
    task = _run(attempts, extra=2)
    for number in range(3):
        await attempts.until_started(number + 1)
        attempts.futures[number].set_exception(Transient(f"attempt {number}"))
    with pytest.raises(Transient, match="attempt 0"):
        await task
    assert len(attempts.started) == 3


async def test_switched_off_it_asks_one_node_only() -> None:
    attempts = Attempts()
    task = _run(attempts, extra=0)
    await asyncio.sleep(5 * DELAY)
    attempts.futures[0].set_exception(Transient("timed out"))
    with pytest.raises(Transient):
        await task
    assert len(attempts.started) == 1


def test_the_defaults() -> None:
    settings = load_settings()
    assert (settings.api_speculative_delay_s, settings.api_speculative_executions) == (0.4, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATPULSE_API_SPECULATIVE_DELAY_S", "0"),
        ("CHATPULSE_API_SPECULATIVE_DELAY_S", "2"),
        ("CHATPULSE_API_SPECULATIVE_EXECUTIONS", "-1"),
        ("CHATPULSE_API_SPECULATIVE_EXECUTIONS", "6"),
    ],
)
def test_a_bad_speculation_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=name):
        load_settings()
