"""The ``chatpulse`` command: a thin dispatcher to each service's own ``cli`` module."""

import sys

import typer

from chatpulse.api.cli import api_command
from chatpulse.errors import ChatpulseError
from chatpulse.fake_twitch.cli import fake_twitch_command
from chatpulse.ingest.cli import ingest_command
from chatpulse.init_cli import init_command
from chatpulse.inspect.cli import inspect_command
from chatpulse.processor.cli import process_command
from chatpulse.run.cli import up_command
from chatpulse.stack.cli import stack_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="chatpulse",
    help="Real-time Twitch chat analytics on Apache Kafka, Quix Streams and Apache Cassandra.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack")
app.command("init")(init_command)
app.command("ingest")(ingest_command)
app.command("fake-twitch")(fake_twitch_command)
app.command("process")(process_command)
app.command("api")(api_command)
app.command("up")(up_command)
app.command("inspect")(inspect_command)


def main() -> None:
    """Console-script entry point: errors we raise on purpose print as one line."""
    try:
        app()
    except ChatpulseError as exc:
        print(f"chatpulse: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
