"""The machine line every benchmark prints beside its numbers: cores, memory, load, Python.

Benchmarks run as scripts (``python bench/x.py``), so this module is imported as ``_machine``;
the leading underscore keeps ``run_all.py`` from taking it for a benchmark.
"""

import os
import platform
from pathlib import Path

__all__ = ["machine_state"]


def _meminfo_mib() -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                found[key] = int(value.split()[0]) // 1024
    except OSError:
        pass
    return found


def machine_state() -> str:
    """One line: ``machine: 2 cores, 23990 MiB RAM (15000 MiB available), load ..., Python ...``."""
    mem = _meminfo_mib()
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} cores, {mem.get('MemTotal', '?')} MiB RAM "
        f"({mem.get('MemAvailable', '?')} MiB available), "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
