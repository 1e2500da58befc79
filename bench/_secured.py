"""Benchmarks on a secured stack: the admin's settings of ``chatpulse stack up --secure``."""

from pathlib import Path
from typing import Any

from chatpulse.stack import Stack
from chatpulse.stack.cli import stack_environment


def secured_settings(data_dir: Path, bootstrap_servers: str, cassandra_port: int) -> dict[str, Any]:
    """Settings overrides that connect as the secured stack's admin (a super user in Kafka,
    ``chatpulse_admin`` in Cassandra: a benchmark makes topics and a keyspace of its own)."""
    kafka_port = int(bootstrap_servers.rsplit(":", 1)[1])
    stack = Stack(data_dir, kafka_port=kafka_port, cassandra_port=cassandra_port)
    if not stack.secure:
        raise SystemExit(f"{data_dir} is not a secured stack")
    env = stack_environment(stack, "admin")
    where = {"kafka_bootstrap_servers", "cassandra_port"}  # the benchmark's own arguments
    settings = {name.removeprefix("CHATPULSE_").lower(): value for name, value in env.items()}
    return {name: value for name, value in settings.items() if name not in where}
