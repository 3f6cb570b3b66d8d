"""Smoke tests of the text benchmarks (W1 and the damage experiment) at tiny sizes.

No timing is asserted: what is checked is that every system ran, moved bytes, ended with a
receiver holding exactly the workload's text, and that the damage experiment classifies
trials the way the real replicas fold them.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module(name: str) -> ModuleType:
    # ``benchmarks`` lives at the repository root, next to the package, not inside it.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def w1() -> ModuleType:
    return _module("benchmarks.texts")


@pytest.fixture(scope="module")
def damage() -> ModuleType:
    return _module("benchmarks.text_damage")


def test_workload_is_seeded_and_shaped_like_w1(w1: ModuleType) -> None:
    a = w1.make_workload(5_000, 50, seed=3)
    assert a == w1.make_workload(5_000, 50, seed=3)
    assert a != w1.make_workload(5_000, 50, seed=4)
    assert len(a.text) == 5_000 and len(a.edits) == 50
    assert not a.text.isascii()  # non-ASCII words: pycrdt's byte offsets are exercised
    texts = list(a.texts())
    assert len(texts) == 51 and texts[-1] == a.final()
    for (start, end, inserted), old in zip(a.edits, texts, strict=False):
        assert 20 <= end - start <= 200 and 1 <= len(inserted) <= 200
        assert start >= 0 and end <= len(old)
    with pytest.raises(ValueError):
        w1.make_workload(100, 1)


def test_tiny_run_of_every_system_is_well_formed(w1: ModuleType) -> None:
    results = w1.run(((3_000, 25),), isolate=False)
    systems = {r.system for r in results}
    assert systems == {s for s in w1.SYSTEMS if w1.available(s)}
    for r in results:
        assert r.equal, r.system
        assert r.cycles == 25 and r.size == 3_000
        assert 0 < r.median_ms <= r.p99_ms and math.isfinite(r.mean_ms)
        assert r.wire_bytes_per_cycle > 0
        assert r.state_bytes >= r.content_bytes * 0.5 and r.load_ms >= 0
        json.dumps(r.as_dict())
    (h,) = (r for r in results if r.system == "hybridsync")
    assert h.extra["log_length"] >= 1 and h.extra["writer_state_bytes"] > 0
    goals = w1.check_goals(results)
    assert (3_000, "state ≤ 1.05× content") in goals
    if w1.available("loro"):
        assert (3_000, "time ≤ 0.3× Loro") in goals and (3_000, "wire ≤ Loro") in goals
    table = w1.report(results)
    assert table.count("\n") == len(results) + 1 and "hybridsync" in table
    assert w1.report_goals(results).count("\n") == len(goals) + 1


def test_a_system_runs_in_its_own_subprocess(w1: ModuleType) -> None:
    (r,) = w1.run(((2_000, 10),), systems=["hybridsync"])
    assert r.equal and r.cycles == 10 and r.rss_growth_mib is not None


def test_memory_breakdown_names_where_the_memory_goes(w1: ModuleType) -> None:
    out = w1.memory_breakdown(3_000, 20, top=5)
    assert out.startswith("hybridsync, W1, 3,000 characters, 20 cycles")
    assert "allocations alive at the end" in out and out.count(" blocks  ") <= 5
    writer, receiver = out.splitlines()[-2:]
    assert writer.startswith("writer: rope") and receiver.startswith("receiver: rope")
    assert writer.endswith("value is the str handed over: True")
    assert "store checkpoint" in receiver and "fold entries" in receiver


def test_results_say_how_big_the_workloads_own_text_is(w1: ModuleType) -> None:
    (r,) = w1.run(((3_000, 5),), systems=["dmp"], isolate=False)
    assert 3_000 / 2**20 < r.extra["workload_text_mib"] < 4 * 3_100 / 2**20


def test_unknown_system_is_rejected(w1: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown system"):
        w1.run_system("automerge", w1.make_workload(1_000, 1))


def test_damage_trials_are_classified(damage: ModuleType) -> None:
    base = damage.make_base(random.Random(1))
    cfg = damage.CONFIGS[0]
    assert "default" in cfg.name and cfg.dmp_threshold is None
    far = [(10, 15, "BETA"), (600, 605, "GAMMA")]
    tally = damage.Tally()
    assert damage.trial(base, far, cfg, tally) == "clean"
    # the same span replaced twice: the second hunk cannot find its old text
    same = [(100, 140, "first writer's words"), (100, 140, "second writer's words")]
    assert damage.trial(base, same, cfg, tally) == "reported"
    assert (tally.trials, tally.clean, tally.reported) == (2, 1, 1)
    assert tally.wire_bytes > 0 and tally.patches == 4


def test_damage_experiment_matches_real_replicas(damage: ModuleType) -> None:
    assert damage.check_memory(4) == 4


def test_tiny_damage_run_is_well_formed(damage: ModuleType) -> None:
    configs = [damage.CONFIGS[0], damage.CONFIGS[-1]]  # hybridsync's and the reference
    for mix in (False, True):
        results = damage.run(3, configs=configs, writers=3, mix=mix)
        assert set(results) == {(c.name, b) for c in configs for b in damage.GAP_BINS}
        for t in results.values():
            assert t.trials == 3 and t.clean + t.reported + t.silent == 3
            assert t.patches == 9
        assert damage.report(results, configs).count("\n") == len(configs) + 1


def test_mixed_edits_include_inserts_and_deletions(damage: ModuleType) -> None:
    rng = random.Random(5)
    base = damage.make_base(rng)
    edits = [e for _ in range(30) for e in damage.make_edits(rng, base, 2, 3, mix=True)]
    assert any(s == e and t for s, e, t in edits)  # an insertion
    assert any(s < e and not t for s, e, t in edits)  # a deletion
    assert any(s < e and t for s, e, t in edits)  # a replacement
    # two insertions at one place have no single intended result
    assert damage._intended(base, [(5, 5, "a"), (5, 5, "b")]) is None
    assert damage._intended(base, [(5, 5, "a"), (6, 6, "b")]) == base[:5] + "a" + base[5] + "b" \
        + base[6:]
