"""The processor survives SIGKILLs, a lost instance and a Cassandra outage with exact numbers."""

import random
import threading
import time
from pathlib import Path

import pytest
from cassandra import InvalidRequest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from processor_support import (
    ProcessorProcess,
    Results,
    assert_exact,
    generate,
    ground_truth,
    produce,
    read_cassandra,
    wait_for_totals,
)

from chatpulse.processor.app import build_processor
from chatpulse.processor.quix_hooks import PROCESSED_OFFSETS_HEADER, changelog_topic
from chatpulse.provision import initialize
from chatpulse.settings import Settings
from chatpulse.stack import CassandraServer
from chatpulse.storage import connect
from chatpulse.topics import Topics


def _counted(settings: Settings) -> int:
    return sum(total for total, _, _ in read_cassandra(settings).totals.values())


def _wait_progress(
    settings: Settings, at_least: int, procs: tuple[ProcessorProcess, ...], timeout_s: float
) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.alive(), proc.log.read_text()[-3000:]
        counted = _counted(settings)
        if counted >= at_least:
            return counted
        time.sleep(0.3)
    raise AssertionError(f"fewer than {at_least} messages counted after {timeout_s}s")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_three_times_then_exact(settings: Settings, tmp_path: Path) -> None:
    records = generate(
        channels=40, messages=100_000, seed=11, span_ms=20 * 60_000, bursts=20, moderation=0.01
    )
    # 40 top-chatter counters for ~300 chatters a window: counters are replaced all along,
    # and a replay must replace the same ones
    truth = ground_truth(records, top_capacity=40)
    assert any(v[1] > 40 for v in truth.windows.values())
    # chat spikes: a replay must decide each minute from the baseline restored with the state
    assert len(truth.spikes) >= 10
    assert truth.decided > 200
    # moderation events too: window counts and deleted marks exact after the kills
    assert truth.events > 500
    assert len(truth.deleted) > 1_000
    total = len(truth.distinct_ids)
    produce(settings, records)
    rng = random.Random()
    proc = ProcessorProcess(
        settings,
        tmp_path / "state",
        tmp_path / "processor.log",
        CHATPULSE_TOP_CHATTERS_CAPACITY="40",
    )
    kills = []
    # Kill points up to 60%: Cassandra's totals move a whole checkpoint at a time (20k
    # messages or more over a backlog), so from a later point one checkpoint could finish
    # the stream before the kill and the kill would test nothing (asserted below).
    for fraction in sorted(rng.uniform(0.1, 0.6) for _ in range(3)):
        proc.start()
        counted = _wait_progress(settings, int(total * fraction), (proc,), timeout_s=240)
        time.sleep(rng.uniform(0, 1.0))
        proc.kill()
        kills.append(counted)
    assert max(kills) < total, "the processor finished before the last kill"
    proc.start()
    try:
        assert_exact(settings, truth, timeout_s=300, procs=(proc,))
    finally:
        assert proc.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_instances_one_killed_survivor_takes_over(settings: Settings, tmp_path: Path) -> None:
    records = generate(channels=40, messages=40_000, seed=12, span_ms=10 * 60_000)
    truth = ground_truth(records)
    total = len(truth.distinct_ids)
    producer = threading.Thread(target=produce, args=(settings, records), kwargs={"rate": 4_000})
    producer.start()
    a = ProcessorProcess(settings, tmp_path / "a", tmp_path / "a.log")
    b = ProcessorProcess(settings, tmp_path / "b", tmp_path / "b.log")
    a.start()
    b.start()
    try:
        _wait_progress(settings, total // 3, (a, b), timeout_s=240)
        b.kill()
        producer.join()
        assert_exact(settings, truth, timeout_s=300, procs=(a,))
    finally:
        producer.join()
        assert a.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cassandra_outage_pauses_and_resumes_exactly(
    settings: Settings, dedicated_cassandra: CassandraServer, tmp_path: Path
) -> None:
    own = settings.model_copy(update={"cassandra_port": dedicated_cassandra.port})
    initialize(own, timeout=120)
    records = generate(channels=20, messages=30_000, seed=13, span_ms=10 * 60_000)
    truth = ground_truth(records)
    total = len(truth.distinct_ids)
    producer = threading.Thread(target=produce, args=(own, records), kwargs={"rate": 500})
    producer.start()
    proc = ProcessorProcess(own, tmp_path / "state", tmp_path / "processor.log")
    proc.start()
    try:
        _wait_progress(own, total // 10, (proc,), timeout_s=240)
        dedicated_cassandra.stop(timeout=30)
        time.sleep(30)
        assert proc.alive(), proc.log.read_text()[-3000:]
        dedicated_cassandra.start()
        dedicated_cassandra.wait_ready(timeout=180)
        producer.join()
        assert_exact(own, truth, timeout_s=300, procs=(proc,))
    finally:
        producer.join()
        assert proc.stop() == 0
    assert "pausing" in proc.log.read_text()


def _read_when_present(settings: Settings) -> Results | None:
    try:
        return read_cassandra(settings)
    except InvalidRequest:  # the keyspace or a table is not there (yet)
        return None


@pytest.mark.timeout(300)
def test_a_dropped_keyspace_is_created_again_and_counting_goes_on_exactly(
    settings: Settings, tmp_path: Path
) -> None:
    hour = 3_600_000
    base = int(time.time() * 1000) - 3 * hour
    base -= base % hour
    before = generate(channels=4, messages=1_500, seed=21, base=base, late_rate=0)
    after = generate(
        channels=4, messages=1_500, seed=22, base=base + hour, id_prefix="b-", late_rate=0
    )
    truth_before = ground_truth(before)
    truth = ground_truth(before + after)
    produce(settings, before)
    log = tmp_path / "processor.log"
    proc = ProcessorProcess(settings, tmp_path / "state", log)
    proc.start()
    try:
        assert wait_for_totals(settings, truth_before, 120, (proc,)).totals == truth_before.totals
        cluster, session = connect(settings)
        try:  # a wiped cluster, under the running processor
            session.execute(f"DROP KEYSPACE {settings.cassandra_keyspace}", timeout=120)
        finally:
            cluster.shutdown()
        produce(settings, after)
        deadline = time.monotonic() + 150
        results = _read_when_present(settings)
        while (results is None or results.totals != truth.totals) and time.monotonic() < deadline:
            assert proc.alive(), log.read_text()[-3000:]
            time.sleep(2)
            results = _read_when_present(settings)
        # the totals come from the state: what was counted before the drop is still in them
        assert results is not None
        assert results.totals == truth.totals
    finally:
        assert proc.stop() == 0, log.read_text()[-3000:]
    # rows written before the drop are gone with the keyspace; every row since is exact:
    # the windows from the first window of the closers of the first stream on
    first_after = min(r.sent_at for r in before if r.id.endswith("-closer"))
    first_after -= first_after % 60_000
    expected = {k: v for k, v in truth.windows.items() if k[2] >= first_after}
    assert len(expected) > 50
    assert results.windows == expected
    assert {k for k, closed in results.closed_flags.items() if closed} == truth.closed & set(
        expected
    )
    assert results.messages == ground_truth(after).messages
    text = log.read_text()
    assert "creating the schema and writing the checkpoint again" in text
    assert "Traceback" not in text


def _committed(settings: Settings) -> list[int]:
    topic = Topics.from_settings(settings).messages
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, **_group(settings)})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return [tp.offset for tp in consumer.committed(tps, timeout=30)]
    finally:
        consumer.close()


