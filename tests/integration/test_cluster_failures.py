"""Node failures on the 3 + 3 cluster while simulated chat streams through the whole pipeline:
fake-twitch -> ``chatpulse ingest`` -> Kafka -> ``chatpulse process`` -> Cassandra -> the API.

Each test streams simulated chat (current timestamps, Twitch user ids up to ~1e9) from a
``chatpulse fake-twitch`` subprocess at real speed, kills nodes mid-stream, and checks the
result against a ground truth computed here from the same simulation (the lines fake-twitch
sends, converted as Twitch's IRC format defines, counted with plain sets and Counters by
processor_support.ground_truth): every API number exact (each message counted once, every
window's count, chatters, top emotes and closed flag), Cassandra and channel-stats exact
(processor_support.assert_exact), the ingest's spill empty, and the same processor process
from start to end. The 30 s down time of each test overlaps the stream.

Here: the broker leading the most partitions, one Cassandra node, and two brokers at once.

Measurements (leader re-election, time to resume, spill sizes) print on stdout (``-s``);
docs/operations.md, "What a node failure does", reports them.
"""

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import iso, running_api
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient
from processor_support import (
    GRACE,
    SESSION_GAP,
    SIZES,
    VENV_BIN,
    WINDOWS,
    ProcessorProcess,
    Truth,
    assert_exact,
    ground_truth,
    records_of,
)
from prometheus_client.parser import text_string_to_metric_families
from test_ingest import expected_records

from chatpulse.fake_twitch.simulate import channel_names, simulate_channel
from chatpulse.ports import free_port
from chatpulse.provision import initialize
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import Stack
from chatpulse.topics import Topics

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

CHANNELS = 20
DOWN_S = 30.0


def _cluster_settings(stack: Stack, tmp_path: Path, **extra: Any) -> Settings:
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
        windows=",".join(WINDOWS),
        grace=GRACE,
        session_gap=SESSION_GAP,
        state_dir=tmp_path / "state",
        spill_dir=tmp_path / "spill",
        **extra,
    )


def _busiest_leader(settings: Settings, prefer: int | None = None) -> int:
    """The broker that leads the most partitions of the messages topic; of several that
    lead as many, ``prefer`` when it is one of them."""
    topic = Topics.from_settings(settings).messages
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions.values()
    counts = Counter(partition.leader for partition in partitions)
    most = max(counts.values())
    busiest = sorted(leader for leader, count in counts.items() if count == most)
    return int(prefer if prefer in busiest else busiest[0])


