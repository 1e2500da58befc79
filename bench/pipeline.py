"""Benchmark of the whole pipeline: fake Twitch -> ingest -> Kafka -> processor -> Cassandra
-> API, on one node and on a 3 + 3 cluster.

Per stack, with ``chatpulse ingest``, ``process`` and ``api`` running as the real commands
(subprocesses configured by CHATPULSE_* variables, as ``chatpulse up`` runs them):
  1. baseline: freshness at a light offered rate (``--baseline-rate``);
  2. ramp: the offered rate rises step by step (``--start-rate``, times ``--factor``) until a
     step falls behind: the fake server could not deliver 85% of the offered lines, or the
     processor's lag grew by more than 2 s of offsets over the step, or a probe sent in the
     step's second half was not visible through the API within the bound (``--max-freshness``
     seconds, or 3 x the baseline's p50 on a loaded machine). The sustained rate is the
     delivered rate of the last step that kept up;
  3. freshness at 50% of the sustained rate: p50 and p99 over ``--fresh-seconds``;
  4. recovery: at that rate, SIGKILL the processor and start it again at once (what
     ``chatpulse up``'s supervisor does); the time from the kill until the processor's group
     has committed again and its lag is under one checkpoint: (rate + the ingest's markers)
     x commit interval, or the largest lag seen in 3. when that is larger (a loaded machine
     checkpoints less often).

Freshness: the fake server's probe channel gets one message every 0.2 s; a probe's freshness
is the time from its send to the first API answer (``GET /api/v1/channels/benchprobe``,
polled every 50 ms) whose ``total_messages`` counts it.

One node: the shared test stack (Kafka 127.0.0.1:19092, Cassandra 127.0.0.1:19042). 3 + 3:
a stack of its own (free ports, temporary data dir), started under the machine's cluster
lock (/tmp/chatpulse-cluster.lock, one cluster at a time) and stopped after.

    .venv/bin/python bench/pipeline.py [--quick] [--nodes 1|3|both] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from _machine import machine_state
from _pipeline_chat import PROBE_CHANNEL, ChatProcess
from chatpulse.kafka_admin import admin_client, delete_topics
from chatpulse.logs import configure_logging
from chatpulse.ports import free_ports, is_port_free
from chatpulse.provision import initialize
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import Stack
from chatpulse.storage import connect
from chatpulse.topics import Topics

CLUSTER_LOCK = Path("/tmp/chatpulse-cluster.lock")  # the machine-wide lock the tests take


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


class ProbeWatch:
    """Polls the API for the probe channel's total; ``seen[k]``: when probe k became visible."""

    def __init__(self, api_url: str, chat: ChatProcess) -> None:
        self.url = f"{api_url}/api/v1/channels/{PROBE_CHANNEL}"
        self.chat = chat
        self.seen: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = client.get(self.url)
                    if answer.status_code == 200:
                        total = int(answer.json()["total_messages"])
                        now = time.monotonic()
                        while len(self.seen) < total:
                            self.seen.append(now)
                self._stop.wait(0.05)

    def freshness(self, since: float, until: float) -> tuple[list[float], int]:
        """Freshness (s) of the probes sent in [since, until] that are visible, and how many
        of them are not (yet)."""
        found, missing, number = [], 0, 0
        while (due := self.chat.probe_due(number)) is not None and due <= until:
            if due >= since:
                if number < len(self.seen):
                    found.append(self.seen[number] - due)
                else:
                    missing += 1
            number += 1
        return found, missing


def group_lag(admin: AdminClient, settings: Settings) -> tuple[int, int]:
    """(committed offsets summed, lag summed) of the processor's group on the messages topic."""
    topic = Topics.from_settings(settings).messages
    partitions = [TopicPartition(topic, p) for p in range(settings.messages_partitions)]
    request = [ConsumerGroupTopicPartitions(settings.processor_group, partitions)]
    futures = admin.list_consumer_group_offsets(request, request_timeout=10)
    committed = {
        tp.partition: max(tp.offset, 0)
        for tp in futures[settings.processor_group].result().topic_partitions
    }
    ends = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=10)
    high = {tp.partition: future.result().offset for tp, future in ends.items()}
    return sum(committed.values()), sum(high[p] - committed.get(p, 0) for p in high)


