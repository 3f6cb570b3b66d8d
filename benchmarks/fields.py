"""Fields benchmark: hybridsync against raw pycrdt and Loro, same workload, same run.

Two in-process replicas, ``a`` writes and ``b`` receives; what is timed is creating every
contribution on ``a`` *and* applying it on ``b``. Two workloads over the same writes:

* ``single``: every write is its own commit (one contribution per write);
* ``txn100``: the same writes grouped in transactions of 100 (one contribution each).

The systems:

* ``pycrdt``: each Yjs update goes straight from ``a``'s ``Doc.observe`` callback to
  ``b.apply_update`` (no framing, no causal metadata, no acknowledgements);
* ``loro``: ``a.subscribe_local_update`` hands each update to ``b.import_``; a write is
  ``LoroMap.insert`` followed by ``commit()`` (one commit per contribution);
* ``hybridsync``: ``a.fields[key] = value`` (or ``with a.transaction()``) and frames moved
  with ``a.sync_to("b")`` → ``b.receive("a", ...)``; ``b.sync_to("a")`` → ``a.receive`` are
  the acknowledgements, counted in the wire bytes. Modes, in contributions:
  ``immediate`` syncs and acknowledges after every contribution, ``batched`` syncs and
  acknowledges every 100, ``immediate, ack/100`` syncs after every contribution and
  acknowledges every 100 (with the default ``retransmit_rounds``, unacknowledged frames are
  sent again, which this mode makes visible). ``group commit, sync/100`` is
  ``Memory(group_commit=True)`` synced and acknowledged every 100 writes: the autocommitted
  writes between two syncs become one contribution (in ``txn100`` it equals ``batched``:
  transactions are contributions of their own). It is not in ``run()``'s default modes (its
  contributions are not one per write); the command line runs it.

Bytes per contribution = every byte that crossed between the replicas, both ways, divided by
the number of contributions. At the end of every run both replicas must hold exactly the
content the workload wrote, or the run fails: nothing is measured that did not happen.

Run from the repository root::

    python -m benchmarks.fields            # 100,000 writes, median of 3 repeats
    python -m benchmarks.fields --quick    # 10,000 writes, 1 repeat
    python -m benchmarks.fields --profile immediate   # cProfile of one hybridsync mode
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import itertools
import json
import os
import pstats
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pycrdt

import hybridsync as hs
from benchmarks._common import (
    current_rss_kib,
    machine,
    markdown_table,
    median,
    peak_rss_kib,
)

__all__ = [
    "GROUP_COMMIT_MODES",
    "HYBRIDSYNC_MODES",
    "Result",
    "Run",
    "Workload",
    "check_targets",
    "main",
    "make_writes",
    "report",
    "run",
]

Value = int | str
Write = tuple[str, Value]

DEFAULT_WRITES = 100_000
QUICK_WRITES = 10_000
DEFAULT_KEYS = 1_000
DEFAULT_SEED = 20261121
TXN_SIZE = 100
WARMUP_WRITES = 2_000
TIME_TARGET = 1.5  # hybridsync may cost at most this many times raw pycrdt
CLOCK_BASE_MS = 1_795_219_200_000  # 2026-11-21T00:00:00Z: realistic HLC sizes on the wire

# mode -> (sync a→b every N contributions, acknowledge b→a every N contributions)
HYBRIDSYNC_MODES: dict[str, tuple[int, int]] = {
    "immediate": (1, 1),
    "batched": (100, 100),
    "immediate, ack/100": (1, 100),
}
# the same, with Memory(group_commit=True): counted in writes, a sync commits what is pending
GROUP_COMMIT_MODES: dict[str, tuple[int, int]] = {
    "group commit, sync/100": (100, 100),
}
ALL_MODES = {**HYBRIDSYNC_MODES, **GROUP_COMMIT_MODES}
# extra Memory options of both replicas (``--gc off``: {"gc_min_entries": None})
# GC as recorded in docs/benchmarks.md (on at 256 stable contributions; the default is on
# only with declared members since 2026-11-21)
MEMORY_OPTIONS: dict[str, Any] = {"gc_min_entries": 256}


# ---- the workload --------------------------------------------------------------------------
def make_writes(n: int, *, keys: int = DEFAULT_KEYS, seed: int = DEFAULT_SEED) -> list[Write]:
    """``n`` writes over the keys ``k0000``…; values are small ints and short strings, mixed."""
    if n < 1 or keys < 1:
        raise ValueError("need at least one write and one key")
    rng = random.Random(seed)
    width = max(4, len(str(keys - 1)))
    names = [f"k{i:0{width}d}" for i in range(keys)]
    out: list[Write] = []
    for _ in range(n):
        key = names[rng.randrange(keys)]
        value: Value = rng.randrange(1_000) if rng.random() < 0.5 else f"v{rng.randrange(100_000)}"
        out.append((key, value))
    return out


@dataclass(frozen=True, slots=True)
class Workload:
    """The writes and how they are grouped into contributions (``txn_size`` writes each)."""

    name: str
    writes: tuple[Write, ...]
    txn_size: int
    ids: tuple[int, int] = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F)  # replica ids, 64 bits

    @property
    def groups(self) -> list[tuple[Write, ...]]:
        w, n = self.writes, self.txn_size
        return [w[i : i + n] for i in range(0, len(w), n)]

    @property
    def expected(self) -> dict[str, Value]:
        """What both replicas must hold at the end (the last write of each key wins)."""
        return dict(self.writes)


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run of one system on one workload."""

    seconds: float
    cpu_seconds: float  # process CPU time over the same span: wall ≫ CPU means contention
    contributions: int
    frames: int
    wire_bytes: int
    rss_growth_kib: int | None  # RSS with both replicas alive, minus RSS before
    peak_rss_growth_kib: int  # growth of the process peak during the run (0 if below it)
    equal: bool


