"""The ingest producer's transaction states and every move between them, in one place.

librdkafka's transactional calls (init, commit, abort) block, so they run one at a time on a
worker thread; between them the producer is in one of a few states. This class only keeps
the state and decides the next one from a call's outcome; it runs no Kafka call itself, so
it is tested without a broker::

    start:          INIT_DUE -> INITIALIZING -ok-> OPEN
    commit:         OPEN -due-> COMMITTING -ok-> OPEN
    produce failed: OPEN -> COMMIT_DUE (the commit tells how the transaction failed)
    retriable:      INITIALIZING -> INIT_DUE, COMMITTING -> COMMIT_DUE (its outcome is
                    unknown until it answers), ABORTING -> ABORT_DUE; each runs again later
    needs abort:    any call -> ABORT_DUE -> ABORTING -ok-> OPEN (records sent again)
    fatal:          any state -> FATAL (the end: the ingest stops with one line)

``*_DUE`` states wait until ``retry_at`` and then run their call. After a call succeeds a new
transaction is begun at once; ``begin_transaction`` fails only when the producer is in a
bad state, so its failure leads to ABORT_DUE or FATAL, never to a retry.
"""

import enum
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

__all__ = ["IllegalTransitionError", "Transactions", "TxnState"]


class TxnState(enum.Enum):
    INITIALIZING = "initializing"  # init_transactions() running
    OPEN = "open"  # a transaction is open: records may be produced into it
    COMMITTING = "committing"  # commit_transaction() running
    ABORTING = "aborting"  # abort_transaction() running
    INIT_DUE = "init due"  # init failed for now: run it again at retry_at
    COMMIT_DUE = "commit due"  # run commit at retry_at (again, or to learn how a produce failed)
    ABORT_DUE = "abort due"  # the transaction must be aborted
    FATAL = "fatal"  # the producer cannot go on (fenced, or a fatal librdkafka error)


_S = TxnState
# Every legal move. A move not listed is a bug in the producer and raises.
_TRANSITIONS: dict[TxnState, frozenset[TxnState]] = {
    _S.INITIALIZING: frozenset({_S.OPEN, _S.INIT_DUE, _S.ABORT_DUE, _S.FATAL}),
    _S.OPEN: frozenset({_S.COMMITTING, _S.COMMIT_DUE, _S.FATAL}),
    _S.COMMITTING: frozenset({_S.OPEN, _S.COMMIT_DUE, _S.ABORT_DUE, _S.FATAL}),
    _S.ABORTING: frozenset({_S.OPEN, _S.ABORT_DUE, _S.FATAL}),
    _S.INIT_DUE: frozenset({_S.INITIALIZING, _S.FATAL}),
    _S.COMMIT_DUE: frozenset({_S.COMMITTING, _S.FATAL}),
    _S.ABORT_DUE: frozenset({_S.ABORTING, _S.FATAL}),
    _S.FATAL: frozenset(),
}
# The call each waiting state runs, and the state a retriable failure of each call goes to.
_CALL_OF: dict[TxnState, TxnState] = {
    _S.INIT_DUE: _S.INITIALIZING,
    _S.COMMIT_DUE: _S.COMMITTING,
    _S.ABORT_DUE: _S.ABORTING,
}
_RETRY_OF: dict[TxnState, TxnState] = {call: due for due, call in _CALL_OF.items()}
RUNNING = frozenset(_RETRY_OF)


class IllegalTransitionError(AssertionError):
    """A move :data:`_TRANSITIONS` does not allow (a bug, never a Kafka condition)."""


class Transactions:
    """The current :class:`TxnState`, when a waiting state may run, and the fatal error."""

    def __init__(
        self, *, retry_backoff_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.state = TxnState.INIT_DUE  # the producer starts by running init at once
        self.retry_at = 0.0
        self.fatal_error: KafkaError | None = None
        self._backoff_s = retry_backoff_s
        self._clock = clock

    def move(self, to: TxnState, *, after_s: float = 0.0) -> None:
        """Go to ``to`` (a waiting state runs its call ``after_s`` from now)."""
        if to not in _TRANSITIONS[self.state]:
            raise IllegalTransitionError(f"transaction state {self.state.name} -> {to.name}")
        self.state = to
        if to in _CALL_OF:
            self.retry_at = self._clock() + after_s

    @property
    def open(self) -> bool:
        return self.state is TxnState.OPEN

    @property
    def running(self) -> bool:
        """True while a blocking call runs on the worker thread."""
        return self.state in RUNNING

    def due_call(self) -> TxnState | None:
        """The call to start now (INITIALIZING, COMMITTING or ABORTING), if a wait is over."""
        call = _CALL_OF.get(self.state)
        if call is None or self._clock() < self.retry_at:
            return None
        return call

    def fail(self, error: KafkaError) -> None:
        """A fatal error (from any state): the producer stops for good."""
        if self.state is not TxnState.FATAL:
            self.fatal_error = error
            self.move(TxnState.FATAL)

    def call_failed(self, error: KafkaError) -> TxnState:
        """The running call failed with ``error``: move to what comes next, and return it."""
        call = self.state
        if call is TxnState.FATAL:  # a fatal error came in (error_cb, poll) while it ran
            return call
        if call not in RUNNING:
            raise IllegalTransitionError(f"a call failed in state {call.name}")
        if error.fatal() or not (error.retriable() or error.txn_requires_abort()):
            self.fail(error)
        elif error.txn_requires_abort():
            self.move(TxnState.ABORT_DUE)
        else:
            self.move(_RETRY_OF[call], after_s=self._backoff_s)
        return self.state

    def begin_failed(self, error: KafkaError) -> TxnState:
        """``begin_transaction`` failed right after a call succeeded: abort or stop."""
        if error.txn_requires_abort() and not error.fatal():
            self.move(TxnState.ABORT_DUE)
        else:
            self.fail(error)
        return self.state
