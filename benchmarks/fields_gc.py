"""Fields GC benchmark: pycrdt state size before and after tombstone compaction.

Two workloads on a pycrdt document whose root map is ``fields`` (one transaction per write):

* ``overwrite``: 200,000 writes of small values (ints and short strings, the values of
  ``benchmarks.fields``) over 1,000 keys, spread over ``--writers`` documents that exchange
  every update (so the chains hold several clients);
* ``keys``: 10,000 distinct keys, each inserted and then deleted.

For each: the state (``Doc.get_update()``) before compaction, the compacted state
(``compact_state``), the *content* (the state of a fresh document holding only the final
values, and their JSON), the dropped-ranges table a replica keeps while uncompacted peers
may still send old-style updates, and the time to compact. The compacted state is loaded
into a fresh document and must show exactly the same fields, with the same state vector, or
the run fails.

Run from the repository root::

    python -m benchmarks.fields_gc            # the sizes above
    python -m benchmarks.fields_gc --quick    # 20,000 overwrites, 1,000 keys
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import pycrdt

from benchmarks._common import machine, markdown_table
from benchmarks.fields import make_writes
from hybridsync.fields._compact import compact_state
from hybridsync.fields._yencode import decode_raw

DEFAULT_OVERWRITES = 200_000
DEFAULT_KEYS = 1_000
DEFAULT_DISTINCT = 10_000
QUICK_OVERWRITES = 20_000
QUICK_DISTINCT = 1_000


@dataclass(frozen=True, slots=True)
class Result:
    workload: str
    state_bytes: int
    compacted_bytes: int
    content_state_bytes: int
    content_json_bytes: int
    dropped_table_bytes: int
    dropped_ranges: int
    anchors: int
    compact_s: float
    load_s: float
    load_before_s: float
    clients: int

    def row(self) -> list[str]:
        ratio = self.compacted_bytes / self.content_state_bytes
        return [
            self.workload,
            f"{self.state_bytes:,}",
            f"{self.compacted_bytes:,}",
            f"{self.content_state_bytes:,}",
            f"{self.content_json_bytes:,}",
            f"{self.state_bytes / self.content_state_bytes:.2f}",
            f"{ratio:.2f}",
            "yes" if ratio <= 2.0 else "no",
            f"{(self.compacted_bytes - self.content_state_bytes) / self.clients:,.1f}",
            f"{self.dropped_table_bytes:,} ({self.dropped_ranges:,} ranges, {self.anchors:,} keys)",
            f"{self.compact_s * 1000:,.0f}",
            f"{self.load_before_s * 1000:,.1f} → {self.load_s * 1000:,.1f}",
        ]


HEADERS = [
    "workload",
    "state B",
    "compacted B",
    "content B (fresh doc)",
    "content B (JSON)",
    "state ×content",
    "compacted ×content",
    "≤ 2× content",
    "B over content per client",
    "dropped table B",
    "compact ms",
    "load ms before → after",
]


def _docs(writers: int) -> list[pycrdt.Doc[Any]]:
    return [pycrdt.Doc(client_id=0x1000 + i) for i in range(writers)]


def overwrite_doc(writes: int, keys: int, writers: int, seed: int = 1) -> pycrdt.Doc[Any]:
    """The ``overwrite`` workload; returns the first writer's document (all are equal)."""
    docs = _docs(writers)
    roots = [d.get("fields", type=pycrdt.Map) for d in docs]
    for i, (key, value) in enumerate(make_writes(writes, keys=keys, seed=seed)):
        w = i % writers
        captured: list[bytes] = []
        sub = docs[w].observe(lambda e, out=captured: out.append(e.update))
        roots[w][key] = value
        docs[w].unobserve(sub)
        for j, other in enumerate(docs):
            if j != w:
                for u in captured:
                    other.apply_update(u)
    return docs[0]


