"""``chatpulse up``: the whole system in one command, for a person at a terminal."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from chatpulse.errors import ChatpulseError, ConfigError
from chatpulse.ports import free_port
from chatpulse.run.errors import StartupInterruptedError
from chatpulse.run.plan import Plan, UpOptions, build_plan
from chatpulse.run.stack_control import ClusterShape, StackControl
from chatpulse.run.supervisor import Supervisor
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import Stack
from chatpulse.stack.cli import stack_environment

__all__ = ["up_command"]


def up_command(
    *,
    channels: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated real Twitch channels to read anonymously. "
            "Without it (and without CHATPULSE_CHANNELS) a local fake-twitch simulates chat."
        ),
    ] = None,
    external: Annotated[
        bool,
        typer.Option(
            "--external",
            help="Use the Kafka and Cassandra the settings name; do not start a local stack.",
        ),
    ] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Run on a secured local stack (TLS, SCRAM logins, ACLs, Cassandra roles; "
            "its own data dir), each service as its own principal.",
        ),
    ] = False,
    keep_stack: Annotated[
        bool,
        typer.Option(
            "--keep-stack", help="Leave the local stack running on exit (faster next start)."
        ),
    ] = False,
    sim_channels: Annotated[int, typer.Option(min=1, max=1000, help="Simulated channels.")] = 36,
    sim_rate: Annotated[
        float, typer.Option(min=0.1, help="Simulated chat messages per second, all channels.")
    ] = 150.0,
    api_port: Annotated[
        int | None, typer.Option(help="API and dashboard port (CHATPULSE_API_PORT).")
    ] = None,
    stop_timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds each child gets to stop before SIGKILL.")
    ] = 20.0,
    kafka_nodes: Annotated[
        int,
        typer.Option(
            min=1,
            max=9,
            help="Local Kafka nodes; above 1 a cluster on ports P..P+N-1, P the port of "
            "CHATPULSE_KAFKA_BOOTSTRAP_SERVERS (as `chatpulse stack up --kafka-nodes`).",
        ),
    ] = 1,
    cassandra_nodes: Annotated[
        int,
        typer.Option(
            min=1, max=9, help="Local Cassandra nodes; above 1 a cluster on 127.0.0.1..M."
        ),
    ] = 1,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="The local stack's data dir (default: ~/.local/share/chatpulse/stack, or "
            "cluster-kN-cM beside it for a cluster)."
        ),
    ] = None,
) -> None:
    """Start everything: local Kafka + Cassandra, topics and schema, fake-twitch (or real
    Twitch channels), ingest, processor and API, with one prefixed log stream.

    With --kafka-nodes/--cassandra-nodes above 1 the local stack is a cluster (started, or
    its missing nodes restarted) and every service uses all of its nodes, with three copies
    of each topic and row where there are three nodes.

    Prints the dashboard address once the API is ready. Ctrl-C stops every child cleanly
    (SIGTERM, then SIGKILL after --stop-timeout) and the local stack it started.
    """
    shape = ClusterShape(kafka_nodes, cassandra_nodes, data_dir)
    if external and shape.is_cluster:
        raise ConfigError("--external uses the clusters the settings name: drop --*-nodes")
    if external and secure:
        raise ConfigError("--secure starts its own local stack: drop --external")
    settings = load_settings(api_port=api_port, channels=channels)
    options = UpOptions(
        channels=list(settings.channels),
        sim_channels=sim_channels,
        sim_rate=sim_rate,
        fake_twitch_port=free_port(),
    )
    code = asyncio.run(
        _up(
            settings,
            options,
            external=external,
            keep_stack=keep_stack,
            stop_timeout=stop_timeout,
            shape=shape,
            secure=secure,
        )
    )
    raise typer.Exit(code)


def _initialize(settings: Settings, supervisor: Supervisor) -> None:
    """Topics and schema before any service starts (Cassandra dislikes concurrent DDL)."""
    # Imported here: they load the Kafka and Cassandra drivers, which --help does not need.
    from chatpulse.provision import initialize  # noqa: PLC0415

    began = time.monotonic()
    initialize(settings, timeout=120, progress=lambda line: supervisor.say_as("init", line))
    supervisor.say(f"topics and schema ready in {time.monotonic() - began:.1f}s")


def _as_principals(stack: Stack) -> dict[str, dict[str, str]]:
    """Each service's settings on the secured ``stack`` (``chatpulse stack env``)."""
    return {service: stack_environment(stack, service) for service in ("ingest", "process", "api")}


