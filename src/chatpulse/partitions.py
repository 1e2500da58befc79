"""Assigning a consumer to every partition of a topic (no group membership needed).

The one home of "read all of a topic": the API's live hub (from the end) and the
tracked-channels follower of the API and the ingest (from the beginning).
"""

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from chatpulse.errors import TopicMissingError

__all__ = ["assign_all"]


def assign_all(
    consumer: Consumer, topic: str, offset: int, timeout_s: float = 5.0
) -> list[TopicPartition]:
    """Assign all partitions of ``topic`` at ``offset``.

    TopicMissingError if the cluster says it does not exist, KafkaException if it does not
    answer within ``timeout_s``.
    """
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    found = metadata.topics.get(topic)
    missing = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    if found is None or (found.error is not None and found.error.code() in missing):
        raise TopicMissingError(f"topic {topic} does not exist")
    if found.error is not None or not found.partitions:
        raise KafkaException(f"topic {topic} is not available")
    partitions = [TopicPartition(topic, p, offset) for p in sorted(found.partitions)]
    consumer.assign(partitions)
    return partitions
