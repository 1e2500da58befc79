"""The Cassandra write-back's statements, streaming and error mapping, with a recording session in
place of the driver's (no Cassandra here; the integration tests use the real one)."""

import json
import logging
import sys
import time
from typing import Any

import pytest
from cassandra import (
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    Unauthorized,
    Unavailable,
    WriteTimeout,
    cqltypes,
)
from cassandra.cluster import NoHostAvailable
from cassandra.protocol import ColumnMetadata
from cassandra.query import BatchStatement, BatchType, PreparedStatement
from quixstreams.sinks import SinkBackpressureError

from chatpulse import cli
from chatpulse.buckets import message_bucket, user_bucket
from chatpulse.errors import ConfigError
from chatpulse.models import ChatEvent, ChatMessage, ChatSpike
from chatpulse.processor import app as processor_app
from chatpulse.processor import cli as processor_cli
from chatpulse.processor.binding import RowBatch, RowBinder
from chatpulse.processor.cassandra_flush import CassandraFlush
from chatpulse.processor.channel import ChannelCounter, ChannelUpdate, ModerationUpdate
from chatpulse.processor.cql import CassandraWriter, batches, cql_date
from chatpulse.processor.errors import SchemaMissingError
from chatpulse.processor.metrics import ProcessorMetrics
from chatpulse.settings import load_settings

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MIN)


