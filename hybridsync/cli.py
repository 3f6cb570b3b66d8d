"""The ``hybridsync`` command line.

``hybridsync simulate``  a seeded partition scenario with a progress bar, a CSV and a plot
``hybridsync demo``      agents sharing memory over the in-process simulator, live

Exit status: 0 everything held, 1 a guarantee was violated, 2 usage error. Adding a command
is one ``_add_<name>`` function and one line in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from hybridsync.errors import ConfigError, GuaranteeViolation, SimulationError
from hybridsync.sim import Fault, SimOptions, Simulation, TickSample, run
from hybridsync.sim._checkers import check_causal_order, check_convergence
from hybridsync.sim._options import ROUTINGS

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridsync",
        description="Coordinator-free sync of AI agents' working memory. "
        "Run a command with --help for its options.",
        epilog="Exit status: 0 ok, 1 a guarantee was violated, 2 usage error.",
    )
    from hybridsync import __version__

    parser.add_argument("--version", action="version", version=f"hybridsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_simulate(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hybridsync`` script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except (ConfigError, SimulationError) as exc:
        if isinstance(exc, GuaranteeViolation):
            print(f"guarantee violated: {exc}", file=sys.stderr)
            return EXIT_VIOLATION
        print(f"hybridsync {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# ---- simulate ------------------------------------------------------------------------------
def _add_simulate(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a seeded partition scenario; write a CSV and a plot",
        description="Run a deterministic partition scenario in the simulator: the peers write "
        "while connected, then while split in two groups, then the partition heals and the "
        "replicas must converge. The same seed always gives the same run. Writes one CSV row "
        "per tick (messages, bytes, distinct states, max divergence) and optionally a PNG plot; "
        "checks the guarantees G1-G3 at the end.",
        epilog="Example: hybridsync simulate --seed 7 --peers 6 --loss 0.1 "
        "--csv run.csv --plot run.png",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the run (default 1)")
    p.add_argument("--peers", type=int, default=6, help="number of replicas (default 6)")
    p.add_argument("--ticks", type=int, default=240,
                   help="ticks of writing; the partition covers the middle half (default 240)")
    p.add_argument("--liveness-ticks", type=int, default=1000,
                   help="ticks allowed to converge after the heal (default 1000)")
    p.add_argument("--loss", type=float, default=0.05, help="frame loss probability")
    p.add_argument("--duplicate", type=float, default=0.02,
                   help="frame duplication probability")
    p.add_argument("--reorder", action=argparse.BooleanOptionalAction, default=True,
                   help="deliver frames out of order (default on)")
    p.add_argument("--max-delay-ticks", type=int, default=3)
    p.add_argument("--routing", choices=ROUTINGS, default="mesh")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--write-rate", type=float, default=0.5, help="writes per tick")
    p.add_argument("--rollbacks", action=argparse.BooleanOptionalAction, default=True,
                   help="include transactions that raise and roll back (default on)")
    p.add_argument("--region-rate", type=float, default=0.2,
                   help="text and buffer edits per tick (default 0.2)")
    p.add_argument("--tick-ms", type=int, default=10, help="simulated milliseconds per tick")
    p.add_argument("--csv", metavar="PATH", help="write the per-tick series here")
    p.add_argument("--plot", metavar="PATH", help="write a PNG plot here (needs matplotlib)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: only on a terminal)")
    p.set_defaults(handler=_simulate)


def partition_faults(options: SimOptions, peers: Sequence[str]) -> list[Fault]:
    """Split the peers in two halves for the middle half of the run, then heal."""
    half = max(1, len(peers) // 2)
    start, end = options.ticks // 4, (3 * options.ticks) // 4
    if len(peers) < 2:
        return []
    return [Fault(start, "split", tuple(peers[:half])), Fault(end, "heal")]


class _Progress:
    """tqdm when installed, else a one-line textual bar; silent when disabled."""

    def __init__(self, total: int, enabled: bool, stream: TextIO) -> None:
        self._enabled = enabled
        self._stream = stream
        self._total = max(1, total)
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
                self._bar = tqdm(total=total, unit="tick", file=stream, leave=True,
                                 dynamic_ncols=True)

    def update(self, postfix: str) -> None:
        self._n += 1
        if not self._enabled:
            return
        if self._n > self._total:  # the liveness phase runs past the planned ticks
            self._total = self._n
            if self._bar is not None:
                self._bar.total = self._n
        if self._bar is not None:
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(1)
            return
        self._postfix = postfix
        pct = min(100, 100 * self._n // self._total)
        if pct != self._last:
            self._last = pct
            self._draw(pct)

    def _draw(self, pct: int) -> None:
        filled = pct * 30 // 100
        self._stream.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {pct:3d}% "
                           f"tick {self._n} {self._postfix}   ")
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


def _simulate(args: argparse.Namespace) -> int:
    options = SimOptions(
        seed=args.seed, peers=args.peers, ticks=args.ticks,
        liveness_ticks=args.liveness_ticks, loss=args.loss, duplicate=args.duplicate,
        reorder=args.reorder, max_delay_ticks=args.max_delay_ticks, routing=args.routing,
        batch_size=args.batch_size, write_rate=args.write_rate, rollbacks=args.rollbacks,
        region_rate=args.region_rate,
        tick_ms=args.tick_ms,
        partitions=True, crashes=False,
    )
    peers = [f"p{i}" for i in range(options.peers)]
    faults = partition_faults(options, peers)
    print(f"seed={options.seed} options: {options.describe()}")
    if faults:
        split = faults[0]
        rest = [p for p in peers if p not in split.peers]
        print(f"scenario: connected until tick {split.tick}, then {{{', '.join(split.peers)}}} "
              f"| {{{', '.join(rest)}}} until tick {faults[1].tick}, then healed")
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = _Progress(options.ticks, show, sys.stderr)

    def on_tick(sim: Simulation) -> None:
        distinct, lag = sim.divergence()
        progress.update(f"states={distinct} lag={lag}")

    try:
        result = run(options, on_tick=on_tick, sample=True, raise_on_violation=False,
                     faults=faults)
    finally:
        progress.close()
    samples = result.samples
    if args.csv:
        write_csv(args.csv, samples, options.ticks)
        print(f"wrote {len(samples)} rows to {args.csv}")
    if args.plot:
        try:
            plot_series(args.plot, samples, options, faults)
        except ImportError:
            print("hybridsync simulate: error: --plot needs matplotlib "
                  "(pip install 'hybridsync[plot]')", file=sys.stderr)
            return EXIT_USAGE
        print(f"wrote plot to {args.plot}")
    print(result.summary())
    if not result.ok:
        print(f"guarantee violated: {result.violation}", file=sys.stderr)
        print(f"replay: {result.replay}", file=sys.stderr)
        return EXIT_VIOLATION
    return EXIT_OK


CSV_COLUMNS = ("tick", "time_ms", "phase", "messages", "bytes", "distinct_states",
               "max_divergence", "partitioned", "down")


def write_csv(path: str, samples: Sequence[TickSample], safety_ticks: int) -> None:
    """One row per tick: traffic, number of distinct replica states, the largest lag."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for s in samples:
            phase = "safety" if s.tick <= safety_ticks else "liveness"
            w.writerow([s.tick, s.time_ms, phase, s.messages, s.bytes, s.distinct_states,
                        s.max_divergence, int(s.partitioned), s.down])


