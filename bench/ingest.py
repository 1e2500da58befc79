"""Benchmark: end-to-end fake-twitch -> ingest -> Kafka messages/s, beside the raw produce rate.

A fake-twitch server in a separate process serves N simulated chat lines as fast as the client
reads; the ingest service runs in this process against a real Kafka (the shared test stack by
default) and is timed from the first line received to the last record acknowledged. In the
same run the same records are produced with a bare confluent-kafka Producer of the same
settings (the baseline: what Kafka and librdkafka allow from one Python process), and the
parser's lines/s is measured when bench/parser.py sits beside this file.

Where the CPU goes: the CPU seconds of the ingest process (all its threads, librdkafka's
included), of the fake-twitch process and of the Kafka broker are read from /proc over the
timed window and printed separately. ``--pin`` puts ingest on core 0 and fake-twitch on core 1
(Kafka, shared with other users of the stack, is left alone), so fake-twitch does not take the
ingest's core. The raw baseline runs twice: idempotent, and transactional with a commit every
100 ms like ingest (the cost of exactly once on the Kafka side). ``--processes N`` shards the
channels over N ingest processes, as a deployment scales out (bench/_ingest_shards.py).

    .venv/bin/python bench/ingest.py [--messages N] [--channels C] [--pin] [--profile]
        [--processes N] [--bootstrap-servers HOST:PORT]
"""

import argparse
import asyncio
import importlib.util
import logging
import multiprocessing
import os
import platform
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar

import confluent_kafka
from pyinstrument import Profiler

from _ingest_shards import cpu_seconds, sharded_end_to_end
from _machine import machine_state
from _secured import secured_settings
from chatpulse.fake_twitch.server import FakeTwitchServer
from chatpulse.fake_twitch.simulate import channel_names, simulate
from chatpulse.fake_twitch.source import ReplaySource
from chatpulse.ingest.convert import to_record
from chatpulse.ingest.errors import ConvertError, IrcParseError
from chatpulse.ingest.irc.parser import parse_line
from chatpulse.ingest.kafka_config import producer_config
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.service import IngestService
from chatpulse.kafka_admin import admin_client, delete_topics
from chatpulse.models import ChatMessage, encode
from chatpulse.provision import ensure_topics
from chatpulse.settings import Settings, load_settings
from chatpulse.topics import Topics

SIM_SECONDS = 60.0
T = TypeVar("T")


def versions() -> str:
    return (
        f"python {platform.python_version()}, confluent-kafka {_client_version()}, "
        f"librdkafka {confluent_kafka.libversion()[0]}"
    )


def _client_version() -> str:
    version = confluent_kafka.version()
    return version if isinstance(version, str) else str(version[0])


