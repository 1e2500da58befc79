"""Assigning a consumer to every partition of a topic (no group membership needed)."""

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["assign_all"]


def assign_all(consumer: Consumer, topic: str, offset: int) -> list[TopicPartition]:
    """Assign all partitions of ``topic`` at ``offset`` (KafkaException if absent)."""
    metadata = consumer.list_topics(topic, timeout=5)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaException(f"topic {topic} is not available")
    partitions = [TopicPartition(topic, p, offset) for p in sorted(found.partitions)]
    consumer.assign(partitions)
    return partitions
