"""What every lab shares: the narrator, the lab's isolated context, and running one to a verdict.

A lab is a claim about Kafka, an experiment on the real stack that provokes it, and a
measurement. :func:`run_lab` gives the experiment a :class:`LabContext` (its own topic prefix,
keyspace, consumer groups and work directory, so it never touches a running ``make run``),
cleans up after it, and prints the verdict line ``lab NAME: PASS|FAIL - <claim> (<measured>)``.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.markup import escape

from chatpulse.errors import ChatpulseError
from chatpulse.settings import Settings

__all__ = [
    "Lab",
    "LabContext",
    "LabError",
    "Narrator",
    "Outcome",
    "Verdict",
    "run_lab",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LabError(ChatpulseError):
    """The experiment could not be carried out (a wait ran out, a server did not answer)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an experiment measured, and whether its claim held."""

    passed: bool
    measured: str


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    claim: str
    passed: bool
    measured: str

    def line(self) -> str:
        word = "PASS" if self.passed else "FAIL"
        return f"lab {self.name}: {word} - {self.claim} ({self.measured})"


@dataclass(frozen=True, slots=True)
class Lab:
    """One experiment. ``needs``: ``"kafka"``, ``"cassandra"`` (the single-node stack) or
    ``"cluster"`` (a 3-broker Kafka, which the experiment finds or starts itself)."""

    name: str
    summary: str
    claim: str
    needs: frozenset[str]
    experiment: Callable[[LabContext], Outcome]


class Narrator:
    """Plain-words narration on a rich console: numbered steps, what to look at, live numbers.

    Pauses before each step after the first when ``pause`` (a person at a terminal)."""

    def __init__(self, console: Console, *, pause: bool) -> None:
        self.console = console
        self.pause = pause
        self._steps = 0

    def step(self, title: str, text: str) -> None:
        if self._steps and self.pause:
            self.console.input("[bright_black]Enter: next step[/bright_black] ")
        self._steps += 1
        self.console.print()
        self.console.rule(f"[bold]Step {self._steps}: {escape(title)}", align="left")
        self.console.print(escape(text))

    def say(self, text: str) -> None:
        self.console.print(escape(text))

    def look(self, text: str) -> None:
        """What to look at in what follows."""
        self.console.print(f"[cyan]Look at:[/cyan] {escape(text)}")

    def result(self, text: str) -> None:
        """What just happened, with its numbers."""
        self.console.print(f"[green]=>[/green] {escape(text)}")

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]!![/yellow] {escape(text)}")

    def wait_for(
        self,
        what: str,
        check: Callable[[], T | None],
        *,
        timeout: float,
        show: Callable[[], str] | None = None,
        every: float = 0.5,
    ) -> tuple[T, float]:
        """Poll ``check`` until it returns something else than None; the value and the seconds
        it took. A live line shows ``show()`` meanwhile; LabError after ``timeout``."""
        began = time.monotonic()
        with self.console.status(f"{escape(what)} ...") as status:
            while True:
                value = check()
                elapsed = time.monotonic() - began
                if value is not None:
                    return value, elapsed
                if elapsed > timeout:
                    detail = f" (last seen: {show()})" if show else ""
                    raise LabError(f"gave up after {timeout:.0f}s waiting for {what}{detail}")
                now = f": {show()}" if show else ""
                status.update(f"{escape(what)}{escape(now)} [{elapsed:.0f}s]")
                time.sleep(every)


@dataclass
class LabContext:
    """An experiment's world: ``settings`` point at the stack with this run's own topic
    prefix, keyspace, processor group and state directory (in ``workdir``)."""

    name: str
    settings: Settings
    narrator: Narrator
    workdir: Path
    quick: bool
    kafka_port: int = 9092
    cassandra_port: int = 9042
    data_dir: Path | None = None
    # True when --kafka-port or --data-dir named the stack (a cluster lab then uses that one)
    explicit_stack: bool = False
    keep: bool = False
    keyspaces: list[str] = field(default_factory=list)
    _cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    @property
    def say(self) -> Narrator:
        return self.narrator

    def variant(self, suffix: str, **updates: object) -> Settings:
        """Settings of a second, independent copy inside this run (topics, keyspace, group and
        state all differ), e.g. two processors side by side."""
        prefix = f"{self.settings.topic_prefix}{suffix}-"
        keyspace = f"{self.settings.cassandra_keyspace}_{suffix.replace('-', '_')}"
        values: dict[str, object] = {
            "topic_prefix": prefix,
            "cassandra_keyspace": keyspace,
            "processor_group": f"{prefix}processor",
            "state_dir": self.workdir / suffix / "state",
            **updates,
        }
        self.keyspaces.append(keyspace)
        return self.settings.model_copy(update=values)

    def on_cleanup(self, what: str, action: Callable[[], None]) -> None:
        """Run ``action`` when the lab ends (in reverse order), even when it failed."""
        self._cleanups.append((what, action))

    def run_cleanups(self) -> None:
        while self._cleanups:
            what, action = self._cleanups.pop()
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on; each failure is shown
                self.narrator.warn(f"could not {what}: {exc}")


def lab_settings(base: Settings, name: str, workdir: Path) -> Settings:
    """``base`` with this run's own prefix, keyspace, group, state and no metrics ports."""
    token = secrets.token_hex(3)
    prefix = f"lab-{name}-{token}-"
    return base.model_copy(
        update={
            "topic_prefix": prefix,
            "cassandra_keyspace": f"lab_{name.replace('-', '_')}_{token}",
            "processor_group": f"{prefix}processor",
            "state_dir": workdir / "state",
            "spill_dir": workdir / "spill",
            "processor_metrics_port": 0,
            "ingest_metrics_port": 0,
        }
    )


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="chatpulse-lab-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_lab(
    lab: Lab,
    context_factory: Callable[[Path], LabContext],
    *,
    keep: bool = False,
    prepare: Callable[[LabContext], None] | None = None,
    cleanup: Callable[[LabContext], None] | None = None,
    out: Callable[[str], None] = print,
) -> Verdict:
    """Run ``lab`` in a fresh work directory: ``prepare`` (the stack), the experiment,
    ``cleanup`` (its topics, keyspaces, groups); with ``keep`` neither these nor the work
    directory are removed. Prints the verdict line with ``out`` and returns it."""
    with _workdir(keep) as workdir:
        context = context_factory(workdir)
        narrator = context.narrator
        narrator.console.rule(f"[bold]chatpulse lab {lab.name}")
        narrator.say(f"Claim: {lab.claim}.")
        try:
            if prepare is not None:
                prepare(context)
            outcome = lab.experiment(context)
        except (ChatpulseError, TimeoutError) as exc:
            outcome = Outcome(False, f"not measured: {exc}")
        except KeyboardInterrupt:
            outcome = Outcome(False, "interrupted")
        finally:
            context.run_cleanups()
            if keep:
                narrator.say(
                    f"--keep: left the topics {context.settings.topic_prefix}*, the keyspaces "
                    f"{', '.join(context.keyspaces) or '-'} and {workdir} in place"
                )
            elif cleanup is not None:
                try:
                    cleanup(context)
                except Exception as exc:  # noqa: BLE001 - the verdict stands; say what is left
                    narrator.warn(
                        f"clean-up failed, topics {context.settings.topic_prefix}* "
                        f"may be left: {exc}"
                    )
    verdict = Verdict(lab.name, lab.claim, outcome.passed, outcome.measured)
    narrator.console.print()
    sys.stdout.flush()
    out(verdict.line())
    return verdict
