"""``chatpulse stack up | down | status``: the local Kafka + Cassandra, from Maven Central jars."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from chatpulse.logs import configure_logging
from chatpulse.stack.stack import DEFAULT_DATA_DIR, Stack

__all__ = ["stack_app"]

stack_app = typer.Typer(
    help=(
        "Run a local single-node Apache Kafka and Apache Cassandra from Maven Central jars "
        "(no Docker). A stack is identified by its data directory: pass the same flags to "
        "up, status and down."
    ),
    no_args_is_help=True,
)

KafkaPort = Annotated[int, typer.Option("--kafka-port", help="Kafka client port (controller: +1)")]
CassandraPort = Annotated[
    int, typer.Option("--cassandra-port", help="Cassandra CQL port (storage/gossip: +1)")
]
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="State directory: configs, data, logs/ and pid files"),
]

_console = Console()


def _stack(kafka_port: int, cassandra_port: int, data_dir: Path) -> Stack:
    return Stack(
        data_dir,
        kafka_port=kafka_port,
        cassandra_port=cassandra_port,
        progress=lambda message: _console.print(f"[cyan]{message}[/cyan]"),
    )


@stack_app.command("up")
def up_command(
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Start Kafka and Cassandra (downloads jars once); returns when both accept clients."""
    configure_logging("WARNING")
    stack = _stack(kafka_port, cassandra_port, data_dir)
    _console.print(
        f"starting the stack in {stack.data_dir} (Kafka :{kafka_port}, "
        f"Cassandra :{cassandra_port}) ..."
    )
    started = stack.up()
    if started:
        _console.print(f"[green]up[/green]: started {', '.join(started)}")
    else:
        _console.print("[green]up[/green]: already running, nothing started")
    _print_status(stack)


@stack_app.command("down")
def down_command(
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Stop Kafka and Cassandra (SIGTERM, then SIGKILL after a timeout). Data is kept."""
    configure_logging("WARNING")
    stopped = _stack(kafka_port, cassandra_port, data_dir).down()
    _console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def status_command(
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Show, for each server: running or not, version, pid, port, data directory."""
    configure_logging("WARNING")
    _print_status(_stack(kafka_port, cassandra_port, data_dir))


def _print_status(stack: Stack) -> None:
    table = Table(title=f"chatpulse stack ({stack.data_dir})")
    for column in ("server", "state", "version", "pid", "port", "data dir"):
        table.add_column(column)
    for status in stack.status():
        table.add_row(
            status.name,
            "[green]running[/green]" if status.running else "[red]stopped[/red]",
            status.version,
            str(status.pid) if status.pid else "-",
            str(status.port),
            str(status.data_dir),
        )
    _console.print(table)