class DictStore(dict):
    def get_bytes(self, key: bytes) -> bytes | None:
        return self.get(key)

    def set_bytes(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        self.pop(key, None)


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def result(self) -> None:
        if self.error is not None:
            raise self.error

    def add_callbacks(self, callback: Any, errback: Any, errback_args: Any = ()) -> None:
        # the driver calls them at once for a completed future
        if self.error is not None:
            errback(self.error, *errback_args)
        else:
            callback([])


class PendingFuture:
    """A request Cassandra never answers."""

    def add_callbacks(self, callback: Any, errback: Any, errback_args: Any = ()) -> None:
        pass


class RecordingSession:
    """Records what is sent; every request fails with ``error`` once it is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []
        self.error: Exception | None = None
        self.answer = True
        self.on_send: Any = None

    def execute_async(self, statement: Any, parameters: Any = None) -> Any:
        self.sent.append((statement, parameters))
        if self.on_send is not None:
            self.on_send()
        return Future(self.error) if self.answer else PendingFuture()

    def rows(self, name: str) -> list[tuple[Any, ...]]:
        """The values of every row of statement ``name`` sent, batched or not, decoded."""
        statement = STATEMENTS[name]
        out = []
        for sent, parameters in self.sent:
            if isinstance(sent, BatchStatement):
                for _, query_id, values in sent._statements_and_parameters:
                    if query_id == statement.query_id:
                        out.append(_decode(statement, values))
            elif sent is statement:
                out.append(tuple(parameters))
        return out


def _prepared(name: str, columns: str, routing: list[int]) -> PreparedStatement:
    """A prepared statement as the driver builds it from Cassandra's answer (no server)."""
    types = {
        "text": cqltypes.UTF8Type,
        "date": cqltypes.SimpleDateType,
        "timestamp": cqltypes.DateType,
        "bigint": cqltypes.LongType,
        "blob": cqltypes.BytesType,
        "boolean": cqltypes.BooleanType,
        "int": cqltypes.Int32Type,
        "set<text>": cqltypes.SetType.apply_parameters([cqltypes.UTF8Type]),
        "double": cqltypes.DoubleType,
    }
    metadata = [
        ColumnMetadata("ks", name, column, types[kind])
        for column, kind in (part.split(":") for part in columns.split())
    ]
    return PreparedStatement(metadata, name.encode(), routing, name, "ks", 4, [], None)


STATEMENTS = {
    "message": _prepared(
        "message",
        "record:blob words:set<text> channel:text bucket:timestamp sent_at:timestamp id:text",
        [2, 3],
    ),
    "bucket": _prepared("bucket", "channel:text bucket:timestamp", [0]),
    "user_message": _prepared(
        "user_message",
        "channel:text user_login:text bucket:timestamp sent_at:timestamp id:text record:blob",
        [0, 1, 2],
    ),
    "window": _prepared(
        "window",
        "channel:text window:text day:date window_start:timestamp window_end:timestamp "
        "messages:bigint unique_chatters:bigint top_emotes:text closed:boolean top_chatters:text "
        "deleted_messages:bigint timeouts:bigint bans:bigint sessions_started:bigint "
        "sessions_ended:bigint session_mean_s:double session_p90_s:bigint",
        [0, 1, 2],
    ),
    "mark_message": _prepared(
        "mark_message",
        "[ttl]:int channel:text bucket:timestamp sent_at:timestamp id:text",
        [1, 2],
    ),
    "mark_user_message": _prepared(
        "mark_user_message",
        "[ttl]:int channel:text user_login:text bucket:timestamp sent_at:timestamp id:text",
        [1, 2, 3],
    ),
    "leaderboard": _prepared(
        "leaderboard",
        "window:text window_start:timestamp channel:text messages:bigint unique_chatters:bigint",
        [0, 1],
    ),
    "latest": _prepared("latest", "window:text window_start:timestamp [timestamp]:bigint", [0]),
    "totals": _prepared(
        "totals",
        "channel:text total_messages:bigint first_seen:timestamp last_seen:timestamp",
        [0],
    ),
    "spike": _prepared(
        "spike",
        "channel:text window_start:timestamp window:text window_end:timestamp "
        "messages:bigint baseline_median:double factor:double",
        [0],
    ),
}


def _decode(statement: PreparedStatement, values: list[bytes | None]) -> tuple[Any, ...]:
    """Serialised values back to the plain values the sink bound (ints for times)."""
    out: list[Any] = []
    for column, value in zip(statement.column_metadata, values, strict=True):
        if value is None:
            out.append(None)
        elif column.type is cqltypes.DateType:
            out.append(int.from_bytes(value, "big", signed=True))
        elif column.type is cqltypes.SimpleDateType:
            out.append(int.from_bytes(value, "big"))
        else:
            out.append(column.type.deserialize(value, 4))
    return tuple(out)


def _writer() -> tuple[CassandraWriter, RecordingSession]:
    writer = CassandraWriter(load_settings(cassandra_keyspace="ks"))
    session = RecordingSession()
    writer._session = session  # type: ignore[assignment]
    writer.use_statements(STATEMENTS)
    return writer, session


def _updates(count: int, channels: int = 1, step_ms: int = 1_000) -> list[ChannelUpdate]:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    stores = [DictStore() for _ in range(channels)]
    out = []
    for i in range(count):
        message = ChatMessage(
            id=f"m{i}",
            channel=f"c{i % channels}",
            user_id=str(i % 7),
            user_login=f"u{i % 7}",
            text="hi",
            sent_at=T0 + i * step_ms,
        )
        update = counter.process(message, stores[i % channels])
        assert update is not None
        out.append(update)
    return out


def _add(sink: Any, updates: list[ChannelUpdate]) -> None:
    for update in updates:
        update.record = f"record {update.message.id}".encode()
        sink.keep(update, 0)


def _kind(statement: Any) -> str:
    if isinstance(statement, BatchStatement):
        return statement._statements_and_parameters[0][1].decode()
    return str(statement.query_string)


def _batch_sizes(session: RecordingSession) -> list[int]:
    return sorted(
        len(s._statements_and_parameters) for s, _ in session.sent if isinstance(s, BatchStatement)
    )


def test_a_checkpoint_writes_each_message_and_the_newest_statistics() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer)
    _add(sink, _updates(130))  # 130 s: minutes 0, 1 closed; 2 open
    assert session.sent == []  # nothing before the checkpoint
    sink.flush()
    # 130 messages in three minute buckets of 60, 60 and 10 (each bucket a partition and a
    # batch); 3 window rows (one batch), 3 leaderboard partitions of one row, 1 totals
    # row, the 3 buckets in the bucket index (one partition); the 130 user-history rows of
    # the 7 users (one day each), their partitions' rows together, ten rows to a batch
    assert _batch_sizes(session) == [1, 1, 1, 1, 3, 3, *[10] * 14, 60, 60]
    day = T0 - T0 % (24 * 60 * MIN)
    assert session.rows("user_message") == sorted(
        (("c0", f"u{i % 7}", day, T0 + i * 1_000, f"m{i}", f"record m{i}".encode()))
        for i in range(130)
    )
    messages = session.rows("message")
    assert [(*row[:1], set(row[1]), *row[2:]) for row in messages] == [
        (f"record m{i}".encode(), {"hi"}, "c0", T0 + i // 60 * MIN, T0 + i * 1_000, f"m{i}")
        for i in range(130)
    ]
    assert session.rows("bucket") == [("c0", T0), ("c0", T0 + MIN), ("c0", T0 + 2 * MIN)]
    assert [(row[3], row[5], row[8]) for row in session.rows("window")] == [
        (T0, 60, True),
        (T0 + MIN, 60, True),
        (T0 + 2 * MIN, 10, False),
    ]
    # top chatters, closed and open windows alike: most messages first, ties by login
    chatters = [json.loads(row[9]) for row in session.rows("window")]
    assert chatters[0] == [{"login": f"u{n}", "count": 9 if n < 4 else 8} for n in range(7)]
    expected = [("u1", 2), ("u2", 2), ("u3", 2), ("u0", 1), ("u4", 1), ("u5", 1), ("u6", 1)]
    assert chatters[2] == [{"login": login, "count": count} for login, count in expected]
    assert session.rows("totals") == [("c0", 130, T0, T0 + 129_000)]
    assert session.rows("latest") == [("1m", T0 + 2 * MIN, (T0 + 2 * MIN) * 1000)]
    kinds = [_kind(statement) for statement, _ in session.sent]
    # the statistics go out before the raw messages: the API's numbers are visible sooner
    assert kinds.index("message") > max(
        i for i, k in enumerate(kinds) if k not in {"message", "user_message"}
    )
    session.sent.clear()
    sink.flush()
    assert session.sent == []


def test_without_user_history_and_search_no_history_rows_and_no_words() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer, user_history=False, search_index=False)
    _add(sink, _updates(130))
    sink.flush()
    assert session.rows("user_message") == []
    messages = session.rows("message")
    assert [row[5] for row in messages] == [f"m{i}" for i in range(130)]
    # an empty set: ``words = words + ?`` adds nothing, so the index holds nothing either
    assert {len(row[1] or ()) for row in messages} == {0}
    # the rest as with the features on: 3 window rows, totals, the bucket index
    assert len(session.rows("window")) == 3
    assert session.rows("totals") == [("c0", 130, T0, T0 + 129_000)]


