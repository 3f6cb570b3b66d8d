"""``partition-heal``: how long replicas take to converge after a partition heals, and how many
bytes that costs, as functions of the partition's length and the number of peers.

Each run: ``warmup`` connected ticks of writing, then the peers split into two halves for
``L`` ticks while everyone keeps writing (fields and texts/buffers, the simulator's workload),
then the partition heals and the run ticks until every replica is byte-identical (G1–G3 are
checked at the end of every run). Measured at the heal: how many contributions the most
lagging replica lacks; after it: the ticks to converge and the frames and bytes sent until
then. The write rate is the whole group's, so a longer partition means more divergence, not
more peers.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from hybridsync.errors import GuaranteeViolation
from hybridsync.scenarios._common import (
    Context,
    Outcome,
    Row,
    check_range,
    figure,
    int_list,
    mean,
    write_rows,
)
from hybridsync.sim import Fault, SimOptions, Simulation, run
from hybridsync.sim._options import MAX_PEERS, ROUTINGS

__all__ = ["COLUMNS", "add_arguments", "measure", "run_scenario"]

COLUMNS = ("peers", "partition_ticks", "seed", "ops", "region_edits", "behind_at_heal",
           "states_at_heal", "converge_ticks", "converge_ms", "messages_after_heal",
           "bytes_after_heal", "bytes_total", "conflicts")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers", type=int_list, default=[2, 4, 8], metavar="N,N,...",
                   help=f"peer counts to sweep, 2..{MAX_PEERS} (default 2,4,8)")
    p.add_argument("--partition-ticks", type=int_list, default=[10, 40, 160],
                   metavar="L,L,...", help="partition lengths in ticks (default 10,40,160)")
    p.add_argument("--seeds", type=int, default=2,
                   help="runs per cell, seeds SEED..SEED+N-1 (default 2)")
    p.add_argument("--warmup-ticks", type=int, default=20,
                   help="connected ticks before the split (default 20)")
    p.add_argument("--liveness-ticks", type=int, default=5000,
                   help="ticks allowed to converge after the heal (default 5000)")
    p.add_argument("--write-rate", type=float, default=0.5,
                   help="field writes per tick, whole group (default 0.5)")
    p.add_argument("--region-rate", type=float, default=0.2,
                   help="text and buffer edits per tick, whole group (default 0.2)")
    p.add_argument("--loss", type=float, default=0.0, help="frame loss probability (default 0)")
    p.add_argument("--duplicate", type=float, default=0.0,
                   help="frame duplication probability (default 0)")
    p.add_argument("--reorder", action=argparse.BooleanOptionalAction, default=True,
                   help="deliver frames out of order (default on)")
    p.add_argument("--max-delay-ticks", type=int, default=3, help="default 3")
    p.add_argument("--routing", choices=ROUTINGS, default="mesh", help="default mesh")


def measure(
    peers: int, partition_ticks: int, seed: int, *, warmup_ticks: int = 20,
    liveness_ticks: int = 5000, write_rate: float = 0.5, region_rate: float = 0.2,
    loss: float = 0.0, duplicate: float = 0.0, reorder: bool = True, max_delay_ticks: int = 3,
    routing: str = "mesh", on_tick: Callable[[Simulation], None] | None = None,
) -> Row:
    """One run (see the module docstring); raises :class:`GuaranteeViolation` on a failed
    check, including no convergence within ``liveness_ticks``."""
    heal_at = warmup_ticks + partition_ticks
    options = SimOptions(
        seed=seed, peers=peers, ticks=heal_at, liveness_ticks=liveness_ticks, loss=loss,
        duplicate=duplicate, reorder=reorder, max_delay_ticks=max_delay_ticks, routing=routing,
        write_rate=write_rate, region_rate=region_rate, partitions=True, crashes=False,
    )
    names = [f"p{i}" for i in range(peers)]
    faults = [Fault(warmup_ticks, "split", tuple(names[: peers // 2]))] if peers > 1 else []
    at_heal: dict[str, int] = {}

    def tick(sim: Simulation) -> None:
        if sim.tick_count == heal_at:
            c = sim.network.counters
            distinct, lag = sim.divergence()
            at_heal.update(messages=c.sent, bytes=c.bytes_sent, states=distinct, behind=lag)
        if on_tick is not None:
            on_tick(sim)

    result = run(options, faults=faults, on_tick=tick)
    stats = result.stats
    assert stats is not None and at_heal and result.liveness_ticks
    converge = result.liveness_ticks[0]
    return {
        "peers": peers, "partition_ticks": partition_ticks, "seed": seed, "ops": result.ops,
        "region_edits": result.region_ops, "behind_at_heal": at_heal["behind"],
        "states_at_heal": at_heal["states"], "converge_ticks": converge,
        "converge_ms": converge * options.tick_ms,
        "messages_after_heal": stats.messages - at_heal["messages"],
        "bytes_after_heal": stats.bytes - at_heal["bytes"], "bytes_total": stats.bytes,
        "conflicts": result.conflicts,
    }


def plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Three panels against the partition length, one line per group size (means over
    seeds)."""
    cells: dict[tuple[int, int], list[Row]] = defaultdict(list)
    for r in rows:
        cells[(r["peers"], r["partition_ticks"])].append(r)
    peer_counts = sorted({p for p, _ in cells})
    lengths = sorted({n for _, n in cells})
    panels = (("behind_at_heal", "contributions the most lagging\nreplica lacks at the heal"),
              ("converge_ticks", "ticks to converge after the heal\n(1 tick = 10 ms)"),
              ("bytes_after_heal", "KiB sent after the heal\n(all peers, until converged)"))
    with figure(path, ncols=3, size=(14, 4.6), title=title) as (_, axes):
        for ax, (key, label) in zip(axes, panels, strict=True):
            scale = 1024 if key.startswith("bytes") else 1
            for p in peer_counts:
                ys = [mean([r[key] / scale for r in cells[(p, n)]]) for n in lengths]
                ax.plot(lengths, ys, marker="o", label=f"{p} peers")
            ax.set_xscale("log")
            ax.set_xticks(lengths, [str(n) for n in lengths])
            ax.set_xlabel("partition length (ticks)")
            ax.set_ylabel(label)
            if key == "bytes_after_heal":
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
        axes[0].legend(title="group size")