def _group(settings: Settings) -> dict[str, str]:
    return {"group.id": settings.processor_group, "enable.auto.commit": "false"}


@pytest.mark.timeout(300)
def test_a_restart_after_the_groups_offsets_are_gone_counts_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    hour = 3_600_000
    base = int(time.time() * 1000) - 4 * hour
    base -= base % hour
    # a first stream, then one 1.5 h later: the first one's ids are past the de-duplication
    # horizon (1 h), so only the offsets can keep a restart from counting them again
    first = generate(channels=4, messages=1_500, seed=41, base=base, late_rate=0)
    second = generate(
        channels=4, messages=1_500, seed=42, base=base + 3 * hour // 2, id_prefix="b-"
    )
    third = generate(channels=4, messages=1_000, seed=43, base=base + 3 * hour, id_prefix="c-")
    produce(settings, first + second)
    log = tmp_path / "processor.log"
    proc = ProcessorProcess(settings, tmp_path / "state", log)
    proc.start()
    try:
        assert_exact(settings, ground_truth(first + second), procs=(proc,))
    finally:
        assert proc.stop() == 0, log.read_text()[-3000:]
    assert any(offset >= 0 for offset in _committed(settings))  # (empty partitions: none)

    # the broker forgets the group's offsets (offsets.retention.minutes after it emptied)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.delete_consumer_groups([settings.processor_group]).values():
        future.result()
    assert all(offset < 0 for offset in _committed(settings))

    produce(settings, third)
    again = ProcessorProcess(settings, tmp_path / "state", log)
    again.start()
    try:
        assert_exact(settings, ground_truth(first + second + third), procs=(again,))
    finally:
        assert again.stop() == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "resuming from the offsets its state records as processed" in text
    assert "Traceback" not in text


@pytest.mark.timeout(180)
def test_a_changelog_without_processed_offsets_stops_the_processor_with_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    # the group has no committed offsets, and the state's changelog holds a record that does
    # not say what was processed (written without Quix's header): starting over from the
    # earliest message would count it all again, so the processor stops and says what to do
    messages = Topics.from_settings(settings).messages
    probe = settings.model_copy(update={"state_dir": tmp_path / "probe"})
    # (building the processor creates its changelog topic, as a first start would)
    changelog = changelog_topic(build_processor(probe, cassandra=False).app, messages)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(changelog, key=b"somechannel\x00c", value=b"\x93\x00\x00\x00", partition=0)
    assert producer.flush(30) == 0
    produce(settings, generate(channels=2, messages=50, seed=44))

    log = tmp_path / "processor.log"
    proc = ProcessorProcess(settings, tmp_path / "state", log)
    proc.start()
    assert proc.proc is not None
    try:
        assert proc.proc.wait(120) == 1, log.read_text()[-3000:]
    finally:
        proc.stop()
    text = log.read_text()
    group = settings.processor_group
    assert (
        f"chatpulse: error: group {group} has no committed offset for {messages} partition 0 "
        f"and the changelog {changelog} partition 0 holds records but none carries the "
        f"processed offsets (header {PROCESSED_OFFSETS_HEADER}); rather than count that "
        "partition again from its earliest message the processor stops: set the offset by "
        f"hand (kafka-consumer-groups.sh --group {group} --reset-offsets --topic "
        f"{messages}:0 --to-offset <first offset not counted> --execute, or --to-latest to "
        "skip to new chat), then start it again\n"
    ) in text
    assert "Traceback" not in text
    assert all(offset < 0 for offset in _committed(settings))  # nothing was counted
