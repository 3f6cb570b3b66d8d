"""What every scenario shares: the run context, the progress bar, CSV rows and PNG figures.

Plots use matplotlib's object API (``matplotlib.figure.Figure`` rendered by the Agg canvas),
never ``pyplot``: no global backend is switched, so a notebook that calls a scenario keeps its
own backend. matplotlib and tqdm are optional (``pip install 'hybridsync[plot]'``); they are
imported only here.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hybridsync.errors import ConfigError

__all__ = [
    "Context",
    "Outcome",
    "Progress",
    "Row",
    "figure",
    "float_list",
    "int_list",
    "mean",
    "write_rows",
]

Row = dict[str, Any]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Progress:
    """A tqdm bar when tqdm is installed, else a one-line textual bar; silent when disabled.

    ``total`` may grow while running (a liveness phase runs past the planned ticks).
    """

    def __init__(self, total: int, enabled: bool, stream: TextIO, *, unit: str = "tick",
                 desc: str | None = None) -> None:
        self._enabled = enabled
        self._stream = stream
        self._total = max(1, total)
        self._unit = unit
        self._n = 0
        self._bar: Any = None
        self._last = -1
        self._postfix = ""
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                self._bar = None
            else:
                self._bar = tqdm(total=total, unit=unit, file=stream, leave=True,
                                 dynamic_ncols=True, desc=desc)

    def update(self, postfix: str = "", n: int = 1) -> None:
        self._n += n
        if not self._enabled:
            return
        if self._n > self._total:
            self._total = self._n
            if self._bar is not None:
                self._bar.total = self._n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(n)
            return
        self._postfix = postfix or self._postfix
        pct = min(100, 100 * self._n // self._total)
        if pct != self._last:
            self._last = pct
            self._draw(pct)

    def _draw(self, pct: int) -> None:
        filled = pct * 30 // 100
        self._stream.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {pct:3d}% "
                           f"{self._unit} {self._n} {self._postfix}   ")
        self._stream.flush()

    def close(self) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.total = self._n
            self._bar.refresh()
            self._bar.close()
        else:
            self._draw(100)
            self._stream.write("\n")
            self._stream.flush()


@dataclass(slots=True)
class Context:
    """Where a scenario writes and how it reports: the results folder, stdout, the progress
    stream (stderr) and whether to draw a bar and a plot."""

    out_dir: Path | None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    progress: bool = False
    plot: bool = True

    def bar(self, total: int, *, unit: str = "run", desc: str | None = None) -> Progress:
        return Progress(total, self.progress, self.stderr, unit=unit, desc=desc)

    def path(self, name: str) -> Path:
        """``name`` inside the results folder (created on first use)."""
        if self.out_dir is None:
            raise ConfigError("this run has no results folder (give --out DIR)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name

    def say(self, line: str = "") -> None:
        self.stdout.write(line + "\n")
        self.stdout.flush()


@dataclass(slots=True)
class Outcome:
    """What a scenario produced: its rows (also in the CSV), the files, a short summary."""

    rows: list[Row]
    csv_path: Path
    png_path: Path | None
    summary: list[str] = field(default_factory=list)


# ---- options -------------------------------------------------------------------------------
def _list_of(cast: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}s, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one {what}")
        return values

    parse.__name__ = f"{what} list"
    return parse


int_list = _list_of(int, "int")
float_list = _list_of(float, "number")


def check_range(values: Iterable[float], what: str, lo: float, hi: float) -> None:
    for v in values:
        if not lo <= v <= hi or (isinstance(v, float) and math.isnan(v)):
            raise ConfigError(f"{what} must be in [{lo:g}, {hi:g}], got {v!r}")


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


# ---- CSV -----------------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_rows(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """One CSV row per mapping; every row must have exactly ``columns``. Returns the count."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for row in rows:
            if list(row) != list(columns):
                raise AssertionError(f"row keys {list(row)} differ from the columns {columns}")
            w.writerow([_cell(row[c]) for c in columns])
            n += 1
    return n


# ---- figures -------------------------------------------------------------------------------
@contextmanager
def figure(path: Path, *, nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (10, 5),
           title: str = "") -> Iterator[tuple[Any, list[Any]]]:
    """A matplotlib figure saved to ``path`` as PNG when the block ends; yields
    ``(figure, flat list of axes)``. Raises :class:`ConfigError` without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'hybridsync[plot]' "
                          "(or pass --no-plot)") from None
    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = [ax for row in grid for ax in row]
    yield fig, axes
    if title:
        fig.suptitle(title, fontsize=12)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
