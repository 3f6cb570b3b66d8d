"""Smoke test of the fields benchmark: a tiny run must produce well-formed, verified results.

No timing is asserted (machines differ); what is checked is that every system ran, moved
bytes, and ended with two replicas holding exactly what the workload wrote.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fields() -> ModuleType:
    # ``benchmarks`` lives at the repository root, next to the package, not inside it.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.fields")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _fields()


def test_workload_is_seeded_and_mixed(bench: ModuleType) -> None:
    a = bench.make_writes(300, keys=50, seed=3)
    assert a == bench.make_writes(300, keys=50, seed=3)
    assert a != bench.make_writes(300, keys=50, seed=4)
    assert {k for k, _ in a} <= {f"k{i:04d}" for i in range(50)}
    assert {type(v) for _, v in a} == {int, str}


def test_tiny_run_is_well_formed(bench: ModuleType) -> None:
    results = bench.run(500, repeats=1, warmup=50, keys=100)
    systems = {(r.workload, r.label) for r in results}
    expected_labels = ["pycrdt", *(f"hybridsync ({m})" for m in bench.HYBRIDSYNC_MODES)]
    if bench.loro_available():
        expected_labels.append("loro")
    for workload in ("single", "txn100"):
        for label in expected_labels:
            assert (workload, label) in systems
    assert len(results) == len(systems)
    for r in results:
        assert r.equal, r.label
        assert r.writes == 500
        assert r.repeats == 1 and len(r.seconds_all) == 1
        assert r.seconds > 0 and math.isfinite(r.writes_per_s)
        assert r.wire_bytes > 0 and r.frames > 0
        per_write = 1 if r.workload == "single" else 100
        if r.system == "hybridsync":
            assert r.contributions == 500 // per_write
        else:  # Loro skips a write that sets the value a key already has
            assert 0 < r.contributions <= 500 // per_write
        assert r.ratios["time_vs_pycrdt"] > 0
        json.dumps(r.as_dict())  # serialisable as written by --json
        targets = bench.check_targets(r)
        assert set(targets) <= {"time", "bytes"}
        assert bool(targets) == (r.system == "hybridsync")
    table = bench.report(results)
    assert table.count("\n") == len(results) + 1
    assert "hybridsync (immediate)" in table and "hybridsync (batched)" in table


def test_unknown_mode_is_rejected(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown hybridsync modes"):
        bench.run(10, repeats=1, modes=("sometimes",))


def test_network_benchmark_tiny_run() -> None:
    """Both systems run end to end on two processes each; replicas equal; no timing checked."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    net = importlib.import_module("benchmarks.network")
    missing = {s: why for s, why in net.available().items() if why is not None}
    if missing:
        pytest.skip(f"network benchmark systems unavailable: {missing}")
    results = net.run(writes=200, samples=20, interval_ms=2, partition_s=1.0)
    assert [r.system for r in results] == list(net.SYSTEMS)
    for r in results:
        assert r.equal and r.partition_equal, r
        assert r.writes == 200 and r.writes_per_s > 0
        assert r.samples == 20 and r.latency_lost == 0
        assert 0 < r.latency_median_ms <= r.latency_p99_ms
        assert r.converge_after_heal_s is not None
        assert r.partition_mode in {"netns", "loopback proxy"}
    goal = net.check_goal(results)
    assert goal is not None and set(goal) == {"throughput", "latency_median", "latency_p99"}
    table = net.report(results)
    assert table.count("\n") == len(results) + 1 and "pycrdt-websocket" in table


def test_buffers_benchmark_tiny_run() -> None:
    """W4 at 1 MiB: both codecs run, find exactly the rewritten blocks, end equal, and the
    wire carries about the changed bytes (raw) or about 0.28 of them (Q4)."""
    _fields()  # puts the repository root on sys.path
    buffers = importlib.import_module("benchmarks.buffers")
    results = [buffers.run(1.0, 0.05, 2, codec) for codec in ("raw", "q4")]
    for r in results:
        assert r.equal and r.changed_blocks == 13 and r.cycles == 2
        assert r.delta_ms > 0 and r.copy_ms > 0 and r.receive_ms > 0
        # timing may miss on a busy machine; bytes and equality may not
        assert all(m.startswith("delta") for m in buffers.check_targets(r))
    raw, q4 = results
    assert 1.0 < raw.wire_vs_changed < 1.02
    assert 0.28 < q4.wire_vs_changed < 0.30
    assert buffers.report(results).count("\n") == 3