def test_quiet_channels_share_message_batches_ten_partitions_at_most() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer)
    _add(sink, _updates(75, channels=25, step_ms=100))  # 3 in each of 25 channels, 1 minute
    sink.flush()
    message_batches = [
        s
        for s, _ in session.sent
        if isinstance(s, BatchStatement) and s._statements_and_parameters[0][1] == b"message"
    ]
    assert sorted(len(b._statements_and_parameters) for b in message_batches) == [15, 30, 30]
    assert sorted(row[5] for row in session.rows("message")) == sorted(f"m{i}" for i in range(75))


@pytest.mark.parametrize(
    "error", [NoHostAvailable("down", {}), OperationTimedOut(), Unavailable("1 of 1")]
)
def test_transient_errors_become_backpressure(error: Exception) -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer, retry_after_s=2.5)
    session.error = error
    _add(sink, _updates(130))
    with pytest.raises(SinkBackpressureError) as caught:
        sink.flush()
    assert caught.value.retry_after == 2.5
    # the first request was sent three times in all (the default attempts), then its error
    # counted: no other request was sent
    assert len(session.sent) == 3
    assert len({id(statement) for statement, _ in session.sent}) == 1
    # the checkpoint is dropped: nothing of it is kept for the next one
    session.error = None
    session.sent.clear()
    sink.flush()
    assert session.sent == []


@pytest.mark.parametrize(
    "error",
    [
        WriteTimeout(
            "timed out",
            consistency=ConsistencyLevel.LOCAL_QUORUM,
            required_responses=2,
            received_responses=1,
            write_type=2,  # UNLOGGED_BATCH
        ),
        OperationTimedOut(),
        Unavailable("1 of 3"),
    ],
)
def test_a_request_that_fails_transiently_is_sent_again(error: Exception) -> None:
    writer, session = _writer()
    metrics = ProcessorMetrics()
    sink = CassandraFlush(writer, metrics)
    failures = [error, error]  # the first request fails twice, then Cassandra answers

    def fail_twice() -> None:
        session.error = failures.pop() if failures else None

    session.on_send = fail_twice
    _add(sink, _updates(130))
    sink.flush()  # no backpressure: the checkpoint is written

    statements = [id(statement) for statement, _ in session.sent]
    assert statements[0] == statements[1] == statements[2] != statements[3]
    assert len(statements) == len(set(statements)) + 2  # each other request sent once
    # every message written (its request once it was answered)
    assert {row[5] for row in session.rows("message")} == {f"m{i}" for i in range(130)}
    assert metrics.cassandra_write_retries._value.get() == 2
    assert metrics.sink_backpressure._value.get() == 0


