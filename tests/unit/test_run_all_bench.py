"""bench/run_all.py: reading figures from a benchmark's text or JSON output."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _run_all() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "run_all.py"
    spec = importlib.util.spec_from_file_location("bench_run_all", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_figures_from_text() -> None:
    run_all = _run_all()
    text = (
        "python 3.11.7 on x86_64, 2 cores, load 7.68 4.36 2.03\n"
        "baseline line.split(' '):    1,439,043 lines/s\n"
        "parse_line:                     79,350 lines/s (0.055x baseline)\n"
        "p99 latency = 12.5 ms\n"
    )
    figures = run_all.figures_from_text(text)
    assert [(f.name, f.value, f.unit, f.baseline) for f in figures] == [
        ("baseline line.split(' ')", 1439043.0, "lines/s", True),
        ("parse_line", 79350.0, "lines/s", False),
        ("p99 latency", 12.5, "ms", False),
    ]


def test_figures_from_json() -> None:
    run_all = _run_all()
    own = {
        "figures": [
            {"name": "eos", "value": 2.0, "unit": "msg/s"},
            {"name": "raw consume", "value": 4, "unit": "msg/s"},
        ]
    }
    assert [(f.name, f.baseline) for f in run_all.figures_from_json(own)] == [
        ("eos", False),
        ("raw consume", True),
    ]
    nested = {"throughput": {"exactly_once": 10, "ceiling": 20}, "ok": True, "label": "x"}
    assert [(f.name, f.value, f.baseline) for f in run_all.figures_from_json(nested)] == [
        ("throughput.exactly_once", 10.0, False),
        ("throughput.ceiling", 20.0, True),
    ]


def test_each_figure_is_compared_with_the_baseline_of_its_kind() -> None:
    run_all = _run_all()
    figure = run_all.Figure
    figures = [
        figure("healthz baseline rps", 100.0, "req/s", True),
        figure("healthz baseline p50_ms", 1.0, "ms", True),
        figure("healthz baseline p99_ms", 5.0, "ms", True),
        figure("stats p99_ms", 10.0, "ms", False),
        figure("stats p50_ms", 2.0, "ms", False),
        figure("other", 3.0, "s", False),
    ]
    assert run_all.matching_baseline(figures[3], figures).name == "healthz baseline p99_ms"
    assert run_all.matching_baseline(figures[4], figures).name == "healthz baseline p50_ms"
    assert run_all.matching_baseline(figures[5], figures) is None