def plot_series(
    path: str, samples: Sequence[TickSample], options: SimOptions, faults: Sequence[Fault]
) -> None:
    """A PNG of the per-tick series, with the partition shaded (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = [s.tick for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    try:
        ax0, ax1, ax2 = axes
        ax0.plot(ticks, [s.messages for s in samples], color="tab:blue", lw=0.8)
        ax0.set_ylabel("frames / tick")
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
        ax0.set_title(f"hybridsync simulate: seed {options.seed}, {options.peers} peers, "
                      f"{options.routing}, loss {options.loss} (partition shaded)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


# ---- demo ----------------------------------------------------------------------------------
_AGENTS = ("planner", "researcher", "coder", "critic")


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="agents sharing working memory, live (in-process simulator)",
        description="Three or four agent replicas share one memory space over the in-process "
        "simulated network: they write fields, one agent is partitioned away and writes on its "
        "own, then it rejoins and everyone converges. Prints who holds what, the bytes "
        "exchanged and the conflicts, then a summary; ends by itself in about ten seconds. "
        "This demo runs in one process over the deterministic simulator; real processes "
        "finding each other by mDNS come in a later release.",
    )
    p.add_argument("--agents", type=int, choices=(3, 4), default=4, help="how many agents")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulated network")
    p.add_argument("--loss", type=float, default=0.05, help="frame loss probability")
    p.add_argument(
        "--pace-s", type=float, default=float(os.environ.get("HYBRIDSYNC_DEMO_PACE_S", "0.5")),
        help="seconds between live views (default 0.5, env HYBRIDSYNC_DEMO_PACE_S; 0 = no wait)",
    )
    p.set_defaults(handler=_demo)


class _Demo:
    def __init__(self, agents: Sequence[str], seed: int, loss: float, pace_s: float,
                 out: TextIO) -> None:
        self.sim = Simulation(list(agents), seed, loss=loss, reorder=True, max_delay_ticks=3,
                              space="demo")
        self.agents = tuple(agents)
        self.pace_s = max(0.0, pace_s)
        self.out = out
        self._last_bytes = 0

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def view(self, title: str) -> None:
        sim = self.sim
        stats = sim.network.counters
        new_bytes = stats.bytes_sent - self._last_bytes
        self._last_bytes = stats.bytes_sent
        distinct, lag = sim.divergence()
        state = "in sync" if distinct == 1 and lag == 0 else f"{distinct} different states"
        self.say(f"-- t={sim.now_ms:>5} ms  {title}  [{state}; +{new_bytes} B on the wire, "
                 f"{stats.bytes_sent} B total]")
        mems = sim.memories()
        for name in self.agents:
            mem = mems.get(name)
            if mem is None:
                self.say(f"   {name:<10} (down)")
                continue
            unreachable = [o for o in self.agents
                           if o != name and sim.network.is_blocked(name, o)]
            if unreachable and len(unreachable) == len(self.agents) - 1:
                cut = "  (cut off)"
            elif unreachable:
                cut = f"  (cannot reach {', '.join(unreachable)})"
            else:
                cut = ""
            fields = mem.fields.to_dict()
            tasks = fields.get("tasks", {})
            task_view = " ".join(
                f"{t}:{v.get('status', '?')}" + (f"@{v['owner']}" if "owner" in v else "")
                for t, v in sorted(tasks.items()) if isinstance(v, dict)
            )
            notes = fields.get("notes", [])
            self.say(f"   {name:<10} {len(mem.history()):>3} commits  goal={fields.get('goal')!r}"
                     f"  tasks[{task_view}]  notes={len(notes)}  "
                     f"conflicts={len(mem.conflicts())}{cut}")
        if self.pace_s:
            time.sleep(self.pace_s)

    def run(self, ticks: int, title: str, every: int) -> None:
        for t in range(1, ticks + 1):
            self.sim.tick()
            if t % every == 0:
                self.view(title)


def _demo(args: argparse.Namespace) -> int:
    agents = _AGENTS[: args.agents]
    demo = _Demo(agents, args.seed, args.loss, args.pace_s, sys.stdout)
    sim = demo.sim
    started = time.perf_counter()
    demo.say(f"hybridsync demo: {len(agents)} agents share one memory space over a simulated "
             f"network (seed {args.seed}, {args.loss:.0%} loss, reordering). No coordinator.")
    demo.say()
    planner, *workers = agents
    lonely = agents[-1]
    m = sim.memory(planner)
    with m.transaction(note="plan"):
        m.fields["goal"] = "ship v1"
        m.fields["tasks"] = {f"t{i + 1}": {"status": "open"} for i in range(len(workers))}
        m.fields["notes"] = [f"{planner}: plan drafted"]
    demo.view(f"{planner} writes the goal and {len(workers)} tasks")
    demo.run(6, "syncing", every=3)
    for i, w in enumerate(workers):
        mw = sim.memory(w)
        with mw.transaction(note=f"claim t{i + 1}"):
            mw.fields["tasks"][f"t{i + 1}"]["owner"] = w
            mw.fields["tasks"][f"t{i + 1}"]["status"] = "doing"
            mw.fields["notes"].append(f"{w}: took t{i + 1}")
    demo.view("every worker claims a task")
    demo.run(6, "syncing", every=3)

    demo.say()
    demo.say(f"== {lonely} loses the network ==")
    sim.isolate(lonely)
    ml = sim.memory(lonely)
    ml.fields["tasks"]["t1"]["status"] = "blocked"  # concurrently with the owner of t1
    ml.fields["notes"].append(f"{lonely}: t1 looks blocked to me")
    mo = sim.memory(workers[0])
    mo.fields["tasks"]["t1"]["status"] = "done"
    sim.memory(planner).fields["goal"] = "ship v1 on Friday"
    demo.view(f"{lonely} and {workers[0]} both change t1 while apart")
    demo.run(8, "partitioned", every=4)

    demo.say()
    demo.say(f"== {lonely} rejoins ==")
    sim.heal()
    used = 0
    for _ in range(6):  # a few live views, then converge silently (bounded below)
        if sim.converged():
            break
        sim.run(5)
        used += 5
        demo.view("anti-entropy")
    try:
        used += sim.run_until_converged(max_ticks=2000)
        check_convergence(sim.memories(), replay=sim.replay_command)
        assert sim.recorder is not None
        check_causal_order(sim.recorder, sim.memories(), replay=sim.replay_command)
    except GuaranteeViolation as exc:
        demo.say(f"guarantee violated: {exc}")
        return EXIT_VIOLATION
    demo.view("converged")

    demo.say()
    ref = sim.memory(planner)
    st = sim.stats
    demo.say("== summary ==")
    demo.say(f"converged: every replica holds the same {len(ref.history())} commits "
             f"(fields JSON {len(ref.fields_json())} B, identical on all {len(agents)})")
    demo.say(f"network: {st.messages} frames, {st.bytes} B sent, {st.dropped_loss} lost, "
             f"{st.dropped_partition} dropped by the partition; converged {used} ticks "
             f"({used * sim.tick_ms} ms simulated) after the heal")
    for c in ref.conflicts():
        demo.say(f"conflict (reported on every replica): {c.detail}")
    demo.say(f"final tasks: {ref.fields.to_dict()['tasks']}")
    demo.say(f"demo took {time.perf_counter() - started:.1f} s")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