def through_memory(writes: int, keys: int, seed: int = 1) -> tuple[int, int]:
    """The ``overwrite`` workload through ``hs.Memory`` (G5 at the replica level): replica a
    writes in transactions of 100; a and b sync and ``collect()`` after every 2,000 writes and
    at the end. Returns a's ``(content_bytes, metadata_bytes)``; the replicas must agree."""
    import hybridsync as hs
    from hybridsync.testing import sync_all

    a, b = (hs.Memory("bench", p, clock=lambda: 0, incarnation=i + 1)
            for i, p in enumerate("ab"))
    items = make_writes(writes, keys=keys, seed=seed)
    for start in range(0, len(items), 100):
        with a.transaction():
            for key, value in items[start:start + 100]:
                a.fields[key] = value
        if start // 100 % 20 == 19 or start + 100 >= len(items):
            sync_all([a, b])
            a.collect()
            b.collect()
    if a.fields_json() != b.fields_json():
        raise SystemExit("the replicas differ after syncing")
    st = a.stats()
    return st.content_bytes, st.metadata_bytes


def keys_doc(distinct: int) -> pycrdt.Doc[Any]:
    """The ``keys`` workload: every key inserted, then every key deleted."""
    doc = _docs(1)[0]
    root = doc.get("fields", type=pycrdt.Map)
    for i in range(distinct):
        root[f"key-{i:06d}"] = i
    for i in range(distinct):
        del root[f"key-{i:06d}"]
    return doc


def measure(name: str, doc: pycrdt.Doc[Any]) -> Result:
    fields = doc.get("fields", type=pycrdt.Map).to_py()
    state = doc.get_update()
    start = time.perf_counter()
    compacted = compact_state(state)
    compact_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded: pycrdt.Doc[Any] = pycrdt.Doc()
    loaded.apply_update(compacted.update)
    load_s = time.perf_counter() - start
    if loaded.get("fields", type=pycrdt.Map).to_py() != fields:
        raise SystemExit(f"{name}: the compacted state shows different fields")
    if loaded.get_state() != doc.get_state():
        raise SystemExit(f"{name}: the compacted state has a different state vector")
    start = time.perf_counter()
    pycrdt.Doc().apply_update(state)
    load_before_s = time.perf_counter() - start
    content: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    content.get("fields", type=pycrdt.Map).update(fields)
    return Result(
        workload=name,
        state_bytes=len(state),
        compacted_bytes=len(compacted.update),
        content_state_bytes=len(content.get_update()),
        content_json_bytes=len(json.dumps(fields, separators=(",", ":")).encode()),
        dropped_table_bytes=len(compacted.dropped.encode()),
        dropped_ranges=len(compacted.dropped),
        anchors=len(compacted.dropped.anchors),
        compact_s=compact_s,
        load_s=load_s,
        load_before_s=load_before_s,
        clients=len(decode_raw(state).clients),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--overwrites", type=int, default=None)
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS)
    parser.add_argument("--distinct", type=int, default=None)
    parser.add_argument("--writers", type=int, default=1, help="documents sharing the writes")
    args = parser.parse_args(argv)
    overwrites = args.overwrites or (QUICK_OVERWRITES if args.quick else DEFAULT_OVERWRITES)
    distinct = args.distinct or (QUICK_DISTINCT if args.quick else DEFAULT_DISTINCT)
    if overwrites < 1 or distinct < 1 or args.keys < 1 or args.writers < 1:
        parser.error("sizes must be positive")

    results = [
        measure(
            f"overwrite: {overwrites:,} writes, {args.keys:,} keys, {args.writers} writer(s)",
            overwrite_doc(overwrites, args.keys, args.writers),
        ),
        measure(f"keys: {distinct:,} inserted and deleted", keys_doc(distinct)),
    ]
    print("Fields GC: pycrdt state before/after compact_state (compacted state verified)")
    for line in machine().describe():
        print(f"  {line}")
    print()
    print(markdown_table(HEADERS, [r.row() for r in results]))
    content, metadata = through_memory(overwrites, args.keys)
    print()
    print(f"Through hs.Memory (overwrite, 2 replicas, txns of 100, sync + collect every 2,000): "
          f"content {content:,} B, metadata {metadata:,} B = {metadata / content:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