@dataclass
class Pipeline:
    """ingest, process and api as child processes, the fake server, and the probe watch."""

    settings: Settings
    chat: ChatProcess
    logs: Path
    api_port: int
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "chatpulse", name],
            env={
                **os.environ,
                **self.settings.as_environment(),
                "CHATPULSE_LOG_LEVEL": "WARNING",
                **(env or {}),
            },
            stdout=log,
            stderr=log,
        )
        log.close()

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited ({child.returncode}); see {self.logs}")


@contextlib.contextmanager
def pipeline(settings: Settings, channels: int, rate: float, logs: Path) -> Iterator[Pipeline]:
    chat = ChatProcess(channels, rate)
    url = chat.start()
    (api_port,) = free_ports(1)
    running = Pipeline(settings, chat, logs, api_port)
    try:
        running.start(
            "ingest",
            {"CHATPULSE_TWITCH_IRC_URL": url, "CHATPULSE_CHANNELS": ",".join(chat.names)},
        )
        running.start("process")
        running.start("api", {"CHATPULSE_API_PORT": str(api_port)})
        yield running
    finally:
        running.stop()
        chat.stop()


def wait_until_flowing(run: Pipeline, watch: ProbeWatch, timeout: float) -> float:
    """Seconds until every channel is joined and a probe is visible through the API."""
    started = time.monotonic()
    while run.chat.joined < len(run.chat.names) or not watch.seen:
        run.check_alive()
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no probe through the pipeline within {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started


def hold(
    run: Pipeline, rate: float, seconds: float, sample: Callable[[], None] | None = None
) -> tuple[float, float, float]:
    """Offer ``rate`` for ``seconds`` (calling ``sample`` every 0.5 s); (start, end, delivered
    lines/s without probes)."""
    run.chat.rate = rate
    sent, start = run.chat.sent, time.monotonic()
    while time.monotonic() - start < seconds:
        run.check_alive()
        if sample is not None:
            sample()
        time.sleep(0.2 if sample is None else 0.5)
    end = time.monotonic()
    probes = (end - start) / 0.2
    return start, end, max(run.chat.sent - sent - probes, 0) / (end - start)


def settle(watch: ProbeWatch, max_freshness: float, timeout: float) -> None:
    """Wait until the newest probes are fresh again (a backlog drained)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        found, missing = watch.freshness(now - 2 - max_freshness, now - max_freshness)
        if found and not missing and max(found) <= max_freshness:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the pipeline did not catch up within {timeout:.0f}s")


def measure(
    args: argparse.Namespace, settings: Settings, label: str, logs: Path
) -> list[dict[str, Any]]:
    """Every figure of one stack (baseline, ramp, freshness, recovery)."""
    figures: list[dict[str, Any]] = []

    def figure(name: str, value: float, unit: str, baseline: bool = False) -> None:
        figures.append(
            {
                "name": f"{label} {name}",
                "value": round(value, 3),
                "unit": unit,
                "baseline": baseline,
            }
        )
        shown = f"{value:,.2f}" if unit == "s" else f"{value:,.0f}"
        print(f"{label} {name}: {shown} {unit}", flush=True)

    initialize(settings, timeout=180)
    admin = admin_client(settings.kafka_bootstrap_servers)
    with pipeline(settings, args.channels, args.baseline_rate, logs) as run:
        watch = ProbeWatch(f"http://127.0.0.1:{run.api_port}", run.chat)
        watch.start()
        try:
            took = wait_until_flowing(run, watch, 180)
            print(
                f"  pipeline flowing {took:.1f}s after start (every channel joined, a probe seen)"
            )
            start, end, delivered = hold(run, args.baseline_rate, args.fresh_seconds)
            time.sleep(args.max_freshness)
            found, missing = watch.freshness(start, end)
            if not found:
                raise RuntimeError("no probe came through at the baseline rate")
            figure(
                f"baseline freshness p50 at {args.baseline_rate:.0f} msg/s",
                statistics.median(found) * 1000,
                "ms",
                True,
            )

            # Probes must stay within this; a loaded machine raises the floor (the baseline).
            bound = max(args.max_freshness, 3 * statistics.median(found))
            sustained, rate = 0.0, args.start_rate
            while True:
                run.chat.rate = rate
                time.sleep(1)  # quiet channels take up the new rate at their next message
                _, lag_before = group_lag(admin, settings)
                start, end, delivered = hold(run, rate, args.step_seconds)
                _, lag_after = group_lag(admin, settings)
                # wait for the step's late probes, still offering the same rate
                while time.monotonic() < end + bound:
                    run.check_alive()
                    time.sleep(0.2)
                found, missing = watch.freshness(start + (end - start) / 2, end)
                worst = max(found) if found else float("inf")
                # Kept up: the chat source delivered the rate, the processor's backlog grew by
                # less than 2 s of offsets (checkpoints make the lag jump; the ingest's
                # transaction markers, up to one per partition per 100 ms commit, are offsets
                # too), and the probes of the step's second half were visible within the bound.
                markers = settings.messages_partitions * 10
                kept_up = (
                    delivered >= 0.85 * rate
                    and lag_after - lag_before <= 2 * (rate + markers)
                    and not missing
                    and worst <= bound
                )
                median = f"{statistics.median(found):.2f}s" if found else "-"
                print(
                    f"  step {rate:,.0f} msg/s offered, {delivered:,.0f} delivered; processor "
                    f"lag {lag_before:,} -> {lag_after:,}; probes p50 {median}, worst "
                    f"{worst:.2f}s (bound {bound:.1f}s), {missing} not visible "
                    f"-> {'kept up' if kept_up else 'fell behind'}",
                    flush=True,
                )
                if not kept_up:
                    break
                sustained = delivered
                rate *= args.factor
            if sustained == 0:
                raise RuntimeError("not even the first step kept up")
            figure("sustained rate", sustained, "msg/s")

            half = sustained / 2
            run.chat.rate = half
            settle(watch, bound, 300)
            lags: list[int] = []
            start, end, _ = hold(
                run, half, args.fresh_seconds, lambda: lags.append(group_lag(admin, settings)[1])
            )
            time.sleep(bound)
            found, missing = watch.freshness(start, end)
            if not found:
                raise RuntimeError(f"no probe came through at {half:,.0f} msg/s")
            figure(
                f"freshness p50 at 50% ({half:,.0f} msg/s)", statistics.median(found) * 1000, "ms"
            )
            figure(
                f"freshness p99 at 50% ({half:,.0f} msg/s)", percentile(found, 0.99) * 1000, "ms"
            )
            if missing:
                print(f"  {missing} probes not visible within {bound:.1f}s")

            # Recovered: the new processor committed, and its lag is back under one checkpoint
            # of offsets (messages and the ingest's markers in a commit interval) or, on a
            # loaded machine whose checkpoints take longer, under the largest lag seen while
            # it ran steadily at this rate.
            committed_before, _ = group_lag(admin, settings)
            one_checkpoint = max(
                [(half + settings.messages_partitions * 10) * settings.commit_interval_s, *lags]
            )
            killed = time.monotonic()
            run.children["process"].send_signal(signal.SIGKILL)
            run.children["process"].wait(10)
            run.start("process")
            recovered = first_commit = None
            while time.monotonic() - killed < 300:
                run.check_alive()
                committed, lag = group_lag(admin, settings)
                if committed > committed_before and first_commit is None:
                    first_commit = time.monotonic() - killed
                    print(
                        f"  restarted processor's first commit: {first_commit:.1f}s after the kill"
                    )
                if first_commit is not None and lag <= one_checkpoint:
                    recovered = time.monotonic() - killed
                    break
                time.sleep(0.25)
            if recovered is None:
                raise RuntimeError("the processor did not recover within 300 s")
            figure(
                f"recovery after processor SIGKILL (lag back under {one_checkpoint:,.0f})",
                recovered,
                "s",
            )
        finally:
            watch.stop()
    return figures


def drop(settings: Settings) -> None:
    admin = admin_client(settings.kafka_bootstrap_servers)
    delete_topics(
        admin, [t for t in admin.list_topics(timeout=10).topics if settings.topic_prefix in t]
    )
    cluster, session = connect(settings)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra_keyspace}", timeout=120)
    finally:
        cluster.shutdown()


def bench_settings(root: Path, **overrides: Any) -> Settings:
    token = uuid.uuid4().hex[:8]
    return load_settings(
        topic_prefix=f"pipe{token}-",
        processor_group=f"pipe{token}-processor",
        cassandra_keyspace=f"pipe_{token}",
        state_dir=root / "state",
        spill_dir=root / "spill",
        ingest_metrics_port=0,
        processor_metrics_port=0,
        join_rate=200,  # the fake server does not limit JOINs
        **overrides,
    )


def free_run(length: int, hosts: tuple[str, ...]) -> int:
    """The first of ``length`` consecutive ports free on every host (below the ephemeral range)."""
    while True:
        first = random.randrange(20000, 31000 - length)
        if all(is_port_free(first + i, host) for i in range(length) for host in hosts):
            return first


@contextlib.contextmanager
def cluster_stack(root: Path) -> Iterator[tuple[Stack, float]]:
    """A 3 + 3 stack of this run, under the machine's cluster lock, and the seconds its
    ``up`` took; stopped after."""
    with CLUSTER_LOCK.open("a") as lock:
        print(f"  waiting for {CLUSTER_LOCK} (one cluster on the machine at a time)", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        addresses = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
        # Kafka: clients on P..P+2, controllers on P+3..P+5; Cassandra: CQL and storage ports.
        stack = Stack(
            root / "cluster",
            kafka_port=free_run(6, ("127.0.0.1",)),
            cassandra_port=free_run(2, addresses),
            kafka_nodes=3,
            cassandra_nodes=3,
        )
        try:
            started = time.monotonic()
            stack.up(timeout=600)
            yield stack, time.monotonic() - started
        finally:
            stack.down(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short steps (for development)")
    parser.add_argument("--nodes", choices=("1", "3", "both"), default="both")
    parser.add_argument("--channels", type=int, default=40)
    parser.add_argument("--baseline-rate", type=float, default=20.0)
    parser.add_argument("--start-rate", type=float, default=50.0)
    parser.add_argument("--factor", type=float, default=None, help="rate growth per step")
    parser.add_argument("--step-seconds", type=float, default=None)
    parser.add_argument("--fresh-seconds", type=float, default=None)
    parser.add_argument("--max-freshness", type=float, default=5.0, help="seconds")
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:19092", help="one node")
    parser.add_argument("--cassandra-port", type=int, default=19042, help="one node")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    args.factor = args.factor or (2.0 if args.quick else 1.5)
    args.step_seconds = args.step_seconds or (10.0 if args.quick else 20.0)
    args.fresh_seconds = args.fresh_seconds or (10.0 if args.quick else 30.0)
    configure_logging("WARNING")
    print(machine_state())
    print(f"command: {' '.join(sys.argv)}", flush=True)
    figures: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="chatpulse-pipeline-"))
    if args.nodes in ("1", "both"):
        settings = bench_settings(
            root / "one",
            kafka_bootstrap_servers=args.bootstrap_servers,
            cassandra_port=args.cassandra_port,
        )
        (root / "one").mkdir(parents=True)
        try:
            figures += measure(args, settings, "one node", root / "one")
        finally:
            drop(settings)
        print(machine_state(), flush=True)
    if args.nodes in ("3", "both"):
        (root / "three").mkdir(parents=True)
        with cluster_stack(root / "three") as (stack, took):
            figures.append({"name": "cluster 3+3 stack up", "value": round(took, 1), "unit": "s"})
            print(f"cluster 3+3 stack up: {took:.1f} s", flush=True)
            settings = bench_settings(
                root / "three",
                kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
                cassandra_contact_points=",".join(stack.cassandra_contact_points),
                cassandra_port=stack.cassandra.port,
                topic_replication_factor=3,
                cassandra_replication_factor=3,
            )
            figures += measure(args, settings, "cluster 3+3", root / "three")
        print(machine_state(), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"figures": figures, "load_1_5_15": os.getloadavg()}, indent=2)
        )
    print(f"logs of the children in {root}")


if __name__ == "__main__":
    main()
