"""``chatpulse stack up | down | status | kill | env``: the local Kafka + Cassandra, from Maven
Central jars."""

import json
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from chatpulse.logs import configure_logging
from chatpulse.stack.secrets import CASSANDRA_ROLES
from chatpulse.stack.stack import DEFAULT_DATA_DIR, Stack

__all__ = ["stack_app", "stack_environment", "status_document"]

stack_app = typer.Typer(
    help=(
        "Run a local Apache Kafka and Apache Cassandra, one node each or a cluster, from Maven "
        "Central jars (no Docker). A stack is identified by its data directory: pass the same "
        "ports to up, status, kill and down (a cluster remembers its node counts)."
    ),
    no_args_is_help=True,
)

KafkaPort = Annotated[
    int,
    typer.Option(
        "--kafka-port",
        help="Kafka client port of node 1 (node n: +n-1). Controllers: +1 on one node, "
        "else the N ports after the client ports",
    ),
]
CassandraPort = Annotated[
    int,
    typer.Option(
        "--cassandra-port",
        help="Cassandra CQL port (storage/gossip: +1), the same on every node 127.0.0.n",
    ),
]
KafkaNodes = Annotated[
    int | None,
    typer.Option(
        "--kafka-nodes", help="Kafka nodes (each broker and controller); default: as before, or 1"
    ),
]
CassandraNodes = Annotated[
    int | None,
    typer.Option("--cassandra-nodes", help="Cassandra nodes; default: as before, or 1"),
]
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="State directory: configs, data, logs/ and pid files"),
]

_console = Console()


def _stack(
    kafka_port: int,
    cassandra_port: int,
    data_dir: Path,
    *,
    kafka_nodes: int | None = None,
    cassandra_nodes: int | None = None,
    secure: bool | None = None,
) -> Stack:
    return Stack(
        data_dir,
        kafka_port=kafka_port,
        cassandra_port=cassandra_port,
        kafka_nodes=kafka_nodes,
        cassandra_nodes=cassandra_nodes,
        secure=secure,
        progress=lambda message: _console.print(f"[cyan]{message}[/cyan]"),
    )


@stack_app.command("up")
def up_command(  # noqa: PLR0917 - typer options
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    kafka_nodes: KafkaNodes = None,
    cassandra_nodes: CassandraNodes = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="At the first start: a secured stack (TLS, SCRAM logins, ACLs, Cassandra "
            "roles; secrets in <data dir>/secrets). A stack stays as it was first started; "
            "`stack env` prints each service's settings",
        ),
    ] = False,
) -> None:
    """Start the nodes not running (downloads jars once); returns when every node accepts
    clients (a restarted cluster node: when it has rejoined)."""
    configure_logging("WARNING")
    stack = _stack(
        kafka_port,
        cassandra_port,
        data_dir,
        kafka_nodes=kafka_nodes,
        cassandra_nodes=cassandra_nodes,
        secure=secure or None,
    )
    kind = "secured stack" if stack.secure else "stack"
    _console.print(
        f"starting the {kind} in {stack.data_dir} ({stack.kafka_nodes} Kafka from "
        f":{kafka_port}, {stack.cassandra_nodes} Cassandra on :{cassandra_port}) ..."
    )
    began = time.monotonic()
    started = stack.up()
    if started:
        _console.print(
            f"[green]up[/green]: started {', '.join(started)} in {time.monotonic() - began:.1f}s"
        )
    else:
        _console.print("[green]up[/green]: already running, nothing started")
    _print_status(stack)


