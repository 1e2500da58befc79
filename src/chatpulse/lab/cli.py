"""``chatpulse lab [NAME]``: list the experiments, or run one to its verdict line."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from chatpulse.errors import ConfigError
from chatpulse.lab import LAB_NAMES, load_lab
from chatpulse.lab.runner import Lab, LabContext, Narrator, lab_settings, run_lab
from chatpulse.logs import configure_logging
from chatpulse.settings import load_settings

__all__ = ["lab_command"]


def _port_of(bootstrap_servers: str) -> int:
    first = bootstrap_servers.split(",", maxsplit=1)[0].strip()
    return int(first.rsplit(":", 1)[1]) if ":" in first else 9092


def lab_command(
    name: Annotated[
        str | None, typer.Argument(help="The experiment to run; none: list them")
    ] = None,
    *,
    no_pause: Annotated[
        bool, typer.Option("--no-pause", help="Do not wait for Enter between steps (scripts)")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave the lab's topics, keyspaces and work directory"),
    ] = False,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A smaller experiment (the test suite's): same claim"),
    ] = False,
    kafka_port: Annotated[
        int | None,
        typer.Option(
            "--kafka-port",
            help="Kafka client port of the stack [port of CHATPULSE_KAFKA_BOOTSTRAP_SERVERS]",
        ),
    ] = None,
    cassandra_port: Annotated[
        int | None,
        typer.Option("--cassandra-port", help="Cassandra CQL port [CHATPULSE_CASSANDRA_PORT]"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="The stack's data directory (as `chatpulse stack --data-dir`); default: the "
            "running stack's on that port, else ~/.local/share/chatpulse/stack",
        ),
    ] = None,
) -> None:
    """Run an experiment that proves a Kafka concept live (on its own topics, keyspace and
    groups, cleaned up afterwards), ending with `lab NAME: PASS|FAIL - ...`; exit 0 on PASS."""
    configure_logging("WARNING")
    console = Console(highlight=False)
    if name is None:
        for lab in (load_lab(each) for each in LAB_NAMES):
            console.print(f"[bold]{lab.name:<16}[/bold] {lab.summary}", soft_wrap=True)
        console.print("\nRun one: chatpulse lab NAME  (--no-pause for scripts)")
        return
    if name not in LAB_NAMES:
        raise ConfigError(f"no lab {name!r}; the labs: {', '.join(LAB_NAMES)}")
    lab = load_lab(name)
    base = load_settings()
    kafka = kafka_port if kafka_port is not None else _port_of(base.kafka_bootstrap_servers)
    cassandra = cassandra_port if cassandra_port is not None else base.cassandra_port
    narrator = Narrator(console, pause=not no_pause and console.is_terminal)

    def context(workdir: Path) -> LabContext:
        settings = lab_settings(base, name, workdir).model_copy(
            update={
                "kafka_bootstrap_servers": f"127.0.0.1:{kafka}",
                "cassandra_contact_points": ["127.0.0.1"],
                "cassandra_port": cassandra,
            }
        )
        return LabContext(
            name=name,
            settings=settings,
            narrator=narrator,
            workdir=workdir,
            quick=quick,
            kafka_port=kafka,
            cassandra_port=cassandra,
            data_dir=data_dir,
            explicit_stack=kafka_port is not None or data_dir is not None,
            keep=keep,
        )

    verdict = run_lab(
        lab,
        context,
        keep=keep,
        prepare=lambda ctx: _prepare(lab, ctx),
        cleanup=lambda ctx: _cleanup(lab, ctx),
        out=typer.echo,
    )
    raise typer.Exit(0 if verdict.passed else 1)


def _prepare(lab: Lab, context: LabContext) -> None:
    from chatpulse.lab.stackside import ensure_stack  # noqa: PLC0415 - the stack code is heavy

    if "kafka" in lab.needs:  # a cluster lab finds or starts its cluster itself
        ensure_stack(context, lab.needs)


def _cleanup(lab: Lab, context: LabContext) -> None:
    from chatpulse.lab.stackside import remove_traces  # noqa: PLC0415

    if lab.needs & {"kafka", "cluster"}:
        remove_traces(context, cassandra="cassandra" in lab.needs)
