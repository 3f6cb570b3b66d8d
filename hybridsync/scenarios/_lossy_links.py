"""``lossy-links``: how the time to converge grows with frame loss, duplication and
reordering.

Every run uses the simulator's ``epochs`` mode with no partitions or crashes: each epoch a
burst of writes (fields, texts and buffers) lands on random peers, then the run ticks until
every replica is byte-identical; the ticks that takes (one sample per burst) is the
convergence time. Loss, duplication and reordering act on every frame, before and after the
burst. Three sweeps, each varying one knob with the others at the baseline (no loss, no
duplication, reordering on with a delay of 1–3 ticks):

* ``loss``: the probability that a frame is dropped;
* ``duplicate``: the probability that a frame is delivered twice;
* ``reorder``: the delay of each frame is drawn from 1..``max-delay-ticks``; with reordering
  off each link stays FIFO (a late frame holds back the ones behind it), with it on frames
  overtake each other — the larger the delay spread, the more they do.

The simulator's reordering is a switch, not a rate; its strength is the delay spread.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hybridsync.errors import GuaranteeViolation
from hybridsync.scenarios._common import (
    Context,
    Outcome,
    Row,
    check_range,
    figure,
    float_list,
    int_list,
    mean,
    write_rows,
)
from hybridsync.sim import SimOptions, run
from hybridsync.sim._options import MAX_PEERS, ROUTINGS

__all__ = ["COLUMNS", "add_arguments", "measure", "run_scenario"]

COLUMNS = ("sweep", "loss", "duplicate", "reorder", "max_delay_ticks", "seed", "bursts",
           "converge_ticks_mean", "converge_ticks_max", "messages", "bytes", "dropped_loss",
           "duplicated")
BASE_DELAY = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", type=float_list, default=[0.0, 0.1, 0.2, 0.4], metavar="P,P,...",
                   help="loss probabilities to sweep, below 0.95 (default 0,0.1,0.2,0.4)")
    p.add_argument("--duplicate", type=float_list, default=[0.0, 0.1, 0.3], metavar="P,P,...",
                   help="duplication probabilities to sweep (default 0,0.1,0.3)")
    p.add_argument("--max-delay-ticks", type=int_list, default=[1, 2, 4, 8], metavar="D,D,...",
                   help="delay spreads for the reordering sweep (default 1,2,4,8)")
    p.add_argument("--seeds", type=int, default=3,
                   help="runs per point, seeds SEED..SEED+N-1 (default 3)")
    p.add_argument("--peers", type=int, default=4, help=f"2..{MAX_PEERS} (default 4)")
    p.add_argument("--epochs", type=int, default=3,
                   help="bursts per run, one convergence sample each (default 3)")
    p.add_argument("--burst-ops", type=int, default=12,
                   help="field operations per burst (default 12)")
    p.add_argument("--region-rate", type=float, default=0.3,
                   help="text/buffer edits per field operation (default 0.3)")
    p.add_argument("--routing", choices=ROUTINGS, default="mesh", help="default mesh")
    p.add_argument("--liveness-ticks", type=int, default=20_000,
                   help="ticks allowed to converge after a burst (default 20000)")


def measure(
    *, loss: float, duplicate: float, reorder: bool, max_delay_ticks: int, seed: int,
    peers: int = 4, epochs: int = 3, burst_ops: int = 12, region_rate: float = 0.3,
    routing: str = "mesh", liveness_ticks: int = 20_000, sweep: str = "",
) -> Row:
    """One run (see the module docstring); G1–G3 failures raise :class:`GuaranteeViolation`."""
    options = SimOptions(
        seed=seed, peers=peers, ticks=0, liveness_ticks=liveness_ticks, loss=loss,
        duplicate=duplicate, reorder=reorder, max_delay_ticks=max_delay_ticks,
        routing=routing, partitions=False, crashes=False, mode="epochs", epochs=epochs,
        burst_ops=burst_ops, region_rate=region_rate,
    )
    result = run(options)
    s = result.stats
    assert s is not None
    return {
        "sweep": sweep, "loss": loss, "duplicate": duplicate, "reorder": reorder,
        "max_delay_ticks": max_delay_ticks, "seed": seed, "bursts": len(result.liveness_ticks),
        "converge_ticks_mean": mean(result.liveness_ticks),
        "converge_ticks_max": max(result.liveness_ticks), "messages": s.messages,
        "bytes": s.bytes, "dropped_loss": s.dropped_loss, "duplicated": s.duplicated,
    }


def _points(args: argparse.Namespace) -> list[tuple[str, float, float, bool, int]]:
    points = [("loss", p, 0.0, True, BASE_DELAY) for p in args.loss]
    points += [("duplicate", 0.0, p, True, BASE_DELAY) for p in args.duplicate]
    points += [("reorder", 0.0, 0.0, r, d) for d in args.max_delay_ticks for r in (False, True)]
    return points


def plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Top: ticks to converge (mean, band = min..max of the seeds' means); bottom: KiB sent
    per burst. One column per sweep."""
    with figure(path, nrows=2, ncols=3, size=(14, 7.5), title=title) as (_, axes):
        specs = (("loss", "loss", "frame loss probability", None),
                 ("duplicate", "duplicate", "frame duplication probability", None),
                 ("reorder", "max_delay_ticks", "delay spread (ticks, each frame 1..D)",
                  ((False, "FIFO links"), (True, "reordered"))))
        for col, (sweep, key, xlabel, lines) in enumerate(specs):
            top, bottom = axes[col], axes[3 + col]
            for flag, label in lines or ((None, sweep),):
                sel = [r for r in rows if r["sweep"] == sweep
                       and (flag is None or r["reorder"] == flag)]
                xs = sorted({r[key] for r in sel})
                per = [[r for r in sel if r[key] == x] for x in xs]
                ys = [mean([r["converge_ticks_mean"] for r in g]) for g in per]
                lo = [min(r["converge_ticks_mean"] for r in g) for g in per]
                hi = [max(r["converge_ticks_mean"] for r in g) for g in per]
                line = top.plot(xs, ys, marker="o", label=label)[0]
                top.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color(), lw=0)
                kib = [mean([r["bytes"] / r["bursts"] / 1024 for r in g]) for g in per]
                bottom.plot(xs, kib, marker="o", color=line.get_color(), label=label)
            top.set_ylim(bottom=0)
            bottom.set_ylim(bottom=0)
            top.set_ylabel("ticks to converge after a burst")
            bottom.set_ylabel("KiB sent per burst")
            bottom.set_xlabel(xlabel)
            top.set_title(f"{sweep} sweep")
            if lines:
                top.legend()
                bottom.legend()


