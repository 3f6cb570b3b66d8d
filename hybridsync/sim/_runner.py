"""One seeded run: a safety phase with faults, then a liveness phase, then the checkers.

``interleaved`` mode writes on random peers during the faulty safety phase (long divergent
histories), then heals, restarts crashed peers and demands convergence within
``liveness_ticks``; G1, G2 and G3 are checked. ``epochs`` mode repeats "burst of writes,
faults, heal, converge" on a fixed tick grid so that every write sees the same causal past
whatever the network did: the history is then a pure function of the seed, and G4 compares
it across routing policies and batch sizes (:func:`check_policies`).

The fault plan is drawn from its own stream (``f"{seed}-faults"``), independent of routing.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridsync.errors import GuaranteeViolation, HybridSyncError
from hybridsync.replica import Memory
from hybridsync.sim._checkers import (
    OpRecord,
    RunFingerprint,
    check_causal_order,
    check_convergence,
    check_policy_independence,
    check_region_writes,
    check_writes,
    fingerprint,
)
from hybridsync.sim._options import SimOptions
from hybridsync.sim._simulation import MemoryFactory, SimStats, Simulation, TickSample
from hybridsync.sim._workload import Workload

__all__ = ["FAULT_PHASES", "POLICIES", "Fault", "RunResult", "check_policies", "plan_faults", "run"]

# (routing, batch_size) pairs compared by G4.
POLICIES: tuple[tuple[str, int], ...] = (
    ("mesh", 512), ("mesh", 1), ("star", 512), ("star", 1), ("gossip", 512), ("gossip", 1),
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault: at ``tick`` (relative to its phase) do ``action``."""

    tick: int
    action: str  # split | isolate | one_way | clog | crash | restart | heal
    peers: tuple[str, ...] = ()
    duration: int = 0
    # when in its tick: "start" (before the tick's writes), "writes" (after them: the peer's
    # pending group-commit writes die with it) or "delivery" (after the tick's frames were
    # delivered, before its sync round: what receiving committed or re-based, unflushed)
    phase: str = "start"


@dataclass(slots=True)
class RunResult:
    """What a run did and what the checkers saw."""

    options: SimOptions
    ok: bool
    violation: str | None
    replay: str
    ticks: int
    liveness_ticks: list[int]
    ops: int
    writes: int
    rolled_back: int
    conflicts: int
    explained_by_conflict: int
    applied_checked: int
    faults: list[Fault]
    stats: SimStats | None
    elapsed_s: float
    fingerprint: RunFingerprint | None = None
    details: list[str] = field(default_factory=list)  # one entry per failed write (G2)
    region_ops: int = 0
    samples: list[TickSample] = field(default_factory=list)  # with run(sample=True)
    # group commit: writes credited when a cycle committed their batch, batches that carried
    # workload writes, writes a crash took while pending (never committed: no G2 violation)
    batched_writes: int = 0
    batches: int = 0
    lost_writes: int = 0
    # coverage: fill bursts run, batches the replica committed by itself because they were
    # full, large-value writes (the poll and frame counters are in ``stats``)
    fills: int = 0
    full_batches: int = 0
    fill_credited: int = 0
    large_writes: int = 0

    def summary(self) -> str:
        s = self.stats
        traffic = (f"{s.messages} messages, {s.bytes} bytes, {s.dropped_loss} lost, "
                   f"{s.duplicated} duplicated, {s.crashes} crashes" if s else "no stats")
        verdict = "ok" if self.ok else "VIOLATION"
        group = (f" (group commit: {self.batched_writes} in {self.batches} batches, "
                 f"{self.lost_writes} lost pending in crashes)"
                 if self.options.group_commit else "")
        coverage = ""
        if s is not None and self.options.commit_interval_ms:
            coverage += f", {s.poll_cycles} poll cycles ({s.poll_commits} committed)"
        if self.fills:
            coverage += f", {self.fills} fill bursts ({self.full_batches} full batches)"
        if s is not None and self.large_writes:
            coverage += (f", {self.large_writes} large writes ({s.split_rounds} split rounds, "
                         f"{s.oversize_frames} frames over the limit)")
        return (f"{verdict}: {self.ticks} ticks (liveness {self.liveness_ticks}), "
                f"{self.ops} ops, {self.writes} writes{group} ({self.rolled_back} rolled back), "
                f"{self.region_ops} text/buffer edits{coverage}, "
                f"{self.conflicts} conflicts ({self.explained_by_conflict} writes explained by "
                f"one), {self.applied_checked} applications checked, {traffic}; "
                f"{self.elapsed_s:.2f} s")


