"""A small process supervisor: starts child commands, merges their output, stops them all.

Hand-written because what ``chatpulse up`` needs is narrow and interactive (one prefixed,
coloured log stream on a terminal, start-in-order with readiness checks, stop-in-reverse on
Ctrl-C); general supervisors (supervisord, honcho) are daemons or Procfile runners that would
add a dependency and a config file for less control over start order and readiness.

Children run in their own session, so a Ctrl-C at the terminal reaches only the supervisor,
which then stops the children in reverse start order (SIGTERM, wait, SIGKILL). On Linux each
child also gets ``PR_SET_PDEATHSIG`` so it is terminated even if the supervisor is killed hard.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from rich.console import Console
from rich.text import Text

from chatpulse.run.errors import ChildFailedError, StartupInterruptedError

__all__ = ["ChildSpec", "Supervisor"]

ReadyCheck = Callable[[], Awaitable[None]]
T = TypeVar("T")
_PREFIX_WIDTH = 11
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A long-running child: its command, extra environment, colour and readiness check.

    ``ready`` is awaited after the child starts and before the next one starts; it should
    return once the child serves (a port answers) and raise or time out otherwise.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    style: str = "cyan"
    ready: ReadyCheck | None = None
    ready_timeout_s: float = 120.0


@dataclass(slots=True)
class _Running:
    spec: ChildSpec
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None]
    started_at: float


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM this child when the supervisor dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Runs steps and children with one prefixed log stream; see the module docstring."""

    def __init__(self, console: Console | None = None, *, stop_timeout_s: float = 20.0) -> None:
        self.console = console or Console(highlight=False)
        self.stop_timeout_s = stop_timeout_s
        self.running: list[_Running] = []
        self._stop = asyncio.Event()
        self._stop_signal: str | None = None
        self._signals = 0

    # ----------------------------------------------------------------- output
    def say(self, message: str, *, style: str = "bold") -> None:
        """A line from the supervisor itself, under the ``up`` prefix."""
        self.console.print(
            Text.assemble((f"{'up':<{_PREFIX_WIDTH}}│ ", style), message), soft_wrap=True
        )

    def say_as(self, name: str, message: str, *, style: str = "white") -> None:
        """A progress line under another prefix (e.g. ``stack``); safe from worker threads."""
        self._echo(name, style, message)

    def _echo(self, name: str, style: str, line: str) -> None:
        # Text, not markup: a child's "[x]" must print as is.
        self.console.print(
            Text.assemble((f"{name:<{_PREFIX_WIDTH}}│ ", style), line), soft_wrap=True
        )

    async def _pump(self, name: str, style: str, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the buffer: show what there is
                raw = await stream.read(64 * 1024)
            if not raw:
                return
            self._echo(name, style, raw.decode("utf-8", "replace").rstrip("\r\n"))

    # ---------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM request a clean stop; a second one escalates to SIGKILL."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        self._stop_signal = signal.Signals(signum).name
        if self._signals == 1:
            self.say(f"{self._stop_signal} received: stopping everything (again to force)")
        else:
            self.say("second signal: killing the children now", style="bold red")
            for child in self.running:
                if child.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once SIGINT/SIGTERM arrived (or :meth:`request_stop` was called)."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return as if a signal arrived."""
        self._stop.set()

    # ------------------------------------------------------------ processes
    async def _spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str]
    ) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            limit=1024 * 1024,
        )
        assert process.stdout is not None
        return process, process.stdout

    async def start(self, spec: ChildSpec, *, wait: bool = True) -> None:
        """Start a child; with ``wait``, also wait for its readiness check (:meth:`wait_ready`)."""
        process, stdout = await self._spawn(spec.name, spec.argv, spec.env)
        pump = asyncio.create_task(self._pump(spec.name, spec.style, stdout))
        self.running.append(_Running(spec, process, pump, time.monotonic()))
        self.say(f"started {spec.name} (pid {process.pid}): {' '.join(spec.argv[-3:])}")
        if wait:
            await self.wait_ready(spec.name)

    async def wait_ready(self, name: str) -> None:
        """Wait for a started child's readiness check, failing if it dies or we are stopped."""
        child = next(c for c in self.running if c.spec.name == name)
        spec, process = child.spec, child.process
        if spec.ready is None:
            return
        ready = asyncio.create_task(asyncio.wait_for(spec.ready(), spec.ready_timeout_s))
        died = asyncio.create_task(process.wait())
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({ready, died, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (died, stopper):
            task.cancel()
        if ready.done():
            if isinstance(ready.exception(), TimeoutError):
                raise ChildFailedError(
                    f"{spec.name} not ready after {spec.ready_timeout_s:.0f}s", exit_code=1
                )
            ready.result()  # re-raise a failed check
            self.say(f"{spec.name} ready after {time.monotonic() - child.started_at:.1f}s")
            return
        ready.cancel()
        if process.returncode is not None:
            await child.pump
            raise ChildFailedError(
                f"{spec.name} exited during start-up with code {process.returncode}",
                exit_code=process.returncode or 1,
            )
        raise StartupInterruptedError(f"interrupted while waiting for {spec.name}")

    async def call_blocking(self, name: str, work: Callable[[], T]) -> T:
        """Run blocking ``work`` in a daemon thread; a stop request interrupts the wait.

        For work that holds nothing to clean up (e.g. creating topics): a daemon thread,
        unlike ``asyncio.to_thread``, does not keep the process alive after Ctrl-C.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def hand_over(result: T | None, error: BaseException | None) -> None:
            # After an interruption the loop may be closed: nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        def run() -> None:
            try:
                result = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                hand_over(None, exc)
            else:
                hand_over(result, None)

        threading.Thread(target=run, name=name, daemon=True).start()
        stopper: asyncio.Future[object] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[object]] = {future, stopper}  # type: ignore[arg-type]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not future.done():
            future.cancel()
            raise StartupInterruptedError(f"interrupted during {name}")
        return future.result()

    async def serve(self) -> ChildSpec | None:
        """Wait until a stop is requested (None) or a child dies (its spec)."""
        waits = {asyncio.create_task(c.process.wait()): c for c in self.running}
        stopper = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*waits, stopper):
            task.cancel()
        if self._stop.is_set():
            return None
        dead = next(waits[task] for task in done if task in waits)
        await dead.pump
        self.say(
            f"{dead.spec.name} (pid {dead.process.pid}) exited unexpectedly "
            f"with code {dead.process.returncode}",
            style="bold red",
        )
        return dead.spec

    async def stop_all(self) -> dict[str, int]:
        """Stop every running child in reverse start order; return their exit codes."""
        codes: dict[str, int] = {}
        for child in reversed(self.running):
            codes[child.spec.name] = await self._terminate(child.spec.name, child.process)
            await child.pump
        return codes

    async def _terminate(self, name: str, process: asyncio.subprocess.Process) -> int:
        if process.returncode is not None:
            return process.returncode
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            code = await asyncio.wait_for(process.wait(), self.stop_timeout_s)
        except TimeoutError:
            self.say(f"{name} ignored SIGTERM for {self.stop_timeout_s:.0f}s: SIGKILL", style="red")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
        self.say(
            f"stopped {name} (pid {process.pid}, exit code {code}) "
            f"in {time.monotonic() - started:.1f}s"
        )
        return code