def test_write_attempts_bound_the_sends_of_a_request() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer, write_attempts=1)
    session.error = OperationTimedOut()
    _add(sink, _updates(130))
    with pytest.raises(SinkBackpressureError):
        sink.flush()
    assert len(session.sent) == 1


def test_the_write_attempts_setting_reaches_the_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPULSE_CASSANDRA_WRITE_ATTEMPTS", "5")
    assert load_settings().cassandra_write_attempts == 5
    monkeypatch.setenv("CHATPULSE_CASSANDRA_WRITE_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="CHATPULSE_CASSANDRA_WRITE_ATTEMPTS"):
        load_settings()


def test_other_errors_stop_the_app() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer)
    session.error = InvalidRequest("bad")
    _add(sink, _updates(3))
    with pytest.raises(InvalidRequest):
        sink.flush()


@pytest.mark.parametrize(
    "message",
    [
        'Error from server: code=2200 [Invalid query] message="keyspace ks does not exist"',
        'Error from server: code=2200 [Invalid query] message="table messages does not exist"',
        "Keyspace ks does not exist",
        "unconfigured table window_stats",
    ],
)
def test_a_missing_schema_is_created_again_and_the_checkpoint_retried(message: str) -> None:
    writer, session = _writer()
    created: list[str] = []
    writer.create_schema = lambda: created.append("schema")  # type: ignore[method-assign]
    sink = CassandraFlush(writer)
    session.error = InvalidRequest(message)
    _add(sink, _updates(3))
    with pytest.raises(SinkBackpressureError):
        sink.flush()
    assert created == ["schema"]


def test_a_missing_schema_that_cannot_be_created_stops_with_one_line() -> None:
    writer, session = _writer()

    def refused() -> None:
        raise Unauthorized('Error from server: code=2100 message="User x has no CREATE permission"')

    writer.create_schema = refused  # type: ignore[method-assign]
    sink = CassandraFlush(writer)
    session.error = InvalidRequest('message="keyspace ks does not exist"')
    _add(sink, _updates(3))
    with pytest.raises(SchemaMissingError) as caught:
        sink.flush()
    text = str(caught.value)
    assert "\n" not in text
    assert "keyspace ks" in text
    assert "no CREATE permission" in text
    assert "chatpulse init" in text


_REFUSED = (
    'Error from server: code=2100 [Unauthorized] message="User processor has no CREATE '
    'permission on <all keyspaces> or any of its parents"'
)


class _NoRows(list[Any]):
    """What a query of ``system_schema`` answers when the keyspace does not exist."""

    def one(self) -> None:
        return None


class DdlRefusingSession(RecordingSession):
    """Writes fail on a missing keyspace; the DDL ``ensure_schema`` then runs is refused by
    the server, as for a role without CREATE permission (its reads of the schema work)."""

    def __init__(self) -> None:
        super().__init__()
        self.error = InvalidRequest(
            'Error from server: code=2200 [Invalid query] message="Keyspace ks does not exist"'
        )
        self.ddl: list[str] = []

    def execute(self, statement: str, parameters: Any = None, timeout: float = 0) -> Any:
        if statement.startswith("SELECT"):
            return _NoRows()
        self.ddl.append(statement)
        raise Unauthorized(_REFUSED)


def _flush_with_refused_ddl(session: DdlRefusingSession) -> None:
    writer = CassandraWriter(load_settings(cassandra_keyspace="ks"))
    writer._session = session  # type: ignore[assignment]
    writer.use_statements(STATEMENTS)
    sink = CassandraFlush(writer)
    _add(sink, _updates(3))
    sink.flush()


def test_a_refused_ddl_ends_in_schema_missing_with_one_line() -> None:
    session = DdlRefusingSession()
    with pytest.raises(SchemaMissingError) as caught:
        _flush_with_refused_ddl(session)
    assert session.ddl[0].startswith("CREATE KEYSPACE IF NOT EXISTS ks ")
    assert str(caught.value) == (
        "Cassandra keyspace ks or a table of it is missing and the processor could not "
        "create it (User processor has no CREATE permission on <all keyspaces> or any of its "
        "parents); run `chatpulse init` with a role allowed to create it, then start "
        "`chatpulse process` again"
    )
    assert caught.value.__cause__ is None