def _group_coordinator(settings: Settings) -> int:
    """The broker coordinating the processor's consumer group (its offsets, sent in its
    transactions)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    group = settings.processor_group
    return int(admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id)


def _leaders(settings: Settings) -> list[int]:
    topic = Topics.from_settings(settings).messages
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    return [partitions[p].leader for p in sorted(partitions)]


def _start(argv: list[str], env: dict[str, str], log: Path) -> "subprocess.Popen[bytes]":
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: "subprocess.Popen[bytes]", timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@dataclass
class Sample:
    """The pipeline at one moment of an outage."""

    at: float  # seconds since the kill
    api_status: int  # the worst status of this moment's API calls
    api_problem: str  # the body of a non-200 answer (empty when all were 200)
    counted: int  # messages the API counts over all channels (-1: no answer)
    lines: float  # IRC lines the ingest has read
    produced: float  # records the ingest has committed to Kafka
    buffered: float  # records in the ingest's memory, not yet committed
    spill_bytes: float  # bytes in the ingest's on-disk spill


@dataclass
class Pipeline:
    """Simulated chat through the real services on the cluster, and its ground truth."""

    settings: Settings
    truth: Truth
    processor: ProcessorProcess
    ingest: "subprocess.Popen[bytes]"
    api: httpx.Client
    metrics_port: int
    logs: Path
    samples: list[Sample] = field(default_factory=list)

    @property
    def processor_pid(self) -> int:
        assert self.processor.proc is not None
        return self.processor.proc.pid

    @property
    def total(self) -> int:
        return len(self.truth.distinct_ids)

    def ingest_metric(self, name: str) -> float:
        """One sample of the ingest's Prometheus endpoint (summed over its labels)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def alive(self) -> None:
        assert self.processor.alive(), self.processor.log.read_text()[-3000:]
        assert self.ingest.poll() is None, (self.logs / "ingest.log").read_text()[-3000:]

    def counted(self) -> tuple[int, int]:
        """(status, messages the API counts over all channels) from one call."""
        response = self.api.get("/api/v1/channels", params={"limit": 500})
        if response.status_code != 200:
            return response.status_code, -1
        return 200, sum(item["total_messages"] for item in response.json()["items"])

    def wait_flowing(self, at_least: int = 2_000, timeout_s: float = 240) -> None:
        """Until the API counts ``at_least`` messages: every service is up and chat flows."""
        deadline = time.monotonic() + timeout_s
        while self.counted()[1] < at_least:
            self.alive()
            assert time.monotonic() < deadline, f"fewer than {at_least} counted in {timeout_s}s"
            time.sleep(1)

    def watch(self, since: float, until: float, *, channel: str) -> None:
        """Sample the API (the channel list and one channel) and the ingest until ``until``."""
        while time.monotonic() < until:
            self.alive()
            status, counted = self.counted()
            summary = self.api.get(f"/api/v1/channels/{channel}")
            self.samples.append(
                Sample(
                    at=time.monotonic() - since,
                    api_status=max(status, summary.status_code),
                    api_problem="" if summary.status_code == 200 else summary.text[:300],
                    counted=counted,
                    lines=self.ingest_metric("chatpulse_ingest_lines_received_total"),
                    produced=self.ingest_metric("chatpulse_ingest_produced_total"),
                    buffered=self.ingest_metric("chatpulse_ingest_buffered"),
                    spill_bytes=self.ingest_metric("chatpulse_ingest_spill_bytes"),
                )
            )
            time.sleep(0.5)

    def busiest_channel(self) -> str:
        """The channel the API counts most messages of (so it is known to the API)."""
        items = self.api.get("/api/v1/channels", params={"limit": 500}).json()["items"]
        return str(max(items, key=lambda item: item["total_messages"])["channel"])

    def wait_all_counted(self, timeout_s: float = 300, *, always_answered: bool = False) -> float:
        """Until the API counts every message of the stream; returns when (monotonic).
        ``always_answered``: every call meanwhile must be answered (200)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, counted = self.counted()
            assert status == 200 or not always_answered, f"the API answered {status}"
            if counted == self.total:
                break
            self.alive()
            assert counted <= self.total, f"{counted} counted, only {self.total} sent"
            assert time.monotonic() < deadline, f"{counted} of {self.total} counted in time"
            time.sleep(1)
        return time.monotonic()

    def assert_api_exact(self) -> None:
        """Every channel's totals and every window of both sizes, as the API serves them."""
        time.sleep(1.2)  # past the API's 1 s response cache: every read below is fresh
        for channel, (messages, first, last) in self.truth.totals.items():
            summary = self.api.get(f"/api/v1/channels/{channel}").json()
            assert (summary["total_messages"], summary["first_seen"], summary["last_seen"]) == (
                messages,
                iso(first),
                iso(last),
            ), channel
            for name, size in SIZES.items():
                response = self.api.get(
                    f"/api/v1/channels/{channel}/stats", params={"window": name, "limit": 1440}
                )
                assert response.status_code == 200, response.text
                got = {
                    (item["window_start"], item["window_end"]): (
                        item["messages"],
                        item["unique_chatters"],
                        item["top_emotes"],
                        item["top_chatters"],
                        item["deleted_messages"],
                        item["timeouts"],
                        item["bans"],
                        (
                            item["sessions_started"],
                            item["sessions_ended"],
                            item["session_mean_s"],
                            item["session_p90_s"],
                        ),
                        item["closed"],
                    )
                    for item in response.json()["items"]
                }
                want = {
                    (iso(start), iso(start + size)): (
                        *window,
                        (c, n, start) in self.truth.closed,
                    )
                    for (c, n, start), window in self.truth.windows.items()
                    if c == channel and n == name
                }
                assert got == want, (channel, name)

    def assert_spill_drained(self) -> float:
        """Nothing left in or lost from the spill; returns the records spilled."""
        spilled = self.ingest_metric("chatpulse_ingest_spilled_total")
        assert self.ingest_metric("chatpulse_ingest_unspilled_total") == spilled
        assert self.ingest_metric("chatpulse_ingest_spill_bytes") == 0
        assert self.ingest_metric("chatpulse_ingest_spill_lost_total") == 0
        return spilled


