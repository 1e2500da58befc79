"""A shard reconnects after a retriable error and stops at the first one that is not.

The shard is given a ShardContext whose connections fail to open with chosen errors: no
socket, no server, only the decision taken from each error's ``retriable``.
"""

import asyncio
from typing import Any, cast

import pytest

from chatpulse.errors import ChatpulseError, KafkaUnavailableError
from chatpulse.ingest.errors import ConvertError, TwitchLoginError, retriable
from chatpulse.ingest.irc.connection import IrcConnection
from chatpulse.ingest.irc.ratelimit import SlidingWindowLimiter
from chatpulse.ingest.irc.shard import Shard, ShardContext


class _FailingConnection:
    """Opens by raising the next of ``errors``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.aborted = False

    async def open(self) -> None:
        raise self.error

    def abort(self) -> None:
        self.aborted = True


async def _run_shard(errors: list[BaseException]) -> tuple[list[BaseException], int, list[Any]]:
    """Run a shard over connections failing with ``errors``; (fatal errors, attempts, conns)."""
    fatal: list[BaseException] = []
    made: list[_FailingConnection] = []
    stopped = asyncio.Event()

    def new_connection() -> IrcConnection:
        if len(made) == len(errors):
            stopped.set()  # no more scripted errors: the test has seen enough
            raise asyncio.CancelledError
        made.append(_FailingConnection(errors[len(made)]))
        return cast(IrcConnection, made[-1])

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        stopped.set()

    context = ShardContext(
        new_connection=new_connection,
        join_limiter=SlidingWindowLimiter(100, 1.0),
        connect_limiter=SlidingWindowLimiter(100, 1.0),
        backoff=lambda attempt: 0.0,
        on_fatal=on_fatal,
        join_confirm_timeout_s=1.0,
        stable_after_s=10.0,
        drain_timeout_s=1.0,
    )
    shard = Shard(context, 0)
    shard.add("chan")
    shard.start()
    async with asyncio.timeout(5):
        await stopped.wait()
    assert shard.task is not None
    await asyncio.wait([shard.task], timeout=5)
    return fatal, context.counters.connect_attempts, made


class _Retriable(ChatpulseError):
    retriable = True


async def test_network_errors_and_retriable_errors_are_tried_again() -> None:
    errors: list[BaseException] = [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        _Retriable("the server is restarting"),
    ]
    fatal, attempts, made = await _run_shard(errors)
    assert fatal == []
    assert len(made) == 3  # each error was followed by another attempt ...
    assert attempts == 4  # ... and the fourth found the script at its end
    assert all(conn.aborted for conn in made)


async def test_a_refused_login_stops_the_shard_at_once() -> None:
    login = TwitchLoginError("Twitch refused the login: Login authentication failed")
    fatal, attempts, _ = await _run_shard([OSError("reset"), login, OSError("never tried")])
    assert fatal == [login]
    assert attempts == 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (KafkaUnavailableError("Kafka at k:9092 did not answer within 60s"), True),
        (TwitchLoginError("refused"), False),
        (ConvertError("missing tag id", "PRIVMSG #c :hi"), False),
        (ValueError("a bug"), False),
    ],
)
def test_retriable_reads_the_error(error: BaseException, expected: bool) -> None:
    assert retriable(error) is expected
