"""The clusters behind ``chatpulse up``: reuse running ones, start the local stack, or
insist on the external ones the settings name."""

from __future__ import annotations

from chatpulse.run.errors import RunError
from chatpulse.run.plan import kafka_address
from chatpulse.run.readiness import tcp_open
from chatpulse.run.supervisor import StepSpec, Supervisor
from chatpulse.settings import Settings

__all__ = ["StackControl"]


class StackControl:
    """Starts the local stack when needed and stops it at the end only if it started it."""

    def __init__(self, settings: Settings, supervisor: Supervisor, *, python: str) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.cmd = [python, "-m", "chatpulse", "stack"]
        self.started = False

    def _ports(self) -> list[str]:
        _, kafka_port = kafka_address(self.settings)
        return [
            "--kafka-port",
            str(kafka_port),
            "--cassandra-port",
            str(self.settings.cassandra_port),
        ]

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
                f"reusing the stack already running (Kafka {bootstrap}, Cassandra {cassandra}); "
                "it stays up on exit"
            )
            return
        self.supervisor.say("starting the local Kafka + Cassandra (first run downloads the jars)")
        self.started = True
        await self.supervisor.run_step(
            StepSpec(name="stack", argv=[*self.cmd, "up", *self._ports()], style="bright_black")
        )

    async def release(self, *, keep: bool) -> None:
        """Stop the local stack if this run started it (unless ``keep``)."""
        if not self.started:
            return
        if keep:
            self.supervisor.say(
                "leaving the local stack running (--keep-stack); `chatpulse stack down` stops it"
            )
            return
        self.supervisor.say("stopping the local stack it started")
        try:
            await self.supervisor.run_step(
                StepSpec(
                    name="stack", argv=[*self.cmd, "down", *self._ports()], style="bright_black"
                ),
                interruptible=False,
            )
        except RunError as exc:
            self.supervisor.say(f"could not stop the stack: {exc}", style="bold red")
