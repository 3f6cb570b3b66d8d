"""How often are concurrent edits of one text damaged, and what does reducing it cost?

Two (or three) replicas hold the same text, each replaces a span concurrently (``--mix``:
or inserts, or deletes), then they sync. The fold applies the patches in the deterministic
order, each made against the common text, so the second one lands on a text the first
already changed: exactly what ``TextFold`` does with concurrent contributions
(``--check-memory`` replays a sample through real ``Memory`` replicas and demands the same
bytes and conflicts).

Every trial is classified:

* ``clean``: the result is what the edits intend (for disjoint spans, the base with every
  edit; for overlapping spans or two at one place, each inserted text present exactly once)
  and no conflict is reported;
* ``reported``: a hunk failed and became a ``Conflict(kind="hunk-failed")`` (nothing silent:
  the edit is in the conflict report);
* ``silent``: no conflict, but the result is not what the edits intend: an inserted text
  missing or doubled, or text around the edits destroyed.

Rates are given per gap between the edited spans (characters from the end of one to the
start of the next; negative = overlapping), for several configurations: the unit of the diff
(``char``, ``word``, ``line``), the context margin of each hunk, whether long old middles are
elided on the wire (length + digest: fewer bytes, the same damage), and, as a reference, the
same hunks applied by diff-match-patch's fuzzy ``patch_apply`` (the applier before patch
format 2, ``Match_Threshold`` 0.25 or 0.35). Wire bytes are the encoded patch sizes (format 1,
msgpack, for the reference rows); time is make_patch + apply per trial.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from benchmarks._common import markdown_table
from hybridsync.regions import _textdiff
from hybridsync.regions._textdiff import (
    ELIDE_MIN_BYTES,
    Hunk,
    apply_patch,
    decode_patch,
    encode_patch,
    make_patch,
)

__all__ = ["CONFIGS", "GAP_BINS", "Config", "Tally", "main", "run", "trial"]

DEFAULT_SEED = 20261121
DEFAULT_TRIALS = 300


@dataclass(frozen=True, slots=True)
class Config:
    """One way of making and applying patches."""

    name: str
    unit: str = "word"
    margin: int = _textdiff.PATCH_MARGIN
    elide: bool = True  # long old middles as length + digest on the wire
    # None: hybridsync's applier; a float: diff-match-patch patch_apply at this Match_Threshold
    dmp_threshold: float | None = None


CONFIGS: tuple[Config, ...] = (
    Config("word diff, margin 4 (default)"),
    Config("word diff, margin 4, old text on the wire (no digest)", elide=False),
    Config("char diff, margin 4", unit="char"),
    Config("line diff, margin 4", unit="line"),
    Config("word diff, margin 6", margin=6),
    Config("word diff, margin 8", margin=8),
    Config("reference: diff-match-patch patch_apply, Match_Threshold 0.25", dmp_threshold=0.25),
    Config("reference: diff-match-patch patch_apply, Match_Threshold 0.35", dmp_threshold=0.35),
)
# gap between two edited spans, in characters: [lo, hi)
GAP_BINS: tuple[tuple[int, int], ...] = ((-40, 0), (0, 8), (8, 32), (32, 128), (128, 512))


def _dmp_engine(threshold: float, margin: int) -> Any:
    """diff-match-patch set up as hybridsync's fuzzy applier was before patch format 2."""
    from diff_match_patch import diff_match_patch

    dmp = diff_match_patch()
    dmp.Diff_Timeout = 0
    dmp.Match_Threshold, dmp.Match_Distance, dmp.Patch_DeleteThreshold = threshold, 600, 0.35
    dmp.Patch_Margin = margin
    return dmp


def dmp_apply(text: str, hunks: Sequence[Hunk], threshold: float,
              margin: int = _textdiff.PATCH_MARGIN) -> tuple[str, list[Hunk]]:
    """The reference applier: literal hunks through ``patch_apply``, each split first so
    that ``patch_apply`` never splits it again (so results map back to hunks)."""
    from diff_match_patch import patch_obj

    dmp = _dmp_engine(threshold, margin)
    splitter = _dmp_engine(threshold, margin)
    splitter.Match_MaxBits = dmp.Match_MaxBits - 2 * dmp.Patch_Margin
    pieces: list[Any] = []
    counts: list[int] = []
    for h in hunks:
        pt = patch_obj()
        pt.start1, pt.start2, pt.length1, pt.length2 = h.start1, h.start2, h.length1, h.length2
        pt.diffs = list(h.diffs)
        one = [pt]
        splitter.patch_splitMax(one)
        counts.append(len(one))
        pieces.extend(one)
    new_text, results = dmp.patch_apply(pieces, text)
    failed, i = [], 0
    for h, n in zip(hunks, counts, strict=True):
        if not all(results[i : i + n]):
            failed.append(h)
        i += n
    return new_text, failed