@stack_app.command("down")
def down_command(
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Stop every node (SIGTERM, then SIGKILL after a timeout). Data is kept."""
    configure_logging("WARNING")
    stopped = _stack(kafka_port, cassandra_port, data_dir).down()
    _console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("kill")
def kill_command(
    node: Annotated[str, typer.Argument(help="The node: kafka-2, cassandra-3, ...")],
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """SIGKILL one node, as a crash (experiments, failure tests); `stack up` restarts it."""
    configure_logging("WARNING")
    stack = _stack(kafka_port, cassandra_port, data_dir)
    if stack.kill(node):
        _console.print(f"killed {stack.server(node).name}")
    else:
        _console.print(f"{stack.server(node).name} was not running")


@stack_app.command("status")
def status_command(
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the nodes as JSON (kafka, cassandra lists)")
    ] = False,
) -> None:
    """Show, for each node: running or not, version, pid, port, address, data directory."""
    configure_logging("WARNING")
    stack = _stack(kafka_port, cassandra_port, data_dir)
    if as_json:
        typer.echo(json.dumps(status_document(stack)))
    else:
        _print_status(stack)


# `stack env --service`: the Kafka user and Cassandra role of each service (ingest uses no
# Cassandra).
_KAFKA_USER = {"ingest": "ingest", "process": "processor", "api": "api", "admin": "admin"}


@stack_app.command("env")
def env_command(
    service: Annotated[
        str,
        typer.Option(
            "--service", help="Whose settings: ingest, process, api or admin (init, inspect)"
        ),
    ] = "admin",
    kafka_port: KafkaPort = 9092,
    cassandra_port: CassandraPort = 9042,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Print `export CHATPULSE_...` lines that connect a service to this stack as its own
    principal (passwords included: for a local stack only). Use: eval "$(chatpulse stack env
    --service api)"."""
    configure_logging("WARNING")
    if service not in _KAFKA_USER:
        raise typer.BadParameter(
            f"{service!r} is not one of {', '.join(_KAFKA_USER)}", param_hint="--service"
        )
    stack = _stack(kafka_port, cassandra_port, data_dir)
    for name, value in stack_environment(stack, service).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


def stack_environment(stack: Stack, service: str) -> dict[str, str]:
    """The ``CHATPULSE_*`` settings that connect ``service`` to ``stack`` as its principal."""
    env = {
        "CHATPULSE_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "CHATPULSE_CASSANDRA_CONTACT_POINTS": ",".join(stack.cassandra_contact_points),
        "CHATPULSE_CASSANDRA_PORT": str(stack.cassandra.port),
    }
    if not stack.secure:
        return env
    secrets = stack.secrets
    user = _KAFKA_USER[service]
    env |= {
        "CHATPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CHATPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CHATPULSE_KAFKA_SASL_USERNAME": user,
        "CHATPULSE_KAFKA_SASL_PASSWORD": secrets.password(f"kafka:{user}"),
        "CHATPULSE_KAFKA_SSL_CA_LOCATION": str(secrets.ca_cert),
    }
    if service == "api":
        # The API over HTTPS with the stack's certificate (it names localhost and 127.0.0.1).
        env |= {
            "CHATPULSE_API_TLS_CERT": str(secrets.server_cert),
            "CHATPULSE_API_TLS_KEY": str(secrets.server_key),
        }
    role = CASSANDRA_ROLES.get(service)
    if role is not None:
        env |= {
            "CHATPULSE_CASSANDRA_USERNAME": role,
            "CHATPULSE_CASSANDRA_PASSWORD": secrets.password(f"cassandra:{role}"),
            "CHATPULSE_CASSANDRA_SSL": "true",
            "CHATPULSE_CASSANDRA_SSL_CA_FILE": str(secrets.ca_cert),
        }
    return env


def status_document(stack: Stack) -> dict[str, list[dict[str, object]]]:
    """What ``stack status --json`` prints: each node's number, pid, port and state."""
    kafka: list[dict[str, object]] = [
        {"node": s.node, "pid": s.pid, "port": s.port, "running": s.running}
        for s in (server.status() for server in stack.kafka_servers)
    ]
    cassandra: list[dict[str, object]] = [
        {
            "node": s.node,
            "address": s.address,
            "pid": s.pid,
            "port": s.port,
            "running": s.running,
        }
        for s in (server.status() for server in stack.cassandra_servers)
    ]
    return {"kafka": kafka, "cassandra": cassandra}


def _print_status(stack: Stack) -> None:
    table = Table(title=f"chatpulse stack ({stack.data_dir})")
    for column in ("server", "state", "version", "pid", "port", "address", "data dir"):
        table.add_column(column)
    for status in stack.status():
        table.add_row(
            status.name,
            "[green]running[/green]" if status.running else "[red]stopped[/red]",
            status.version,
            str(status.pid) if status.pid else "-",
            str(status.port),
            status.address,
            str(status.data_dir),
        )
    _console.print(table)
