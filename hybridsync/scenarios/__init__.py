"""Simulation scenarios: questions answered with the simulator, each writing a CSV and a plot.

Every scenario is a module with ``add_arguments(parser)`` and ``run_scenario(args, context)``
plus a plain function that measures one configuration (for notebooks and tests), registered
here by name. ``hybridsync simulate NAME [options]`` and the thin scripts in
``simulations/NAME.py`` run them; ``hybridsync simulate --list`` lists them. Results go to
``--out DIR`` (default ``results/NAME/``): ``NAME.csv`` and ``NAME.png``.

>>> sorted(SCENARIOS)
['conflicts', 'lossy-links', 'metadata-growth', 'partition', 'partition-heal', 'routing']
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TextIO

from hybridsync.errors import ConfigError
from hybridsync.scenarios import (
    _conflicts,
    _lossy_links,
    _metadata_growth,
    _partition,
    _partition_heal,
    _routing,
)
from hybridsync.scenarios._common import Context, Outcome, Progress

__all__ = ["SCENARIOS", "Context", "Outcome", "Progress", "Scenario", "add_common_arguments",
           "describe_all", "run_named"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One named scenario: its question, its options and how to run it."""

    name: str
    summary: str  # one line, for --list
    example: str  # a bigger run, for --help
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Context], Outcome]
    description: str = ""  # the module docstring: the question and how it is measured


def _scenario(name: str, module: ModuleType, summary: str, example: str) -> Scenario:
    return Scenario(name, summary, example, module.add_arguments, module.run_scenario,
                    module.__doc__ or "")


SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (
        _scenario("partition-heal", _partition_heal,
                  "convergence time and bytes after a partition heals, by partition length "
                  "and number of peers",
                  "hybridsync simulate partition-heal --peers 2,4,8,16,32,64 "
                  "--partition-ticks 10,40,160,640 --seeds 3"),
        _scenario("metadata-growth", _metadata_growth,
                  "metadata per replica under endless text churn: hybridsync with and without "
                  "GC against the same texts in pycrdt Text",
                  "hybridsync simulate metadata-growth --ticks 5000 --text-chars 8000"),
        _scenario("routing", _routing,
                  "mesh vs star vs gossip relay: messages, bytes, convergence time, and a "
                  "check that state and history are identical (G4)",
                  "hybridsync simulate routing --peers 4,8,16,32 --batch-sizes 512,1 --loss 0.1"),
        _scenario("lossy-links", _lossy_links,
                  "convergence time against loss, duplication and reordering",
                  "hybridsync simulate lossy-links --seeds 10 --loss 0,0.1,0.2,0.4,0.6,0.8"),
        _scenario("conflicts", _conflicts,
                  "how often concurrent text edits end in reported conflicts or silent damage, "
                  "by edit rate and sync interval",
                  "hybridsync simulate conflicts --edit-rates 0.1,0.3,1,3 "
                  "--sync-intervals 1,2,4,8,16,32 --seeds 5"),
        _scenario("partition", _partition,
                  "one run's timeline: write, split in two halves, heal, converge (the "
                  "default without NAME)",
                  "hybridsync simulate partition --peers 8 --ticks 600 --loss 0.2"),
    )
}


def add_common_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """``--seed``, ``--out``, ``--progress``, ``--plot``: the same for every scenario."""
    g = p.add_argument_group("every scenario")
    g.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    g.add_argument("--out", metavar="DIR", default=f"results/{name}",
                   help=f"results folder for {name}.csv and {name}.png (default results/{name})")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: only on a terminal)")
    g.add_argument("--no-plot", dest="draw", action="store_false",
                   help="write the CSV only (no matplotlib needed)")


def run_named(name: str, args: argparse.Namespace, *, stdout: TextIO | None = None,
              stderr: TextIO | None = None) -> Outcome:
    """Run scenario ``name`` with parsed ``args`` (those of its ``hybridsync simulate NAME``
    parser); prints a summary and where the files went."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    progress = args.progress if args.progress is not None else err.isatty()
    out_dir = Path(args.out) if getattr(args, "out", None) else None
    ctx = Context(out_dir, out, err, progress=progress, plot=getattr(args, "draw", True))
    outcome = SCENARIOS[name].run(args, ctx)
    if name != "partition":
        for line in outcome.summary:
            ctx.say(line)
        ctx.say(f"wrote {len(outcome.rows)} rows to {outcome.csv_path}")
        if outcome.png_path is not None:
            ctx.say(f"wrote plot to {outcome.png_path}")
    return outcome


def describe_all() -> str:
    """The ``--list`` text: one line per scenario."""
    width = max(len(n) for n in SCENARIOS)
    return "\n".join(f"{s.name:<{width}}  {s.summary}" for s in SCENARIOS.values())
