"""The one-write-at-a-time path of the network latency benchmark, in one process, by stage.

Two replicas (``hs.Memory``) and one record-layer session (ChaCha20-Poly1305), no sockets:
a write on the writer, ``sync_to`` (the commit and the frame), the seal, the open,
``receive`` on the reader until its observer sees the write, then the reader's
acknowledgement back to the writer (timed on its own: it is not on the write's path, but it
runs between writes in the network benchmark), then, as ``hs.Peer`` does in its idle time,
a compaction on either side when one is due (not timed). Each stage is timed with
``time.perf_counter_ns``; inside them the main steps (on the writer ``FieldsPlane.set_key``,
the commit cycle with ``take_pending`` and ``_commit_local``, ``_encode``; on the reader
``decode_frame``, ``_stage``, the Yjs check, ``_apply`` with ``FieldsPlane.apply``; on both
``Contribution.create``, ``CausalLog.add``, ``Stability.note`` and ``_dispatch``, summed over
the two sides) are timed by wrappers (``--no-breakdown`` leaves them out: the wrappers cost
~0.2 µs each and nest). Medians in µs.

Modes: ``warm`` (writes back to back), ``spaced`` (a sleep of ``--interval-ms`` between
writes, as in the network benchmark: the path then runs with colder caches) and ``evict``
(spaced, and 8 MiB of memory touched between writes: colder still, closer to a busy
machine). ``--before PATH`` compares with another tree (e.g. ``git archive`` of an older
commit unpacked at PATH): both run in child processes, alternated ``--rounds`` times, and
the table shows the median of each side's run medians::

    python -m benchmarks.latency_path --mode warm --mode spaced
    python -m benchmarks.latency_path --mode warm --before /tmp/old-tree --rounds 3

``--profile FILE`` writes a cProfile of the warm loop (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hybridsync as hs
from hybridsync import replica as _replica
from hybridsync._gc import Stability
from hybridsync.causal import CausalLog, Contribution
from hybridsync.fields import FieldsPlane
from hybridsync.security._records import RecordOpener, RecordSealer, RecordType

_ns = time.perf_counter_ns

# stage names, in path order (the breakdown of receive is indented in the report)
PATH = ("write", "sync_to", "seal", "open", "receive", "total")
INNER = ("FieldsPlane.set_key", "_cycle", "FieldsPlane.take_pending", "_commit_local",
         "_encode", "decode_frame", "_stage", "Contribution.create", "yjs check", "_apply",
         "FieldsPlane.apply", "CausalLog.add", "Stability.note", "_dispatch", "observer")


class _Timers:
    """Accumulates the time spent in wrapped functions during one sample."""

    def __init__(self) -> None:
        self.cur: dict[str, int] = {}

    def wrap(self, owner: Any, attr: str, label: str) -> Callable[[], None]:
        fn = getattr(owner, attr)
        cur = self.cur

        def timed(*a: Any, **kw: Any) -> Any:
            t = _ns()
            try:
                return fn(*a, **kw)
            finally:
                cur[label] = cur.get(label, 0) + _ns() - t

        setattr(owner, attr, timed)
        return lambda: setattr(owner, attr, fn)


@contextmanager
def _breakdown(timers: _Timers, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    undo: list[Callable[[], None]] = []
    undo.append(timers.wrap(FieldsPlane, "set_key", "FieldsPlane.set_key"))
    undo.append(timers.wrap(_replica.Memory, "_cycle", "_cycle"))
    undo.append(timers.wrap(FieldsPlane, "take_pending", "FieldsPlane.take_pending"))
    undo.append(timers.wrap(_replica.Memory, "_commit_local", "_commit_local"))
    undo.append(timers.wrap(_replica.Memory, "_encode", "_encode"))
    undo.append(timers.wrap(_replica.Memory, "_dispatch", "_dispatch"))
    undo.append(timers.wrap(_replica, "decode_frame", "decode_frame"))
    undo.append(timers.wrap(_replica.Memory, "_stage", "_stage"))
    undo.append(timers.wrap(_replica.Memory, "_apply", "_apply"))
    undo.append(timers.wrap(_replica, "_check_yjs_update", "yjs check"))
    undo.append(timers.wrap(FieldsPlane, "apply", "FieldsPlane.apply"))
    undo.append(timers.wrap(CausalLog, "add", "CausalLog.add"))
    undo.append(timers.wrap(Stability, "note", "Stability.note"))
    create = Contribution.__dict__["create"].__func__
    cur = timers.cur

    def timed_create(cls: Any, *a: Any, **kw: Any) -> Any:
        t = _ns()
        try:
            return create(cls, *a, **kw)
        finally:
            cur["Contribution.create"] = cur.get("Contribution.create", 0) + _ns() - t

    Contribution.create = classmethod(timed_create)  # type: ignore[method-assign,assignment]
    undo.append(lambda: setattr(Contribution, "create", classmethod(create)))
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


def _evict(buf: bytearray) -> None:
    for i in range(0, len(buf), 64):
        buf[i] = (buf[i] + 1) & 0xFF


def run(mode: str, samples: int, *, group_commit: bool, interval_ms: float,
        breakdown: bool = True, profile: str | None = None) -> dict[str, float]:
    """Median µs per stage over ``samples`` writes (after a warm-up)."""
    clock = lambda: int(time.time() * 1000)  # noqa: E731
    # (GC at 256 as the recorded runs had it: the default is on only with declared members)
    a = hs.Memory("bench", "writer", clock=clock, incarnation=1, group_commit=group_commit,
                  gc_min_entries=256)
    b = hs.Memory("bench", "reader", clock=clock, incarnation=2, group_commit=group_commit,
                  gc_min_entries=256)
    # as under hs.Peer: no compaction inside receive(); one between writes when due (idle)
    a.auto_collect = b.auto_collect = False
    seen: list[int] = []
    # as benchmarks/network.py's reader: an observer that reads the changed paths
    b.observe(lambda change: seen.append(_ns()) if change.paths else None)
    key = b"k" * 32
    a_to_b, opener = RecordSealer(key), RecordOpener(key)
    sync = RecordType.SYNC

    def ack() -> None:
        for f in b.sync_to("writer", reliable=True):
            a.receive("reader", f)

    def one(i: int, timers: _Timers | None) -> dict[str, int] | None:
        if timers is not None:
            timers.cur.clear()
        seen.clear()
        t0 = _ns()
        a.fields[f"key{i % 1000}"] = i
        t1 = _ns()
        frames = a.sync_to("reader", reliable=True)
        t2 = _ns()
        records = [a_to_b.seal(sync, f) for f in frames]
        t3 = _ns()
        bodies = [opener.open(r)[1] for r in records]
        t4 = _ns()
        for body in bodies:
            b.receive("writer", body)
        t5 = _ns()
        inner = dict(timers.cur) if timers is not None else {}
        ta = _ns()
        ack()
        tb = _ns()
        for m in (a, b):
            if m.collect_due:
                m.collect()
        if not seen:
            raise RuntimeError("the reader's observer did not see the write")
        out = {"write": t1 - t0, "sync_to": t2 - t1, "seal": t3 - t2, "open": t4 - t3,
               "receive": t5 - t4, "total": seen[0] - t0, "ack (not on the path)": tb - ta}
        if timers is not None:
            out.update(inner)  # (the acknowledgement's own calls left out)
            out["observer"] = t5 - seen[0]
        return out

    for i in range(300):  # warm-up: links, vvs, caches
        one(i, None)
    timers = _Timers()
    rows: list[dict[str, int]] = []
    buf = bytearray(8 << 20) if mode == "evict" else None
    prof = cProfile.Profile() if profile else None
    with _breakdown(timers, breakdown):
        for i in range(samples):
            if mode != "warm":
                time.sleep(interval_ms / 1000)
                if buf is not None:
                    _evict(buf)
            if prof is not None:
                prof.enable()
            row = one(1000 + i, timers if breakdown else None)
            if prof is not None:
                prof.disable()
            assert row is not None
            rows.append(row)
    if prof is not None and profile:
        prof.dump_stats(profile)
    if a.fields.to_py() != b.fields.to_py():
        raise RuntimeError("the replicas differ")
    names = [n for n in (*PATH, *INNER, "ack (not on the path)") if any(n in r for r in rows)]
    return {n: statistics.median(r.get(n, 0) for r in rows) / 1000 for n in names}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", action="append", choices=("warm", "spaced", "evict"))
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--spaced-samples", type=int, default=300)
    p.add_argument("--interval-ms", type=float, default=10.0)
    p.add_argument("--default", action="store_true", help="the default Memory, not group commit")
    p.add_argument("--no-breakdown", action="store_true")
    p.add_argument("--profile", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.add_argument("--before", metavar="PATH", help="another tree to compare with")
    p.add_argument("--rounds", type=int, default=3, help="alternated runs per tree (--before)")
    args = p.parse_args(argv)
    modes = args.mode or ["warm", "spaced"]
    if args.before:
        return _compare(args, modes, argv if argv is not None else sys.argv[1:])
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        n = args.samples if mode == "warm" else args.spaced_samples
        results[mode] = run(mode, n, group_commit=not args.default,
                            interval_ms=args.interval_ms, breakdown=not args.no_breakdown,
                            profile=args.profile if mode == "warm" else None)
    if args.json:
        print(json.dumps({"hybridsync": hs.__file__, "group_commit": not args.default,
                          "results": results}))
        return 0
    print(f"hybridsync from {hs.__file__}; {'default Memory' if args.default else 'group commit'}"
          f"; medians, µs")
    names = list(dict.fromkeys(n for r in results.values() for n in r))
    print(f"| stage | {' | '.join(modes)} |")
    print(f"|---|{'---:|' * len(modes)}")
    for n in names:
        label = f"  {n}" if n in INNER else n
        print(f"| {label} | " + " | ".join(f"{results[m].get(n, 0):.1f}" for m in modes) + " |")
    return 0


def _compare(args: argparse.Namespace, modes: list[str], argv: list[str]) -> int:
    """Run this benchmark in the tree at ``--before`` and in this one, alternated."""
    import os
    import subprocess
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent
    before = Path(args.before).resolve()
    if not (before / "hybridsync" / "__init__.py").is_file():
        print(f"--before {before}: no hybridsync package there", file=sys.stderr)
        return 2
    child: list[str] = []
    skip = False
    for a in argv:  # the same arguments, without --before/--rounds/--json
        if skip:
            skip = False
            continue
        if a in ("--before", "--rounds"):
            skip = True
            continue
        if a.startswith(("--before=", "--rounds=")) or a == "--json":
            continue
        child.append(a)
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side, tree in (("before", before), ("after", here)):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), *child, "--json"],
                env=env, cwd=tree, capture_output=True, text=True, check=True, timeout=3600,
            ).stdout
            got = json.loads(out.strip().splitlines()[-1])
            if not str(got["hybridsync"]).startswith(str(tree)):
                print(f"{side}: imported {got['hybridsync']}, not {tree}", file=sys.stderr)
                return 2
            runs[side].append(got["results"])
    print(f"before: {before}; after: {here}; {args.rounds} alternated runs each; "
          f"{'default Memory' if args.default else 'group commit'}; median of the runs' "
          "medians, µs")
    print("| stage | " + " | ".join(f"{m} before | {m} after | {m} Δ" for m in modes) + " |")
    print("|---|" + "---:|" * (3 * len(modes)))
    names = list(dict.fromkeys(n for r in runs["after"] for m in modes for n in r[m]))
    for n in names:
        cells = []
        for m in modes:
            old = statistics.median(r[m].get(n, 0.0) for r in runs["before"])
            new = statistics.median(r[m].get(n, 0.0) for r in runs["after"])
            cells += [f"{old:.1f}", f"{new:.1f}", f"{new - old:+.1f}"]
        label = f"  {n}" if n in INNER else n
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
