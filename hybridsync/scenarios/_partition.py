"""``partition``: one seeded run, its timeline tick by tick (what ``hybridsync simulate`` did
before it had scenarios, and still does without a NAME).

The peers write while connected, then while split in two halves for the middle half of the
run, then the partition heals and the replicas must converge; G1–G3 are checked at the end.
One CSV row per tick: frames and bytes sent, the number of distinct replica states, the
largest number of contributions a replica lacks.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hybridsync.errors import GuaranteeViolation
from hybridsync.scenarios._common import Context, Outcome, Row, figure, write_rows
from hybridsync.sim import Fault, SimOptions, Simulation, TickSample, run
from hybridsync.sim._options import ROUTINGS

__all__ = ["COLUMNS", "add_arguments", "partition_faults", "plot_series", "run_scenario",
           "sample_rows"]

COLUMNS = ("tick", "time_ms", "phase", "messages", "bytes", "distinct_states",
               "max_divergence", "partitioned", "down")


def add_arguments(p: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    """The scenario's options; ``hidden`` keeps them out of ``--help`` (the legacy copy on
    ``hybridsync simulate`` itself)."""

    def h(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    p.add_argument("--peers", type=int, default=6, help=h("number of replicas (default 6)"))
    p.add_argument("--ticks", type=int, default=240,
                   help=h("ticks of writing; the partition covers the middle half "
                          "(default 240)"))
    p.add_argument("--liveness-ticks", type=int, default=1000,
                   help=h("ticks allowed to converge after the heal (default 1000)"))
    p.add_argument("--loss", type=float, default=0.05,
                   help=h("frame loss probability (default 0.05)"))
    p.add_argument("--duplicate", type=float, default=0.02,
                   help=h("frame duplication probability (default 0.02)"))
    p.add_argument("--reorder", action=argparse.BooleanOptionalAction, default=True,
                   help=h("deliver frames out of order (default on)"))
    p.add_argument("--max-delay-ticks", type=int, default=3, help=h("default 3"))
    p.add_argument("--routing", choices=ROUTINGS, default="mesh", help=h("default mesh"))
    p.add_argument("--batch-size", type=int, default=512, help=h("default 512"))
    p.add_argument("--write-rate", type=float, default=0.5,
                   help=h("field writes per tick (default 0.5)"))
    p.add_argument("--rollbacks", action=argparse.BooleanOptionalAction, default=True,
                   help=h("include transactions that raise and roll back (default on)"))
    p.add_argument("--region-rate", type=float, default=0.2,
                   help=h("text and buffer edits per tick (default 0.2)"))
    p.add_argument("--tick-ms", type=int, default=10,
                   help=h("simulated milliseconds per tick (default 10)"))
    p.add_argument("--csv", metavar="PATH",
                   help=h("write the per-tick series here (default OUT/partition.csv)"))
    p.add_argument("--plot", metavar="PATH",
                   help=h("write the PNG plot here (default OUT/partition.png)"))


def partition_faults(options: SimOptions, peers: Sequence[str]) -> list[Fault]:
    """Split the peers in two halves for the middle half of the run, then heal."""
    half = max(1, len(peers) // 2)
    start, end = options.ticks // 4, (3 * options.ticks) // 4
    if len(peers) < 2:
        return []
    return [Fault(start, "split", tuple(peers[:half])), Fault(end, "heal")]


def sample_rows(samples: Sequence[TickSample], safety_ticks: int) -> list[Row]:
    """One row per tick: traffic, number of distinct replica states, the largest lag."""
    return [
        {"tick": s.tick, "time_ms": s.time_ms,
         "phase": "safety" if s.tick <= safety_ticks else "liveness",
         "messages": s.messages, "bytes": s.bytes, "distinct_states": s.distinct_states,
         "max_divergence": s.max_divergence, "partitioned": s.partitioned, "down": s.down}
        for s in samples
    ]


def plot_series(path: Path, samples: Sequence[TickSample], options: SimOptions,
                faults: Sequence[Fault]) -> None:
    """A PNG of the per-tick series, with the partition shaded."""
    ticks = [s.tick for s in samples]
    title = (f"partition: seed {options.seed}, {options.peers} peers, {options.routing}, "
             f"loss {options.loss:g} (partition shaded)")
    with figure(path, nrows=3, size=(9, 7), title=title) as (_, axes):
        ax0, ax1, ax2 = axes
        ax0.plot(ticks, [s.messages for s in samples], color="tab:blue", lw=0.8)
        ax0.set_ylabel("frames / tick", color="tab:blue")
        twin = ax0.twinx()
        twin.plot(ticks, [s.bytes / 1024 for s in samples], color="tab:orange", lw=0.8)
        twin.set_ylabel("KiB / tick", color="tab:orange")
        ax1.step(ticks, [s.distinct_states for s in samples], where="post", color="tab:green")
        ax1.set_ylabel("distinct states")
        ax2.plot(ticks, [s.max_divergence for s in samples], color="tab:red")
        ax2.set_ylabel("max contributions behind")
        ax2.set_xlabel(f"tick ({options.tick_ms} ms each)")
        starts = [f.tick for f in faults if f.action == "split"]
        ends = [f.tick for f in faults if f.action == "heal"]
        for a, b in zip(starts, ends, strict=False):
            for ax in axes:
                ax.axvspan(a, b, color="grey", alpha=0.15, lw=0)
        for ax in axes:
            ax.sharex(ax2)


def run_scenario(args: argparse.Namespace, ctx: Context) -> Outcome:
    """Run the partition timeline. Without a results folder (``ctx.out_dir`` is None: the
    legacy ``hybridsync simulate`` with no NAME) only ``--csv``/``--plot`` are written."""
    options = SimOptions(
        seed=args.seed, peers=args.peers, ticks=args.ticks,
        liveness_ticks=args.liveness_ticks, loss=args.loss, duplicate=args.duplicate,
        reorder=args.reorder, max_delay_ticks=args.max_delay_ticks, routing=args.routing,
        batch_size=args.batch_size, write_rate=args.write_rate, rollbacks=args.rollbacks,
        region_rate=args.region_rate, tick_ms=args.tick_ms, partitions=True, crashes=False,
    )
    peers = [f"p{i}" for i in range(options.peers)]
    faults = partition_faults(options, peers)
    ctx.say(f"seed={options.seed} options: {options.describe()}")
    if faults:
        split = faults[0]
        rest = [p for p in peers if p not in split.peers]
        ctx.say(f"scenario: connected until tick {split.tick}, then "
                f"{{{', '.join(split.peers)}}} | {{{', '.join(rest)}}} until tick "
                f"{faults[1].tick}, then healed")
    named = ctx.out_dir is not None
    csv_path = Path(args.csv) if args.csv else (ctx.path("partition.csv") if named else None)
    png_path = Path(args.plot) if args.plot else (
        ctx.path("partition.png") if named and ctx.plot else None)
    progress = ctx.bar(options.ticks, unit="tick")

    def on_tick(sim: Simulation) -> None:
        distinct, lag = sim.divergence()
        progress.update(f"states={distinct} lag={lag}")

    try:
        result = run(options, on_tick=on_tick, sample=True, raise_on_violation=False,
                     faults=faults)
    finally:
        progress.close()
    rows = sample_rows(result.samples, options.ticks)
    if csv_path is not None:
        write_rows(csv_path, COLUMNS, rows)
        ctx.say(f"wrote {len(rows)} rows to {csv_path}")
    if png_path is not None:
        plot_series(png_path, result.samples, options, faults)
        ctx.say(f"wrote plot to {png_path}")
    ctx.say(result.summary())
    if not result.ok:
        raise GuaranteeViolation(result.violation or "the run failed", replay=result.replay)
    return Outcome(rows, csv_path or Path(), png_path, [result.summary()])
