"""Failures on the 3 + 3 cluster while chat streams through the real processor: the numbers in
Cassandra and channel-stats come out exact.

The first of issue 13's failure tests, at the processor's level: a producer stands in for the
ingest (idempotent, acks=all) and 40,000 generated messages (duplicates, late and out-of-order
ones, as the other processor tests) for held-out-sized chat; the ingest, the API and the
Cassandra-node and two-broker cases are still to come.
"""

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from processor_support import (
    ProcessorProcess,
    assert_exact,
    generate,
    ground_truth,
    produce,
    read_cassandra,
)

from chatpulse.provision import initialize
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import Stack
from chatpulse.topics import Topics

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def _cluster_settings(stack: Stack, tmp_path: Path) -> Settings:
    token = uuid.uuid4().hex[:8]
    prefix = f"t{token}-"
    return load_settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        cassandra_contact_points=",".join(stack.cassandra_contact_points),
        cassandra_port=stack.cassandra.port,
        cassandra_keyspace=f"t_{token}",
        topic_prefix=prefix,
        processor_group=f"{prefix}processor",
        topic_replication_factor=3,
        cassandra_replication_factor=3,
        state_dir=tmp_path / "state",
        spill_dir=tmp_path / "spill",
    )


def _busiest_leader(settings: Settings) -> int:
    """The broker that leads the most partitions of the messages topic."""
    topic = Topics.from_settings(settings).messages
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions.values()
    leader, _ = Counter(partition.leader for partition in partitions).most_common(1)[0]
    return int(leader)


def test_the_processor_counts_exactly_through_a_killed_leader_broker(
    cluster_stack: Stack, tmp_path: Path
) -> None:
    settings = _cluster_settings(cluster_stack, tmp_path)
    initialize(settings, timeout=120)
    records = generate(channels=20, messages=40_000, seed=31)
    truth = ground_truth(records)
    processor = ProcessorProcess(settings, tmp_path / "state", tmp_path / "processor.log")
    processor.start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            producing = pool.submit(produce, settings, records, 500.0)
            # Mid-stream: once the processor has written its first results (it has started,
            # and is consuming while the rest is produced).
            deadline = time.monotonic() + 120
            while not read_cassandra(settings).totals:
                assert processor.alive(), processor.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the processor wrote nothing in 120 s"
                time.sleep(1)
            assert not producing.done()
            victim = f"kafka-{_busiest_leader(settings)}"
            assert cluster_stack.kill(victim)
            time.sleep(30)
            assert processor.alive(), processor.log.read_text()[-3000:]
            assert cluster_stack.up() == [victim]
            producing.result(timeout=300)
        assert_exact(settings, truth, timeout_s=300, procs=(processor,))
        assert processor.alive()
    finally:
        processor.stop()
