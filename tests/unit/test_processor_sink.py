"""The Cassandra sink's statements and its error mapping, with a fake session (no Cassandra)."""

from typing import Any

import pytest
from cassandra import InvalidRequest, OperationTimedOut, Unavailable
from cassandra.cluster import NoHostAvailable
from cassandra.query import BatchStatement
from quixstreams.sinks import SinkBackpressureError, SinkBatch

from chatpulse.models import ChatMessage
from chatpulse.processor.channel import ChannelCounter, ChannelUpdate
from chatpulse.processor.sinks import CassandraSink, _batches
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


class FailingSession:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def execute_async(self, *_args: Any, **_kwargs: Any) -> Any:
        raise self.error


def _sink() -> CassandraSink:
    sink = CassandraSink(load_settings(cassandra_keyspace="ks"), retry_after_s=2.5)
    # plain CQL strings: BatchStatement.add binds them client-side, no server needed
    arity = {"message": 14, "window": 9, "leaderboard": 5, "latest": 3, "totals": 4}
    sink._statements = {name: f"{name} " + ",".join(["%s"] * n) for name, n in arity.items()}
    return sink


def _updates(count: int) -> list[ChannelUpdate]:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = DictStore()
    out = []
    for i in range(count):
        message = ChatMessage(
            id=f"m{i}",
            channel="c",
            user_id=str(i % 7),
            user_login="u",
            text="hi",
            sent_at=T0 + i * 1_000,
        )
        update = counter.process(message, store)
        assert update is not None
        out.append(update)
    return out


def _batch(updates: list[ChannelUpdate]) -> SinkBatch:
    batch = SinkBatch(topic="t", partition=0)
    for offset, update in enumerate(updates):
        batch.append(value=update, key=b"c", timestamp=0, headers=[], offset=offset)
    return batch


def test_statements_coalesce_windows_and_totals() -> None:
    sink = _sink()
    statements = list(sink._statements_for(_updates(130)))  # 130 s: minutes 0, 1 closed; 2 open
    batches = [s for s, _ in statements if isinstance(s, BatchStatement)]
    singles = [(s, p) for s, p in statements if not isinstance(s, BatchStatement)]
    rows_per_batch = sorted(len(b._statements_and_parameters) for b in batches)
    # 130 messages of one partition in batches of 60; 130 updates of 3 windows coalesce to
    # 3 window rows (one batch) and 3 leaderboard partitions of one row; 1 totals row
    assert rows_per_batch == [1, 1, 1, 1, 3, 10, 60, 60]
    assert singles == [(sink._statements["latest"], ("1m", T0 + 2 * MIN, (T0 + 2 * MIN) * 1000))]


@pytest.mark.parametrize(
    "error", [NoHostAvailable("down", {}), OperationTimedOut(), Unavailable("1 of 1")]
)
def test_transient_errors_become_backpressure(error: Exception) -> None:
    sink = _sink()
    sink._session = FailingSession(error)
    with pytest.raises(SinkBackpressureError) as caught:
        sink.write(_batch(_updates(3)))
    assert caught.value.retry_after == 2.5


def test_other_errors_stop_the_app() -> None:
    sink = _sink()
    sink._session = FailingSession(InvalidRequest("bad"))
    with pytest.raises(InvalidRequest):
        sink.write(_batch(_updates(3)))


def test_batches_stay_far_below_the_size_limit() -> None:
    rows = [("c", 1, 2, f"id{i}", "x" * 500) for i in range(60)]
    batches = [b for b, _ in _batches("s %s,%s,%s,%s,%s", rows, 60)]
    assert sum(len(b._statements_and_parameters) for b in batches) == 60
    assert len(batches) > 2
    for batch in batches:
        assert sum(len(query) for _, query, _ in batch._statements_and_parameters) < 25_000
