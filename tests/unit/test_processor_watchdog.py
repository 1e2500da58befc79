"""The commit watchdog: a commit running past the limit restarts the process, once."""

import os
import sys

import pytest

from chatpulse.processor import watchdog
from chatpulse.processor.watchdog import CommitWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_commit_past_the_limit_is_reported_once_and_a_finished_one_never() -> None:
    clock = Clock()
    stuck: list[float] = []
    dog = CommitWatchdog(120.0, stuck.append, clock)
    assert not dog.check()  # no commit running
    dog.started(clock.now)
    clock.now += 119.0
    assert not dog.check()
    dog.ended()
    clock.now += 500.0
    assert not dog.check()  # it ended in time
    dog.started(clock.now)
    clock.now += 130.0
    assert dog.check()
    assert stuck == [130.0]
    clock.now += 60.0
    assert not dog.check()  # reported once per commit
    assert stuck == [130.0]


def test_restart_execs_this_very_command(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, list(argv))))
    monkeypatch.setattr(watchdog.faulthandler, "dump_traceback", lambda **_: None)
    watchdog.restart_process(125.0)
    assert calls == [(sys.executable, list(sys.orig_argv))]
