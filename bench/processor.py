"""Benchmark of ``chatpulse process``: throughput over a pre-filled topic, and freshness.

In one run, over the same pre-filled topic (Zipf-skewed channels):
  1. ceiling: a plain confluent-kafka consume loop that only decodes and counts per channel;
  2. the processor, exactly-once, all aggregations, Cassandra sink on;
  3. the same with at-least-once;
  4. exactly-once without user history and search words, and without chatter sessions (what
     those features cost);
then freshness: the processor (``chatpulse process`` subprocess) under a steady produce rate,
time from producing a probe message to its channel's total being visible in Cassandra.

Defaults use the shared test stack (Kafka 127.0.0.1:19092, Cassandra 127.0.0.1:19042):
    .venv/bin/python bench/processor.py --messages 1000000
"""

import argparse
import itertools
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from pyinstrument import Profiler

from _machine import machine_state
from _secured import secured_settings
from chatpulse.kafka_admin import admin_client, delete_topics
from chatpulse.logs import configure_logging
from chatpulse.models import decode_chat_message, encode
from chatpulse.ports import free_port
from chatpulse.processor.app import build_processor
from chatpulse.provision import initialize
from chatpulse.settings import Settings, load_settings
from chatpulse.storage import connect
from chatpulse.topics import Topics

EMOTES = [("25", "Kappa"), ("88", "PogChamp"), ("1902", "Keepo"), ("354", "4Head")]


def zipf_channels(count: int, skew: float) -> tuple[list[str], list[float]]:
    names = [f"bench{i:04d}" for i in range(count)]
    return names, [1.0 / (rank + 1) ** skew for rank in range(count)]


def message_value(channel: str, mid: str, user: int, sent_at: int, rng: random.Random) -> bytes:
    emote_id, name = rng.choice(EMOTES)
    with_emote = rng.random() < 0.3
    text = f"{name} hello there" if with_emote else "hello there chat"
    emotes = [{"id": emote_id, "start": 0, "end": len(name) - 1}] if with_emote else []
    return encode(
        {
            "v": 1,
            "id": mid,
            "channel": channel,
            "channel_id": "1",
            "user_id": str(user),
            "user_login": f"u{user}",
            "display_name": f"U{user}",
            "text": text,
            "is_action": False,
            "sent_at": sent_at,
            "emotes": emotes,
            "bits": 0,
            "badges": {"subscriber": "12"},
        }
    )


def prefill(settings: Settings, messages: int, channels: int, skew: float) -> float:
    rng = random.Random(1)
    names, weights = zipf_channels(channels, skew)
    picks = rng.choices(names, weights, k=messages)
    producer = Producer(
        {
            **settings.kafka_client_config(),
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
        }
    )
    topic = Topics.from_settings(settings).messages
    start_ts = int(time.time() * 1000) - 3_600_000
    started = time.perf_counter()
    for i, channel in enumerate(picks):
        sent_at = start_ts + i * 3  # ~333 msg/s of event time overall: ~1h of chat per 1M
        value = message_value(channel, f"m{i}", rng.randint(1, 200_000), sent_at, rng)
        while True:
            try:
                producer.produce(topic, key=channel.encode(), value=value, timestamp=sent_at)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def ceiling(settings: Settings, messages: int) -> float:
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.topic_prefix}ceiling",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([Topics.from_settings(settings).messages])
    counts: Counter[str] = Counter()
    seen = 0
    started = None
    while seen < messages:
        batch = consumer.consume(1000, 1.0)
        for msg in batch:
            if msg.error():
                continue
            if started is None:
                started = time.perf_counter()
            counts[decode_chat_message(msg.value()).channel] += 1
            seen += 1
    consumer.close()
    assert started is not None
    return messages / (time.perf_counter() - started)


