"""bench/ingest.py --processes N: the channels sharded over N ingest processes.

That is how ingest scales (docs/architecture.md: shard channels over instances with
``CHATPULSE_CHANNELS``): each process has its own IRC connection, producer, transactional id and
spill directory. Each child reports when it saw its first line, when Kafka had all of its
records, and its CPU seconds; the aggregate rate spans the first first line to the last done.
"""

import asyncio
import multiprocessing
import os
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.service import IngestService
from chatpulse.settings import Settings

__all__ = ["cpu_seconds", "sharded_end_to_end"]

_Result = tuple[float, float, float, int]  # first line, all acknowledged (epoch s), CPU s, records


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(settings: Settings, expected: int, pipe: Connection) -> None:
    async def run() -> _Result:
        service = IngestService(settings, metrics=IngestMetrics())
        # Start together: a process still importing would stretch the common window.
        pipe.send("ready")
        await asyncio.to_thread(pipe.recv)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        while service.lines == 0:
            if task.done():
                await task
            await asyncio.sleep(0.001)
        start, cpu_start = time.time(), time.process_time()
        done = 0
        while done < expected:
            producer = service._producer
            done = sum(producer.acked.values()) if producer is not None else 0
            await asyncio.sleep(0.002)
        result = (start, time.time(), time.process_time() - cpu_start, done)
        stop.set()
        await task
        return result

    pipe.send(asyncio.run(run()))


def sharded_end_to_end(
    settings: Settings,
    expected: dict[str, int],
    processes: int,
    server_pid: int,
    broker_pid: int | None,
) -> tuple[float, int]:
    """Records/s of ``processes`` ingest processes sharing the channels of ``expected``."""
    context = multiprocessing.get_context("spawn")
    names = sorted(expected)
    children = []
    server_start = cpu_seconds(server_pid)
    broker_start = cpu_seconds(broker_pid) if broker_pid else float("nan")
    for index in range(processes):
        shard = names[index::processes]
        conf = settings.model_copy(
            update={
                "channels": shard,
                "spill_dir": Path(tempfile.mkdtemp(prefix=f"chatpulse-bench-spill-{index}-")),
            }
        )
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_child, args=(conf, sum(expected[n] for n in shard), theirs), daemon=True
        )
        child.start()
        children.append((child, ours))
    for _child_process, ours in children:
        ours.recv()
    for _child_process, ours in children:
        ours.send("go")
    results: list[_Result] = [ours.recv() for _child_process, ours in children]
    for child, _ours in children:
        child.join(30)
    server_cpu = cpu_seconds(server_pid) - server_start
    broker_cpu = (cpu_seconds(broker_pid) if broker_pid else float("nan")) - broker_start
    start = min(result[0] for result in results)
    elapsed = max(result[1] for result in results) - start
    done = sum(result[3] for result in results)
    print(f"{processes} ingest processes, {elapsed:.2f}s wall, {done:,} records; CPU seconds:")
    for index, (_start, _end, cpu, records) in enumerate(results):
        print(
            f"  ingest {index} ({records:,} records)  {cpu:6.2f}s, "
            f"{cpu / max(records, 1) * 1e6:5.1f} us per record"
        )
    print(f"  fake-twitch {server_cpu:.2f}s, Kafka broker {broker_cpu:.2f}s (start-up included)")
    return done / elapsed, done
