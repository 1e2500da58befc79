"""The API reads Cassandra with a SELECT-only role: it never creates, alters or writes anything
there (the schema is ``chatpulse init``'s and the processor's), and creates no Kafka topic."""

import ast
import re
from pathlib import Path

from chatpulse.api import db

API_DIR = Path(db.__file__).parent
# What creates or changes a schema, a table's rows or a topic, anywhere in chatpulse.
_WRITERS = {"ensure_schema", "schema_statements", "initialize", "ensure_topics", "admin_client"}


def test_every_statement_the_api_prepares_is_a_select() -> None:
    verbs = {name: cql.split()[0].upper() for name, cql in db.STATEMENTS.items()}

    assert set(verbs.values()) == {"SELECT"}, verbs
    assert not any(
        re.search(
            r"\b(INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|TRUNCATE)\b", cql, flags=re.IGNORECASE
        )
        for cql in db.STATEMENTS.values()
    )


def test_no_api_module_reaches_a_schema_or_topic_writer() -> None:
    reached: list[str] = []
    for path in sorted(API_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.Name):
                names = [node.id]
            reached += [f"{path.name}: {name}" for name in names if name in _WRITERS]

    assert reached == []


def test_cassandra_is_reached_only_through_the_prepared_statements() -> None:
    """The gateway is the one place that executes: by statement name, from STATEMENTS."""
    calls: list[str] = []
    for path in sorted(API_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"execute", "execute_async", "prepare"}
                and node.args
                and not (
                    isinstance(node.args[0], ast.Constant) and node.args[0].value in db.STATEMENTS
                )
            ):
                calls.append(f"{path.name} {ast.unparse(node.func)}({ast.unparse(node.args[0])})")

    assert calls == [
        "db.py self._session.prepare(cql.format(ks=ks))",  # each of STATEMENTS
        "db.py session.execute_async(self._prepared[name])",
    ]
