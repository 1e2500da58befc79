"""Assigning a consumer to every partition of a topic (no group membership needed)."""

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

__all__ = ["TopicMissingError", "assign_all"]


class TopicMissingError(KafkaException):  # type: ignore[misc]
    """The cluster answered: the topic does not exist (``chatpulse init`` creates it)."""


def assign_all(consumer: Consumer, topic: str, offset: int) -> list[TopicPartition]:
    """Assign all partitions of ``topic`` at ``offset``.

    TopicMissingError if the cluster says it does not exist, KafkaException if unreachable.
    """
    metadata = consumer.list_topics(topic, timeout=5)
    found = metadata.topics.get(topic)
    missing = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    if found is None or (found.error is not None and found.error.code() in missing):
        raise TopicMissingError(f"topic {topic} does not exist")
    if found.error is not None or not found.partitions:
        raise KafkaException(f"topic {topic} is not available")
    partitions = [TopicPartition(topic, p, offset) for p in sorted(found.partitions)]
    consumer.assign(partitions)
    return partitions
