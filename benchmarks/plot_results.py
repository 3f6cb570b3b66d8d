"""Draw the recorded benchmark results as PNGs for the docs site.

    python -m benchmarks.plot_results              # reads docs/*.md, writes docs/img/bench_*.png

The numbers are not measured here: they are read from the Markdown tables where each
benchmark's run was recorded with its machine and date (``docs/benchmarks.md``,
``docs/q4.md``), so a plot always shows what the page says. Re-record a table, then re-run
this script and commit the PNGs. A table that moved or changed its columns is an error that
names it (``tests/unit/test_docs_build.py`` draws every plot from the current docs).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Row = dict[str, str]


class TableNotFound(Exception):
    """A recorded table is missing or lost a column the plots need."""


def find_table(markdown: str, *headings: str) -> list[Row]:
    """The first table after the headings that contain ``headings`` in turn (each searched
    after the previous one), as rows keyed by the header cells."""
    lines = markdown.splitlines()
    i = 0
    for h in headings:
        while i < len(lines) and not (lines[i].startswith("#") and h in lines[i]):
            i += 1
        if i == len(lines):
            raise TableNotFound(f"no heading containing {h!r}")
        i += 1
    while i < len(lines) and not lines[i].lstrip().startswith("|"):
        if lines[i].startswith("#"):
            raise TableNotFound(f"no table under {' / '.join(headings)!r}")
        i += 1
    block = []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        block.append(lines[i].strip())
        i += 1
    if len(block) < 3:
        raise TableNotFound(f"no table rows under {' / '.join(headings)!r}")

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    header = cells(block[0])
    rows = []
    for line in block[2:]:
        rows.append(dict(zip(header, cells(line), strict=False)))
    return rows


def number(cell: str) -> float:
    """The first number in a cell: ``**1.25**`` → 1.25, ``5.54 (writer 1.01)`` → 5.54,
    ``2,685,588`` → 2685588, ``0.59×`` → 0.59."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell.replace("**", ""))
    if m is None:
        raise TableNotFound(f"no number in cell {cell!r}")
    return float(m.group(0).replace(",", ""))


def column(rows: Sequence[Row], name: str) -> list[str]:
    for row in rows:
        if name not in row:
            raise TableNotFound(f"column {name!r} missing (have {sorted(row)})")
    return [row[name] for row in rows]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(cell: str) -> str:
    return cell.replace("**", "").replace("`", "")


def plot_fields(docs: Path, plt: Any) -> Any:
    rows = find_table((docs / "benchmarks.md").read_text(), "## Fields", "### Results")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bytes_key = "B/write" if rows and "B/write" in rows[0] else "B/contrib"
    for ax, key, title in ((axes[0], "µs/write", "time per write (µs, lower is better)"),
                           (axes[1], bytes_key, "wire bytes per write (lower is better)")):
        workloads = list(dict.fromkeys(column(rows, "workload")))
        systems = list(dict.fromkeys(column(rows, "system")))
        width = 0.8 / len(systems)
        for k, system in enumerate(systems):
            values = []
            for w in workloads:
                row = next(r for r in rows if r["workload"] == w and r["system"] == system)
                v = number(row[key])
                if key == "B/contrib" and w == "txn100":
                    v /= 100  # a txn100 contribution carries 100 writes
                values.append(v)
            ax.bar([i + k * width for i in range(len(workloads))], values, width,
                   label=_label(system))
        ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(workloads))],
                      ["single-write commits", "transactions of 100"])
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fields: 100,000 writes between two replicas (docs/benchmarks.md)")
    return fig


def plot_texts(docs: Path, plt: Any) -> Any:
    rows = find_table((docs / "benchmarks.md").read_text(), "### W1")
    size = ""
    for row in rows:  # the size is written once per group
        size = row.get("text") or size
        row["text"] = size
    sizes = list(dict.fromkeys(column(rows, "text")))
    systems = list(dict.fromkeys(_label(s) for s in column(rows, "system")))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(systems)
    for ax, key, title, log in ((axes[0], "median ms", "median cycle time (ms, log)", True),
                                (axes[1], "wire B/cycle", "wire bytes per cycle", False)):
        for k, system in enumerate(systems):
            values = [number(next(r for r in rows if r["text"] == s
                                  and _label(r["system"]) == system)[key]) for s in sizes]
            ax.bar([i + k * width for i in range(len(sizes))], values, width, label=system)
        ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(sizes))],
                      [s.replace(" × ", " chars × ").replace("chars chars", "chars")
                       + " cycles" for s in sizes])
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle("Texts (W1): a scratchpad rewritten span by span (docs/benchmarks.md)")
    return fig


