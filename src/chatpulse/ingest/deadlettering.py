"""What the ingest does with a record Kafka refuses for good: dead-letter it, or drop it.

A refusal for good is an error about the record or its topic (too large, a timestamp the
broker does not take, a topic that does not exist or may not be written, a record the broker
finds invalid, ...): sending it again gives the same answer forever. Errors about the
connection, a partition's leader or replicas, or the producer's own state are not: the
record is sent again. A refused record goes to the dead-letter topic with the reason, in
place of the original (it takes its place in the spill's bookkeeping). A record the
dead-letter topic itself refuses is counted (``chatpulse_ingest_deadletter_dropped_total``),
logged (rate-limited) and dropped: dead-lettering it again could loop.
"""

import logging

from confluent_kafka import KafkaError

from chatpulse.deadletter import DEFAULT_RAW_MAX_BYTES, deadletter_value
from chatpulse.ingest.entry import Entry
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.logs import RateLimitedLog

__all__ = ["DeadLetters", "refused_for_good"]

logger = logging.getLogger(__name__)

_K = KafkaError
# Broker errors that say nothing about the record: the connection, leaders and replicas,
# quotas, coordinators, the producer's id/epoch/sequence (those end or abort the
# transaction; the record itself is fine). Every other broker error refuses the record.
_NOT_ABOUT_THE_RECORD = frozenset(
    {
        _K.LEADER_NOT_AVAILABLE,
        _K.NOT_LEADER_FOR_PARTITION,
        _K.REQUEST_TIMED_OUT,
        _K.BROKER_NOT_AVAILABLE,
        _K.REPLICA_NOT_AVAILABLE,
        _K.NETWORK_EXCEPTION,
        _K.COORDINATOR_LOAD_IN_PROGRESS,
        _K.COORDINATOR_NOT_AVAILABLE,
        _K.NOT_COORDINATOR,
        _K.NOT_ENOUGH_REPLICAS,
        _K.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        _K.NOT_CONTROLLER,
        _K.KAFKA_STORAGE_ERROR,
        _K.FENCED_LEADER_EPOCH,
        _K.UNKNOWN_LEADER_EPOCH,
        _K.ELIGIBLE_LEADERS_NOT_AVAILABLE,
        _K.PREFERRED_LEADER_NOT_AVAILABLE,
        _K.THROTTLING_QUOTA_EXCEEDED,
        _K.CONCURRENT_TRANSACTIONS,
        _K.REBOOTSTRAP_REQUIRED,
        _K.OUT_OF_ORDER_SEQUENCE_NUMBER,
        _K.DUPLICATE_SEQUENCE_NUMBER,
        _K.INVALID_PRODUCER_EPOCH,
        _K.PRODUCER_FENCED,
        _K.UNKNOWN_PRODUCER_ID,
        _K.INVALID_TXN_STATE,
        _K.INVALID_PRODUCER_ID_MAPPING,
        _K.INVALID_TRANSACTION_TIMEOUT,
        _K.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        _K.TRANSACTION_COORDINATOR_FENCED,
        _K.CLUSTER_AUTHORIZATION_FAILED,
        _K.SASL_AUTHENTICATION_FAILED,
        _K.UNSUPPORTED_VERSION,
        _K.STALE_BROKER_EPOCH,
        _K.OPERATION_NOT_ATTEMPTED,
    }
)
# librdkafka's own (negative) codes that refuse one record: every other one is about the
# client (timeouts, purges, transport, its state) and the record is sent again.
_CLIENT_REFUSALS = frozenset(
    {
        _K._INVALID_ARG,
        _K._BAD_MSG,
        _K._UNKNOWN_TOPIC,
        _K._UNKNOWN_PARTITION,
        _K._INVALID_DIFFERENT_RECORD,
        _K._VALUE_SERIALIZATION,
        _K._KEY_SERIALIZATION,
    }
)


def refused_for_good(error: KafkaError) -> bool:
    """True when sending the record again can only be refused again (see the module doc)."""
    code = error.code()
    if code > 0:
        return code not in _NOT_ABOUT_THE_RECORD
    return code in _CLIENT_REFUSALS


class DeadLetters:
    """Turns refused records into dead-letter entries; drops the dead-letter topic's refusals."""

    def __init__(
        self,
        deadletter_topic: str,
        metrics: IngestMetrics,
        *,
        raw_max_bytes: int = DEFAULT_RAW_MAX_BYTES,
        log_interval_s: float = 10.0,
    ) -> None:
        self.topic = deadletter_topic
        self._metrics = metrics
        self._raw_max_bytes = raw_max_bytes
        self._refused_log = RateLimitedLog(logger, log_interval_s)
        self._dropped_log = RateLimitedLog(logger, log_interval_s)

    def replace(self, entry: Entry, reason: str) -> Entry | None:
        """The dead-letter entry to send in place of the refused ``entry``; None: dropped."""
        if entry.topic == self.topic:
            self._metrics.deadletter_dropped.inc()
            self._dropped_log.error(
                "the dead-letter topic %s refused a record (%s): dropped it", entry.topic, reason
            )
            return None
        self._metrics.deadlettered.labels("kafka").inc()
        self._refused_log.warning(
            "Kafka refused a record for good (topic %s, key %r): %s; dead-lettering it",
            entry.topic,
            entry.key,
            reason,
        )
        value = deadletter_value(
            entry.value,
            f"kafka refused the record: {reason}",
            source=entry.topic,
            raw_max_bytes=self._raw_max_bytes,
        )
        # It takes the refused record's origin: a spilled record is done once this commits.
        return Entry(self.topic, entry.topic.encode(), value, 0, entry.origin)