def _v1_bytes(hunks: Sequence[Hunk]) -> int:
    """Size of patch format 1 (a msgpack array of literal hunks), for the reference rows."""
    return len(msgpack.packb([[h.start1, h.start2, h.length1, h.length2,
                               [[op, t] for op, t in h.diffs]] for h in hunks],
                             use_bin_type=True))


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


KINDS = ("replace", "insert", "delete")


def make_edits(rng: random.Random, base: str, writers: int, gap: int,
               mix: bool = False) -> list[Edit]:
    """``writers`` span replacements, each ``gap`` characters after the previous one ends;
    with ``mix``, each edit is a replacement, an insertion (empty span) or a deletion (no
    text) with equal odds."""
    edits: list[Edit] = []
    pos = rng.randrange(200, len(base) // 3)
    for _ in range(writers):
        kind = rng.choice(KINDS) if mix else "replace"
        span = 0 if kind == "insert" else rng.randint(4, 40)
        start = max(0, pos)
        end = min(len(base), start + span)
        text = _words(rng, rng.randint(4, 40)) + "#" + str(len(edits))
        edits.append((start, end, "" if kind == "delete" else text))
        pos = end + gap
    return edits


def _intended(base: str, edits: Sequence[Edit]) -> str | None:
    """Every edit applied, when their spans are disjoint and no two start at the same place
    (else there is no single intent: which insert goes first?)."""
    ordered = sorted(edits)
    for (s0, e0, _), (s1, _, _) in itertools.pairwise(ordered):
        if s1 < e0 or s1 == s0:
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


def fold(base: str, patches: Sequence[Sequence[Hunk]],
         dmp_threshold: float | None = None, margin: int = _textdiff.PATCH_MARGIN,
         ) -> tuple[str, int]:
    """What ``TextFold`` computes for concurrent patches made against ``base``: the text and
    the number of failed hunks (with ``dmp_threshold``, what the reference applier does)."""
    value, failed = base, 0
    for hunks in patches:
        if dmp_threshold is None:
            value, bad = apply_patch(value, hunks)
        else:
            value, bad = dmp_apply(value, hunks, dmp_threshold, margin)
        failed += len(bad)
    return value, failed


def trial(base: str, edits: Sequence[Edit], cfg: Config, tally: Tally) -> str:
    """Run one trial under ``cfg``; returns its class and adds it to ``tally``."""
    t0 = time.perf_counter()
    patches: list[Sequence[Hunk]] = []
    for s, e, t in edits:
        hunks = make_patch(base, base[:s] + t + base[e:], unit=cfg.unit, margin=cfg.margin)
        if cfg.dmp_threshold is not None:
            tally.wire_bytes += _v1_bytes(hunks)
            patches.append(hunks)
        else:
            data = encode_patch(hunks, elide_min_bytes=ELIDE_MIN_BYTES if cfg.elide else 1 << 40)
            tally.wire_bytes += len(data)
            patches.append(decode_patch(data))  # what a receiver folds
        tally.patches += 1
    value, failed = fold(base, patches, cfg.dmp_threshold, cfg.margin)
    tally.seconds += time.perf_counter() - t0
    intended = _intended(base, edits)
    if failed:
        kind = "reported"
    elif intended is not None:
        kind = "clean" if value == intended else "silent"
    else:
        kind = "clean" if all(value.count(t) == 1 for _, _, t in edits if t) else "silent"
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
    mix: bool = False,
) -> dict[tuple[str, tuple[int, int]], Tally]:
    """Every configuration on the same trials (same bases, same edits) per gap bin."""
    out: dict[tuple[str, tuple[int, int]], Tally] = {}
    for lo, hi in GAP_BINS:
        rng = random.Random(seed * 1000 + lo)
        cases = []
        for _ in range(trials):
            base = make_base(rng)
            cases.append((base, make_edits(rng, base, writers, rng.randrange(lo, hi), mix)))
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
        patches = [decode_patch(encode_patch(make_patch(
            base, base[:edits[i][0]] + edits[i][2] + base[edits[i][1]:]))) for i in order]
        value, failed = fold(base, patches)
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
    parser.add_argument("--mix", action="store_true",
                        help="replacements, insertions and deletions (default: replacements)")
    args = parser.parse_args(argv)
    if args.check_memory:
        n = check_memory(args.check_memory, args.seed)
        print(f"{n} trials replayed through Memory replicas: same bytes and conflicts as the fold")
    results = run(args.trials, writers=args.writers, seed=args.seed, mix=args.mix)
    what = ("edits (replacements, insertions, deletions; spans and texts of 4–40 characters)"
            if args.mix else "span replacements (4–40 characters)")
    print(f"\n{args.writers} concurrent {what} per trial, "
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