@contextlib.contextmanager
def _pipeline(
    stack: Stack,
    tmp_path: Path,
    *,
    rate: float,
    duration_s: float,
    seed: int,
    **settings_extra: Any,
) -> Iterator[Pipeline]:
    """fake-twitch, ingest and processor subprocesses and an in-process API on the cluster."""
    settings = _cluster_settings(stack, tmp_path, **settings_extra)
    initialize(settings, timeout=120)
    names = channel_names(CHANNELS)
    start_ms = int(time.time() * 1000)
    lines = [
        line
        for index in range(CHANNELS)
        for _offset, line in simulate_channel(
            index, CHANNELS, rate, seed, duration_s=duration_s, start_ms=start_ms
        )
    ]
    # (the simulated CLEARMSG/CLEARCHAT lines too: the processor joins them with the chat)
    messages, events = expected_records(lines)
    records, emote_names, logins = records_of(messages, events)
    truth = ground_truth(
        records,
        top_capacity=settings.top_chatters_capacity,
        emote_names=emote_names,
        logins=logins,
    )
    chatpulse = str(VENV_BIN / "chatpulse")
    processor = ProcessorProcess(settings, tmp_path / "state", tmp_path / "processor.log")
    processor.start()
    fake_port, metrics_port = free_port(), free_port()
    fake = _start(
        [
            chatpulse,
            "fake-twitch",
            "--simulate",
            *("--host", "127.0.0.1", "--port", str(fake_port)),
            *("--channels", str(CHANNELS), "--rate", f"{rate:g}", "--seed", str(seed)),
            *("--duration", f"{duration_s:g}", "--start-ms", str(start_ms)),
        ],
        dict(os.environ),
        tmp_path / "fake-twitch.log",
    )
    env = {
        **os.environ,
        **settings.as_environment(),
        "CHATPULSE_TWITCH_IRC_URL": f"irc://127.0.0.1:{fake_port}",
        "CHATPULSE_CHANNELS": ",".join(names),
        "CHATPULSE_INGEST_METRICS_PORT": str(metrics_port),
    }
    ingest = None
    try:
        with running_api(settings) as api:
            # The stream starts when the ingest joins: only once the processor consumes, so
            # that the whole stream flows through a running pipeline.
            _wait_consuming(settings, processor)
            ingest = _start([chatpulse, "ingest"], env, tmp_path / "ingest.log")
            yield Pipeline(settings, truth, processor, ingest, api, metrics_port, tmp_path)
        assert _stop(ingest) == 0, (tmp_path / "ingest.log").read_text()[-3000:]
        assert not list(settings.spill_dir.glob("*.spill"))
    finally:
        for proc in (ingest, fake):
            if proc is not None:
                _stop(proc)
        processor.stop()