def run_scenario(args: argparse.Namespace, ctx: Context) -> Outcome:
    check_range(args.peers, "--peers", 2, MAX_PEERS)
    check_range(args.partition_ticks, "--partition-ticks", 1, 100_000)
    check_range([args.seeds], "--seeds", 1, 10_000)
    check_range([args.warmup_ticks], "--warmup-ticks", 0, 100_000)
    cells = [(p, n, args.seed + k) for p in args.peers for n in args.partition_ticks
             for k in range(args.seeds)]
    ctx.say(f"partition-heal: peers {args.peers}, partition lengths {args.partition_ticks} "
            f"ticks, {args.seeds} seed(s) from {args.seed}, routing {args.routing}, "
            f"loss {args.loss:g}")
    bar = ctx.bar(len(cells), unit="run")
    rows: list[Row] = []
    try:
        for p, n, seed in cells:
            bar.update(f"peers={p} partition={n} seed={seed}", n=0)
            try:
                row = measure(
                    p, n, seed, warmup_ticks=args.warmup_ticks,
                    liveness_ticks=args.liveness_ticks, write_rate=args.write_rate,
                    region_rate=args.region_rate, loss=args.loss, duplicate=args.duplicate,
                    reorder=args.reorder, max_delay_ticks=args.max_delay_ticks,
                    routing=args.routing)
            except GuaranteeViolation as exc:
                raise GuaranteeViolation(
                    f"partition-heal peers={p} partition={n} seed={seed}: {exc}") from exc
            rows.append(row)
            bar.update(f"peers={p} partition={n} converged in {row['converge_ticks']}")
    finally:
        bar.close()
    csv_path = ctx.path("partition-heal.csv")
    write_rows(csv_path, COLUMNS, rows)
    png = None
    if ctx.plot:
        png = ctx.path("partition-heal.png")
        plot(png, rows, f"partition-heal: convergence after a two-way split heals "
                        f"({args.routing}, loss {args.loss:g}, write rate {args.write_rate:g}"
                        f"+{args.region_rate:g}/tick, mean of {args.seeds} seed(s))")
    summary = [f"{r['peers']:>3} peers, partition {r['partition_ticks']:>5} ticks, seed "
               f"{r['seed']}: {r['behind_at_heal']:>4} behind at heal, converged in "
               f"{r['converge_ticks']:>4} ticks, {r['bytes_after_heal']:>9} B after heal"
               for r in rows]
    return Outcome(rows, csv_path, png, summary)
