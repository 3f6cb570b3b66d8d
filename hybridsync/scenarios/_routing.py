"""``routing``: mesh vs star vs gossip relay — what each costs in frames, bytes and time to
converge, and the proof that none of them changes the result (G4, policy independence).

Every policy runs the same seeded workload in the simulator's ``epochs`` mode: each epoch a
burst of writes (fields, texts and buffers) lands on random peers, then (with
``--fault-ticks``) a phase of partitions, then the replicas must converge. Because every
burst sees the converged state of the previous epoch, the history is a pure function of the
seed, whatever the routing: *mesh* (everyone syncs to everyone each tick), *star* (``p0`` is
the hub; leaves only talk to it) and *gossip* (each peer syncs to ``gossip-fanout`` random
peers each tick), under each batch size.

Measured per policy: frames and bytes sent over the whole run, and the ticks from the end of
each burst (or fault phase) until every replica is byte-identical. Checked: G1–G3 inside
every run, then G4 across the policies of each group size — the reference replica's
``history()`` ids, fields JSON, conflicts and ``state_digest()`` (fields and every region's
bytes) must be identical. A difference fails the scenario (exit status 1) after the CSV and
plot are written. The replicas run without garbage collection (``gc_min_entries=None``) so
that ``history()`` is the whole history, not the part after a checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridsync.errors import GuaranteeViolation
from hybridsync.replica import Memory
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
from hybridsync.sim import RunResult, SimOptions, check_policy_independence, run
from hybridsync.sim._options import MAX_PEERS, ROUTINGS

__all__ = ["COLUMNS", "add_arguments", "measure", "run_scenario"]

COLUMNS = ("peers", "routing", "batch_size", "seed", "epochs", "ops", "region_edits",
           "messages", "bytes", "delivered", "duplicated", "dropped", "converge_ticks_mean",
           "converge_ticks_max", "history_length", "history_digest", "state_digest",
           "identical")
_COLORS = {"mesh": "tab:blue", "star": "tab:orange", "gossip": "tab:green"}


def _routing_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in ROUTINGS]
    if bad or not values:
        raise argparse.ArgumentTypeError(
            f"routings must be among {', '.join(ROUTINGS)}; got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers", type=int_list, default=[4, 8], metavar="N,N,...",
                   help=f"group sizes to compare, 2..{MAX_PEERS} (default 4,8)")
    p.add_argument("--routings", type=_routing_list, default=list(ROUTINGS),
                   metavar="R,R,...", help="policies to compare (default mesh,star,gossip)")
    p.add_argument("--batch-sizes", type=int_list, default=[512], metavar="B,B,...",
                   help="contributions per frame to compare (default 512)")
    p.add_argument("--epochs", type=int, default=3,
                   help="bursts of writes, each followed by convergence (default 3)")
    p.add_argument("--burst-ops", type=int, default=12,
                   help="field operations per burst (default 12)")
    p.add_argument("--region-rate", type=float, default=0.3,
                   help="text/buffer edits per field operation (default 0.3)")
    p.add_argument("--gossip-fanout", type=int, default=2, help="default 2")
    p.add_argument("--fault-ticks", type=int, default=0,
                   help="ticks of partitions after each burst (default 0: none)")
    p.add_argument("--loss", type=float, default=0.0, help="frame loss probability (default 0)")
    p.add_argument("--duplicate", type=float, default=0.0,
                   help="frame duplication probability (default 0)")
    p.add_argument("--liveness-ticks", type=int, default=5000,
                   help="ticks allowed to converge after each burst (default 5000)")


def measure(
    peers: int, seed: int, *, routings: Sequence[str] = ROUTINGS,
    batch_sizes: Sequence[int] = (512,), epochs: int = 3, burst_ops: int = 12,
    region_rate: float = 0.3, gossip_fanout: int = 2, fault_ticks: int = 0, loss: float = 0.0,
    duplicate: float = 0.0, liveness_ticks: int = 5000,
) -> tuple[list[Row], str | None]:
    """One row per (routing, batch size) for ``peers`` peers, and the G4 violation found
    (``None`` when state and history are identical everywhere). G1–G3 failures raise."""
    base = SimOptions(
        seed=seed, peers=peers, ticks=fault_ticks, liveness_ticks=liveness_ticks, loss=loss,
        duplicate=duplicate, gossip_fanout=gossip_fanout, partitions=fault_ticks > 0,
        crashes=False, mode="epochs", epochs=epochs, burst_ops=burst_ops,
        region_rate=region_rate,
    )
    rows: list[Row] = []
    prints = []
    digests: list[str] = []
    for routing in routings:
        for batch in batch_sizes:
            result, digest = _run_policy(base, routing, batch)
            assert result.fingerprint is not None and result.stats is not None
            history = hashlib.blake2b("".join(result.fingerprint.history).encode(),
                                      digest_size=8).hexdigest()
            prints.append(result.fingerprint)
            digests.append(digest)
            s = result.stats
            rows.append({
                "peers": peers, "routing": routing, "batch_size": batch, "seed": seed,
                "epochs": epochs, "ops": result.ops, "region_edits": result.region_ops,
                "messages": s.messages, "bytes": s.bytes, "delivered": s.delivered,
                "duplicated": s.duplicated,
                "dropped": s.dropped_loss + s.dropped_partition + s.dropped_down,
                "converge_ticks_mean": mean(result.liveness_ticks),
                "converge_ticks_max": max(result.liveness_ticks),
                "history_length": len(result.fingerprint.history), "history_digest": history,
                "state_digest": digest, "identical": True,
            })
    problem: str | None = None
    try:
        check_policy_independence(prints, replay=base.replay_command() + " --check-policies")
    except GuaranteeViolation as exc:
        problem = str(exc)
    ref_row, ref = rows[0], prints[0]
    for row, fp in zip(rows, prints, strict=True):
        same = (row["state_digest"] == ref_row["state_digest"]
                and (fp.history, fp.fields_json, fp.conflicts)
                == (ref.history, ref.fields_json, ref.conflicts))
        row["identical"] = same
        if not same and problem is None:
            problem = (f"G4 policy independence: {row['routing']}/batch={row['batch_size']} "
                       f"ends in state {row['state_digest']} vs {ref_row['state_digest']}")
    return rows, problem


def _run_policy(base: SimOptions, routing: str, batch: int) -> tuple[RunResult, str]:
    """Run ``base`` under one policy; the result and the reference replica's state digest."""
    replicas: dict[str, Memory] = {}

    def make(space: str, peer: str, **kw: Any) -> Memory:
        # GC off: history() keeps every contribution, so G4 compares whole histories
        replicas[peer] = Memory(space, peer, gc_min_entries=None, **kw)
        return replicas[peer]

    result = run(base, routing=routing, batch_size=batch, memory_factory=make)
    return result, replicas["p0"].state_digest()


def plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Grouped bars per group size: frames, KiB and mean ticks to converge per policy."""
    policies = list(dict.fromkeys((r["routing"], r["batch_size"]) for r in rows))
    sizes = sorted({r["peers"] for r in rows})
    multi_batch = len({b for _, b in policies}) > 1
    panels = (("messages", "frames sent (whole run, log scale)", 1),
              ("bytes", "KiB sent (whole run, log scale)", 1024),
              ("converge_ticks_mean", "ticks to converge after a burst\n(mean over bursts; "
               "1 tick = 10 ms)", 1))
    width = 0.8 / len(policies)
    with figure(path, ncols=3, size=(14, 4.6), title=title) as (_, axes):
        for ax, (key, label, scale) in zip(axes, panels, strict=True):
            for i, (routing, batch) in enumerate(policies):
                ys = [mean([r[key] / scale for r in rows
                            if r["peers"] == n and (r["routing"], r["batch_size"]) ==
                            (routing, batch)]) for n in sizes]
                xs = [k + (i - (len(policies) - 1) / 2) * width for k in range(len(sizes))]
                name = f"{routing}, batch {batch}" if multi_batch else routing
                ax.bar(xs, ys, width * 0.95, label=name, color=_COLORS.get(routing),
                       alpha=1.0 if batch == policies[0][1] else 0.55)
            ax.set_xticks(range(len(sizes)), [f"{n} peers" for n in sizes])
            ax.set_ylabel(label)
            if key != "converge_ticks_mean":
                ax.set_yscale("log")
        axes[0].legend(title="routing")


def run_scenario(args: argparse.Namespace, ctx: Context) -> Outcome:
    check_range(args.peers, "--peers", 2, MAX_PEERS)
    check_range(args.batch_sizes, "--batch-sizes", 1, 65_536)
    check_range([args.epochs], "--epochs", 1, 10_000)
    policies = len(args.routings) * len(args.batch_sizes)
    ctx.say(f"routing: {', '.join(args.routings)} x batch {args.batch_sizes} on "
            f"{args.peers} peers, {args.epochs} bursts of {args.burst_ops} ops, seed "
            f"{args.seed}, loss {args.loss:g}")
    bar = ctx.bar(len(args.peers), unit="group", desc=f"{policies} policies per group")
    rows: list[Row] = []
    problems: list[str] = []
    try:
        for n in args.peers:
            bar.update(f"{n} peers", n=0)
            got, problem = measure(
                n, args.seed, routings=args.routings, batch_sizes=args.batch_sizes,
                epochs=args.epochs, burst_ops=args.burst_ops, region_rate=args.region_rate,
                gossip_fanout=args.gossip_fanout, fault_ticks=args.fault_ticks,
                loss=args.loss, duplicate=args.duplicate, liveness_ticks=args.liveness_ticks)
            rows += got
            if problem:
                problems.append(f"{n} peers: {problem}")
            bar.update(f"{n} peers: {'G4 ok' if not problem else 'G4 VIOLATED'}")
    finally:
        bar.close()
    csv_path = ctx.path("routing.csv")
    write_rows(csv_path, COLUMNS, rows)
    verdict = ("G4 holds: identical state and history under every policy" if not problems
               else "G4 VIOLATED: state or history differ between policies")
    png = None
    if ctx.plot:
        png = ctx.path("routing.png")
        plot(png, rows, f"routing (seed {args.seed}, {args.epochs} bursts of "
                        f"{args.burst_ops} ops, loss {args.loss:g}) — {verdict}")
    if problems:
        ctx.say(f"wrote {len(rows)} rows to {csv_path}" + (f" and {png}" if png else ""))
        raise GuaranteeViolation("; ".join(problems))
    summary = [f"{r['peers']:>3} peers {r['routing']:>6} batch {r['batch_size']:>4}: "
               f"{r['messages']:>6} frames, {r['bytes']:>8} B, converge "
               f"{r['converge_ticks_mean']:.1f} ticks (max {r['converge_ticks_max']}), "
               f"history {r['history_length']} contributions {r['history_digest']}, "
               f"state {r['state_digest'][:12]}" for r in rows]
    summary.append(verdict + " (checked: history ids, fields, conflicts, state digest)")
    return Outcome(rows, csv_path, png, summary)