def _wait_consuming(settings: Settings, processor: ProcessorProcess) -> None:
    """Until the processor's consumer group is stable with a member (partitions assigned)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})

    def consuming() -> bool:
        assert processor.alive(), processor.log.read_text()[-3000:]
        (future,) = admin.describe_consumer_groups([settings.processor_group]).values()
        group = future.result(30)
        return group.state == ConsumerGroupState.STABLE and bool(group.members)

    _wait(consuming, 300, "processor consuming")


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``check`` every 0.2 s; returns how long it took."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout_s, f"no {what} within {timeout_s:.0f}s"
        time.sleep(0.2)
    return time.monotonic() - began


def _report(what: str, **figures: float) -> None:
    print(f"\n[{what}] " + ", ".join(f"{k}={v:.1f}" for k, v in figures.items()), flush=True)


def test_a_killed_leader_broker_loses_and_repeats_nothing_end_to_end(
    cluster_stack: Stack, tmp_path: Path
) -> None:
    with _pipeline(cluster_stack, tmp_path, rate=3_000, duration_s=45, seed=31) as pipe:
        assert pipe.total >= 100_000
        pipe.wait_flowing()
        channel = pipe.busiest_channel()
        pid = pipe.processor_pid
        # Of the brokers leading the most partitions, the processor's group coordinator when
        # it is one (with 6 partitions on 3 brokers, as a rule): the hardest case, in which
        # librdkafka's send_offsets_to_transaction blocks for good and the processor's commit
        # watchdog restarts it (chatpulse.processor.watchdog).
        coordinator = _group_coordinator(pipe.settings)
        victim = _busiest_leader(pipe.settings, prefer=coordinator)
        killed = time.monotonic()
        assert cluster_stack.kill(f"kafka-{victim}")
        # A new leader for each of its partitions once the controller fences it.
        others = {1, 2, 3} - {victim}
        elected_s = _wait(lambda: set(_leaders(pipe.settings)) <= others, 60, "new leaders")
        pipe.watch(killed, killed + DOWN_S, channel=channel)
        lines = [s.lines for s in pipe.samples]
        assert lines[-1] > lines[0]  # chat still streamed in: the kill was mid-stream
        # Started again 30 s after the kill; the checks go on while its JVM starts.
        broker = cluster_stack.server(f"kafka-{victim}")
        assert broker.start()
        done_s = pipe.wait_all_counted() - killed
        pipe.assert_api_exact()
        assert_exact(pipe.settings, pipe.truth, timeout_s=120, procs=(pipe.processor,))
        # The same process all along. When the killed broker was its group or transaction
        # coordinator, librdkafka can block the commit for good (chatpulse.processor.watchdog):
        # the process then restarts itself in place (exec, same pid) and goes on exactly.
        assert pipe.processor_pid == pid
        assert pipe.processor.alive()
        restarts = (tmp_path / "processor.log").read_text().count("restarting this process")
        spilled = pipe.assert_spill_drained()
        # Producing went on during the outage (partitions moved to the new leaders).
        produced = [s.produced for s in pipe.samples]
        assert produced[-1] > produced[0]
        broker.wait_ready(300)  # the session's cluster stays whole for the next test
        rejoined_s = time.monotonic() - killed
    _report(
        "leader broker killed",
        messages=pipe.total,
        leaders_elected_s=elected_s,
        broker_rejoined_s=rejoined_s,
        all_counted_s=done_s,
        spilled=spilled,
        max_buffered=max(s.buffered for s in pipe.samples),
        processor_restarts=restarts,
        victim_was_group_coordinator=float(victim == coordinator),
    )


def test_a_killed_cassandra_node_stops_nothing_and_the_api_answers_throughout(
    cluster_stack: Stack, tmp_path: Path
) -> None:
    with _pipeline(cluster_stack, tmp_path, rate=3_000, duration_s=45, seed=37) as pipe:
        assert pipe.total >= 100_000
        pipe.wait_flowing()
        channel = pipe.busiest_channel()
        # a dashboard already reads the channel: the API holds a copy of its summary to answer
        # from while a read waits for the dead replica (a key never read before has none: its
        # first read in the seconds before gossip convicts the node can be a 503, retriable)
        assert pipe.api.get(f"/api/v1/channels/{channel}").status_code == 200
        pid = pipe.processor_pid
        victim = "cassandra-3"
        killed = time.monotonic()
        assert cluster_stack.kill(victim)
        pipe.watch(killed, killed + DOWN_S, channel=channel)
        # LOCAL_QUORUM needs 2 of the 3 copies: every API call was answered (a read that waited
        # for the dead replica answered from a copy at most CHATPULSE_API_STALE_IF_ERROR_S
        # old), and the processor wrote on (the API's count rose while the node was down).
        failed = [(s.at, s.api_status, s.api_problem) for s in pipe.samples if s.api_status != 200]
        assert failed == []
        counted = [s.counted for s in pipe.samples]
        assert counted[-1] > counted[0]
        node = cluster_stack.server(victim)
        assert node.start()  # 30 s after the kill; the checks go on while it starts
        done_s = pipe.wait_all_counted(always_answered=True) - killed
        pipe.assert_api_exact()
        assert_exact(pipe.settings, pipe.truth, timeout_s=120, procs=(pipe.processor,))
        assert pipe.processor_pid == pid
        assert pipe.processor.alive()
        spilled = pipe.assert_spill_drained()
        node.wait_ready(300)  # the session's cluster stays whole for the next test
        rejoined_s = time.monotonic() - killed
    _report(
        "Cassandra node killed",
        messages=pipe.total,
        samples=len(pipe.samples),
        counted_while_down=counted[-1] - counted[0],
        node_rejoined_s=rejoined_s,
        all_counted_s=done_s,
        spilled=spilled,
    )


def test_two_brokers_down_hold_the_chat_and_lose_nothing_once_one_returns(
    cluster_stack: Stack, tmp_path: Path
) -> None:
    with _pipeline(cluster_stack, tmp_path, rate=1_000, duration_s=45, seed=41) as pipe:
        pipe.wait_flowing()
        channel = pipe.busiest_channel()
        pid = pipe.processor_pid
        # the busiest leader and one other; the first comes back after 30 s, the second later
        second = _busiest_leader(pipe.settings)
        first = min({1, 2, 3} - {second})
        killed = time.monotonic()
        assert cluster_stack.kill(f"kafka-{first}")
        assert cluster_stack.kill(f"kafka-{second}")
        # One broker of three: no controller quorum, min.insync.replicas=2 not met; acks=all
        # writes cannot commit. The ingest reads chat on and holds it (memory, then spill).
        pipe.watch(killed, killed + DOWN_S, channel=channel)
        lines = [s.lines for s in pipe.samples]
        assert lines[-1] > lines[0]
        held = max(s.buffered for s in pipe.samples)
        spill_bytes = max(s.spill_bytes for s in pipe.samples)
        assert held > 0 or spill_bytes > 0
        broker = cluster_stack.server(f"kafka-{first}")
        assert broker.start()  # 30 s after the kill: two of three again
        done_s = pipe.wait_all_counted(timeout_s=420) - killed
        pipe.assert_api_exact()
        assert_exact(pipe.settings, pipe.truth, timeout_s=120, procs=(pipe.processor,))
        assert pipe.processor_pid == pid
        assert pipe.processor.alive()
        spilled = pipe.assert_spill_drained()
        assert cluster_stack.server(f"kafka-{second}").start()
        for number in (first, second):  # the session's cluster stays whole
            cluster_stack.server(f"kafka-{number}").wait_ready(300)
        rejoined_s = time.monotonic() - killed
    _report(
        "two brokers killed",
        messages=pipe.total,
        max_held_in_memory=held,
        max_spill_bytes=spill_bytes,
        spilled=spilled,
        all_counted_s=done_s,
        brokers_rejoined_s=rejoined_s,
    )
