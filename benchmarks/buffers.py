"""W4: a big float16 buffer region with a fraction of its blocks rewritten every cycle.

Run from the repository root::

    python -m benchmarks.buffers               # 256 MiB, 1 % of the blocks, 10 cycles
    python -m benchmarks.buffers --quick       # 8 MiB, 3 cycles

For each codec (raw float16, and Q4) two replicas ``a`` and ``b`` start from the same
256 MiB of random values (shipped once, untimed). Then, every cycle, ``a`` rewrites 1 % of
the 4 KiB blocks (random blocks, fresh random values) in place through an array from
``kv.array`` that it keeps (the headline rows: every cycle must look at the whole buffer),
and, in a second pair of rows, with ``kv.write()`` and no array kept (the cycle looks at the
written blocks only). The benchmark times, on the same state, in the same run:

* ``detect``: finding the changed blocks (``.array``: xxh3 of every 4 KiB block of the working
  copy against the folded value's; ``write()``: of the written blocks only);
* ``compare``: for reference, the plain chunked compare of the whole working copy with the
  folded value (what ``detect`` would cost without the span hashes);
* ``delta``: the cycle's work on the buffer, ``detect`` plus encoding the block delta
  (gathering the blocks; for Q4, quantizing them);
* ``commit``: ``a.commit()`` as a whole (the above, plus the contribution's hash, the store,
  the local fold and the working copy's refresh);
* ``receive``: ``b.receive`` of the frames (decode, verify, fold, copy the blocks into b's
  working copy);
* ``copy``: one plain ``np.copyto`` of the whole buffer into another preallocated one.

Wire bytes are the frames ``a`` sends ``b`` for the cycle, against the bytes of the changed
blocks (float16). At the end the two replicas must hold the same bytes.

Goals (issue 3): delta time <= one copy of the buffer; wire bytes <= 1.02x the changed bytes;
Q4 at <= 0.3x the float16 size.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

import hybridsync as hs
from benchmarks._common import machine, markdown_table
from hybridsync.regions._buffer import BLOCK_BYTES, _changed_blocks
from hybridsync.testing import sync_pair

VALUES_PER_BLOCK = BLOCK_BYTES // 2


@dataclass
class Result:
    codec: str
    writes: str  # "array": in place through a kept kv.array; "write": kv.write(), none kept
    mib: float
    fraction: float
    cycles: int
    changed_blocks: int
    detect_ms: float
    compare_ms: float
    delta_ms: float
    commit_ms: float
    receive_ms: float
    copy_ms: float
    wire_bytes: float
    changed_bytes: int
    equal: bool

    @property
    def delta_vs_copy(self) -> float:
        return self.delta_ms / self.copy_ms

    @property
    def wire_vs_changed(self) -> float:
        return self.wire_bytes / self.changed_bytes


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - start) * 1e3


def run(mib: float, fraction: float, cycles: int, codec: str, seed: int = 4,
        writes: str = "array") -> Result:
    """One codec: set up two replicas, then ``cycles`` timed rewrite cycles, writing in place
    through a kept ``kv.array`` (``writes="array"``) or with ``kv.write()`` (``"write"``)."""
    blocks = max(1, int(mib * 2**20) // BLOCK_BYTES)
    shape = (blocks, VALUES_PER_BLOCK)
    rng = np.random.default_rng(seed)
    now = [0]

    def clock() -> int:
        return now[0]

    # (GC at 256 as recorded: the default is on only with declared members)
    a = hs.Memory("w4", "a", clock=clock, incarnation=1, gc_min_entries=256)
    b = hs.Memory("w4", "b", clock=clock, incarnation=2, gc_min_entries=256)
    kv = a.buffer("kv", shape=shape, dtype="float16", codec=None if codec == "raw" else codec)
    work = kv.array
    for start in range(0, blocks, 4096):  # 32 MiB of float32 temporaries at a time
        work[start : start + 4096] = rng.standard_normal(
            (min(4096, blocks - start), VALUES_PER_BLOCK), dtype=np.float32)
    for _ in range(1 + 3 * blocks * BLOCK_BYTES // (12 << 20)):  # one delta <= 12 MiB
        a.commit()
        sync_pair(a, b)
    state = a._regions.buffers["kv"]
    copy_dst = np.empty_like(state.working)
    np.copyto(copy_dst, state.working)  # fault its pages in before timing
    # write(): no array over the working copy stays alive, so the cycles look at the marked
    # blocks only (after one cycle that scans everything once)
    held = work if writes == "array" else None
    del work
    a.commit()
    k = max(1, round(blocks * fraction))
    detect, compare, delta, commit, receive, copy, wire = [], [], [], [], [], [], []
    gc.collect()
    for _ in range(cycles):
        now[0] += 1
        rows = rng.choice(blocks, k, replace=False)
        fresh = rng.standard_normal((k, VALUES_PER_BLOCK), dtype=np.float32)
        if held is None:
            for row, values in zip(rows.tolist(), fresh, strict=True):
                kv.write(row * VALUES_PER_BLOCK, values)
        else:
            held[rows] = fresh
        working_bytes = state.working.reshape(-1).view(np.uint8)
        found, ms = _timed(partial(_changed_blocks, state.fold.data, working_bytes))
        assert len(found) == k
        compare.append(ms)
        found, ms = _timed(state.changed_blocks)
        assert len(found) == k
        detect.append(ms)
        part, ms = _timed(lambda: state.cycle_part("kv"))
        assert part is not None
        delta.append(ms)
        _, ms = _timed(a.commit)
        commit.append(ms)
        frames = a.sync_to("b")
        wire.append(sum(map(len, frames)))
        def deliver(fs: list[bytes] = frames) -> None:
            for f in fs:
                b.receive("a", f)

        _, ms = _timed(deliver)
        receive.append(ms)
        for f in b.sync_to("a"):
            a.receive("b", f)
        _, ms = _timed(lambda: np.copyto(copy_dst, state.working))
        copy.append(ms)
    equal = a.state_digest() == b.state_digest() and (
        b.buffer("kv", shape=shape, dtype="float16").read().tobytes() == kv.read().tobytes())
    a.close()
    b.close()
    med = statistics.median
    return Result(codec, writes, blocks * BLOCK_BYTES / 2**20, fraction, cycles, k, med(detect),
                  med(compare), med(delta), med(commit), med(receive), med(copy), med(wire),
                  k * BLOCK_BYTES, equal)


def report(results: list[Result]) -> str:
    rows = [[
        r.codec, r.writes, f"{r.mib:.0f} MiB", f"{r.changed_blocks:,}", f"{r.detect_ms:.1f}",
        f"{r.compare_ms:.1f}",
        f"{r.delta_ms:.1f}", f"{r.copy_ms:.1f}", f"{r.delta_vs_copy:.2f}", f"{r.commit_ms:.1f}",
        f"{r.receive_ms:.1f}", f"{r.wire_bytes:,.0f}", f"{r.wire_vs_changed:.4f}",
        "yes" if r.equal else "NO",
    ] for r in results]
    return markdown_table(
        ["codec", "writes", "buffer", "blocks/cycle", "detect ms", "compare ms", "delta ms",
         "copy ms", "delta/copy", "commit ms", "receive ms", "wire B/cycle", "wire/changed",
         "equal"], rows)


def check_targets(r: Result) -> list[str]:
    """The goals this row misses (empty: all met)."""
    missed = []
    if r.delta_ms > r.copy_ms:
        missed.append(f"delta {r.delta_vs_copy:.2f}x copy (goal <= 1)")
    limit = 1.02 if r.codec == "raw" else 0.30
    if r.wire_vs_changed > limit:
        missed.append(f"wire {r.wire_vs_changed:.4f}x changed (goal <= {limit})")
    if not r.equal:
        missed.append("replicas differ")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mib", type=float, default=256.0)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="8 MiB, 3 cycles")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.mib, args.cycles = 8.0, 3
    m = machine(("hybridsync", "numpy", "msgpack"))
    print(f"W4 buffers: {args.mib:g} MiB float16, {args.fraction:.1%} of the "
          f"{BLOCK_BYTES}-byte blocks rewritten per cycle, median of {args.cycles} cycles")
    print("; ".join(m.describe()))
    print()
    results = [run(args.mib, args.fraction, args.cycles, codec) for codec in ("raw", "q4")]
    print(report(results))
    print()
    tracked = [run(args.mib, args.fraction, args.cycles, codec, writes="write")
               for codec in ("raw", "q4")]
    print(report(tracked))
    results += tracked
    status = 0
    for r in results:
        for miss in check_targets(r):
            print(f"- {r.codec} ({r.writes}): {miss}")
            status = 1 if args.strict else status
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
