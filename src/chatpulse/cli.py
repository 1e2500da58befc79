"""The ``chatpulse`` command: a thin dispatcher to each service's own ``cli`` module.

Each subcommand's module is imported only when that subcommand runs: the services pull in
heavy libraries (FastAPI, the Cassandra driver, Quix Streams), and ``chatpulse up`` starts
four children, each of which would otherwise import all of them (seconds of CPU apiece).
"""

import importlib
import sys

import typer
from typer import _click as click  # typer vendors click: its own Command/Context types
from typer.core import TyperGroup

from chatpulse.errors import ChatpulseError

__all__ = ["app", "main"]

# name -> "module:attribute"; the attribute is a typer command function or a typer.Typer.
_COMMANDS = {
    "up": "chatpulse.run.cli:up_command",
    "stack": "chatpulse.stack.cli:stack_app",
    "init": "chatpulse.provision:init_command",
    "fake-twitch": "chatpulse.fake_twitch.cli:fake_twitch_command",
    "ingest": "chatpulse.ingest.cli:ingest_command",
    "process": "chatpulse.processor.cli:process_command",
    "api": "chatpulse.api.cli:api_command",
    "inspect": "chatpulse.inspect.cli:inspect_command",
    "lab": "chatpulse.lab.cli:lab_command",
}


def _load(name: str) -> click.Command:
    module_name, attribute = _COMMANDS[name].split(":")
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(target)
    return typer.main.get_command(single)


class _LazyGroup(TyperGroup):
    """A typer group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load(cmd_name) if cmd_name in _COMMANDS else None


app = typer.Typer(
    name="chatpulse",
    cls=_LazyGroup,
    help="Real-time Twitch chat analytics on Apache Kafka, Quix Streams and Apache Cassandra.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Real-time Twitch chat analytics on Apache Kafka, Quix Streams and Apache Cassandra."""


def main() -> None:
    """Console-script entry point: errors we raise on purpose print as one line."""
    try:
        app()
    except ChatpulseError as exc:
        print(f"chatpulse: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