def test_the_process_command_prints_a_refused_ddl_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session = DdlRefusingSession()

    def run_processor(_settings: Any) -> None:  # the real flush, through the real CLI
        _flush_with_refused_ddl(session)

    monkeypatch.setattr(processor_app, "run_processor", run_processor)
    monkeypatch.setattr(processor_cli, "configure_logging", lambda: None)
    # a handler an earlier test left on a closed stream must not print its own error here
    monkeypatch.setattr(logging, "raiseExceptions", False)
    monkeypatch.setattr(sys, "argv", ["chatpulse", "process"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    assert session.ddl[0].startswith("CREATE KEYSPACE IF NOT EXISTS ks ")
    err = capsys.readouterr().err
    assert err == (
        "chatpulse: error: Cassandra keyspace ks or a table of it is missing and the processor "
        "could not create it (User processor has no CREATE permission on <all keyspaces> or "
        "any of its parents); run `chatpulse init` with a role allowed to create it, then "
        "start `chatpulse process` again\n"
    )


def test_a_paused_sink_drops_the_checkpoint() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer)
    _add(sink, _updates(30, channels=3))
    sink.on_paused()
    sink.flush()
    assert session.sent == []


def test_batches_stay_far_below_the_size_limit() -> None:
    rows = [(b"x" * 1_000, ["w"], "c", 1, 2, f"id{i}") for i in range(60)]
    binder = RowBinder(STATEMENTS["message"])
    groups = list(batches(binder, map(binder.values, rows), 60, weights=[1_100] * 60))
    assert sum(len(b._statements_and_parameters) for b in groups) == 60
    assert len(groups) > 2
    for batch in groups:
        size = sum(
            len(value) for _, _, values in batch._statements_and_parameters for value in values
        )
        assert size < 25_000


def test_a_flush_past_its_deadline_becomes_backpressure() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer, retry_after_s=1.0, flush_timeout_s=0.2)
    session.answer = False
    _add(sink, _updates(3))
    assert (sink.bound.held, sink.bound.limit) == (3, None)
    with pytest.raises(SinkBackpressureError):
        sink.flush()
    # the next checkpoints are bounded (checkpoint_bound): here at its floor, 500 messages
    assert (sink.bound.held, sink.bound.limit) == (0, 500)
    session.answer = True
    _add(sink, _updates(3))
    sink.flush()
    assert (sink.bound.held, sink.bound.limit) == (0, 750)


def test_an_abandoned_flush_stops_and_leaves_the_next_checkpoint_alone() -> None:
    """Quix may give up on a slow flush during a revoke and go on processing: the old
    flush must not send more, nor drop what the next checkpoint adds meanwhile."""
    writer, session = _writer()
    sink = CassandraFlush(writer)
    _add(sink, _updates(130))
    later = _updates(2)

    def meanwhile() -> None:
        session.on_send = None
        sink.on_paused()  # the checkpoint was dropped ...
        _add(sink, later)  # ... and the next one goes on

    session.on_send = meanwhile
    sink.flush()
    assert len(session.sent) == 1  # it stopped after the request in flight
    session.sent.clear()
    sink.flush()
    assert sorted(row[5] for row in session.rows("message")) == ["m0", "m1"]


SAMPLE_ROWS: dict[str, list[tuple[Any, ...]]] = {
    "message": [
        (b"{}", ["kekw", "gg"], "c0", T0, T0 + 59_999, "m1"),
        (b"\x00\xff", [], "ünïcödé", T0 + MIN, T0 + MIN, "m2"),
    ],
    "bucket": [("c0", T0), ("ünïcödé", T0 + MIN)],
    "user_message": [("c0", "someone", T0, T0 + 5, "m1", b"{}")],
    "window": [
        (
            "c0",
            "1m",
            cql_date(T0),
            T0,
            T0 + MIN,
            5,
            3,
            '[["Kappa",2]]',
            True,
            '[{"login":"a"}]',
            1,
            2,
            3,
            4,
            2,
            14.5,
            29,
        ),
        (
            "c1",
            "1h",
            cql_date(T0),
            T0,
            T0 + 60 * MIN,
            2**40,
            0,
            None,
            False,
            None,
            0,
            0,
            0,
            0,
            0,
            None,
            None,
        ),
    ],
    "mark_message": [(2_592_000, "c0", T0, T0 + 5, "m1")],
    "mark_user_message": [(86_400, "c0", "someone", T0, T0 + 5, "m1")],
    "leaderboard": [("1m", T0, "c0", 5, 3), ("1m", T0, "c1", 0, 0)],
    "latest": [("1m", T0, T0 * 1000), ("10m", T0, T0 * 1000)],
    "totals": [("c0", 10, T0, T0 + 5), ("c1", 1, -5, -5)],
    "spike": [("c0", T0, "1m", T0 + MIN, 90, 12.5, 3.0), ("c1", T0, "1m", T0 + MIN, 20, 0.0, 1.5)],
}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_rows_serialise_as_the_driver_binds_them(name: str) -> None:
    statement = STATEMENTS[name]
    binder = RowBinder(statement)
    ours, theirs = RowBatch(), BatchStatement(batch_type=BatchType.UNLOGGED)
    for row in SAMPLE_ROWS[name]:
        assert binder.values(row) == statement.bind(row).values
        ours.add_values(binder, binder.values(row))
        theirs.add(statement, row)
    assert ours._statements_and_parameters == theirs._statements_and_parameters
    assert ours.routing_key == theirs.routing_key is not None
    assert ours.keyspace == theirs.keyspace == "ks"
    assert ours.batch_type == theirs.batch_type


