"""The options several commands share are declared once, in chatpulse.options."""

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from chatpulse import options
from chatpulse.ingest.cli import ingest_command
from chatpulse.processor.cli import process_command
from chatpulse.provision import init_command

SHARED = {
    "bootstrap_servers": options.BootstrapServersOption,
    "topic_prefix": options.TopicPrefixOption,
    "keyspace": options.KeyspaceOption,
    "cassandra_port": options.CassandraPortOption,
    "cassandra_contact_points": options.CassandraContactPointsOption,
}


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (init_command, set(SHARED)),
        (process_command, {"bootstrap_servers", "topic_prefix", "keyspace", "cassandra_port"}),
        (ingest_command, {"bootstrap_servers", "topic_prefix"}),
    ],
)
def test_commands_use_the_shared_declarations(
    command: Callable[..., Any], expected: set[str]
) -> None:
    parameters = inspect.signature(command).parameters
    assert {name for name in parameters if name in SHARED} == expected
    for name in expected:
        assert parameters[name].annotation is SHARED[name]
        assert parameters[name].default is None  # not given: the setting stays as configured