def run_scenario(args: argparse.Namespace, ctx: Context) -> Outcome:
    check_range(args.loss, "--loss", 0.0, 0.9)
    check_range(args.duplicate, "--duplicate", 0.0, 1.0)
    check_range(args.max_delay_ticks, "--max-delay-ticks", 1, 10_000)
    check_range([args.seeds], "--seeds", 1, 10_000)
    check_range([args.peers], "--peers", 2, MAX_PEERS)
    points = _points(args)
    ctx.say(f"lossy-links: {len(points)} points x {args.seeds} seed(s) from {args.seed}, "
            f"{args.peers} peers, {args.routing}, {args.epochs} bursts of {args.burst_ops} ops")
    bar = ctx.bar(len(points) * args.seeds, unit="run")
    rows: list[Row] = []
    done: dict[tuple[float, float, bool, int, int], Row] = {}
    try:
        for sweep, loss, dup, reorder, delay in points:
            for k in range(args.seeds):
                seed = args.seed + k
                key = (loss, dup, reorder, delay, seed)
                bar.update(f"{sweep}: loss={loss:g} dup={dup:g} reorder={reorder} "
                           f"delay={delay}", n=0)
                if key not in done:
                    try:
                        done[key] = measure(
                            loss=loss, duplicate=dup, reorder=reorder, max_delay_ticks=delay,
                            seed=seed, peers=args.peers, epochs=args.epochs,
                            burst_ops=args.burst_ops, region_rate=args.region_rate,
                            routing=args.routing, liveness_ticks=args.liveness_ticks)
                    except GuaranteeViolation as exc:
                        raise GuaranteeViolation(
                            f"lossy-links loss={loss} duplicate={dup} reorder={reorder} "
                            f"max_delay_ticks={delay} seed={seed}: {exc}") from exc
                rows.append({**done[key], "sweep": sweep})
                bar.update()
    finally:
        bar.close()
    csv_path = ctx.path("lossy-links.csv")
    write_rows(csv_path, COLUMNS, rows)
    png = None
    if ctx.plot:
        png = ctx.path("lossy-links.png")
        plot(png, rows, f"lossy-links: {args.peers} peers, {args.routing}, {args.epochs} "
                        f"bursts x {args.seeds} seed(s); line = mean, band = min..max of the "
                        f"seeds; 1 tick = 10 ms")
    summary = []
    for sweep, loss, dup, reorder, delay in points:
        sel = [r for r in rows if r["sweep"] == sweep and (r["loss"], r["duplicate"],
               r["reorder"], r["max_delay_ticks"]) == (loss, dup, reorder, delay)]
        summary.append(
            f"{sweep:>9}: loss {loss:<4g} dup {dup:<4g} reorder {int(reorder)} delay "
            f"1..{delay:<2}: converge {mean([r['converge_ticks_mean'] for r in sel]):6.1f} "
            f"ticks (worst burst {max(r['converge_ticks_max'] for r in sel)}), "
            f"{mean([r['bytes'] / r['bursts'] for r in sel]) / 1024:7.1f} KiB/burst")
    return Outcome(rows, csv_path, png, summary)
