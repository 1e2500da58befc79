"""The clusters behind ``chatpulse up``: reuse running ones, start the local stack
(chatpulse.stack's Python API), or insist on the external ones the settings name."""

from __future__ import annotations

import asyncio
import threading
import time

from chatpulse.run.errors import RunError, StartupInterruptedError
from chatpulse.run.plan import kafka_address
from chatpulse.run.readiness import tcp_open
from chatpulse.run.supervisor import Supervisor
from chatpulse.settings import Settings
from chatpulse.stack import JavaServer, ServerExitedError, Stack, StackError

__all__ = ["StackControl"]

_READY_TIMEOUT_S = 240.0
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


class StackControl:
    """Starts the local stack when needed and, at the end, stops only the servers it started."""

    def __init__(self, settings: Settings, supervisor: Supervisor) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.started: list[JavaServer] = []
        self._stack: Stack | None = None
        self._cancel = threading.Event()

    def _progress(self, message: str) -> None:
        self.supervisor.say_as("stack", message, style="bright_black")

    def _local(self) -> bool:
        """Whether the settings point at this machine (where a local stack can serve them)."""
        hosts = [kafka_address(self.settings)[0], *self.settings.cassandra_contact_points]
        return all(host in _LOCAL_HOSTS for host in hosts)

    async def _answering(self) -> tuple[bool, bool]:
        kafka_host, kafka_port = kafka_address(self.settings)
        cassandra_host = self.settings.cassandra_contact_points[0]
        return (
            await tcp_open(kafka_host, kafka_port),
            await tcp_open(cassandra_host, self.settings.cassandra_port),
        )

    async def ensure(self, *, external: bool) -> None:
        """Make sure Kafka and Cassandra answer; start the local stack unless ``external``."""
        kafka_up, cassandra_up = await self._answering()
        bootstrap = self.settings.kafka_bootstrap_servers
        cassandra = f"{self.settings.cassandra_contact_points[0]}:{self.settings.cassandra_port}"
        if not external and not self._local():
            self.supervisor.say(
                "the settings name clusters on other hosts: using them (--external)"
            )
            external = True
        if external:
            if not kafka_up:
                raise RunError(
                    f"--external: Kafka does not answer at {bootstrap} "
                    "(CHATPULSE_KAFKA_BOOTSTRAP_SERVERS)"
                )
            if not cassandra_up:
                raise RunError(
                    f"--external: Cassandra does not answer at {cassandra} "
                    "(CHATPULSE_CASSANDRA_CONTACT_POINTS / CHATPULSE_CASSANDRA_PORT)"
                )
            self.supervisor.say(
                f"using external clusters: Kafka {bootstrap}, Cassandra {cassandra}"
            )
            return
        if kafka_up and cassandra_up:
            self.supervisor.say(
                f"reusing the Kafka ({bootstrap}) and Cassandra ({cassandra}) already running; "
                "they stay up on exit"
            )
            return
        _, kafka_port = kafka_address(self.settings)
        self._stack = Stack(
            kafka_port=kafka_port,
            cassandra_port=self.settings.cassandra_port,
            progress=self._progress,
        )
        self._progress(f"local stack in {self._stack.data_dir} (first run downloads the jars)")
        stop_watch = asyncio.create_task(self._cancel_on_stop())
        try:
            await asyncio.to_thread(self._start_stack, self._stack)
        except StackError as exc:
            if self.supervisor.stop_requested:
                raise StartupInterruptedError("interrupted while starting the stack") from None
            raise RunError(f"local stack: {exc}") from None
        finally:
            stop_watch.cancel()

    async def _cancel_on_stop(self) -> None:
        while not self.supervisor.stop_requested:  # noqa: ASYNC110 - mirrors into a thread event
            await asyncio.sleep(0.2)
        self._cancel.set()

    def _start_stack(self, stack: Stack) -> None:
        """Runs in a worker thread: start the servers (Cassandra, the slowest, first, so both
        boot in parallel), then wait for each, reporting progress."""
        began = time.monotonic()
        with stack.lock():
            for server in reversed(stack.servers):
                if server.start():
                    self.started.insert(0, server)
                    self._progress(f"starting {server.name} {server.version} on port {server.port}")
                else:
                    self._progress(f"{server.name} already running (pid {server.pid})")
            for server in stack.servers:
                self._wait_ready(server)
                self._progress(f"{server.name} ready after {time.monotonic() - began:.1f}s")

    def _wait_ready(self, server: JavaServer) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if self._cancel.is_set():
                raise StackError(f"interrupted while {server.name} was starting")
            try:
                server.wait_ready(timeout=1.0)
            except ServerExitedError:
                if not server.is_running() or time.monotonic() > deadline:
                    raise
            else:
                return

    async def release(self, *, keep: bool) -> None:
        """Stop the servers this run started (unless ``keep``)."""
        if not self.started:
            return
        names = ", ".join(server.name for server in self.started)
        if keep:
            self.supervisor.say(
                f"leaving {names} running (--keep-stack); `chatpulse stack down` stops them"
            )
            return
        self.supervisor.say(f"stopping the local {names} it started")
        for server in self.started:  # Kafka first, as `chatpulse stack down` does
            try:
                await asyncio.to_thread(server.stop, 60.0)
            except StackError as exc:
                self.supervisor.say(f"could not stop {server.name}: {exc}", style="bold red")
            else:
                self._progress(f"stopped {server.name}")
