"""``chatpulse stack``: placeholder until the stack is built (issue 2)."""

import typer

stack_app = typer.Typer(
    help="Run a local Apache Kafka and Apache Cassandra from Maven Central jars."
)
