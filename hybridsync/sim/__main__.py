"""``python -m hybridsync.sim --seed N [options]``: run or replay one seeded simulation.

Options not given are drawn from the seed; the seed and every option are printed first. On a
violated guarantee the command that replays the run is printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from hybridsync.errors import ConfigError, GuaranteeViolation
from hybridsync.sim._options import FILL_MODES, MODES, ROUTINGS, SCALES, SimOptions
from hybridsync.sim._runner import check_policies, run

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "python -m hybridsync.sim") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run (or replay) one deterministic hybridsync simulation: a safety phase "
        "with faults, a liveness phase that heals and demands convergence, then the G1-G3 "
        "checkers. Options you leave out are drawn from the seed.",
        epilog="Exit status: 0 all guarantees held, 1 a guarantee was violated, 2 usage error.",
    )
    p.add_argument("--seed", type=int, required=True, help="the seed that drives everything")
    p.add_argument("--count", type=int, default=1,
                   help="run seeds SEED..SEED+COUNT-1 (a sweep); default 1")
    p.add_argument("--scale", choices=SCALES, default="default",
                   help="size of the options drawn from the seed")
    p.add_argument("--check-policies", action="store_true",
                   help="G4: run in epochs mode under mesh/star/gossip x batch 1/512 and compare")
    p.add_argument("--time-limit-s", type=float, default=None,
                   help="fail a run that takes longer than this (wall clock)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    g = p.add_argument_group("run options (drawn from the seed when omitted)")
    g.add_argument("--peers", type=int)
    g.add_argument("--ticks", type=int, help="safety-phase ticks (per epoch in epochs mode)")
    g.add_argument("--liveness-ticks", type=int, help="ticks allowed to converge after healing")
    g.add_argument("--loss", type=float, help="probability a frame is lost")
    g.add_argument("--duplicate", type=float, help="probability a frame is duplicated")
    g.add_argument("--reorder", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--max-delay-ticks", type=int)
    g.add_argument("--routing", choices=ROUTINGS)
    g.add_argument("--gossip-fanout", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--partitions", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--crashes", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--write-rate", type=float, help="workload operations per tick")
    g.add_argument("--rollbacks", action=argparse.BooleanOptionalAction, default=None,
                   help="include transactions that raise and roll back")
    g.add_argument("--region-rate", type=float, help="text and buffer edits per tick")
    g.add_argument("--mode", choices=MODES)
    g.add_argument("--epochs", type=int)
    g.add_argument("--burst-ops", type=int)
    g.add_argument("--tick-ms", type=int)
    g.add_argument("--group-commit", action=argparse.BooleanOptionalAction, default=None,
                   help="replicas batch small field writes until a cycle (Memory(group_commit="
                        "True)); a crash loses the batch")
    g.add_argument("--flush-probability", type=float,
                   help="chance a peer runs its sync round (its flush) in a safety-phase tick")
    g.add_argument("--commit-interval-ms", type=int,
                   help="poll() every replica every tick with this commit interval (0: never)")
    g.add_argument("--fill-batches", type=int,
                   help="group commit: bursts that fill a pending batch past its limit")
    g.add_argument("--fill-mode", choices=FILL_MODES,
                   help="fill a batch to its write-count limit or its byte limit")
    g.add_argument("--max-frame-bytes", type=int,
                   help="frame size limit of every replica's sync_to (>= 1024)")
    g.add_argument("--large-value-rate", type=float,
                   help="writes per tick of a value sized around --max-frame-bytes")
    g.add_argument("--rich-region-rate", type=float,
                   help="operations per tick of the richer text and buffer workload")
    return p


_OPTION_NAMES = (
    "peers", "ticks", "liveness_ticks", "loss", "duplicate", "reorder", "max_delay_ticks",
    "routing", "gossip_fanout", "batch_size", "partitions", "crashes", "write_rate",
    "rollbacks", "region_rate", "mode", "epochs", "burst_ops", "tick_ms", "group_commit",
    "flush_probability", "commit_interval_ms", "fill_batches", "fill_mode", "max_frame_bytes",
    "large_value_rate", "rich_region_rate",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    overrides = {k: getattr(args, k) for k in _OPTION_NAMES}
    failures: list[tuple[int, str, str]] = []
    for seed in range(args.seed, args.seed + args.count):
        try:
            options = SimOptions.draw(seed, scale=args.scale, **overrides)
        except ConfigError as exc:
            parser.error(str(exc))
        if not args.quiet:
            print(f"seed={seed} options: {options.describe()}", flush=True)
        try:
            if args.check_policies:
                results = check_policies(options)
                if not args.quiet:
                    for r in results:
                        print(f"  {r.options.routing}/batch={r.options.batch_size}: "
                              f"{r.summary()}")
                    print("  G4 ok: identical fields and history() under every policy")
            else:
                result = run(options, time_limit_s=args.time_limit_s)
                if not args.quiet:
                    print(f"  {result.summary()}", flush=True)
        except GuaranteeViolation as exc:
            replay = exc.replay or options.replay_command()
            message = str(exc).split("\nreplay with:")[0]
            failures.append((seed, message, replay))
            if exc.__cause__ is not None:  # the code under test crashed: show where
                traceback.print_exception(exc.__cause__, file=sys.stderr)
            print(f"seed={seed} FAILED: {message}", flush=True)
            print(f"replay: {replay}", flush=True)
    if args.count > 1:
        print(f"{args.count - len(failures)}/{args.count} seeds passed")
        for seed, _, replay in failures:
            print(f"  failed seed {seed}: {replay}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
