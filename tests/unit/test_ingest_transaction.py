"""The ingest's transaction state machine, without Kafka: every legal move and refused ones."""

import pytest
from confluent_kafka import KafkaError

from chatpulse.ingest.transaction import IllegalTransitionError, Transactions, TxnState

S = TxnState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _error(*, retriable: bool = False, abort: bool = False, fatal: bool = False) -> KafkaError:
    return KafkaError(
        KafkaError._TIMED_OUT, "x", fatal=fatal, retriable=retriable, txn_requires_abort=abort
    )


def _at(state: TxnState, clock: Clock | None = None) -> Transactions:
    txns = Transactions(retry_backoff_s=1.0, clock=clock or Clock())
    path = {
        S.INIT_DUE: [],
        S.INITIALIZING: [S.INITIALIZING],
        S.OPEN: [S.INITIALIZING, S.OPEN],
        S.COMMITTING: [S.INITIALIZING, S.OPEN, S.COMMITTING],
        S.COMMIT_DUE: [S.INITIALIZING, S.OPEN, S.COMMIT_DUE],
        S.ABORT_DUE: [S.INITIALIZING, S.OPEN, S.COMMITTING, S.ABORT_DUE],
        S.ABORTING: [S.INITIALIZING, S.OPEN, S.COMMITTING, S.ABORT_DUE, S.ABORTING],
        S.FATAL: [S.FATAL],
    }[state]
    for step in path:
        txns.move(step)
    assert txns.state is state
    return txns


def test_the_normal_cycle_init_open_commit_open() -> None:
    clock = Clock()
    txns = Transactions(clock=clock)
    assert txns.due_call() is S.INITIALIZING  # init runs at once at start
    txns.move(S.INITIALIZING)
    assert txns.running
    assert txns.due_call() is None
    txns.move(S.OPEN)
    assert txns.open
    assert not txns.running
    txns.move(S.COMMITTING)
    txns.move(S.OPEN)
    assert txns.state is S.OPEN


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (S.OPEN, S.OPEN),
        (S.OPEN, S.ABORTING),  # an abort always goes through ABORT_DUE
        (S.OPEN, S.INITIALIZING),
        (S.INIT_DUE, S.OPEN),
        (S.COMMIT_DUE, S.OPEN),
        (S.COMMIT_DUE, S.ABORTING),
        (S.ABORT_DUE, S.COMMITTING),
        (S.ABORTING, S.COMMIT_DUE),
        (S.INITIALIZING, S.COMMITTING),
        (S.FATAL, S.INIT_DUE),
        (S.FATAL, S.OPEN),
    ],
)
def test_illegal_moves_raise_and_keep_the_state(start: TxnState, to: TxnState) -> None:
    txns = _at(start)
    with pytest.raises(IllegalTransitionError, match=f"{start.name} -> {to.name}"):
        txns.move(to)
    assert txns.state is start


@pytest.mark.parametrize(
    ("call", "retry_state"),
    [(S.INITIALIZING, S.INIT_DUE), (S.COMMITTING, S.COMMIT_DUE), (S.ABORTING, S.ABORT_DUE)],
)
def test_a_retriable_failure_waits_the_backoff_then_runs_the_same_call(
    call: TxnState, retry_state: TxnState
) -> None:
    clock = Clock()
    txns = _at(call, clock)
    assert txns.call_failed(_error(retriable=True)) is retry_state
    assert txns.due_call() is None  # not before the backoff
    clock.now += 0.99
    assert txns.due_call() is None
    clock.now += 0.02
    assert txns.due_call() is call
    txns.move(call)
    assert txns.state is call


@pytest.mark.parametrize("call", [S.INITIALIZING, S.COMMITTING, S.ABORTING])
def test_a_failure_that_needs_an_abort_aborts_at_once(call: TxnState) -> None:
    txns = _at(call)
    assert txns.call_failed(_error(abort=True)) is S.ABORT_DUE
    assert txns.due_call() is S.ABORTING


@pytest.mark.parametrize("call", [S.INITIALIZING, S.COMMITTING, S.ABORTING])
@pytest.mark.parametrize(
    "error",
    [_error(fatal=True), _error(fatal=True, abort=True), _error()],  # fatal, or not recoverable
)
def test_a_fatal_or_unrecoverable_failure_ends_it(call: TxnState, error: KafkaError) -> None:
    txns = _at(call)
    assert txns.call_failed(error) is S.FATAL
    assert txns.fatal_error is error
    assert txns.due_call() is None


def test_a_produce_on_a_failed_transaction_commits_at_once_to_learn_how() -> None:
    txns = _at(S.OPEN)
    txns.move(S.COMMIT_DUE)
    assert txns.due_call() is S.COMMITTING


def test_begin_failing_after_a_call_aborts_or_ends() -> None:
    txns = _at(S.COMMITTING)
    assert txns.begin_failed(_error(abort=True)) is S.ABORT_DUE
    txns = _at(S.INITIALIZING)
    assert txns.begin_failed(_error(retriable=True)) is S.FATAL  # begin fails only on bad state


def test_a_call_failure_outside_a_call_is_a_bug() -> None:
    txns = _at(S.OPEN)
    with pytest.raises(IllegalTransitionError):
        txns.call_failed(_error(retriable=True))


def test_fatal_from_any_state_keeps_the_first_error() -> None:
    first, second = _error(fatal=True), _error(fatal=True)
    for state in S:
        txns = _at(state)
        txns.fail(first)
        txns.fail(second)
        assert txns.state is S.FATAL
        if state is not S.FATAL:
            assert txns.fatal_error is first


def test_a_call_ending_after_a_fatal_error_changes_nothing() -> None:
    fatal = _error(fatal=True)
    txns = _at(S.COMMITTING)
    txns.fail(fatal)  # from the error callback, while the commit ran
    assert txns.call_failed(_error(retriable=True)) is S.FATAL
    assert txns.fatal_error is fatal