FAULT_PHASES = ("start", "writes", "delivery")


def plan_faults(
    seed: int, peers: Sequence[str], ticks: int, *, partitions: bool, crashes: bool,
    salt: str = "", crash_phases: bool = False,
) -> list[Fault]:
    """The fault schedule of one safety phase, drawn from ``f"{seed}-faults{salt}"``.

    Crashed peers are restarted later in the phase or at the heal. ``crash_phases`` (group
    commit) also draws when in its tick each crash strikes (``Fault.phase``), from its own
    stream ``f"{seed}-crash-phases{salt}"``, so the schedule itself does not change.
    """
    rng = random.Random(f"{seed}-faults{salt}")
    plan: list[Fault] = []
    names = list(peers)
    if len(names) < 2 or not (partitions or crashes):
        return plan
    down: set[str] = set()
    restarts: dict[str, int] = {}
    actions: list[tuple[str, int]] = []
    if partitions:
        actions += [("split", 3), ("isolate", 2), ("one_way", 2), ("clog", 1), ("heal", 3)]
    if crashes:
        actions += [("crash", 2)]
    t = rng.randint(0, 10)
    while t < ticks:
        for p, at in sorted(restarts.items()):
            if at <= t:
                plan.append(Fault(at, "restart", (p,)))
                down.discard(p)
                del restarts[p]
        action = rng.choices([a for a, _ in actions], weights=[w for _, w in actions])[0]
        if action == "split":
            shuffled = names[:]
            rng.shuffle(shuffled)
            k = rng.randint(1, len(names) - 1)
            plan.append(Fault(t, "split", tuple(sorted(shuffled[:k]))))
        elif action == "isolate":
            plan.append(Fault(t, "isolate", (rng.choice(names),)))
        elif action in ("one_way", "clog"):
            a, b = rng.sample(names, 2)
            plan.append(Fault(t, action, (a, b), rng.randint(2, 30)))
        elif action == "crash":
            up = [n for n in names if n not in down]
            if len(up) > 1:
                victim = rng.choice(up)
                down.add(victim)
                restarts[victim] = t + rng.randint(1, 40)
                plan.append(Fault(t, "crash", (victim,)))
        else:
            plan.append(Fault(t, "heal"))
        t += rng.randint(3, 30)
    for p, at in sorted(restarts.items()):
        if at < ticks:
            plan.append(Fault(at, "restart", (p,)))
    plan.sort(key=lambda f: f.tick)
    if crash_phases:
        phase_rng = random.Random(f"{seed}-crash-phases{salt}")
        plan = [dataclasses.replace(f, phase=phase_rng.choice(FAULT_PHASES))
                if f.action == "crash" else f for f in plan]
    return plan


def _apply_fault(sim: Simulation, f: Fault) -> None:
    if f.action == "split":
        rest = [n for n in sim.peers if n not in f.peers]
        sim.partition([list(f.peers), rest])
    elif f.action == "isolate":
        sim.isolate(f.peers[0])
    elif f.action == "one_way":
        sim.one_way(f.peers[0], f.peers[1])
    elif f.action == "clog":
        sim.clog(f.peers[0], f.peers[1], f.duration)
    elif f.action == "crash":
        if sim.is_up(f.peers[0]):
            sim.crash(f.peers[0])
    elif f.action == "restart":
        if not sim.is_up(f.peers[0]):
            sim.restart(f.peers[0])
    elif f.action == "heal":
        sim.heal()


def _faults_now(sim: Simulation, faults: Sequence[Fault]) -> Callable[[], None]:
    def apply() -> None:
        for f in faults:
            _apply_fault(sim, f)

    return apply


def _memory_of(sim: Simulation) -> Callable[[str], Memory | None]:
    def get(peer: str) -> Memory | None:
        return sim.memory(peer) if sim.is_up(peer) else None

    return get


