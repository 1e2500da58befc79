"""The stack a lab runs on: found answering, or started with ``chatpulse stack``'s machinery;
and the lab's traces on it (topics, consumer groups, keyspaces) removed afterwards."""

from __future__ import annotations

import socket

from chatpulse.kafka_admin import admin_client, delete_topics
from chatpulse.lab.runner import LabContext, LabError
from chatpulse.stack import Stack, StackError
from chatpulse.stack.stack import DEFAULT_DATA_DIR, find_running_data_dir
from chatpulse.storage import connect

__all__ = ["answers", "ensure_stack", "remove_traces", "stack_of"]


def answers(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stack_of(context: LabContext, **shape: int) -> Stack:
    """The stack the context's ports and data directory name (``shape``: node counts for a
    stack that does not exist yet)."""
    data_dir = context.data_dir or find_running_data_dir(context.kafka_port) or DEFAULT_DATA_DIR
    return Stack(
        data_dir,
        kafka_port=context.kafka_port,
        cassandra_port=context.cassandra_port,
        progress=lambda message: context.say.say(f"  stack: {message}"),
        **shape,  # type: ignore[arg-type]
    )


def ensure_stack(context: LabContext, needs: frozenset[str]) -> None:
    """Reuse the Kafka (and Cassandra, when needed) answering on the context's ports, or start
    the local stack there (it stays up afterwards, as ``chatpulse stack up`` leaves it)."""
    wanted = [("Kafka", context.kafka_port)]
    if "cassandra" in needs:
        wanted.append(("Cassandra", context.cassandra_port))
    if all(answers(port) for _, port in wanted):
        found = ", ".join(f"{what} on :{port}" for what, port in wanted)
        context.say.say(f"Using the stack already running ({found}).")
        return
    try:
        stack = stack_of(context)
        context.say.say(
            f"Starting the local stack in {stack.data_dir} (Kafka :{context.kafka_port}, "
            f"Cassandra :{context.cassandra_port}); it stays up afterwards "
            "(`chatpulse stack down` stops it)."
        )
        stack.up()
    except StackError as exc:
        raise LabError(f"the stack: {exc}") from None


def remove_traces(context: LabContext, *, cassandra: bool) -> None:
    """Delete the run's topics (also Quix's changelogs, named after its groups) and consumer
    groups, and drop its keyspaces."""
    prefix = context.settings.topic_prefix
    admin = admin_client(
        context.settings.kafka_bootstrap_servers, context.settings.kafka_security_config()
    )
    topics = [name for name in admin.list_topics(timeout=10).topics if prefix in name]
    delete_topics(admin, topics)
    groups = [
        group.group_id
        for group in admin.list_consumer_groups(request_timeout=10).result().valid
        if group.group_id.startswith(prefix)
    ]
    if groups:
        for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
            future.result()
    dropped: list[str] = []
    if cassandra:
        keyspaces = [context.settings.cassandra_keyspace, *context.keyspaces]
        cluster, session = connect(context.settings)
        try:
            for keyspace in keyspaces:
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
                dropped.append(keyspace)
        finally:
            cluster.shutdown()
    context.say.say(
        f"Cleaned up: {len(topics)} topics and {len(groups)} consumer groups of {prefix}*"
        + (f", keyspaces {', '.join(dropped)}" if dropped else "")
        + "."
    )
