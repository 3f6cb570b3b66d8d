"""``conflicts``: how often concurrent edits of one shared text end as reported conflicts or
as silent damage, as a function of the edit rate and the sync interval.

``peers`` replicas share one text of ``text-chars`` characters (lines of common words). Every
tick, ``edit-rate`` edits (on average) land on random peers; each replaces a span of 4–40
characters *of the original text* in that peer's current view by a unique tagged insertion
``<eN words...>``. Peers run a sync round only every ``sync-interval`` ticks (frames then
take 1–3 ticks), so edits made between two rounds on different peers are concurrent. After
the last tick the replicas sync until they are byte-identical (G1), and the converged text is
judged against what the edits intended — the classification of ``benchmarks/text_damage.py``,
carried over from two hand-made edits to a stream of edits through real replicas:

* an edit is **reported** when one of its hunks failed and became a
  ``Conflict(kind="hunk-failed")`` (nothing silent: the edit is in ``conflicts()``);
* otherwise it is **intact** when its tagged insertion appears exactly once in the final
  text, and **damaged** (silently) when it is missing, doubled or cut;
* **collateral chars** count damage outside the insertions: the final text without the
  insertions is compared with the original text minus every span some non-reported edit
  deleted (characters wrongly kept or wrongly removed; fragments of damaged insertions count
  too). Edits never delete tagged text, so an ideal merge leaves exactly that.

An edit is **concurrent** when some other edit neither happened before nor after it (from the
version vector its replica had when it committed): only those can be hurt. Replicas run with
the library's defaults (garbage collection included: it never changes what a replica shows).

An edit's span is found in the editor's view by its original text plus 12 characters of
context on each side, which must appear exactly once there; after 40 failed draws the edit
is skipped (``skipped``).
"""

from __future__ import annotations

import argparse
import difflib
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from hybridsync.sim import Simulation
from hybridsync.sim._options import MAX_PEERS

__all__ = ["COLUMNS", "add_arguments", "measure", "run_scenario"]

COLUMNS = ("edit_rate", "sync_interval", "seed", "ticks", "edits", "skipped",
           "concurrent_edits", "reported", "damaged", "intact", "conflicts", "collateral_chars",
           "concurrent_pct", "reported_pct", "damaged_pct")
TEXT = "shared"
CONTEXT_CHARS = 12
_VOCAB = ("the", "agent", "plan", "step", "task", "note", "result", "check", "retry", "tool",
          "call", "output", "memory", "sync", "patch", "merge", "peer", "state", "log",
          "order", "value", "text", "a", "of", "and", "to", "in", "is", "for", "on", "with")


@dataclass(frozen=True, slots=True)
class _Edit:
    tag: str  # the tagged insertion, unique
    peer: str
    deleted: tuple[int, int]  # the span of the original text it deleted
    contribution: str  # hex id
    seq: int = 0  # its dot is (peer, seq)
    past: tuple[tuple[str, int], ...] = ()  # its author's version vector when it was made

    def saw(self, other: _Edit) -> bool:
        """``other`` happened before this edit (its dot is in this edit's causal past)."""
        return dict(self.past).get(other.peer, 0) >= other.seq


def _words(rng: random.Random, n: int) -> str:
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(_VOCAB)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n].strip()


def _base(rng: random.Random, size: int) -> str:
    lines: list[str] = []
    total = 0
    while total < size:
        line = _words(rng, rng.randint(40, 90)).capitalize() + "."
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def _pick(rng: random.Random, base: str, view: str) -> tuple[int, int, int] | None:
    """A span of the original text still whole in ``view``: ``(base start, base end, view
    start)``, or None after 40 tries."""
    c = CONTEXT_CHARS
    for _ in range(40):
        span = rng.randint(4, 40)
        bs = rng.randrange(c, len(base) - span - c)
        window = base[bs - c : bs + span + c]
        if base.find(window, bs - c + 1) >= 0 or base.find(window) != bs - c:
            continue  # not unique in the original
        at = view.find(window)
        if at < 0 or view.find(window, at + 1) >= 0:
            continue  # gone or ambiguous in this view
        return bs, bs + span, at + c
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--edit-rates", type=float_list, default=[0.1, 0.3, 1.0], metavar="R,R,...",
                   help="edits per tick, whole group (default 0.1,0.3,1)")
    p.add_argument("--sync-intervals", type=int_list, default=[1, 4, 16], metavar="I,I,...",
                   help="ticks between sync rounds (default 1,4,16)")
    p.add_argument("--seeds", type=int, default=1,
                   help="runs per cell, seeds SEED..SEED+N-1 (default 1)")
    p.add_argument("--peers", type=int, default=3, help=f"2..{MAX_PEERS} (default 3)")
    p.add_argument("--ticks", type=int, default=100, help="ticks of editing (default 100)")
    p.add_argument("--text-chars", type=int, default=6000,
                   help="size of the shared text (default 6000)")
    p.add_argument("--liveness-ticks", type=int, default=5000,
                   help="ticks allowed to converge after the edits (default 5000)")


