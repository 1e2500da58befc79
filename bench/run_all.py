"""Run every benchmark in bench/ and write one report to bench/results/.

For each ``bench/<name>.py`` (except this file): runs it with ``--quick`` when its ``--help``
offers that and this run is quick, and with ``--json PATH`` when offered; otherwise its
stdout is kept and its figures are read from lines like ``label: 12,345 msg/s``. Writes
``bench/results/<name>.json`` (command, exit code, duration, stdout, figures), a PNG chart
per benchmark, and ``bench/results/SUMMARY.md`` stating the machine, the versions, and each
figure beside its in-run baseline (a figure whose label says baseline/ceiling/raw/trivial).

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--timeout S]

A benchmark's own JSON is used as is when it holds ``{"figures": [{"name", "value", "unit",
"baseline"?}]}`` (``baseline``: true for a baseline figure); any other JSON is kept raw and
its numeric leaves become the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
BASELINE_WORDS = ("baseline", "ceiling", "raw ", "raw-", "plain", "trivial")
FIGURE_LINE = re.compile(
    r"^\s*(?P<label>[A-Za-z][^:=]{1,90}?)\s*[:=]\s+"
    r"(?P<value>-?[\d,]*\.?\d+)\s*(?P<unit>[A-Za-z%µ]+(?:/[A-Za-z]+)?)?"
)
PACKAGES = ("confluent-kafka", "quixstreams", "cassandra-driver", "fastapi", "uvicorn", "orjson")


@dataclass(frozen=True, slots=True)
class Figure:
    """One number a benchmark reported."""

    name: str
    value: float
    unit: str
    baseline: bool


def number(value: float) -> str:
    """Readable: thousands separators for big numbers, 4 significant digits for small."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def is_baseline(label: str) -> bool:
    lowered = f"{label.lower()} "
    return any(word in lowered for word in BASELINE_WORDS)


def figures_from_text(text: str) -> list[Figure]:
    """Figures from ``label: number unit`` lines (first number of each line)."""
    found = []
    for line in text.splitlines():
        match = FIGURE_LINE.match(line)
        if not match:
            continue
        label = match["label"].strip()
        value = float(match["value"].replace(",", ""))
        found.append(Figure(label, value, match["unit"] or "", is_baseline(label)))
    return found


