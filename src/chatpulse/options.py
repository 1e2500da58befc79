"""Command-line options that several commands share, declared once (the ``deps.py`` way).

Each overrides the setting named in its help; ``None`` (not given) leaves the setting as the
environment says.
"""

from typing import Annotated

import typer

__all__ = [
    "BootstrapServersOption",
    "CassandraContactPointsOption",
    "CassandraPortOption",
    "KeyspaceOption",
    "TopicPrefixOption",
]

BootstrapServersOption = Annotated[
    str | None,
    typer.Option("--bootstrap-servers", help="Kafka cluster [CHATPULSE_KAFKA_BOOTSTRAP_SERVERS]"),
]
TopicPrefixOption = Annotated[
    str | None,
    typer.Option("--topic-prefix", help="Prefix of every topic [CHATPULSE_TOPIC_PREFIX]"),
]
CassandraContactPointsOption = Annotated[
    str | None,
    typer.Option(
        "--cassandra-contact-points",
        help="Comma-separated Cassandra hosts [CHATPULSE_CASSANDRA_CONTACT_POINTS]",
    ),
]
CassandraPortOption = Annotated[
    int | None, typer.Option("--cassandra-port", help="CQL port [CHATPULSE_CASSANDRA_PORT]")
]
KeyspaceOption = Annotated[
    str | None,
    typer.Option("--keyspace", help="Cassandra keyspace [CHATPULSE_CASSANDRA_KEYSPACE]"),
]