@dataclass(frozen=True, slots=True)
class Result:
    """The median of a system's timed runs on one workload."""

    workload: str
    system: str
    mode: str
    writes: int
    txn_size: int
    repeats: int
    seconds: float
    seconds_all: tuple[float, ...]
    cpu_seconds: float
    contributions: int
    frames: int
    wire_bytes: int
    rss_growth_kib: int | None
    peak_rss_growth_kib: int
    equal: bool
    ratios: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.system} ({self.mode})" if self.mode else self.system

    @property
    def writes_per_s(self) -> float:
        return self.writes / self.seconds

    @property
    def cpu_us_per_write(self) -> float:
        return self.cpu_seconds * 1e6 / self.writes

    @property
    def contributions_per_s(self) -> float:
        return self.contributions / self.seconds

    @property
    def us_per_write(self) -> float:
        return self.seconds * 1e6 / self.writes

    @property
    def bytes_per_contribution(self) -> float:
        return self.wire_bytes / self.contributions

    @property
    def bytes_per_write(self) -> float:
        return self.wire_bytes / self.writes

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            label=self.label,
            writes_per_s=self.writes_per_s,
            contributions_per_s=self.contributions_per_s,
            us_per_write=self.us_per_write,
            cpu_us_per_write=self.cpu_us_per_write,
            bytes_per_contribution=self.bytes_per_contribution,
            bytes_per_write=self.bytes_per_write,
        )
        return d


def _plain(content: dict[str, Any]) -> dict[str, Any]:
    """pycrdt reads numbers back as floats: compare them as the ints that were written."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in content.items()}


Outcome = tuple[int, int, int, bool]  # contributions, frames, wire bytes, replicas equal
Body = Callable[["_Timer"], Outcome]


def _measure(body: Body) -> Run:
    """Run ``body``, which builds its replicas, then times exactly the work with the timer."""
    gc.collect()
    rss0, peak0 = current_rss_kib(), peak_rss_kib()
    timer = _Timer()
    contributions, frames, wire, equal = body(timer)
    peak = peak_rss_kib()
    return Run(
        seconds=timer.elapsed,
        cpu_seconds=timer.cpu,
        contributions=contributions,
        frames=frames,
        wire_bytes=wire,
        rss_growth_kib=None if rss0 is None or timer.rss is None else timer.rss - rss0,
        peak_rss_growth_kib=max(0, peak - peak0),
        equal=equal,
    )


class _Timer:
    """Started and stopped by each system's body around exactly the measured work."""

    __slots__ = ("_cpu_start", "_start", "cpu", "elapsed", "rss")

    def __init__(self) -> None:
        self._start = self._cpu_start = 0.0
        self.elapsed = self.cpu = 0.0
        self.rss: int | None = None

    def start(self) -> None:
        self._cpu_start = time.process_time()
        self._start = time.perf_counter()

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self._start
        self.cpu = time.process_time() - self._cpu_start
        self.rss = current_rss_kib()  # both replicas still alive