def simulated_lines(messages: int, channels: int, seed: int) -> list[str]:
    """About ``messages`` simulated lines over ``channels`` channels."""
    return list(simulate(channels, messages / SIM_SECONDS, seed, duration_s=SIM_SECONDS))


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads by kind: Python's own, librdkafka's, others."""
    kinds: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = (
            "librdkafka"
            if name.startswith("rdk:")
            else "python main"
            if task.name == str(os.getpid())
            else "other threads"
        )
        kinds[kind] = kinds.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return kinds


def kafka_pid(port: int) -> int | None:
    """The pid of the chatpulse Kafka listening on ``port`` (read-only: only its CPU is read)."""
    wanted = f"://127.0.0.1:{port},"  # PLAINTEXT or SASL_SSL (a secured stack)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" not in args or not args[-2].endswith(b"server.properties"):
            continue
        try:
            lines = Path(args[-2].decode()).read_text().splitlines()
            if any(line.startswith("listeners=") and wanted in line for line in lines):
                return int(proc.name)
        except OSError:
            continue
    return None


def serve(lines: list[str], pipe: Connection, core: int | None) -> None:
    """Child process: serve ``lines`` as fast as the client reads, until told to stop."""
    if core is not None:
        os.sched_setaffinity(0, {core})

    async def main() -> None:
        async with FakeTwitchServer(ReplaySource(lines), speed=0, batch_lines=1_000) as server:
            pipe.send(server.url)
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)

    asyncio.run(main())


def to_records(lines: list[str], topics: Topics) -> list[tuple[str, bytes, bytes, int]]:
    records = []
    for line in lines:
        try:
            record = to_record(parse_line(line))
        except (IrcParseError, ConvertError):
            continue
        if record is None:
            continue
        topic = topics.messages if isinstance(record, ChatMessage) else topics.events
        records.append((topic, record.channel.encode(), encode(record), record.sent_at))
    return records


def raw_produce_rate(
    settings: Settings, records: list[tuple[str, bytes, bytes, int]], *, transactional: bool
) -> float:
    """Records/s of a bare Producer (ingest's settings) producing and flushing them all.

    Transactional: committed every 100 ms, as ingest does (its ``commit_interval_s``).
    """
    config = producer_config(settings.kafka_bootstrap_servers, settings.ingest_buffer_messages)
    config.update(settings.kafka_security_config())
    if transactional:
        config["transactional.id"] = f"{settings.topic_prefix}bench-raw"
    producer = confluent_kafka.Producer(config)
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    producer.poll(0)
    start = time.perf_counter()
    last_commit = start
    for index, (topic, key, value, timestamp) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value, key, timestamp=timestamp)
                break
            except BufferError:
                producer.poll(0.01)
        if index % 1_000 == 0:
            producer.poll(0)
            if transactional and time.perf_counter() - last_commit >= 0.1:
                producer.commit_transaction(30)
                producer.begin_transaction()
                last_commit = time.perf_counter()
    if transactional:
        producer.commit_transaction(120)
    left = producer.flush(120)
    elapsed = time.perf_counter() - start
    if left:
        raise RuntimeError(f"{left} records not acknowledged by the baseline producer")
    return len(records) / elapsed


async def source_rate(url: str, channels: list[str], expected: int) -> float:
    """Lines/s a bare socket reader gets from the fake server (the ceiling it sets)."""
    host, port = url.removeprefix("irc://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    joins = ",".join(f"#{name}" for name in channels)
    login = "CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK justinfan1\r\n"
    writer.write(f"{login}JOIN {joins}\r\n".encode())
    await writer.drain()
    markers = (b" PRIVMSG #", b" USERNOTICE #", b" CLEARCHAT #", b" CLEARMSG #")
    seen, start, tail = 0, 0.0, b""
    async with asyncio.timeout(300):
        while seen < expected:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            start = start or time.perf_counter()
            # The 9 bytes kept from the last chunk are shorter than any marker: a match that
            # uses them straddled the boundary and was not counted before.
            window = tail + chunk
            seen += sum(window.count(marker) for marker in markers)
            tail = window[-9:]
    elapsed = time.perf_counter() - start
    writer.close()
    return seen / elapsed


def with_server(lines: list[str], work: Callable[[str, int], T], core: int | None = None) -> T:
    """Run ``work(url, server_pid)`` while a fake-twitch process serves ``lines``."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=serve, args=(lines, theirs, core), daemon=True)
    server.start()
    try:
        assert server.pid is not None
        return work(ours.recv(), server.pid)
    finally:
        ours.send("stop")
        server.join(10)


async def end_to_end(
    settings: Settings, expected: int, server_pid: int, broker_pid: int | None
) -> tuple[float, int]:
    """Run ingest until ``expected`` records are acknowledged; (records/s, records)."""
    service = IngestService(settings, metrics=IngestMetrics())
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    while service.lines == 0:
        if task.done():
            await task
        await asyncio.sleep(0.001)
    start, cpu_start = time.perf_counter(), time.process_time()
    threads_start = thread_cpu()
    server_start = cpu_seconds(server_pid)
    broker_start = cpu_seconds(broker_pid) if broker_pid else float("nan")
    while True:
        producer = service._producer
        done = sum(producer.acked.values()) if producer is not None else 0
        if done >= expected:
            break
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    threads = thread_cpu()
    server_cpu = cpu_seconds(server_pid) - server_start
    broker_cpu = (cpu_seconds(broker_pid) if broker_pid else float("nan")) - broker_start
    print(f"timed window: {elapsed:.2f}s wall, {done:,} records; CPU seconds in it:")
    for name, seconds in (
        ("ingest (all threads)", cpu),
        *((f"- {kind}", spent - threads_start.get(kind, 0.0)) for kind, spent in threads.items()),
        ("fake-twitch", server_cpu),
        ("Kafka broker (shared)", broker_cpu),
    ):
        print(
            f"  {name:<22} {seconds:6.2f}s = {seconds / elapsed:4.2f} cores, "
            f"{seconds / max(done, 1) * 1e6:5.1f} us per record"
        )
    stop.set()
    await task
    return done / elapsed, done


def parser_rate(lines: list[str]) -> str:
    path = Path(__file__).with_name("parser.py")
    if not path.exists():
        return "bench/parser.py not found"
    spec = importlib.util.spec_from_file_location("chatpulse_bench_parser", path)
    if spec is None or spec.loader is None:
        return "bench/parser.py not importable"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsed = module.rate(lines, parse_line, 3)
    converted = module.rate(lines, module.parse_and_convert, 3)
    return f"{parsed:,.0f} lines/s parse_line, {converted:,.0f} lines/s parse + to_record"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000, help="simulated lines (about)")
    parser.add_argument("--channels", type=int, default=20, help="simulated channels")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:19092")
    parser.add_argument("--buffer", type=int, default=100_000, help="ingest_buffer_messages")
    parser.add_argument(
        "--secure-stack",
        type=Path,
        help="data dir of a secured stack (`chatpulse stack up --secure`): connect as its "
        "admin over SASL_SSL (TLS + SCRAM-SHA-512), to measure their cost",
    )
    parser.add_argument("--profile", action="store_true", help="profile ingest with pyinstrument")
    parser.add_argument(
        "--pin", action="store_true", help="ingest on core 0, fake-twitch on core 1"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="shard the channels over N ingest processes"
    )
    args = parser.parse_args()
    if args.processes > 1 and (args.pin or args.profile):
        parser.error("--processes > 1 goes without --pin and --profile")
    logging.basicConfig(level=logging.WARNING)
    ingest_core, server_core = (0, 1) if args.pin else (None, None)
    if ingest_core is not None:  # before any thread starts: librdkafka's threads inherit it
        os.sched_setaffinity(0, {ingest_core})

    print(machine_state())
    print(f"pinning: {'ingest core 0, fake-twitch core 1' if args.pin else 'none'}")
    print(f"versions: {versions()}")
    lines = simulated_lines(args.messages, args.channels, args.seed)
    names = channel_names(args.channels)
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    secured = (
        secured_settings(args.secure_stack, args.bootstrap_servers, 9042)
        if args.secure_stack is not None
        else {}
    )
    secured = {k: v for k, v in secured.items() if k.startswith("kafka_")}  # no Cassandra here
    settings = load_settings(
        **secured,
        kafka_bootstrap_servers=args.bootstrap_servers,
        topic_prefix=prefix,
        channels=",".join(names),
        spill_dir=Path(tempfile.mkdtemp(prefix="chatpulse-bench-spill-")),
        ingest_metrics_port=0,
        ingest_buffer_messages=args.buffer,
    )
    ensure_topics(settings, wait_s=30)
    topics = Topics.from_settings(settings)
    records = to_records(lines, topics)
    print(f"workload: {len(lines):,} lines, {len(records):,} records, {args.channels} channels")

    source = with_server(
        lines, lambda url, _pid: asyncio.run(source_rate(url, names, len(records))), server_core
    )
    port = int(args.bootstrap_servers.rsplit(":", 1)[1])
    broker_pid = kafka_pid(port)

    def run_ingest(url: str, server_pid: int) -> tuple[float, int]:
        conf = settings.model_copy(update={"twitch_irc_url": url})
        if args.processes > 1:
            per_channel = Counter(key.decode() for _topic, key, _value, _ts in records)
            return sharded_end_to_end(conf, per_channel, args.processes, server_pid, broker_pid)
        if not args.profile:
            return asyncio.run(end_to_end(conf, len(records), server_pid, broker_pid))
        with Profiler() as profiler:
            result = asyncio.run(end_to_end(conf, len(records), server_pid, broker_pid))
        profiler.print(show_all=False)
        return result

    e2e, produced = with_server(lines, run_ingest, server_core)
    raw: dict[str, float] = {}
    for kind in ("idempotent", "transactional"):
        baseline_settings = settings.model_copy(update={"topic_prefix": f"{prefix}{kind}-"})
        ensure_topics(baseline_settings, wait_s=30)
        raw_records = to_records(lines, Topics.from_settings(baseline_settings))
        raw[kind] = raw_produce_rate(
            baseline_settings, raw_records, transactional=kind == "transactional"
        )

    print(f"fake-twitch alone (bare socket reader):            {source:>10,.0f} lines/s")
    shards = f", {args.processes} ingest processes" if args.processes > 1 else ""
    print(f"end to end (fake-twitch -> ingest -> Kafka acked): {e2e:>10,.0f} records/s{shards}")
    print(
        f"raw confluent-kafka produce + flush, same records: {raw['idempotent']:>10,.0f} records/s"
    )
    txn = raw["transactional"]
    print(f"  the same, transactional, commit every 100 ms:    {txn:>10,.0f} records/s")
    print(f"ingest / raw: {e2e / raw['idempotent']:.2f} ({produced:,} records acknowledged)")
    print(f"parser (one core): {parser_rate(lines)}")
    print(f"after the run: {machine_state()}")
    admin = admin_client(args.bootstrap_servers, settings.kafka_security_config())
    delete_topics(admin, [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)])


if __name__ == "__main__":
    main()
