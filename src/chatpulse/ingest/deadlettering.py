"""What the ingest does with a record Kafka does not take: dead-letter it, hold it, or resend it.

Each failure code gets one :class:`Verdict`:

- ``REFUSED``: the broker or librdkafka refused *this record* (too large, a timestamp the
  broker does not take, a record it finds invalid or corrupt, a policy that rejects it, an
  argument librdkafka cannot send). Sending it again gets the same answer forever, and the
  records around it are fine: it goes to the dead-letter topic with the reason, in place of
  the original (it takes its place in the spill's bookkeeping). A record the dead-letter
  topic itself refuses is counted (``chatpulse_ingest_deadletter_dropped_total``), logged
  (rate-limited) and dropped: dead-lettering it again could loop.
- ``RETRY``: the connection, a partition's leader or replicas, quotas, coordinators, the
  producer's id/epoch/sequence or librdkafka's own state; the record is fine and is sent
  again at once (after the transaction's abort).
- ``HELD``: everything else, first of all what is wrong with the *topic* or the permissions
  (a deleted or recreated topic, an ACL mistake) and codes this list does not know (newer
  brokers add some). That is no reason to throw good chat away: the records are kept, in
  order, and sent again with a growing backoff, spilling past the memory bound as in an
  outage, with a rate-limited log saying what Kafka answered.

The refusals are an allow-list on purpose: a wrong ``REFUSED`` loses a good record to the
dead-letter topic, a wrong ``HELD`` only delays it until an operator looks.
"""

import enum
import logging

from confluent_kafka import KafkaError

from chatpulse.deadletter import DEFAULT_RAW_MAX_BYTES, deadletter_value
from chatpulse.ingest.entry import Entry
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.logs import RateLimitedLog

__all__ = ["DeadLetters", "Verdict", "refused_for_good", "verdict"]

logger = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What becomes of a record Kafka did not take (see the module doc)."""

    REFUSED = "refused"  # this record, for good: dead-letter it
    RETRY = "retry"  # not about the record: send it again at once
    HELD = "held"  # its topic, the permissions, or an unknown code: keep it, back off


_K = KafkaError
# Codes that refuse one record and say nothing about the others (librdkafka's list of broker
# and local codes, rdkafka.h): CORRUPT_MESSAGE (INVALID_MSG: bad CRC, or a keyless record on
# a compacted topic on old brokers), INVALID_MSG_SIZE, MSG_SIZE_TOO_LARGE (over the topic's
# max.message.bytes, by the broker or by librdkafka's message.max.bytes),
# RECORD_LIST_TOO_LARGE (a record over the segment size), INVALID_TIMESTAMP,
# POLICY_VIOLATION (a broker-side policy rejecting it), INVALID_RECORD (the broker's record
# validation); locally _INVALID_ARG / _BAD_MSG (librdkafka cannot send it) and the
# serialisers' and the idempotent producer's per-record errors.
_REFUSALS = frozenset(
    {
        _K.INVALID_MSG,
        _K.INVALID_MSG_SIZE,
        _K.MSG_SIZE_TOO_LARGE,
        _K.RECORD_LIST_TOO_LARGE,
        _K.INVALID_TIMESTAMP,
        _K.POLICY_VIOLATION,
        _K.INVALID_RECORD,
        _K._INVALID_ARG,
        _K._BAD_MSG,
        _K._INVALID_DIFFERENT_RECORD,
        _K._VALUE_SERIALIZATION,
        _K._KEY_SERIALIZATION,
    }
)
# Broker codes that say nothing about the record: the connection, leaders and replicas,
# quotas, coordinators, the producer's id/epoch/sequence (those end or abort the
# transaction; the record itself is fine).
_TRANSIENT = frozenset(
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
        _K.UNSUPPORTED_VERSION,
        _K.STALE_BROKER_EPOCH,
        _K.OPERATION_NOT_ATTEMPTED,
    }
)
# librdkafka's own codes about the topic (it does not exist, or the partition): held. Its
# other local codes are about the client (timeouts, purges, transport, its state): resent.
_CLIENT_HELD = frozenset({_K._UNKNOWN_TOPIC, _K._UNKNOWN_PARTITION})


def verdict(error: KafkaError) -> Verdict:
    """What to do with a record that failed with ``error`` (see the module doc)."""
    code = error.code()
    if code in _REFUSALS:
        return Verdict.REFUSED
    if code > 0 or code == _K.UNKNOWN:  # UNKNOWN: a broker error librdkafka has no name for
        return Verdict.RETRY if code in _TRANSIENT else Verdict.HELD
    return Verdict.HELD if code in _CLIENT_HELD else Verdict.RETRY


def refused_for_good(error: KafkaError) -> bool:
    """True when sending the record again can only be refused again (dead-letter it)."""
    return error.code() in _REFUSALS


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
