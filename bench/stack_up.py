"""Benchmark of ``chatpulse stack up``: seconds until Kafka and Cassandra both accept clients.

Runs on a throwaway stack (free ports, a temporary data dir), never the shared test stack:
- ``cold``: empty jar cache and an empty Maven repository (``--cold`` only: downloads ~200 MB);
- ``warm-fresh``: jars cached, new data dir (Kafka storage format + Cassandra first boot);
- ``warm-restart``: same data dir after ``down`` (the usual ``stack up``);
- ``noop``: ``up`` while already up.
In-run baseline: a bare ``java -version`` (JVM start cost on this machine right now).

    .venv/bin/python bench/stack_up.py [--cold] [--repeat 2]
"""

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _machine import machine_state
from chatpulse.ports import free_ports
from chatpulse.stack import Stack
from chatpulse.stack.java import find_java


def timed(label: str, action) -> float:
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    print(f"{label + ':':<15} {seconds:7.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also measure an empty jar cache")
    parser.add_argument("--repeat", type=int, default=2, help="warm runs of each kind")
    args = parser.parse_args()

    print(machine_state())
    java = str(find_java())
    timed(
        "baseline java", lambda: subprocess.run([java, "-version"], capture_output=True, check=True)
    )
    with tempfile.TemporaryDirectory(prefix="chatpulse-bench-") as tmp:
        root = Path(tmp)
        kafka_port, cassandra_port = free_ports(2)
        if args.cold:
            os.environ["MAVEN_OPTS"] = f"-Dmaven.repo.local={root / 'm2'}"
            cold = Stack(
                root / "cold",
                kafka_port=kafka_port,
                cassandra_port=cassandra_port,
                jar_cache=root / "jars",
                progress=lambda message: None,
            )
            try:
                timed("cold", cold.up)
            finally:
                cold.down()
            del os.environ["MAVEN_OPTS"]
        for run in range(args.repeat):
            stack = Stack(
                root / f"warm-{run}", kafka_port=kafka_port, cassandra_port=cassandra_port
            )
            try:
                timed("warm-fresh", stack.up)
                timed("noop", stack.up)
                timed("down", stack.down)
                timed("warm-restart", stack.up)
            finally:
                stack.down()
    print(machine_state())


if __name__ == "__main__":
    main()