def measure(
    *, edit_rate: float, sync_interval: int, seed: int, peers: int = 3, ticks: int = 100,
    text_chars: int = 6000, liveness_ticks: int = 5000,
    on_tick: Callable[[int], None] | None = None,
) -> Row:
    """One run (see the module docstring)."""
    check_range([edit_rate], "edit rate", 0.0, 64.0)
    check_range([sync_interval], "sync interval", 1, 100_000)
    check_range([peers], "peers", 2, MAX_PEERS)
    check_range([text_chars], "text chars", 400, 10_000_000)
    rng = random.Random(f"{seed}-conflicts")
    base = _base(rng, text_chars)
    sim = Simulation(peers, seed, reorder=True, record=False)
    first = sim.memory(sim.peers[0])
    first.text(TEXT).set(base)
    first.commit()
    sim.run_until_converged(liveness_ticks)
    edits: list[_Edit] = []
    skipped = 0
    for t in range(ticks):
        n = int(edit_rate) + (1 if rng.random() < edit_rate - int(edit_rate) else 0)
        for _ in range(n):
            peer = sim.peers[rng.randrange(peers)]
            mem = sim.memory(peer)
            text = mem.text(TEXT)
            view = text.value
            picked = _pick(rng, base, view)
            if picked is None:
                skipped += 1
                continue
            bs, be, at = picked
            tag = f"<e{len(edits)} {_words(rng, rng.randint(4, 40))}>"
            text.set(view[:at] + tag + view[at + (be - bs):])
            mem.commit()
            made = mem.history()[-1]  # a local commit sorts last: lamport = 1 + max
            past = tuple(sorted(mem.version_vector.to_dict().items()))
            edits.append(_Edit(tag, peer, (bs, be), made.hex_id, made.seq, past))
        if (t + 1) % sync_interval == 0:
            sim.tick()
        else:
            sim.skip(1)
        if on_tick is not None:
            on_tick(t)
    sim.run_until_converged(liveness_ticks)
    ref = sim.memory(sim.peers[0])
    final = ref.text(TEXT).value
    conflicts = ref.conflicts()
    failed = {h for c in conflicts if c.kind == "hunk-failed" for h in c.contributions}
    reported = [e for e in edits if e.contribution in failed]
    intact = [e for e in edits if e.contribution not in failed and final.count(e.tag) == 1]
    damaged = len(edits) - len(reported) - len(intact)
    concurrent = _concurrent(edits)
    return {
        "edit_rate": edit_rate, "sync_interval": sync_interval, "seed": seed, "ticks": ticks,
        "edits": len(edits), "skipped": skipped, "concurrent_edits": concurrent,
        "reported": len(reported), "damaged": damaged, "intact": len(intact),
        "conflicts": len(conflicts),
        "collateral_chars": _collateral(base, final, edits, failed),
        "concurrent_pct": _pct(concurrent, len(edits)),
        "reported_pct": _pct(len(reported), len(edits)),
        "damaged_pct": _pct(damaged, len(edits)),
    }


def _pct(n: int, d: int) -> float:
    return 100.0 * n / d if d else 0.0


def _concurrent(edits: Sequence[_Edit]) -> int:
    """How many edits have another edit concurrent with them (neither saw the other)."""
    return sum(1 for a in edits
               if any(a is not b and not a.saw(b) and not b.saw(a) for b in edits))


