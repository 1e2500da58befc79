"""The local stack: Kafka 4.x and Cassandra 5.0.x run from Maven Central jars, one node each
or a cluster of each.

``Stack(data_dir, kafka_port=..., cassandra_port=..., kafka_nodes=..., cassandra_nodes=...)``
with ``up()``/``down()``/``status()``/``kill(name)``;
``KafkaServer``/``CassandraServer`` with ``start()``/``wait_ready()``/``stop()``/``is_running()``.
"""

from chatpulse.stack.cassandra import CASSANDRA_VERSION, CassandraServer
from chatpulse.stack.errors import (
    JavaNotFoundError,
    MavenError,
    PortInUseError,
    ServerExitedError,
    StackError,
)
from chatpulse.stack.kafka import KAFKA_VERSION, KafkaServer
from chatpulse.stack.server import JavaServer, ServerStatus
from chatpulse.stack.stack import DEFAULT_DATA_DIR, Stack

__all__ = [
    "CASSANDRA_VERSION",
    "DEFAULT_DATA_DIR",
    "KAFKA_VERSION",
    "CassandraServer",
    "JavaNotFoundError",
    "JavaServer",
    "KafkaServer",
    "MavenError",
    "PortInUseError",
    "ServerExitedError",
    "ServerStatus",
    "Stack",
    "StackError",
]