def _with_environment(settings: Settings, environment: dict[str, str]) -> Settings:
    """``settings`` with ``CHATPULSE_*`` values of ``environment`` taking precedence."""
    given = {name.removeprefix("CHATPULSE_").lower(): v for name, v in environment.items()}
    return load_settings(**{**settings.model_dump(), **given})


async def _secure_clusters(
    stack: StackControl, settings: Settings, options: UpOptions, supervisor: Supervisor
) -> tuple[Settings, Plan]:
    """Start the secured stack; the admin's settings (for init) and the plan of services,
    each with its own principal (and every node of a local cluster)."""
    secured = await stack.ensure_secure()
    supervisor.say(
        "each service runs as its own principal: ingest, processor, api "
        f"(`chatpulse stack env --service NAME --data-dir {secured.data_dir}`)"
    )
    api = stack_environment(secured, "api")
    https = {name: api[name] for name in ("CHATPULSE_API_TLS_CERT", "CHATPULSE_API_TLS_KEY")}
    admin = _with_environment(stack.settings, {**stack_environment(secured, "admin"), **https})
    replication = {
        f"CHATPULSE_{name.upper()}": str(getattr(stack.settings, name))
        for name in ("topic_replication_factor", "cassandra_replication_factor")
    }
    options = replace(
        options,
        env={**options.env, **replication},
        service_env=_as_principals(secured),
        api_ca=secured.secrets.ca_cert,
    )
    return admin, build_plan(admin, options)


def _announce(supervisor: Supervisor, plan: Plan, options: UpOptions) -> None:
    if options.simulated:
        supervisor.say(
            f"simulated chat: {len(plan.channels)} channels, ~{options.sim_rate:g} msg/s "
            "(fake-twitch; use --channels a,b for real Twitch)"
        )
    else:
        supervisor.say(f"reading real Twitch channels anonymously: {', '.join(plan.channels)}")


async def _up(
    settings: Settings,
    options: UpOptions,
    *,
    external: bool,
    keep_stack: bool,
    stop_timeout: float,
    shape: ClusterShape | None = None,
    secure: bool = False,
) -> int:
    console = Console(highlight=False)
    supervisor = Supervisor(console, stop_timeout_s=stop_timeout)
    # May refuse the shape: before the handlers.
    stack = StackControl(settings, supervisor, shape, secure=secure)
    supervisor.install_signal_handlers()
    # A local cluster: every child gets its nodes and replication (a single stack: nothing).
    settings = stack.settings
    options = replace(options, env={**options.env, **stack.child_environment()})
    plan = build_plan(settings, options)
    _announce(supervisor, plan, options)
    code = 0
    fake = next((child for child in plan.children if child.name == "fake-twitch"), None)
    try:
        if fake is not None:  # needs no cluster: let it boot while the stack starts
            await supervisor.start(fake, wait=False)
        if secure:
            settings, plan = await _secure_clusters(stack, settings, options, supervisor)
        else:
            await stack.ensure(external=external)
        services = [child for child in plan.children if child.name != "fake-twitch"]
        await supervisor.call_blocking("init", partial(_initialize, settings, supervisor))
        if fake is not None:
            await supervisor.wait_ready(fake.name)
        for child in services:  # independent of each other: start them together
            await supervisor.start(child, wait=False)
        for child in services:
            await supervisor.wait_ready(child.name)
        console.print(
            Panel.fit(
                f"[bold]Dashboard[/]  {plan.dashboard_url}\n"
                f"[bold]API docs[/]   {plan.dashboard_url}docs\n"
                "[bold]Look inside[/] chatpulse inspect --watch 2   (in another terminal)\n"
                "Ctrl-C stops everything.",
                title="chatpulse is up",
                border_style="green",
            )
        )
        if await supervisor.serve() is not None:
            code = 1
    except StartupInterruptedError as exc:
        supervisor.say(f"{exc}")
    except ChatpulseError as exc:
        supervisor.say(f"error: {exc}", style="bold red")
        code = exc.exit_code
    finally:
        await supervisor.stop_all()
        await stack.release(keep=keep_stack)
        supervisor.remove_signal_handlers()
    if code == 0:
        supervisor.say("everything stopped cleanly; bye", style="bold green")
    else:
        supervisor.say(f"stopped everything after a failure (exit code {code})", style="bold red")
    return code
