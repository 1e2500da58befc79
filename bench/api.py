"""Benchmark of ``chatpulse api``: requests/s and latency at N concurrent keep-alive clients.

Starts the API as its own process (``chatpulse api --workers W``) on a seeded keyspace of the
shared test stack (Kafka 127.0.0.1:19092, Cassandra 127.0.0.1:19042), then loads, one after
the other, ``/healthz`` (the in-run baseline: same app, no Cassandra), the channel summary
(``/api/v1/channels/{channel}``: 4 Cassandra reads) and the stats endpoint
(``/api/v1/channels/{channel}/stats?window=1m&limit=60``: 2 reads, 60 rows).

The load generator is a minimal asyncio HTTP/1.1 keep-alive client in this process, written
here because a general client (httpx: ~0.3 ms of client CPU per request) would measure itself
more than the server on a 2-core machine; every response's status and length are checked.

    .venv/bin/python bench/api.py [--duration 10] [--concurrency 50] [--workers 1] [--quick]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from _machine import machine_state
from chatpulse.kafka_admin import admin_client, delete_topics
from chatpulse.ports import free_port
from chatpulse.provision import initialize
from chatpulse.settings import Settings, load_settings
from chatpulse.storage import connect

DAY_MS = 86_400_000


def seed(settings: Settings, channel: str) -> None:
    """Two hours of windows and totals for one channel (as the processor lays them out)."""
    cluster, session = connect(settings)
    ks = settings.cassandra_keyspace
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 120 * 60_000
    insert = session.prepare(
        f"INSERT INTO {ks}.window_stats (channel, window, day, window_start, window_end, "
        "messages, unique_chatters, top_emotes, closed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    emotes = json.dumps([{"id": "25", "name": "Kappa", "count": 12}])
    try:
        for name, size in (("1m", 60_000), ("10m", 600_000), ("1h", 3_600_000)):
            for at in range(start - start % size, now, size):
                day = at // DAY_MS + 2**31
                session.execute(insert, (channel, name, day, at, at + size, 100, 20, emotes, True))
        session.execute(
            f"INSERT INTO {ks}.channel_totals (channel, total_messages, first_seen, last_seen) "
            "VALUES (%s, %s, %s, %s)",
            (channel, 12_000, start, now),
        )
    finally:
        cluster.shutdown()


def start_api(
    settings: Settings, port: int, workers: int, cache_ttl: float
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.as_environment(), "CHATPULSE_LOG_LEVEL": "WARNING"}
    chatpulse = Path(sys.executable).parent / "chatpulse"
    command = [str(chatpulse), "api", "--port", str(port), "--workers", str(workers)]
    command += ["--cache-ttl", str(cache_ttl)]
    api = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    api.terminate()
    raise SystemExit("the API did not become ready within 60 s")


async def _client(
    port: int, request: bytes, stop_at: float, latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - sent)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
    finally:
        writer.close()


async def load(port: int, path: str, concurrency: int, seconds: float) -> dict[str, float]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n".encode()
    latencies: list[float] = []
    errors: list[str] = []
    began = time.perf_counter()
    stop_at = began + seconds
    await asyncio.gather(
        *(_client(port, request, stop_at, latencies, errors) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{path}: {len(errors)} non-200 answers, e.g. {errors[0]}")
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=1, help="API processes (uvicorn)")
    parser.add_argument(
        "--cache-ttl",
        type=float,
        default=1.0,
        help="the API's --cache-ttl (0: every request reads)",
    )
    parser.add_argument("--kafka", default="127.0.0.1:19092", help="bootstrap servers")
    parser.add_argument("--cassandra-port", type=int, default=19042)
    parser.add_argument("--quick", action="store_true", help="3 s per endpoint")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.duration

    token = uuid.uuid4().hex[:8]
    settings = load_settings(
        kafka_bootstrap_servers=args.kafka,
        cassandra_port=args.cassandra_port,
        topic_prefix=f"benchapi{token}-",
        cassandra_keyspace=f"benchapi_{token}",
    )
    initialize(settings, timeout=120)
    channel = "benchchannel"
    seed(settings, channel)
    port = free_port()
    api = start_api(settings, port, args.workers, args.cache_ttl)
    endpoints = {
        "healthz baseline": "/healthz",
        "channel summary": f"/api/v1/channels/{channel}",
        "stats": f"/api/v1/channels/{channel}/stats?window=1m&limit=60",
    }
    results: dict[str, dict[str, float]] = {}
    try:
        print(machine_state())
        print(
            f"api: {args.workers} uvicorn worker process(es), --cache-ttl {args.cache_ttl}; "
            f"load: {args.concurrency} "
            f"keep-alive connections from 1 asyncio process; {seconds:.0f} s per endpoint"
        )
        for label, path in endpoints.items():
            asyncio.run(load(port, path, args.concurrency, min(1.0, seconds)))  # warm up
            results[label] = result = asyncio.run(load(port, path, args.concurrency, seconds))
            print(f"{label} throughput: {result['rps']:,.0f} req/s")
            print(f"{label} p50: {result['p50_ms']:.2f} ms")
            print(f"{label} p99: {result['p99_ms']:.2f} ms")
        print(machine_state())
    finally:
        api.terminate()
        api.wait(30)
        cluster, session = connect(settings)
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra_keyspace}", timeout=60)
        cluster.shutdown()
        admin = admin_client(settings.kafka_bootstrap_servers)
        topics = admin.list_topics(timeout=10).topics
        delete_topics(admin, [name for name in topics if name.startswith(settings.topic_prefix)])
    if args.json:
        figures = [
            {
                "name": f"{label} {key}",
                "value": value,
                "unit": unit,
                "baseline": "baseline" in label,
            }
            for label, result in results.items()
            for key, unit in (("rps", "req/s"), ("p50_ms", "ms"), ("p99_ms", "ms"))
            for value in (result[key],)
        ]
        args.json.write_text(json.dumps({"figures": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