def plot_network(docs: Path, plt: Any) -> Any:
    rows = find_table((docs / "benchmarks.md").read_text(), "## Network", "### Results")
    systems = [_label(s) for s in column(rows, "system")]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    # ours in blues, the peer library in orange: one colour per system, whatever their number
    colors = ["tab:orange" if "hybridsync" not in s else
              ("tab:blue" if "group" in s else "lightsteelblue") for s in systems]
    axes[0].bar(systems, [number(v) for v in column(rows, "writes/s")], color=colors)
    axes[0].set_title("writes/s, two processes", fontsize=10)
    for ax, key in ((axes[1], "latency median ms"), (axes[2], "latency p99 ms")):
        ax.bar(systems, [number(v) for v in column(rows, key)], color=colors)
        ax.set_title(key, fontsize=10)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Network: hybridsync peers vs pycrdt-websocket (docs/benchmarks.md)")
    return fig


def plot_buffers(docs: Path, plt: Any) -> Any:
    rows = find_table((docs / "benchmarks.md").read_text(), "### W4")
    codecs = column(rows, "codec")
    phases = ["detect ms", "delta ms", "commit ms", "receive ms", "copy ms"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(codecs)
    for k, codec in enumerate(codecs):
        row = rows[k]
        axes[0].bar([i + k * width for i in range(len(phases))],
                    [number(row[p]) for p in phases], width, label=codec)
    axes[0].set_xticks([i + width * (len(codecs) - 1) / 2 for i in range(len(phases))],
                       [p.replace(" ms", "") for p in phases])
    axes[0].set_title("ms per cycle (copy: one np.copyto of the buffer)", fontsize=10)
    axes[0].legend(fontsize=8)
    wire = [number(v) / 2**20 for v in column(rows, "wire B/cycle")]
    changed = number(rows[0]["wire B/cycle"]) / number(rows[0]["wire/changed"]) / 2**20
    axes[1].bar(["changed float16"] + [f"wire, {c}" for c in codecs], [changed, *wire],
                color=["lightgray", "tab:blue", "tab:orange"][: 1 + len(codecs)])
    axes[1].set_title("MiB per cycle", fontsize=10)
    fig.suptitle("Buffers (W4): 256 MiB float16, 1 % of blocks rewritten per cycle "
                 "(docs/benchmarks.md)")
    return fig


def plot_q4(docs: Path, plt: Any) -> Any:
    rows = find_table((docs / "q4.md").read_text(), "## Measured")
    data = [_label(d) for d in column(rows, "data")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].barh(data, [100 * number(v) for v in column(rows, "relative RMS")],
                 color="tab:orange")
    axes[0].set_xlabel("relative RMS error (%)")
    axes[1].barh(data, [number(v) for v in column(rows, "SNR dB")], color="tab:green")
    axes[1].set_xlabel("SNR (dB, higher is better)")
    axes[1].set_yticks([])
    fig.suptitle("Q4 codec: reconstruction error by data set, 0.28× the bytes (docs/q4.md)")
    return fig


PLOTS: dict[str, Callable[[Path, Any], Any]] = {
    "bench_fields.png": plot_fields,
    "bench_texts.png": plot_texts,
    "bench_network.png": plot_network,
    "bench_buffers.png": plot_buffers,
    "bench_q4.png": plot_q4,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot_results",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "docs",
                        help="folder with benchmarks.md and q4.md (default: docs/)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img",
                        help="where the PNGs go (default: docs/img/)")
    args = parser.parse_args(argv)
    plt = _plt()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in PLOTS.items():
        try:
            fig = draw(args.docs, plt)
        except TableNotFound as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        fig.tight_layout()
        fig.savefig(args.out / name, dpi=90, metadata={"Software": None})
        plt.close(fig)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