def run(
    options: SimOptions,
    *,
    memory_factory: MemoryFactory | None = None,
    on_tick: Callable[[Simulation], None] | None = None,
    sample: bool = False,
    raise_on_violation: bool = True,
    routing: str | None = None,
    batch_size: int | None = None,
    time_limit_s: float | None = None,
    faults: Sequence[Fault] | None = None,
) -> RunResult:
    """Run one seed and check G1–G3 (with ``options.group_commit``, a write counts as
    committed once a cycle committed its batch); a violation raises
    :class:`GuaranteeViolation` (or is returned in the result with
    ``raise_on_violation=False``). ``routing``/``batch_size``
    override the options (used by the G4 comparison); ``faults`` replaces the fault plan
    drawn from the seed (interleaved mode)."""
    if routing is not None or batch_size is not None:
        options = options.replace(routing=routing or options.routing,
                                  batch_size=batch_size or options.batch_size)
    replay = options.replay_command()
    started = time.perf_counter()
    deadline = None if time_limit_s is None else started + time_limit_s
    sim = Simulation.from_options(options, memory_factory=memory_factory, sample=sample)
    interleaved = options.mode == "interleaved"
    workload = Workload(options.seed, write_rate=options.write_rate,
                        rollbacks=options.rollbacks, region_rate=options.region_rate,
                        group_commit=options.group_commit,
                        defer_regions=options.commit_interval_ms > 0 and interleaved,
                        fill_batches=options.fill_batches, fill_mode=options.fill_mode,
                        fill_steps=options.ticks if interleaved else options.epochs,
                        large_value_rate=options.large_value_rate,
                        large_value_bytes=options.max_frame_bytes,
                        rich_region_rate=options.rich_region_rate)
    result = RunResult(options, True, None, replay, 0, [], 0, 0, 0, 0, 0, 0, [], None, 0.0)
    try:
        if options.mode == "interleaved":
            _interleaved(sim, workload, options, result, on_tick, deadline, faults)
        else:
            _epochs(sim, workload, options, result, on_tick, deadline)
        _check_all(sim, workload, result, replay)
    except GuaranteeViolation as exc:
        result.ok = False
        result.violation = str(exc)
        result.details = list(getattr(exc, "details", None) or [result.violation])
        if raise_on_violation:
            raise
    except HybridSyncError as exc:
        result.ok = False
        result.violation = f"the run failed: {exc!r}"
        if raise_on_violation:
            raise GuaranteeViolation(f"the run failed: {exc!r}", replay=replay) from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a crash (pycrdt panics are BaseException) fails the run
        result.ok = False
        result.violation = f"the run crashed: {exc!r}"
        if raise_on_violation:
            raise GuaranteeViolation(f"the run crashed: {exc!r}", replay=replay) from exc
    finally:
        if not result.ok and not result.details:
            result.details = [result.violation or "unknown failure"]
        result.ticks = sim.tick_count
        workload.settle()
        result.batched_writes = workload.batched_writes
        result.batches = workload.batches
        result.lost_writes = workload.lost_writes
        result.fills = workload.fills
        result.full_batches = workload.full_batches
        result.fill_credited = workload.fill_credited
        result.large_writes = workload.large_writes
        result.ops = len(workload.ops)
        result.writes = len(workload.writes)
        result.rolled_back = workload.rolled_back
        result.region_ops = workload.region_ops
        result.stats = sim.stats
        result.samples = list(sim.samples or ())
        result.elapsed_s = time.perf_counter() - started
    return result


def _check_deadline(deadline: float | None, replay: str) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise GuaranteeViolation("the run exceeded its time limit", replay=replay)


def _interleaved(
    sim: Simulation, workload: Workload, options: SimOptions, result: RunResult,
    on_tick: Callable[[Simulation], None] | None, deadline: float | None,
    faults: Sequence[Fault] | None = None,
) -> None:
    if faults is None:
        faults = plan_faults(options.seed, sim.peers, options.ticks,
                             partitions=options.partitions, crashes=options.crashes,
                             crash_phases=options.group_commit)
    result.faults = list(faults)
    pending = sorted(faults, key=lambda f: f.tick)
    memory_of = _memory_of(sim)
    local = _local_changes(sim)
    # Safety phase: faults and writes.
    for t in range(options.ticks):
        due: list[Fault] = []
        while pending and pending[0].tick <= t:
            due.append(pending.pop(0))
        for f in due:
            if f.phase == "start":
                _apply_fault(sim, f)
        workload.step(sim.peers, memory_of, local, sim.tick_count, recorder=sim.recorder)
        for f in due:
            if f.phase == "writes":
                _apply_fault(sim, f)
        later = [f for f in due if f.phase == "delivery"]
        sim.tick(after_delivery=_faults_now(sim, later) if later else None)
        if on_tick is not None:
            on_tick(sim)
        _check_deadline(deadline, sim.replay_command)
    # Liveness phase: heal everything, flush every tick, demand convergence.
    sim.heal()
    sim.restart_all()
    sim.flush_probability = 1.0
    result.liveness_ticks.append(sim.run_until_converged(options.liveness_ticks, on_tick=on_tick))


