"""How often are concurrent edits of one text damaged, and what does reducing it cost?

Two (or three) replicas hold the same text, each replaces a span concurrently, then they
sync. The fold applies the patches in the deterministic order, each made against the common
text, so the second one is *fuzzy*-applied onto a text the first already changed: exactly
what ``TextFold`` does with concurrent contributions (``--check-memory`` replays a sample
through real ``Memory`` replicas and demands the same bytes and conflicts).

Every trial is classified:

* ``clean``: the result is what both edits intend (for disjoint spans, the base with both
  replacements; for overlapping spans, each inserted text present exactly once) and no
  conflict is reported;
* ``reported``: a hunk failed and became a ``Conflict(kind="hunk-failed")`` (nothing silent:
  the edit is in the conflict report);
* ``silent``: no conflict, but the result is not what the edits intend: an inserted text
  missing or doubled, or text around the edits destroyed.

Rates are given per gap between the edited spans (characters from the end of one to the
start of the next; negative = overlapping), for several diff configurations: the unit of the
diff (``char``, ``word``, ``line``), the context margin of each hunk, and the fuzzy-match
thresholds (``Match_Threshold``, ``Patch_DeleteThreshold``). Wire bytes are the encoded
patch sizes; time is make_patch + apply_patch per trial.

Run from the repository root::

    python -m benchmarks.text_damage               # 300 trials per cell
    python -m benchmarks.text_damage --trials 20   # quicker
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from benchmarks._common import markdown_table
from hybridsync.regions import _textdiff
from hybridsync.regions._textdiff import Hunk, apply_patch, encode_patch, make_patch

__all__ = ["CONFIGS", "GAP_BINS", "Config", "Tally", "main", "run", "trial"]

DEFAULT_SEED = 20261121
DEFAULT_TRIALS = 300


@dataclass(frozen=True, slots=True)
class Config:
    """One way of making and applying patches."""

    name: str
    unit: str = "word"
    margin: int = _textdiff.PATCH_MARGIN
    match_threshold: float = _textdiff._DMP.Match_Threshold
    delete_threshold: float = _textdiff._DMP.Patch_DeleteThreshold


CONFIGS: tuple[Config, ...] = (
    Config("char diff, margin 4, Match_Threshold 0.35 (before)", unit="char",
           match_threshold=0.35),
    Config("word diff, margin 4, Match_Threshold 0.35", match_threshold=0.35),
    Config("word diff, margin 4, Match_Threshold 0.25 (default)"),
    Config("line diff, Match_Threshold 0.35", unit="line", match_threshold=0.35),
    Config("word diff, margin 8, Match_Threshold 0.35", margin=8, match_threshold=0.35),
    Config("word diff, margin 16, Match_Threshold 0.35", margin=16, match_threshold=0.35),
    Config("word diff, margin 8, Match_Threshold 0.25", margin=8),
    Config("word diff, Match_Threshold 0.5", match_threshold=0.5),
    Config("word diff, Match_Threshold 0.3", match_threshold=0.3),
    Config("word diff, Match_Threshold 0.2", match_threshold=0.2),
    Config("word diff, Match_Threshold 0.25, Patch_DeleteThreshold 0.1", delete_threshold=0.1),
)
# gap between two edited spans, in characters: [lo, hi)
GAP_BINS: tuple[tuple[int, int], ...] = ((-40, 0), (0, 8), (8, 32), (32, 128), (128, 512))


@contextmanager
def _thresholds(cfg: Config) -> Iterator[None]:
    engines = (_textdiff._DMP, _textdiff._SPLITTER)
    saved = [(e.Match_Threshold, e.Patch_DeleteThreshold) for e in engines]
    try:
        for e in engines:
            e.Match_Threshold, e.Patch_DeleteThreshold = cfg.match_threshold, cfg.delete_threshold
        yield
    finally:
        for e, (m, d) in zip(engines, saved, strict=True):
            e.Match_Threshold, e.Patch_DeleteThreshold = m, d


_VOCAB = (
    'the', 'agent', 'plan', 'step', 'task', 'note', 'result', 'check', 'retry', 'tool', 'call',
    'output', 'memory', 'sync', 'patch', 'merge', 'peer', 'state', 'log', 'order', 'value',
    'text', 'a', 'of', 'and', 'to', 'in', 'is', 'for', 'on', 'with'
)


def _words(rng: random.Random, n: int) -> str:
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(_VOCAB)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def make_base(rng: random.Random, size: int = 3000) -> str:
    lines = []
    total = 0
    while total < size:
        line = _words(rng, rng.randint(40, 90)).capitalize() + "."
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


Edit = tuple[int, int, str]  # (start, end, inserted) on the base


def make_edits(rng: random.Random, base: str, writers: int, gap: int) -> list[Edit]:
    """``writers`` span replacements, each ``gap`` characters after the previous one ends."""
    edits: list[Edit] = []
    pos = rng.randrange(200, len(base) // 3)
    for _ in range(writers):
        span = rng.randint(4, 40)
        start = max(0, pos)
        end = min(len(base), start + span)
        edits.append((start, end, _words(rng, rng.randint(4, 40)) + "#" + str(len(edits))))
        pos = end + gap
    return edits


def _intended(base: str, edits: Sequence[Edit]) -> str | None:
    """Both edits applied, when their spans are disjoint (else there is no single intent)."""
    ordered = sorted(edits)
    for (_, e0, _), (s1, _, _) in itertools.pairwise(ordered):
        if s1 < e0:
            return None
    out, pos = [], 0
    for s, e, t in ordered:
        out += [base[pos:s], t]
        pos = e
    return "".join([*out, base[pos:]])


@dataclass
class Tally:
    trials: int = 0
    clean: int = 0
    reported: int = 0
    silent: int = 0
    wire_bytes: int = 0
    patches: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    def rate(self, what: str) -> float:
        return getattr(self, what) / self.trials if self.trials else 0.0


def fold(base: str, patches: Sequence[list[Hunk]]) -> tuple[str, int]:
    """What ``TextFold`` computes for concurrent patches made against ``base``: the text and
    the number of failed hunks."""
    value, failed = base, 0
    for hunks in patches:
        value, bad = apply_patch(value, hunks)
        failed += len(bad)
    return value, failed


def trial(base: str, edits: Sequence[Edit], cfg: Config, tally: Tally) -> str:
    """Run one trial under ``cfg``; returns its class and adds it to ``tally``."""
    t0 = time.perf_counter()
    with _thresholds(cfg):
        patches = []
        for s, e, t in edits:
            hunks = make_patch(base, base[:s] + t + base[e:], unit=cfg.unit, margin=cfg.margin)
            patches.append(hunks)
            tally.wire_bytes += len(encode_patch(hunks))
            tally.patches += 1
        value, failed = fold(base, patches)
    tally.seconds += time.perf_counter() - t0
    intended = _intended(base, edits)
    if failed:
        kind = "reported"
    elif intended is not None:
        kind = "clean" if value == intended else "silent"
    else:
        kind = "clean" if all(value.count(t) == 1 for _, _, t in edits) else "silent"
    tally.trials += 1
    setattr(tally, kind, getattr(tally, kind) + 1)
    if kind == "silent" and len(tally.examples) < 2:
        tally.examples.append(f"edits {list(edits)!r} gave …{value[edits[0][0] - 10:][:120]!r}")
    return kind


def run(
    trials: int = DEFAULT_TRIALS,
    *,
    configs: Sequence[Config] = CONFIGS,
    writers: int = 2,
    seed: int = DEFAULT_SEED,
) -> dict[tuple[str, tuple[int, int]], Tally]:
    """Every configuration on the same trials (same bases, same edits) per gap bin."""
    out: dict[tuple[str, tuple[int, int]], Tally] = {}
    for lo, hi in GAP_BINS:
        rng = random.Random(seed * 1000 + lo)
        cases = []
        for _ in range(trials):
            base = make_base(rng)
            cases.append((base, make_edits(rng, base, writers, rng.randrange(lo, hi))))
        for cfg in configs:
            tally = out.setdefault((cfg.name, (lo, hi)), Tally())
            for base, edits in cases:
                trial(base, edits, cfg, tally)
    return out


def check_memory(trials: int, seed: int = DEFAULT_SEED) -> int:
    """Replay trials through real replicas (default configuration): the fold of concurrent
    contributions must give the same bytes and the same number of failed hunks as
    :func:`fold`. Returns how many trials were compared."""
    import hybridsync as hs

    rng = random.Random(seed)
    n = 0
    for k in range(trials):
        base = make_base(rng, 1200)
        edits = make_edits(rng, base, 2, rng.randrange(-20, 60))
        clock = itertools.count(1_000).__next__
        mems = [hs.Memory("damage", f"p{i}", clock=clock, incarnation=i + 1,
                          commit_interval_ms=None) for i in range(len(edits))]
        mems[0].text("t").set(base)
        for m in mems[1:]:
            for f in mems[0].sync_to(m.peer):
                m.receive(mems[0].peer, f)
        keys = []
        for m, (s, e, t) in zip(mems, edits, strict=True):
            m.text("t").set(base[:s] + t + base[e:])
            m.commit()
            keys.append(m.history()[-1].order_key)  # the edit just committed
        for _ in range(3):
            for x, y in itertools.permutations(mems, 2):
                for f in x.sync_to(y.peer):
                    y.receive(x.peer, f)
        order = sorted(range(len(edits)), key=lambda i: keys[i])  # the fold's (lamport, id)
        value, failed = fold(base, [make_patch(base, base[:edits[i][0]] + edits[i][2]
                                               + base[edits[i][1]:]) for i in order])
        got = {m.text("t").value for m in mems}
        conflicts = [c for c in mems[0].conflicts() if c.kind == "hunk-failed"]
        if got != {value} or len(conflicts) != failed:
            raise AssertionError(f"trial {k}: replicas {got!r} vs fold {value!r}")
        n += 1
    return n


def report(results: dict[tuple[str, tuple[int, int]], Tally], configs: Sequence[Config]) -> str:
    headers = ["configuration", *(f"gap {lo}…{hi - 1}" for lo, hi in GAP_BINS), "all",
               "B/patch", "µs/trial"]
    rows = []
    for cfg in configs:
        cells = []
        total = Tally()
        for b in GAP_BINS:
            t = results[(cfg.name, b)]
            cells.append(f"{100 * t.rate('reported'):.0f} / {100 * t.rate('silent'):.0f}")
            for f in ("trials", "clean", "reported", "silent", "wire_bytes", "patches"):
                setattr(total, f, getattr(total, f) + getattr(t, f))
            total.seconds += t.seconds
        cells.append(f"{100 * total.rate('reported'):.1f} / {100 * total.rate('silent'):.1f}")
        rows.append([cfg.name, *cells, f"{total.wire_bytes / total.patches:.0f}",
                     f"{1e6 * total.seconds / total.trials:.0f}"])
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="per gap bin")
    parser.add_argument("--writers", type=int, default=2, choices=(2, 3))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--check-memory", type=int, default=20, metavar="N",
                        help="first replay N trials through real replicas (0: skip)")
    args = parser.parse_args(argv)
    if args.check_memory:
        n = check_memory(args.check_memory, args.seed)
        print(f"{n} trials replayed through Memory replicas: same bytes and conflicts as the fold")
    results = run(args.trials, writers=args.writers, seed=args.seed)
    print(f"\n{args.writers} concurrent span replacements (4–40 characters) per trial, "
          f"{args.trials} trials per gap bin (seed {args.seed}); cells: % reported / % silent\n")
    print(report(results, CONFIGS))
    silent = [(k, t.examples) for k, t in results.items() if t.examples]
    if silent:
        print("\nSilent damage, first examples:")
        for (name, b), ex in silent[:4]:
            print(f"- {name}, gap {b}: {ex[0][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