# ---- the systems ---------------------------------------------------------------------------
def _pycrdt(workload: Workload, timer: _Timer) -> Outcome:
    a: pycrdt.Doc[Any] = pycrdt.Doc(client_id=(workload.ids[0] >> 32) or 1)  # 32-bit, as Yjs
    b: pycrdt.Doc[Any] = pycrdt.Doc(client_id=(workload.ids[1] >> 32) or 2)
    ma = a.get("fields", type=pycrdt.Map)
    mb = b.get("fields", type=pycrdt.Map)
    count = [0, 0]
    apply = b.apply_update

    def forward(event: pycrdt.TransactionEvent) -> None:
        update = event.update
        count[0] += 1
        count[1] += len(update)
        apply(update)

    sub = a.observe(forward)
    groups = workload.groups
    timer.start()
    if workload.txn_size == 1:
        for ((key, value),) in groups:
            ma[key] = value
    else:
        for group in groups:
            with a.transaction():
                for key, value in group:
                    ma[key] = value
    timer.stop()
    a.unobserve(sub)
    expected = workload.expected
    equal = _plain(ma.to_py()) == expected and _plain(mb.to_py()) == expected
    return count[0], count[0], count[1], equal


def _loro(workload: Workload, timer: _Timer) -> Outcome:
    import loro

    a, b = loro.LoroDoc(), loro.LoroDoc()  # type: ignore[no-untyped-call]
    a.peer_id, b.peer_id = workload.ids  # Loro peer ids are random 64-bit numbers
    ma = a.get_map("fields")
    count = [0, 0]
    import_ = b.import_

    def forward(update: bytes) -> bool:
        count[0] += 1
        count[1] += len(update)
        import_(update)
        return True  # keep the subscription

    sub = a.subscribe_local_update(forward)
    groups = workload.groups
    insert, commit = ma.insert, a.commit
    timer.start()
    for group in groups:
        for key, value in group:
            insert(key, value)
        commit()
    timer.stop()
    sub.unsubscribe()
    expected = workload.expected
    va, vb = a.get_deep_value(), b.get_deep_value()
    return count[0], count[0], count[1], va == vb == {"fields": expected}


def _fake_clock() -> Callable[[], int]:
    """A deterministic millisecond clock: one millisecond per reading."""
    return itertools.count(CLOCK_BASE_MS).__next__


def _hybridsync(workload: Workload, timer: _Timer, sync_every: int, ack_every: int,
                group: bool = False) -> Outcome:
    a = hs.Memory("bench", "a", clock=_fake_clock(), incarnation=1, group_commit=group,
                  **MEMORY_OPTIONS)
    b = hs.Memory("bench", "b", clock=_fake_clock(), incarnation=2, **MEMORY_OPTIONS)
    fields = a.fields
    moved = [0, 0]  # frames, bytes

    def move(src: hs.Memory, dst: hs.Memory, src_name: str, dst_name: str) -> None:
        for frame in src.sync_to(dst_name):
            moved[0] += 1
            moved[1] += len(frame)
            dst.receive(src_name, frame)

    groups = workload.groups
    single = workload.txn_size == 1
    timer.start()
    for i, group in enumerate(groups, 1):
        if single:
            ((key, value),) = group
            fields[key] = value
        else:
            with a.transaction():
                for key, value in group:
                    fields[key] = value
        if i % sync_every == 0:
            move(a, b, "a", "b")
        if i % ack_every == 0:
            move(b, a, "b", "a")
    move(a, b, "a", "b")  # deliver the rest of the last batch, then the last acknowledgement
    move(b, a, "b", "a")
    timer.stop()
    expected = workload.expected
    equal = (
        a.fields.to_py() == expected
        and b.fields.to_py() == expected
        and a.fields_json() == b.fields_json()
        and a.heads == b.heads
    )
    st = a.stats()  # (garbage collection may have folded a stable prefix into a checkpoint)
    return st.log_length + st.compacted, moved[0], moved[1], equal


def _hybridsync_body(workload: Workload, mode: str) -> Body:
    sync_every, ack_every = ALL_MODES[mode]
    group = mode in GROUP_COMMIT_MODES
    return lambda timer: _hybridsync(workload, timer, sync_every, ack_every, group)


def _configs(
    workload: Workload, modes: Iterable[str], with_loro: bool
) -> list[tuple[str, str, Body]]:
    out: list[tuple[str, str, Body]] = [("pycrdt", "", lambda t: _pycrdt(workload, t))]
    if with_loro:
        out.append(("loro", "", lambda t: _loro(workload, t)))
    out += [("hybridsync", mode, _hybridsync_body(workload, mode)) for mode in modes]
    return out


