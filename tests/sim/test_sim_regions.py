"""The richer text and buffer workload (``SimOptions.rich_region_rate``) and G2 for regions.

Issue 3 asks for text edits (inserts, deletes, whole rewrites, concurrent edits of the same
paragraph), buffer block writes, region deletes and crash/restart, with G1-G5 checked for
texts and buffers over hundreds of seeds in the default run and thousands in the soak. The
workload (``hybridsync/sim/_workload.py::RichRegions``) marks every inserted text with a unique
token; :func:`~hybridsync.sim.check_region_writes` checks that every committed marker and
buffer write is in the converged value or reported as a conflict (docs/diffsync.md, "What the
simulator checks"). G1 compares region bytes, G4 the fingerprint's region bytes.

Core bugs the sweeps found, each with a focused unit test: a handle taken while a deletion was
pending took edits the cycle then dropped (``tests/unit/test_regions_pending_delete.py``); a
buffer write concurrent with a deletion was applied onto a region re-created in between and
then overwritten silently by its author's later write (``tests/unit/test_buffer_deletion.py``);
a context cut short by the end of its author's text matched inside a concurrent edit
(``tests/unit/test_text_short_context.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import hybridsync as hs
from hybridsync.errors import GuaranteeViolation
from hybridsync.sim import (
    RegionEdit,
    RegionStats,
    RunResult,
    SimOptions,
    Simulation,
    Workload,
    _runner,
    check_policies,
    check_region_writes,
    run,
)
from hybridsync.sim._workload import RICH_BUFFER, RICH_TEXTS, RichRegions
from hybridsync.testing import sync_pair

SLICE_SEEDS = range(200)  # small scale, every seed with the richer workload
SOAK_SEEDS = range(900_000, 903_000)
SOAK_CHUNK = 100
TIME_LIMIT_S = 60.0


def _expect_ok(result: RunResult) -> None:
    if not result.ok:
        pytest.fail(f"{result.violation}\nreplay: {result.replay}", pytrace=False)


def _options(seed: int, scale: str = "small", **over: object) -> SimOptions:
    rate = over.pop("rich_region_rate", None) or (0.3, 0.6, 1.0)[seed % 3]
    return SimOptions.draw(seed, scale=scale, rich_region_rate=rate, **over)


def _sweep(seeds: range, scale: str) -> None:
    failures = []
    for seed in seeds:
        result = run(_options(seed, scale), raise_on_violation=False, time_limit_s=TIME_LIMIT_S)
        if not result.ok:
            failures.append(f"seed {seed}: {result.violation}\n  replay: {result.replay}")
    assert not failures, "\n".join(failures[:5])


# ---- the options --------------------------------------------------------------------------------
def test_the_richer_workload_is_drawn_for_a_share_of_seeds_from_its_own_stream() -> None:
    drawn = [SimOptions.draw(s) for s in range(500)]
    rich = [o for o in drawn if o.rich_region_rate]
    assert 150 <= len(rich) <= 250
    assert {o.rich_region_rate for o in rich} == {0.3, 0.6, 1.0}
    # every other option is what it was without it
    for o in drawn[:50]:
        assert SimOptions.draw(o.seed, rich_region_rate=0.0).replace(
            rich_region_rate=o.rich_region_rate) == o


def test_a_bad_rate_is_refused() -> None:
    with pytest.raises(hs.ConfigError, match="rich_region_rate"):
        SimOptions(seed=1, rich_region_rate=-1.0)


# ---- the workload -------------------------------------------------------------------------------
def _capture(options: SimOptions) -> tuple[RunResult, Simulation, RichRegions]:
    seen: dict[str, Any] = {}
    original = _runner._check_all

    def spy(sim: Simulation, workload: Workload, result: RunResult, replay: str) -> None:
        seen["sim"], seen["workload"] = sim, workload
        original(sim, workload, result, replay)

    _runner._check_all = spy
    try:
        result = run(options, raise_on_violation=False)
    finally:
        _runner._check_all = original
    rich, sim = seen["workload"].rich, seen["sim"]
    assert isinstance(rich, RichRegions) and isinstance(sim, Simulation)
    return result, sim, rich


def test_the_workload_makes_every_kind_of_edit_and_grows_texts_past_rope_chunks() -> None:
    kinds: set[str] = set()
    longest = 0
    same_tick = 0
    for seed in range(12):
        result, sim, rich = _capture(_options(seed, rich_region_rate=1.0, crashes=True))
        _expect_ok(result)
        kinds |= {e.kind for e in rich.edits}
        ticks: dict[tuple[int, str, str], set[str]] = {}
        for e in rich.edits:
            ticks.setdefault((e.tick, e.kind, e.region), set()).add(e.peer)
        same_tick += sum(1 for (_, kind, _), peers in ticks.items()
                         if kind in ("paragraph", "block") and len(peers) > 1)
        ref = sim.memories()[sim.peers[0]]
        for kind, name, data in ref.region_bytes():
            if kind == "text" and name in RICH_TEXTS:
                longest = max(longest, len(data.decode()))
    assert kinds == {"insert", "delete", "rewrite", "grow", "paragraph", "block",
                     "delete_region"}
    assert same_tick >= 10  # several peers edited one paragraph or block in one tick
    assert longest > 2 * 2048  # the texts span several rope chunks


def test_edits_a_crash_took_before_any_cycle_are_lost_and_absent() -> None:
    """With the poll timer, edits wait for a cycle: a crash before it loses them (never
    committed), and their markers must not show up anywhere."""
    lost = 0
    for seed in range(40):
        options = _options(seed, rich_region_rate=1.0, crashes=True, commit_interval_ms=100,
                           group_commit=True, flush_probability=0.25)
        result, _, rich = _capture(options)
        _expect_ok(result)
        lost += sum(1 for e in rich.edits if e.lost)
        if lost:
            break
    assert lost > 0


def test_a_run_with_the_richer_workload_is_deterministic() -> None:
    options = _options(5, rich_region_rate=1.0)
    a, b = run(options), run(options)
    assert a.fingerprint is not None and a.fingerprint == b.fingerprint
    assert a.fingerprint.regions  # region bytes are part of the fingerprint
    assert a.region_ops == b.region_ops > 20


# ---- the checker can fail -----------------------------------------------------------------------
def _committed_pair() -> tuple[hs.Memory, str]:
    a, b = hs.Memory("s", "a"), hs.Memory("s", "b")
    a.text("doc").set("alpha ⟦r1⟧ beta")
    a.buffer(RICH_BUFFER, shape=(8192,)).write(0, np.full(4, 2.0, dtype=np.float32))
    a.commit()
    sync_pair(a, b)
    return b, a.history()[-1].hex_id


def test_a_missing_or_doubled_marker_is_a_violation() -> None:
    mem, cid = _committed_pair()
    ok = RegionEdit(0, 0, "a", "insert", "text", "doc", inserted=("⟦r1⟧",), contribution=cid)
    stats = RegionStats()
    assert check_region_writes(mem, [ok], stats=stats) == 0 and stats.markers == 1
    gone = RegionEdit(1, 0, "a", "insert", "text", "doc", inserted=("⟦r2⟧",), contribution=cid)
    with pytest.raises(GuaranteeViolation, match=r"marker ⟦r2⟧ is missing"):
        check_region_writes(mem, [ok, gone])
    # removed by a committed edit that saw it: explained
    removal = RegionEdit(2, 0, "a", "delete", "text", "doc", removed=("⟦r2⟧",),
                         contribution=cid)
    check_region_writes(mem, [ok, gone, removal])
    stray = RegionEdit(0, 0, "a", "insert", "text", "doc", contribution=cid)
    with pytest.raises(GuaranteeViolation, match="holds markers no edit inserted"):
        check_region_writes(mem, [stray])


def test_a_lost_buffer_write_is_a_violation_unless_overwritten_or_reported() -> None:
    mem, cid = _committed_pair()
    values = np.full(4, 2.0, dtype=np.float32).tobytes()
    ok = RegionEdit(0, 0, "a", "block", "buffer", RICH_BUFFER, start=0, values=values,
                    contribution=cid)
    check_region_writes(mem, [ok])
    other = np.full(4, 9.0, dtype=np.float32).tobytes()
    lost = RegionEdit(1, 0, "a", "block", "buffer", RICH_BUFFER, start=100, values=other,
                      contribution=cid)
    with pytest.raises(GuaranteeViolation, match=r"lost silently \(4 of 4 elements differ"):
        check_region_writes(mem, [ok, lost])
    # the same contribution wrote zeros there later: overwritten, explained
    later = RegionEdit(2, 0, "a", "block", "buffer", RICH_BUFFER, start=100,
                       values=np.zeros(4, dtype=np.float32).tobytes(), contribution=cid)
    check_region_writes(mem, [ok, lost, later])


def test_an_uncommitted_marker_in_the_text_is_a_violation() -> None:
    mem, cid = _committed_pair()
    ok = RegionEdit(0, 0, "a", "insert", "text", "doc", inserted=("⟦r1⟧",), contribution=cid)
    crashed = RegionEdit(1, 0, "a", "insert", "text", "doc", inserted=("⟦r1⟧",), lost=True)
    with pytest.raises(GuaranteeViolation, match="its crash took before any cycle"):
        check_region_writes(mem, [ok, crashed])


# ---- the sweeps ---------------------------------------------------------------------------------
def test_seed_slice() -> None:
    """G1-G3 (and G2 for texts and buffers) on 200 small-scale seeds, every one with the
    richer workload (rate 0.3, 0.6 or 1.0 by seed), faults and options drawn from the seed."""
    _sweep(SLICE_SEEDS, "small")


@pytest.mark.parametrize("seed", [3, 19, 49])
def test_the_seeds_that_found_core_bugs(seed: int) -> None:
    _expect_ok(run(SimOptions.draw(seed, scale="small", rich_region_rate=1.0)))


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_g4_region_bytes_are_the_same_under_every_policy(seed: int) -> None:
    options = _options(seed, rich_region_rate=1.0, epochs=2, ticks=15, burst_ops=10)
    results = check_policies(options, [("mesh", 512), ("star", 1), ("gossip", 512)])
    prints = [r.fingerprint for r in results]
    assert all(p is not None and p.regions for p in prints)


@pytest.mark.soak
@pytest.mark.parametrize("chunk", range(len(SOAK_SEEDS) // SOAK_CHUNK))
def test_soak(chunk: int) -> None:
    """3,000 seeds at the default scale (``make soak``)."""
    start = SOAK_SEEDS.start + chunk * SOAK_CHUNK
    _sweep(range(start, start + SOAK_CHUNK), "default")