def _collateral(base: str, final: str, edits: Sequence[_Edit], failed: set[str]) -> int:
    """Characters by which the final text, insertions removed, differs from the original text
    minus every span a non-reported edit deleted."""
    gone = bytearray(len(base))
    for e in edits:
        if e.contribution not in failed:
            gone[e.deleted[0] : e.deleted[1]] = b"\x01" * (e.deleted[1] - e.deleted[0])
    want = "".join(ch for ch, g in zip(base, gone, strict=True) if not g)
    got = final
    for e in edits:
        got = got.replace(e.tag, "")
    ops = difflib.SequenceMatcher(None, want, got, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in ops if op != "equal")


def plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Four panels against the sync interval, one line per edit rate (means over seeds)."""
    cells: dict[tuple[float, int], list[Row]] = defaultdict(list)
    for r in rows:
        cells[(r["edit_rate"], r["sync_interval"])].append(r)
    rates = sorted({a for a, _ in cells})
    intervals = sorted({i for _, i in cells})
    panels = (("concurrent_pct", "% of edits concurrent with another edit"),
              ("reported_pct", "% of edits reported as conflicts\n(hunk failed)"),
              ("damaged_pct", "% of edits silently damaged\n(insertion missing, doubled, cut)"),
              ("collateral_per_edit", "collateral chars per edit\n(text outside the edits)"))
    with figure(path, nrows=2, ncols=2, size=(12, 8), title=title) as (_, axes):
        for ax, (key, label) in zip(axes, panels, strict=True):
            for rate in rates:
                ys = []
                for i in intervals:
                    g = cells[(rate, i)]
                    if key == "collateral_per_edit":
                        ys.append(sum(r["collateral_chars"] for r in g)
                                  / max(1, sum(r["edits"] for r in g)))
                    else:
                        ys.append(mean([r[key] for r in g]))
                ax.plot(intervals, ys, marker="o", label=f"{rate:g} edits/tick")
            ax.set_xscale("log", base=2)
            ax.set_xticks(intervals, [str(i) for i in intervals])
            ax.set_xlabel("sync interval (ticks between sync rounds; 1 tick = 10 ms)")
            ax.set_ylabel(label)
        axes[0].legend(title="edit rate (whole group)")


def run_scenario(args: argparse.Namespace, ctx: Context) -> Outcome:
    check_range(args.edit_rates, "--edit-rates", 0.0, 64.0)
    check_range(args.sync_intervals, "--sync-intervals", 1, 100_000)
    check_range([args.seeds], "--seeds", 1, 10_000)
    check_range([args.ticks], "--ticks", 1, 1_000_000)
    cells = [(r, i, args.seed + k) for r in args.edit_rates for i in args.sync_intervals
             for k in range(args.seeds)]
    ctx.say(f"conflicts: {args.peers} peers share a {args.text_chars}-char text; edit rates "
            f"{args.edit_rates}/tick x sync intervals {args.sync_intervals} ticks, "
            f"{args.ticks} ticks, {args.seeds} seed(s) from {args.seed}")
    bar = ctx.bar(len(cells), unit="run")
    rows: list[Row] = []
    try:
        for rate, interval, seed in cells:
            bar.update(f"rate={rate:g} interval={interval} seed={seed}", n=0)
            try:
                rows.append(measure(edit_rate=rate, sync_interval=interval, seed=seed,
                                    peers=args.peers, ticks=args.ticks,
                                    text_chars=args.text_chars,
                                    liveness_ticks=args.liveness_ticks))
            except GuaranteeViolation as exc:
                raise GuaranteeViolation(
                    f"conflicts rate={rate} interval={interval} seed={seed}: {exc}") from exc
            bar.update()
    finally:
        bar.close()
    csv_path = ctx.path("conflicts.csv")
    write_rows(csv_path, COLUMNS, rows)
    png = None
    if ctx.plot:
        png = ctx.path("conflicts.png")
        plot(png, rows, f"conflicts: {args.peers} peers editing one {args.text_chars}-char "
                        f"text for {args.ticks} ticks ({args.seeds} seed(s))")
    summary = [f"rate {r['edit_rate']:>4g}/tick interval {r['sync_interval']:>3}: "
               f"{r['edits']:>4} edits, {r['concurrent_pct']:5.1f}% concurrent, "
               f"{r['reported_pct']:5.1f}% reported, {r['damaged_pct']:5.1f}% silently "
               f"damaged, {r['collateral_chars']} collateral chars" for r in rows]
    return Outcome(rows, csv_path, png, summary)
