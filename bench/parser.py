"""Benchmark: IRC line parser throughput on one core, over the sample capture.

Prints lines/s for ``parse_line`` and for ``parse_line`` + ``to_record``, next to an in-run
baseline (a bare ``line.split(" ")`` loop over the same lines) and the machine state.

    .venv/bin/python bench/parser.py [--capture FILE] [--repeat N] [--rounds R]
"""

import argparse
import gzip
import time
from collections.abc import Callable
from pathlib import Path

from _machine import machine_state
from chatpulse.ingest.convert import to_record
from chatpulse.ingest.errors import ConvertError
from chatpulse.ingest.irc.parser import parse_line

DEFAULT_CAPTURE = Path(__file__).resolve().parents[1] / "tests/data/twitch-irc-xqcow-2019-09.txt.gz"


def rate(lines: list[str], work: Callable[[str], object], rounds: int) -> float:
    """Best of ``rounds`` runs, in lines per second."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for line in lines:
            work(line)
        best = min(best, time.perf_counter() - start)
    return len(lines) / best


def parse_and_convert(line: str) -> object:
    try:
        return to_record(parse_line(line))
    except ConvertError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--capture", type=Path, default=DEFAULT_CAPTURE, help="gzip capture, one line per row"
    )
    parser.add_argument("--repeat", type=int, default=10, help="concatenate the capture N times")
    parser.add_argument("--rounds", type=int, default=5, help="take the best of R timed runs")
    args = parser.parse_args()

    with gzip.open(args.capture, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines() * args.repeat
    print(machine_state())
    print(
        f"{len(lines)} lines ({args.capture.name} x{args.repeat}), "
        f"best of {args.rounds} runs, one core"
    )
    baseline = rate(lines, lambda line: line.split(" "), args.rounds)
    parsed = rate(lines, parse_line, args.rounds)
    converted = rate(lines, parse_and_convert, args.rounds)
    print(f"baseline line.split(' '): {baseline:>12,.0f} lines/s")
    print(f"parse_line:               {parsed:>12,.0f} lines/s ({parsed / baseline:.3f}x baseline)")
    print(
        f"parse_line + to_record:   {converted:>12,.0f} lines/s "
        f"({converted / baseline:.3f}x baseline)"
    )


if __name__ == "__main__":
    main()
