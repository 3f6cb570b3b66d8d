"""Shared helpers of the benchmarks: timing, memory, machine description, Markdown tables.

Nothing here depends on hybridsync; the benchmarks import it so every system is measured by
the same clock (``time.perf_counter``) and reported in the same format.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "Machine",
    "current_rss_kib",
    "machine",
    "markdown_table",
    "median",
    "peak_rss_kib",
    "stopwatch",
]

T = TypeVar("T")


def median(values: Sequence[float]) -> float:
    """The median (the lower-noise summary for a handful of repeats)."""
    if not values:
        raise ValueError("median of nothing")
    return float(statistics.median(values))


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, in KiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if platform.system() == "Darwin" else int(peak)


def current_rss_kib() -> int | None:
    """Resident set size now, in KiB, from ``/proc/self/statm``; ``None`` where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def stopwatch(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` after a full garbage collection; its result and wall seconds."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@dataclass(frozen=True, slots=True)
class Machine:
    """Where the numbers were measured."""

    nproc: int
    cpu: str
    ram_gib: float
    python: str
    platform: str
    packages: dict[str, str]

    def describe(self) -> list[str]:
        pkgs = ", ".join(f"{k} {v}" for k, v in self.packages.items())
        return [
            f"CPU: {self.cpu} ({self.nproc} logical CPUs, `nproc`)",
            f"RAM: {self.ram_gib:.1f} GiB",
            f"Python {self.python} on {self.platform}",
            f"Packages: {pkgs}",
        ]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine(packages: Sequence[str] = ("hybridsync", "pycrdt", "loro", "msgpack")) -> Machine:
    """Describe this machine and the versions of ``packages``."""
    affinity = getattr(os, "sched_getaffinity", None)
    nproc = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return Machine(
        nproc=nproc,
        cpu=cpu_model(),
        ram_gib=_ram_gib(),
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        packages={p: _version(p) for p in packages},
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; columns after the first are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, expected {len(headers)}")
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