def run_processor(
    settings: Settings, messages: int, profile: Path | None, *, cassandra: bool = True
) -> float:
    processor = build_processor(settings, cassandra=cassandra)
    consumed = processor.metrics.consumed
    marks: dict[str, float] = {}

    def watch() -> None:
        while "end" not in marks:
            value = consumed.value
            now = time.perf_counter()
            if value > 0 and "start" not in marks:
                marks["start"] = now
            if value >= messages:
                marks["end"] = now
                processor.app.stop()
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    profiler = None
    if profile is not None:
        profiler = Profiler(interval=0.002)
        profiler.start()
    cpu_started = time.process_time()
    try:
        processor.run()
    finally:
        if profiler is not None:
            profiler.stop()
            profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
            print(f"  profile written to {profile}")
    wall = marks["end"] - marks["start"]
    print_breakdown(processor.metrics.registry, wall, time.process_time() - cpu_started, messages)
    return messages / wall


def print_breakdown(registry: Any, wall: float, cpu: float, messages: int) -> None:
    """Where a run's time went: the process's CPU (all threads), checkpoints, sink waits."""

    def total(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    checkpoints = total("chatpulse_processor_checkpoint_seconds_sum")
    count = int(total("chatpulse_processor_checkpoint_seconds_count"))
    sinks = total("chatpulse_processor_sink_write_seconds_sum")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  wall {wall:.1f}s; process CPU {cpu:.1f}s ({cpu / messages * 1e6:.0f} us/msg); "
        f"{count} checkpoints took {checkpoints:.1f}s, of which Cassandra sink flushes "
        f"{sinks:.1f}s; peak RSS of this process so far {peak_mib:,.0f} MiB"
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scrape(port: int) -> dict[str, float]:
    """The processor's Prometheus samples without labels (name -> value)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def freshness(
    settings: Settings, rate: int, seconds: float, channels: int, skew: float
) -> list[float]:
    """Produce at ``rate`` msg/s to a running processor; probes measure produce->Cassandra.

    The generator works in 10 ms ticks (channels drawn in bulk, probes checked every 50 ms
    with concurrent queries) so that it takes little of the CPU the processor needs; it
    prints its own and the processor's CPU use, and the processor's checkpoint times.
    """
    metrics_port = free_port()
    env = {**os.environ, **settings.as_environment()}
    env.update(
        {
            "CHATPULSE_PROCESSOR_GROUP": f"{settings.topic_prefix}fresh",
            "CHATPULSE_STATE_DIR": str(settings.state_dir / "fresh"),
            "CHATPULSE_COMMIT_INTERVAL_S": str(settings.commit_interval_s),
            "CHATPULSE_PROCESSOR_METRICS_PORT": str(metrics_port),
            "CHATPULSE_LOG_LEVEL": "WARNING",
        }
    )
    log = open(settings.state_dir / "fresh.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "chatpulse"), "process"], env=env, stdout=log, stderr=log
    )
    cluster, session = connect(settings)
    lookup = session.prepare(
        f"SELECT total_messages FROM {settings.cassandra_keyspace}.channel_totals WHERE channel = ?"
    )
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    topic = Topics.from_settings(settings).messages
    rng = random.Random(2)
    names, weights = zipf_channels(channels, skew)
    cumulative = list(itertools.accumulate(weights))
    probes: dict[str, float] = {}
    latencies: list[float] = []

    def check_probes() -> None:
        pending = [
            (probe, at, session.execute_async(lookup, (probe,))) for probe, at in probes.items()
        ]
        for probe, at, future in pending:
            if future.result().one():
                latencies.append(time.monotonic() - at)
                del probes[probe]

    try:
        # wait until the processor is up: a first probe must come through
        warm = f"warm{uuid.uuid4().hex[:8]}"
        producer.produce(
            topic,
            key=warm.encode(),
            value=message_value(warm, warm, 1, int(time.time() * 1000), rng),
        )
        producer.flush(10)
        deadline = time.monotonic() + 120
        while not session.execute(lookup, (warm,)).one():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the processor did not start; see fresh.log")
            time.sleep(0.2)
        before = _scrape(metrics_port)
        cpu_started, own_started = _cpu_seconds(proc.pid), time.process_time()
        started = time.monotonic()
        sent = 0
        next_probe = next_check = started
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate)
            if due > sent:
                for channel in rng.choices(names, cum_weights=cumulative, k=due - sent):
                    value = message_value(
                        channel,
                        uuid.uuid4().hex,
                        rng.randint(1, 200_000),
                        int(time.time() * 1000),
                        rng,
                    )
                    producer.produce(topic, key=channel.encode(), value=value)
                sent = due
            if now >= next_probe:
                probe = f"probe{uuid.uuid4().hex[:12]}"
                producer.produce(
                    topic,
                    key=probe.encode(),
                    value=message_value(probe, probe, 1, int(time.time() * 1000), rng),
                )
                probes[probe] = time.monotonic()
                next_probe = now + 0.2
            producer.poll(0)
            if now >= next_check:
                check_probes()
                next_check = now + 0.05
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        processor_cpu = _cpu_seconds(proc.pid) - cpu_started
        own_cpu = time.process_time() - own_started
        after = _scrape(metrics_port)
        producer.flush(10)
        deadline = time.monotonic() + 30
        while probes and time.monotonic() < deadline:
            check_probes()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(60)
        cluster.shutdown()
        log.close()
    if probes:
        print(f"  {len(probes)} probes never became visible")

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    checkpoints = max(delta("chatpulse_processor_checkpoint_seconds_count"), 1)
    each_ms = delta("chatpulse_processor_checkpoint_seconds_sum") / checkpoints * 1000
    sink_ms = delta("chatpulse_processor_sink_write_seconds_sum") / checkpoints * 1000
    print(
        f"  {sent / elapsed:,.0f} msg/s produced; processor CPU {processor_cpu / elapsed:.0%} of "
        f"a core, load generator {own_cpu / elapsed:.0%}; {checkpoints:.0f} checkpoints, "
        f"{each_ms:.0f} ms each on average, of which Cassandra sink {sink_ms:.0f} ms"
    )
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf skew of channel popularity")
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:19092")
    parser.add_argument("--cassandra-port", type=int, default=19042)
    parser.add_argument(
        "--commit-interval", type=float, default=None, help="default: the setting's default"
    )
    parser.add_argument("--fresh-rate", type=int, default=5_000, help="msg/s for freshness")
    parser.add_argument("--fresh-seconds", type=float, default=30.0)
    parser.add_argument("--skip-fresh", action="store_true")
    parser.add_argument(
        "--secure-stack",
        type=Path,
        help="data dir of a secured stack (`chatpulse stack up --secure`): every client "
        "connects as its admin over SASL_SSL (TLS + SCRAM-SHA-512), to measure their cost",
    )
    parser.add_argument("--skip-alo", action="store_true", help="skip the at-least-once run")
    parser.add_argument(
        "--no-sink-run",
        action="store_true",
        help="also run exactly-once without the Cassandra sink (isolates the sink's cost)",
    )
    parser.add_argument(
        "--skip-feature-cost",
        action="store_true",
        help="skip the exactly-once runs without user history and search words (CHATPULSE_USER_"
        "HISTORY=false, CHATPULSE_SEARCH_INDEX=false) and without chatter sessions "
        "(CHATPULSE_SESSION_GAP=off), which show what those features cost",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="profile an extra exactly-once run with pyinstrument into this file",
    )
    args = parser.parse_args()
    configure_logging("WARNING")

    token = uuid.uuid4().hex[:8]
    state = Path(tempfile.mkdtemp(prefix="chatpulse-bench-"))
    overrides: dict[str, Any] = {}
    if args.commit_interval is not None:
        overrides["commit_interval_s"] = args.commit_interval
    if args.secure_stack is not None:
        overrides |= secured_settings(
            args.secure_stack, args.bootstrap_servers, args.cassandra_port
        )
    base = load_settings(
        kafka_bootstrap_servers=args.bootstrap_servers,
        topic_prefix=f"bench{token}-",
        cassandra_port=args.cassandra_port,
        cassandra_keyspace=f"bench_{token}",
        state_dir=state,
        processor_metrics_port=0,
        messages_partitions=6,
        **overrides,
    )
    print(machine_state())
    print(f"command: {' '.join(sys.argv)}")
    initialize(base)
    try:
        took = prefill(base, args.messages, args.channels, args.zipf)
        print(
            f"prefill: {args.messages} messages over {args.channels} channels "
            f"(Zipf {args.zipf}) in {took:.1f}s"
        )
        rate = ceiling(base, args.messages)
        print(f"ceiling (confluent-kafka consume + msgspec decode + count): {rate:,.0f} msg/s")
        for guarantee in ("exactly-once", "at-least-once"):
            if guarantee == "at-least-once" and args.skip_alo:
                continue
            settings = base.model_copy(
                update={
                    "processing_guarantee": guarantee,
                    "processor_group": f"{base.topic_prefix}{guarantee}",
                    "state_dir": state / guarantee,
                }
            )
            rate = run_processor(settings, args.messages, None)
            print(
                f"processor {guarantee} (dedup, 1m/10m/1h windows, totals, Cassandra sink): "
                f"{rate:,.0f} msg/s"
            )
        if args.no_sink_run:
            settings = base.model_copy(
                update={"processor_group": f"{base.topic_prefix}nosink", "state_dir": state / "ns"}
            )
            rate = run_processor(settings, args.messages, None, cassandra=False)
            print(f"processor exactly-once WITHOUT the Cassandra sink: {rate:,.0f} msg/s")
        if not args.skip_feature_cost:
            settings = base.model_copy(
                update={
                    "processor_group": f"{base.topic_prefix}lean",
                    "state_dir": state / "lean",
                    "user_history": False,
                    "search_index": False,
                }
            )
            rate = run_processor(settings, args.messages, None)
            print(
                f"processor exactly-once without user history and search words: {rate:,.0f} msg/s"
            )
            settings = base.model_copy(
                update={
                    "processor_group": f"{base.topic_prefix}sessionless",
                    "state_dir": state / "sessionless",
                    "session_gap": "off",
                }
            )
            rate = run_processor(settings, args.messages, None)
            print(f"processor exactly-once without chatter sessions: {rate:,.0f} msg/s")
        if args.profile is not None:
            # a separate run: the profiler's own cost must not distort the numbers above
            settings = base.model_copy(
                update={"processor_group": f"{base.topic_prefix}profiled", "state_dir": state / "p"}
            )
            rate = run_processor(settings, args.messages, args.profile)
            print(f"processor exactly-once under pyinstrument: {rate:,.0f} msg/s")
        if not args.skip_fresh:
            # topics of its own: the processor must not first work through the pre-filled topic
            fresh = base.model_copy(update={"topic_prefix": f"{base.topic_prefix}fresh-"})
            initialize(fresh)
            latencies = sorted(
                freshness(fresh, args.fresh_rate, args.fresh_seconds, args.channels, args.zipf)
            )
            if latencies:
                p50 = statistics.median(latencies)
                p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
                # one figure per line ("label: value unit"), as bench/run_all.py reads them
                where = (
                    f"at {args.fresh_rate} msg/s (exactly-once, commit {base.commit_interval_s}s, "
                    f"{len(latencies)} probes)"
                )
                print(f"freshness p50 {where}: {p50 * 1000:.0f} ms")
                print(f"freshness p99 {where}: {p99 * 1000:.0f} ms")
        print(machine_state())
    finally:
        admin = admin_client(base.kafka_bootstrap_servers, base.kafka_security_config())
        delete_topics(
            admin, [t for t in admin.list_topics(timeout=10).topics if base.topic_prefix in t]
        )
        cluster, session = connect(base)
        session.execute(f"DROP KEYSPACE IF EXISTS {base.cassandra_keyspace}", timeout=120)
        cluster.shutdown()


if __name__ == "__main__":
    main()
