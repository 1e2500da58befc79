"""Which failures of the Quix application are a Kafka outage the processor waits out.

With two of three brokers down (min ISR 2 not met, no controller quorum) every transaction
times out: Quix aborts it, its consumer's group session ends, and ``Application.run()``
raises out of its clean-up (an abort that cannot reach the transaction coordinator). While
the brokers are away, building a new application fails as well: Quix's ``app.topic()``
checks the changelog topics and gets "Failed while waiting for controller". None of that is
wrong with the processor; it is Kafka being unavailable, and it ends when a broker returns.

:func:`is_kafka_outage` tells these apart from everything else (a fenced producer, a
misconfiguration, a bug), which still stops the processor.
"""

from confluent_kafka import KafkaError, KafkaException
from quixstreams.models.topics.exceptions import CreateTopicFailure, CreateTopicTimeout

__all__ = ["is_kafka_outage"]

# Unreachable brokers, missing leaders or coordinators, too few in-sync replicas, timeouts.
_OUTAGE_CODES = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_CONTROLLER,
    }
)
# Quix's CreateTopicFailure keeps only the error's text: these are the controller's timeouts.
_OUTAGE_TEXTS = ("waiting for controller", "timed out")


def _outage_error(error: KafkaError) -> bool:
    if error.fatal():  # e.g. fenced by a newer instance: never wait that out
        return False
    return error.code() in _OUTAGE_CODES or error.retriable() or error.txn_requires_abort()


def is_kafka_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from or while handling) says that
    Kafka is unavailable for now, rather than that something is wrong."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CreateTopicTimeout):
            return True
        if isinstance(current, CreateTopicFailure):
            text = str(current).lower()
            return any(part in text for part in _OUTAGE_TEXTS)
        if isinstance(current, KafkaException) and current.args:
            error = current.args[0]
            if isinstance(error, KafkaError):
                return _outage_error(error)
        current = current.__cause__ or current.__context__
    return False