def loro_available() -> bool:
    return importlib.util.find_spec("loro") is not None


# ---- running and reporting -----------------------------------------------------------------
def run(
    writes: int = DEFAULT_WRITES,
    *,
    repeats: int = 3,
    keys: int = DEFAULT_KEYS,
    seed: int = DEFAULT_SEED,
    txn_size: int = TXN_SIZE,
    warmup: int = WARMUP_WRITES,
    modes: Sequence[str] = tuple(HYBRIDSYNC_MODES),
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Measure every system on both workloads; the median of ``repeats`` runs each.

    Systems run interleaved (one repeat of each, then the next), after one untimed warm-up
    run of ``warmup`` writes each. Raises ``AssertionError`` if any run ends with replicas
    that do not hold exactly what was written.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        raise ValueError(f"unknown hybridsync modes {unknown}; known: {list(ALL_MODES)}")
    all_writes = tuple(make_writes(writes, keys=keys, seed=seed))
    rng = random.Random(seed)
    ids = (rng.getrandbits(64) | 1, rng.getrandbits(64) | 2)  # realistic sizes, reproducible
    workloads = [
        Workload("single", all_writes, 1, ids),
        Workload(f"txn{txn_size}", all_writes, txn_size, ids),
    ]
    with_loro = loro_available()
    results: list[Result] = []
    for wl in workloads:
        configs = _configs(wl, modes, with_loro)
        if warmup > 0:
            small = Workload(wl.name, wl.writes[:warmup], wl.txn_size, wl.ids)
            for _, _, body in _configs(small, modes, with_loro):
                _measure(body)
        runs: dict[int, list[Run]] = {i: [] for i in range(len(configs))}
        for r in range(repeats):
            for i, (system, mode, body) in enumerate(configs):
                if progress is not None:
                    label = f"{system} ({mode})" if mode else system
                    progress(f"{wl.name}: {label}, repeat {r + 1}/{repeats}")
                one = _measure(body)
                if not one.equal:
                    raise AssertionError(
                        f"{system} {mode} on {wl.name}: replicas differ from what was written"
                    )
                runs[i].append(one)
        for i, (system, mode, _) in enumerate(configs):
            rs = runs[i]
            rss = [x.rss_growth_kib for x in rs if x.rss_growth_kib is not None]
            results.append(Result(
                workload=wl.name,
                system=system,
                mode=mode,
                writes=len(wl.writes),
                txn_size=wl.txn_size,
                repeats=repeats,
                seconds=median([x.seconds for x in rs]),
                seconds_all=tuple(x.seconds for x in rs),
                cpu_seconds=median([x.cpu_seconds for x in rs]),
                contributions=int(median([x.contributions for x in rs])),
                frames=int(median([x.frames for x in rs])),
                wire_bytes=int(median([x.wire_bytes for x in rs])),
                rss_growth_kib=max(rss) if rss else None,
                peak_rss_growth_kib=max(x.peak_rss_growth_kib for x in rs),
                equal=all(x.equal for x in rs),
            ))
    _add_ratios(results)
    return results


def _add_ratios(results: list[Result]) -> None:
    for r in results:
        same = [x for x in results if x.workload == r.workload]
        for ref in same:
            if ref.system in ("pycrdt", "loro"):
                r.ratios[f"time_vs_{ref.system}"] = r.us_per_write / ref.us_per_write
                # per write (a change the application made): the same as per contribution
                # where both make one contribution per write or per transaction, and the
                # only fair unit for group commit (one contribution per cycle)
                r.ratios[f"bytes_vs_{ref.system}"] = r.bytes_per_write / ref.bytes_per_write


def check_targets(r: Result) -> dict[str, bool]:
    """For a hybridsync result: time ≤ 1.5× raw pycrdt, fewer bytes per write than Loro."""
    out: dict[str, bool] = {}
    if r.system != "hybridsync":
        return out
    if "time_vs_pycrdt" in r.ratios:
        out["time"] = r.ratios["time_vs_pycrdt"] <= TIME_TARGET
    if "bytes_vs_loro" in r.ratios:
        out["bytes"] = r.ratios["bytes_vs_loro"] < 1.0
    return out


def _pass(flag: bool | None) -> str:
    return "–" if flag is None else ("pass" if flag else "FAIL")


def report(results: Sequence[Result]) -> str:
    """The results as one Markdown table."""
    headers = [
        "workload", "system", "writes/s", "µs/write", "CPU µs/write", "contrib/s", "B/contrib",
        "B/write", "frames", "time ×pycrdt", "time ×Loro", "bytes ×pycrdt", "bytes ×Loro",
        "RSS +MiB", "≤1.5× pycrdt time", "< Loro bytes",
    ]
    rows = []
    for r in results:
        t = check_targets(r)
        rss = "–" if r.rss_growth_kib is None else f"{r.rss_growth_kib / 1024:.1f}"

        def ratio(name: str, res: Result = r) -> str:
            v = res.ratios.get(name)
            return "–" if v is None else f"{v:.2f}"

        rows.append([
            r.workload, r.label, f"{r.writes_per_s:,.0f}", f"{r.us_per_write:.2f}",
            f"{r.cpu_us_per_write:.2f}",
            f"{r.contributions_per_s:,.0f}", f"{r.bytes_per_contribution:,.1f}",
            f"{r.bytes_per_write:.1f}", f"{r.frames:,}",
            ratio("time_vs_pycrdt"), ratio("time_vs_loro"),
            ratio("bytes_vs_pycrdt"), ratio("bytes_vs_loro"), rss,
            _pass(t.get("time")), _pass(t.get("bytes")),
        ])
    return markdown_table(headers, rows)


def profile(mode: str, writes: int, *, keys: int, seed: int, txn_size: int, top: int) -> str:
    """cProfile of one hybridsync mode on the ``single`` (or txn) workload, by own time."""
    wl = Workload("profile", tuple(make_writes(writes, keys=keys, seed=seed)), txn_size)
    body = _hybridsync_body(wl, mode)
    _measure(body)  # warm up
    prof = cProfile.Profile()
    prof.enable()
    _measure(body)
    prof.disable()
    from io import StringIO

    out = StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _revision() -> str:
    """The git commit of the hybridsync being measured, marked ``+dirty`` if its files differ."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(hs.__file__)))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "hybridsync"],
                               capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "(revision unknown)"
    return f"{rev.strip()}{'+dirty' if dirty.strip() else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_WRITES:,} writes and 1 repeat")
    parser.add_argument("--writes", type=int, default=None,
                        help=f"writes per workload (default {DEFAULT_WRITES:,})")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs, median kept")
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS, help="size of the key space")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--txn", type=int, default=TXN_SIZE, help="writes per transaction")
    parser.add_argument("--mode", action="append", choices=list(ALL_MODES),
                        help="hybridsync modes to run (default: all)")
    parser.add_argument("--gc", choices=["on", "off"], default="on",
                        help="hybridsync's garbage collection (default on, as in Memory)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a hybridsync result misses a target")
    parser.add_argument("--profile", choices=list(ALL_MODES), default=None,
                        help="instead of the benchmark, print a cProfile of one hybridsync mode")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    MEMORY_OPTIONS.clear()
    if args.gc == "off":
        MEMORY_OPTIONS["gc_min_entries"] = None
    writes = args.writes or (QUICK_WRITES if args.quick else DEFAULT_WRITES)
    repeats = args.repeat or (1 if args.quick else 3)
    if args.profile:
        print(profile(args.profile, writes, keys=args.keys, seed=args.seed, txn_size=1, top=30))
        return 0

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"  … {msg}", file=sys.stderr, flush=True)

    m = machine()
    load_before = os.getloadavg()[0]
    results = run(writes, repeats=repeats, keys=args.keys, seed=args.seed, txn_size=args.txn,
                  modes=args.mode or tuple(ALL_MODES), progress=progress)
    print(f"Fields benchmark: {writes:,} writes over {args.keys:,} keys (seed {args.seed}), "
          f"median of {repeats}; transactions of {args.txn}; hybridsync GC {args.gc}")
    for line in m.describe():
        print(f"  {line}")
    print(f"  Load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"hybridsync {_revision()}")
    if not loro_available():
        print("  Loro is not installed (pip install 'hybridsync[bench]'): its rows are missing")
    print()
    print(report(results))
    print()
    print("Wire bytes count every frame both ways (hybridsync acknowledgements included); "
          "replicas verified equal to the written content after every run.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": asdict(m), "writes": writes, "repeats": repeats,
                       "revision": _revision(), "hybridsync_path": hs.__file__,
                       "results": [r.as_dict() for r in results]}, f, indent=2)
    missed = [f"{r.workload}: {r.label}" for r in results if not all(check_targets(r).values())]
    if missed:
        print(f"\nMissed targets: {'; '.join(missed)}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