def figures_from_json(data: Any, prefix: str = "") -> list[Figure]:
    """Figures from a benchmark's JSON: its ``figures`` list, else every numeric leaf."""
    if prefix == "" and isinstance(data, dict) and isinstance(data.get("figures"), list):
        return [
            Figure(
                str(f["name"]),
                float(f["value"]),
                str(f.get("unit", "")),
                bool(f.get("baseline", is_baseline(str(f["name"])))),
            )
            for f in data["figures"]
            if isinstance(f, dict) and isinstance(f.get("value"), int | float)
        ]
    found: list[Figure] = []
    if isinstance(data, dict):
        for key, value in data.items():
            found += figures_from_json(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += figures_from_json(value, f"{prefix}[{index}]")
    elif isinstance(data, int | float) and not isinstance(data, bool):
        found.append(Figure(prefix, float(data), "", is_baseline(prefix)))
    return found


def machine() -> dict[str, Any]:
    """Cores, memory, load, CPU model, OS and Python: the context every number needs."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text()
        total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo)[1])  # type: ignore[index]
        info["memory_gib"] = round(total_kib / 1024 / 1024, 1)
        cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        info["cpu"] = cpu[1].strip() if cpu else platform.processor()
    except (OSError, TypeError):
        info["memory_gib"] = None
    return info


def versions() -> dict[str, str]:
    """Library versions, the servers the local stack runs, and the git commit."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import confluent_kafka  # noqa: PLC0415 - only to report the librdkafka version

        found["librdkafka"] = confluent_kafka.libversion()[0]
        from chatpulse.stack import CASSANDRA_VERSION, KAFKA_VERSION  # noqa: PLC0415

        found["kafka"], found["cassandra"] = KAFKA_VERSION, CASSANDRA_VERSION
    except ImportError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    found["chatpulse commit"] = commit.stdout.strip() or "unknown"
    return found


def discover(only: list[str]) -> list[Path]:
    # ``_name.py`` files are helpers the benchmarks import, not benchmarks.
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    scripts = [p for p in scripts if not p.name.startswith("_")]
    return [p for p in scripts if not only or p.stem in only]


def run_one(script: Path, *, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one benchmark and return its result record (also written as JSON)."""
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    command = [sys.executable, str(script.relative_to(REPO))]
    if quick and "--quick" in help_text:
        command.append("--quick")
    json_path = (RESULTS / f"{script.stem}.own.json").relative_to(REPO)
    if "--json" in help_text:
        (REPO / json_path).unlink(missing_ok=True)
        command += ["--json", str(json_path)]
    print(f"==> {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO
        )
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = -1
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = f"timed out after {timeout:.0f}s"
    duration = time.monotonic() - started
    print(stdout, end="", flush=True)
    own = None
    if (REPO / json_path).exists():
        own = json.loads((REPO / json_path).read_text())
        (REPO / json_path).unlink()
        figures = figures_from_json(own)
    else:
        figures = figures_from_text(stdout)
    return {
        "name": script.stem,
        "command": " ".join(["python", *command[1:]]),
        "quick": "--quick" in command,
        "returncode": returncode,
        "duration_s": round(duration, 1),
        "load_after_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "figures": [asdict(f) for f in figures],
        "own_json": own,
        "stdout": stdout,
        "stderr_tail": stderr[-4000:],
    }


@contextlib.contextmanager
def test_stack(enabled: bool) -> Iterator[None]:
    """The shared test stack the benchmarks default to (Kafka :19092, Cassandra :19042).

    Same protocol as tests/integration/conftest.py: a lease file per process; the stack is
    stopped at the end only if a test or benchmark session started it and no lease is left.
    """
    if not enabled:
        yield
        return
    from chatpulse.stack import Stack  # noqa: PLC0415 - only when a stack is wanted

    stack = Stack(REPO / "build" / "test-stack", kafka_port=19092, cassandra_port=19042)
    leases = stack.data_dir / "leases"
    lease = leases / str(os.getpid())
    marker = stack.data_dir / "started-by-tests"
    with stack.lock():
        print("==> test stack (Kafka 127.0.0.1:19092, Cassandra 127.0.0.1:19042)", flush=True)
        if stack.up():
            marker.touch()
        leases.mkdir(exist_ok=True)
        lease.touch()
    try:
        yield
    finally:
        with stack.lock():
            lease.unlink(missing_ok=True)
            alive = [p for p in leases.glob("*") if Path(f"/proc/{p.name}").exists()]
            if marker.exists() and not alive:
                stack.down()
                marker.unlink(missing_ok=True)


def chart(result: dict[str, Any], path: Path) -> bool:
    """A horizontal bar chart per unit, baselines in grey; False if nothing to draw."""
    import matplotlib  # noqa: PLC0415 - imported only when charts are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figures = [Figure(**f) for f in result["figures"]]
    units = sorted({f.unit for f in figures})
    if not figures:
        return False
    fig, axes = plt.subplots(
        len(units), 1, figsize=(9, 0.9 + 0.45 * len(figures) + 0.6 * len(units)), squeeze=False
    )
    for axis, unit in zip(axes[:, 0], units, strict=True):
        group = [f for f in figures if f.unit == unit]
        names = [f.name for f in group]
        values = [f.value for f in group]
        colours = ["#9e9e9e" if f.baseline else "#1f77b4" for f in group]
        bars = axis.barh(names, values, color=colours)
        axis.bar_label(bars, labels=[number(v) for v in values], padding=3, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel(unit or "value")
        axis.margins(x=0.2)
    axes[0, 0].set_title(f"{result['name']} (grey: in-run baselines)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def matching_baseline(figure: Figure, figures: list[Figure]) -> Figure | None:
    """The in-run baseline to compare ``figure`` with: same unit, and the same last word of
    the name when there is one (``... p99_ms`` with ``baseline p99_ms``)."""
    candidates = [f for f in figures if f.baseline and f.unit == figure.unit and f is not figure]
    last = figure.name.split()[-1] if figure.name.split() else ""
    same_kind = [f for f in candidates if f.name.split() and f.name.split()[-1] == last]
    return (same_kind or candidates or [None])[0]


def summary(results: list[dict[str, Any]], info: dict[str, Any], vers: dict[str, str]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/run_all.py`"
        f"{' --quick' if any(r['quick'] for r in results) else ''}.",
        "",
        "## Machine",
        "",
        f"- {info.get('cpu', '?')}, {info['cores']} cores, {info.get('memory_gib')} GiB memory",
        f"- load average at the end (1/5/15 min): {info['load_1_5_15']}",
        f"- {info['platform']}, Python {info['python']}",
        "",
        "## Versions",
        "",
        *[f"- {name}: {version}" for name, version in vers.items()],
        "",
    ]
    for result in results:
        status = "ok" if result["returncode"] == 0 else f"FAILED (exit {result['returncode']})"
        lines += [
            f"## {result['name']}",
            "",
            f"`{result['command']}`: {status} in {result['duration_s']}s "
            f"(load average after it: {result['load_after_1_5_15']})",
            "",
        ]
        figures = [Figure(**f) for f in result["figures"]]
        if figures:
            lines += ["| figure | value | unit | vs in-run baseline |", "|---|---:|---|---|"]
            for figure in figures:
                base = matching_baseline(figure, figures)
                versus = "baseline" if figure.baseline else ""
                if not figure.baseline and base is not None and base.value:
                    versus = f"{figure.value / base.value:.3g}x {base.name}"
                lines.append(
                    f"| {figure.name} | {number(figure.value)} | {figure.unit} | {versus} |"
                )
            lines.append("")
        if result.get("chart"):
            lines += [f"![{result['name']}]({result['chart']})", ""]
        if result["returncode"] != 0 and result["stderr_tail"]:
            tail = result["stderr_tail"].strip().splitlines()[-5:]
            lines += ["```", *tail, "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick where supported")
    parser.add_argument("--only", nargs="*", default=[], help="benchmark names (file stems)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument(
        "--no-stack", action="store_true", help="do not start the test stack the benchmarks use"
    )
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    scripts = discover(args.only)
    if not scripts:
        print("no benchmarks found in bench/")
        return 1
    info, vers = machine(), versions()
    with test_stack(not args.no_stack):
        results = [run_one(script, quick=args.quick, timeout=args.timeout) for script in scripts]
    for script, result in zip(scripts, results, strict=True):
        result["machine"] = info
        result["versions"] = vers
        if not args.no_charts and chart(result, RESULTS / f"{script.stem}.png"):
            result["chart"] = f"{script.stem}.png"
        (RESULTS / f"{script.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    info["load_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    (RESULTS / "SUMMARY.md").write_text(summary(results, info, vers))
    failed = [r["name"] for r in results if r["returncode"] != 0]
    print(f"wrote {RESULTS / 'SUMMARY.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