def _epochs(
    sim: Simulation, workload: Workload, options: SimOptions, result: RunResult,
    on_tick: Callable[[Simulation], None] | None, deadline: float | None,
) -> None:
    memory_of = _memory_of(sim)
    local = _local_changes(sim)
    # Every peer flushes every tick: each burst's batches then commit at the first tick (or
    # are lost to a crash before it) under every policy, so the history stays one (G4).
    sim.flush_probability = 1.0
    epoch_ticks = options.ticks + options.liveness_ticks + 1
    for e in range(options.epochs):
        base = e * epoch_ticks
        # Every write of the burst sees the converged state of the previous epoch.
        workload.step(sim.peers, memory_of, local, sim.tick_count, count=options.burst_ops,
                      recorder=sim.recorder)
        faults = plan_faults(options.seed, sim.peers, options.ticks,
                             partitions=options.partitions, crashes=options.crashes,
                             salt=f"-epoch{e}")
        result.faults.extend(Fault(f.tick + base, f.action, f.peers, f.duration) for f in faults)
        pending = list(faults)
        for t in range(options.ticks):
            while pending and pending[0].tick <= t:
                _apply_fault(sim, pending.pop(0))
            sim.tick()
            if on_tick is not None:
                on_tick(sim)
            _check_deadline(deadline, sim.replay_command)
        sim.heal()
        sim.restart_all()
        result.liveness_ticks.append(
            sim.run_until_converged(options.liveness_ticks, on_tick=on_tick))
        # Idle to the grid, so the next burst happens at the same simulated time everywhere.
        sim.skip(base + epoch_ticks - sim.tick_count)


def _local_changes(sim: Simulation) -> Callable[[str], list[Any]]:
    recorder = sim.recorder
    assert recorder is not None
    return recorder.local_changes


def _check_all(sim: Simulation, workload: Workload, result: RunResult, replay: str) -> None:
    memories = sim.memories()
    ref = memories[sim.peers[0]]
    result.fingerprint = fingerprint(f"{sim.routing}/batch={sim.batch_size}", ref,
                                     sim.recorder)
    check_convergence(memories, replay=replay, conflicts=False)
    assert sim.recorder is not None
    result.applied_checked = check_causal_order(sim.recorder, memories, replay=replay)
    check_convergence(memories, replay=replay, conflicts=True)
    # Group commit: credit the writes of every batch a cycle committed. Every live peer has
    # flushed (converged() demands no pending write), so a batch still open was closed
    # without a contribution: its writes vanished.
    waiting = workload.settle()
    if waiting:
        raise GuaranteeViolation(
            f"G2 no silent loss: {waiting} write(s) joined a group-commit batch that was "
            "closed without a contribution (nothing is pending, no crash took it)",
            replay=replay)
    # A replica that adopts a checkpoint writes the effects of its late contributions again
    # (re-base): those writes are later writes like any other (the late originals are gone).
    rebased = [OpRecord(len(workload.ops) + i, -1, peer, "rebase", cid,
                        tuple(("set", tuple(p.split("/"))) for p in paths))
               for i, (cid, (peer, paths)) in enumerate(sorted(sim.recorder.rebased().items()))]
    lost = sim.recorder.lost_rebased()
    if lost:
        raise GuaranteeViolation(
            f"G2 no silent loss: {lost[0].peer} crashed while the writes it re-based after "
            f"adopting a checkpoint (writes of contributions it had committed) were still "
            f"pending ({len(lost)} batch(es))", replay=replay)
    result.explained_by_conflict = check_writes(ref, workload.writes,
                                                [*workload.ops, *rebased], replay=replay)
    if workload.rich is not None:  # G2 for the richer workload's text and buffer edits
        workload.rich.settle(_memory_of(sim))
        result.explained_by_conflict += check_region_writes(ref, workload.rich.edits,
                                                            replay=replay)
    result.conflicts = len(ref.conflicts())


def check_policies(
    options: SimOptions,
    policies: Sequence[tuple[str, int]] = POLICIES,
    *,
    memory_factory: MemoryFactory | None = None,
) -> list[RunResult]:
    """G4: run ``options`` in epochs mode under each ``(routing, batch_size)`` and compare."""
    options = options.replace(mode="epochs")
    results = [run(options, routing=r, batch_size=b, memory_factory=memory_factory)
               for r, b in policies]
    prints = [r.fingerprint for r in results if r.fingerprint is not None]
    check_policy_independence(prints, replay=options.replay_command() + " --check-policies")
    return results