def test_a_row_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="4 values for 6 bind markers"):
        RowBinder(STATEMENTS["message"]).values(("c0", 1, 2, "m"))


def test_a_batch_routes_by_its_first_non_empty_key_as_the_driver_does() -> None:
    statement = STATEMENTS["totals"]
    rows = [("", 1, T0, T0), ("c", 1, T0, T0)]
    ours, theirs = RowBatch(), BatchStatement(batch_type=BatchType.UNLOGGED)
    binder = RowBinder(statement)
    for row in rows:
        ours.add_values(binder, binder.values(row))
        theirs.add(statement, row)
    assert ours.routing_key == theirs.routing_key == b"c"


def test_a_value_of_the_wrong_type_names_its_column() -> None:
    binder = RowBinder(STATEMENTS["message"])
    with pytest.raises(TypeError, match="column 'sent_at'"):
        binder.values((b"", [], "c0", 1, "yesterday", "m"))
    with pytest.raises(TypeError, match="column 'sent_at'"):
        binder.values((b"", [], "c0", 1, 2**63, "m"))


def test_a_chat_spike_is_upserted_under_its_channel_and_window_start() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer)
    updates = _updates(130)
    spike = ChatSpike("c0", "1m", T0 + MIN, T0 + 2 * MIN, 60, baseline_median=12.5, factor=3.0)
    updates[121].spikes = [spike]
    _add(sink, updates)
    sink.flush()
    assert session.rows("spike") == [("c0", T0 + MIN, "1m", T0 + 2 * MIN, 60, 12.5, 3.0)]
    # a checkpoint processed again writes the same row again (an idempotent upsert)
    _add(sink, updates)
    sink.flush()
    assert session.rows("spike") == [("c0", T0 + MIN, "1m", T0 + 2 * MIN, 60, 12.5, 3.0)] * 2


def test_moderation_marks_rows_with_the_ttl_they_have_left_and_writes_its_windows() -> None:
    writer, session = _writer()
    sink = CassandraFlush(writer)
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = DictStore()
    now = int(time.time() * 1000)
    sent = now - now % MIN - 3_600_000  # about an hour ago
    message = ChatMessage(
        id="m1", channel="c0", user_id="7", user_login="Someone", text="hi", sent_at=sent
    )
    counted = counter.process(message, store)
    assert counted is not None
    event = ChatEvent(
        type="message_deleted", channel="c0", sent_at=sent + 5, id="e1", target_msg_id="m1"
    )
    update = counter.moderate(event, store)
    assert isinstance(update, ModerationUpdate)
    assert [t.id for t in update.marks] == ["m1"]
    sink.keep_moderation(update, 0)
    sink.flush()
    ((ttl, channel, bucket, at, mid),) = session.rows("mark_message")
    left = 30 * 86_400 - (now - sent) // 1000  # the row's TTL less its age
    assert left - 5 <= ttl <= left
    assert (channel, bucket, at, mid) == ("c0", message_bucket(sent), sent, "m1")
    assert session.rows("mark_user_message") == [
        (ttl, "c0", "someone", user_bucket(sent), sent, "m1")
    ]
    (window,) = session.rows("window")
    assert window[5:7] == (1, 1)  # messages, chatters
    assert window[10:13] == (1, 0, 0)  # deleted_messages, timeouts, bans
    assert window[13:] == (0, 0, None, None)  # sessions: off in this counter
    session.sent.clear()
    sink.flush()
    assert session.sent == []  # kept for one checkpoint only
