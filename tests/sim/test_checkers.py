"""The checkers can fail: deliberately broken replicas and records are caught.

Each broken ``Memory`` subclass breaks one guarantee the way a real bug would; the checkers
(which use only the public API and their own records) must raise ``GuaranteeViolation``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import hybridsync as hs
from hybridsync.causal import Contribution
from hybridsync.errors import GuaranteeViolation
from hybridsync.sim import (
    OpRecord,
    Recorder,
    RunFingerprint,
    SimOptions,
    Simulation,
    WriteRecord,
    check_causal_order,
    check_convergence,
    check_policies,
    check_policy_independence,
    check_writes,
    fingerprint,
    run,
)
from hybridsync.testing import sync_pair

# ---- broken replicas ---------------------------------------------------------------------------


class DeafLeaf(hs.Memory):
    """Silently drops every frame it receives: a replica that loses contributions."""

    def receive(self, peer: str, frame: bytes) -> None:
        if self.peer == "p2":
            return
        super().receive(peer, frame)


class AmnesicReplica(hs.Memory):
    """Logs remote contributions of p1 but never applies their payload (acks, drops)."""

    def _apply(self, c: Contribution, *, local: bool, store: bool = True,
               now: int | None = None) -> None:
        if self.peer == "p2" and c.author == "p1" and c.kind == "fields":
            c = dataclasses.replace(c, payload=b"\x00\x00")  # an empty Yjs update
        super()._apply(c, local=local, store=store, now=now)


class RegionBitFlipper(hs.Memory):
    """Reports its regions with one byte flipped on p2 (a fold that went wrong)."""

    def region_bytes(self) -> list[tuple[str, str, bytes]]:
        items = super().region_bytes()
        if self.peer != "p2" or not items:
            return items
        kind, name, data = items[0]
        return [(kind, name, bytes([data[0] ^ 1]) + data[1:]), *items[1:]]


class ConflictHider(hs.Memory):
    """Resolves concurrent writes like everyone else but reports no conflict."""

    def conflicts(self) -> list[hs.Conflict]:
        return []


class Saboteur(hs.Memory):
    """After each local commit on p0, quietly commits the deletion of what it wrote."""

    _busy = False

    def observe(self, fn: Callable[[hs.Change], None]) -> Callable[[], None]:
        def wrapped(change: hs.Change) -> None:
            fn(change)
            if not change.local or self.peer != "p0" or self._busy:
                return
            self._busy = True
            try:
                for key in {p.split("/")[0] for p in change.paths}:
                    if key in self.fields:
                        del self.fields[key]
            finally:
                self._busy = False

        return super().observe(wrapped)


class ShuffledObserver(hs.Memory):
    """Reports applied changes out of order (each pair swapped)."""

    def observe(self, fn: Callable[[hs.Change], None]) -> Callable[[], None]:
        held: list[hs.Change] = []

        def wrapped(change: hs.Change) -> None:
            if not held:
                held.append(change)
                return
            fn(change)
            fn(held.pop())

        return super().observe(wrapped)


class LeakyRollback(hs.Memory):
    """A transaction that raises is committed anyway (no rollback), then the error surfaces."""

    @contextmanager
    def transaction(self, note: str = "") -> Iterator[hs.Memory]:
        error: BaseException | None = None
        with super().transaction(note=note):
            try:
                yield self
            except Exception as exc:
                error = exc
        if error is not None:
            raise error


class BatchTagged(hs.Memory):
    """Writes its batch size into transaction notes: the history depends on a policy."""

    @contextmanager
    def transaction(self, note: str = "") -> Iterator[hs.Memory]:
        with super().transaction(note=f"{note} [batch {self._batch_size}]"):
            yield self


# ---- the checkers catch them -------------------------------------------------------------------
def _options(**kw: Any) -> SimOptions:
    base: dict[str, Any] = {"seed": 21, "peers": 3, "ticks": 40, "liveness_ticks": 300,
                            "loss": 0.1, "duplicate": 0.05, "crashes": False,
                            "partitions": True, "write_rate": 0.6}
    base.update(kw)
    return SimOptions(**base)


def _control(options: SimOptions) -> SimOptions:
    """The same run with the real ``Memory`` passes: the failure is the broken replica's."""
    result = run(options, raise_on_violation=False)
    assert result.ok, result.violation
    return options


def test_a_replica_that_drops_frames_breaks_liveness() -> None:
    _control(_options(routing="star"))
    with pytest.raises(GuaranteeViolation, match="G1 liveness") as info:
        run(_options(routing="star"), memory_factory=DeafLeaf)
    assert "python -m hybridsync.sim --seed 21" in info.value.replay


def test_a_replica_that_drops_a_payload_breaks_convergence() -> None:
    sim = Simulation(3, 2, memory_factory=AmnesicReplica)
    sim.memory("p1").fields["x"] = "from p1"
    sim.memory("p0").fields["y"] = "from p0"
    sim.run(20)
    assert sim.memory("p2").heads == sim.memory("p0").heads  # it acknowledged everything
    with pytest.raises(GuaranteeViolation, match=r"G1 convergence: p2 differs.*fields_json"):
        check_convergence(sim.memories())


def test_diverging_region_bytes_break_convergence() -> None:
    sim = Simulation(3, 2, memory_factory=RegionBitFlipper)
    sim.memory("p0").text("notes").set("hello")
    sim.memory("p1").buffer("kv", shape=(8,), dtype="float32").write(0, [1.0, 2.0])
    sim.memory("p1").commit()
    sim.run_until_converged(100)
    check_convergence({p: sim.memory(p) for p in ("p0", "p1")})
    with pytest.raises(GuaranteeViolation, match=r"p2 differs.*region bytes differ"):
        check_convergence(sim.memories())


def _concurrent_writes(factory: Any) -> tuple[Simulation, list[WriteRecord], list[OpRecord]]:
    sim = Simulation(2, 3, memory_factory=factory)
    assert sim.recorder is not None
    sim.partition([["p0"], ["p1"]])
    writes, ops = [], []
    for i, peer in enumerate(("p0", "p1")):
        sim.memory(peer).fields["k"] = f"from {peer}"
        cid = sim.recorder.local_changes(peer)[-1].contribution
        writes.append(WriteRecord(i, peer, "set", ("k",), f"from {peer}", cid))
        ops.append(OpRecord(i, 0, peer, "set", cid, (("set", ("k",)),)))
    sim.heal()
    sim.run_until_converged(100)
    return sim, writes, ops


def test_a_concurrent_overwrite_is_explained_by_its_conflict() -> None:
    sim, writes, ops = _concurrent_writes(hs.Memory)
    assert check_writes(sim.memory("p0"), writes, ops) == 1


def test_hiding_the_conflict_makes_the_loss_silent() -> None:
    sim, writes, ops = _concurrent_writes(ConflictHider)
    with pytest.raises(GuaranteeViolation, match=r"G2 no silent loss.*lost silently"):
        check_writes(sim.memory("p0"), writes, ops)


def _two_rounds_of_conflicts(
    max_conflicts: int, cls: type[hs.Memory] = hs.Memory,
) -> tuple[Simulation, list[WriteRecord], list[OpRecord]]:
    """p0 and p1 write ``k1`` concurrently, converge, then ``k2``: two conflicts, k1's the
    older. With ``max_conflicts=1`` only k2's is reported."""
    def factory(space: str, peer: str, **kw: Any) -> hs.Memory:
        return cls(space, peer, max_conflicts=max_conflicts, **kw)

    sim = Simulation(2, 3, memory_factory=factory)
    assert sim.recorder is not None
    writes, ops = [], []
    for key in ("k1", "k2"):
        sim.partition([["p0"], ["p1"]])
        for peer in ("p0", "p1"):
            sim.memory(peer).fields[key] = f"from {peer}"
            cid = sim.recorder.local_changes(peer)[-1].contribution
            writes.append(WriteRecord(len(writes), peer, "set", (key,), f"from {peer}", cid))
            ops.append(OpRecord(len(ops), 0, peer, "set", cid, (("set", (key,)),)))
        sim.heal()
        sim.run_until_converged(100)
    return sim, writes, ops


class ForgetfulCap(hs.Memory):
    """Reports only the newest conflict while claiming room for ten."""

    def conflicts(self) -> list[hs.Conflict]:
        return super().conflicts()[-1:]

    @property
    def max_conflicts(self) -> int:
        return 10


def test_a_conflict_older_than_the_cap_explains_its_loss_only_when_the_list_is_full() -> None:
    sim, writes, ops = _two_rounds_of_conflicts(1)
    assert [c.location for c in sim.memory("p0").conflicts()] == ["k2"]
    assert check_writes(sim.memory("p0"), writes, ops) == 2
    sim, writes, ops = _two_rounds_of_conflicts(10, ForgetfulCap)
    with pytest.raises(GuaranteeViolation, match=r"'k1'.*lost silently"):
        check_writes(sim.memory("p0"), writes, ops)


def test_a_write_missing_from_history_is_caught() -> None:
    sim, writes, ops = _concurrent_writes(hs.Memory)
    ghost = dataclasses.replace(writes[0], contribution="00" * 32)
    with pytest.raises(GuaranteeViolation, match="not in history"):
        check_writes(sim.memory("p0"), [ghost], ops)


def test_a_later_write_explains_an_overwrite() -> None:
    sim = Simulation(2, 3)
    assert sim.recorder is not None
    writes, ops = [], []
    for i, value in enumerate(("first", "second")):
        sim.memory("p0").fields["k"] = value
        cid = sim.recorder.local_changes("p0")[-1].contribution
        writes.append(WriteRecord(i, "p0", "set", ("k",), value, cid))
        ops.append(OpRecord(i, 0, "p0", "set", cid, (("set", ("k",)),)))
    sim.run_until_converged(100)
    assert check_writes(sim.memory("p1"), writes, ops) == 0
    with pytest.raises(GuaranteeViolation, match="op 0: p0 set 'k'"):
        check_writes(sim.memory("p1"), writes[:1], ops[:1])


def test_a_replica_that_quietly_deletes_writes_is_caught() -> None:
    with pytest.raises(GuaranteeViolation, match=r"G2 no silent loss.*op \d+: p0 .*lost silently"):
        run(_control(_options(seed=5, partitions=False, write_rate=1.0)),
            memory_factory=Saboteur)


def test_out_of_order_application_is_caught() -> None:
    with pytest.raises(GuaranteeViolation, match="G3 causal order"):
        run(_control(_options()), memory_factory=ShuffledObserver)


def test_unreported_applications_are_caught() -> None:
    sim = Simulation(2, 4)
    sim.memory("p0").fields["x"] = 1
    sim.run_until_converged(50)
    assert sim.recorder is not None
    sim.recorder.segments[1].applied.clear()
    with pytest.raises(GuaranteeViolation, match="never reported applying"):
        check_causal_order(sim.recorder, sim.memories())


def test_a_leaking_rollback_is_caught() -> None:
    with pytest.raises(GuaranteeViolation, match="rolled-back transaction is visible"):
        run(_control(_options(seed=1, write_rate=2.0, partitions=False)),
            memory_factory=LeakyRollback)


def test_policy_dependent_history_is_caught() -> None:
    options = _options(seed=2, mode="epochs", epochs=1, ticks=10, liveness_ticks=200,
                       partitions=False, burst_ops=30)
    with pytest.raises(GuaranteeViolation,
                       match=r"G4 policy independence.*first difference.*\[batch \d+\]"):
        check_policies(options, [("mesh", 512), ("mesh", 1)], memory_factory=BatchTagged)


def test_fingerprints_of_different_states_differ() -> None:
    a, b = Simulation(1, 1), Simulation(1, 1)
    a.memory("p0").fields["x"] = 1
    b.memory("p0").fields["x"] = 2
    fa, fb = fingerprint("a", a.memory("p0")), fingerprint("b", b.memory("p0"))
    check_policy_independence([fa, fa])
    with pytest.raises(GuaranteeViolation, match="b differs from a"):
        check_policy_independence([fa, fb])


# ---- G4 under garbage collection: compaction points differ, contributions may not --------------
def _pair_run(collect_at: tuple[int, ...], *, writes: int = 40) -> tuple[hs.Memory, Recorder]:
    """Two replicas, the same writes in the same causal shape; ``collect()`` on both after
    the rounds in ``collect_at`` (the fields stay under the 4 KB below which a compaction
    does not compact the fields checkpoint, so no contribution depends on it)."""
    recorder = Recorder()
    a, b = (hs.Memory("g4", p, clock=lambda: 0, incarnation=i + 1, gc_min_entries=None)
            for i, p in enumerate("ab"))
    recorder.attach("a", a, [])
    recorder.attach("b", b, [])
    for r in range(writes):
        a.fields[f"k{r % 7}"] = r
        b.text("t").set(f"line {r}\n" * 3)
        b.commit()
        sync_pair(a, b)
        if r in collect_at:
            a.collect()
            b.collect()
    sync_pair(a, b)
    return a, recorder


def _gc_prints() -> tuple[RunFingerprint, RunFingerprint]:
    a1, rec1 = _pair_run((9, 29))
    a2, rec2 = _pair_run((19,))
    return fingerprint("early", a1, rec1), fingerprint("late", a2, rec2)


def test_runs_that_compacted_at_different_points_agree() -> None:
    f1, f2 = _gc_prints()
    assert f1.base is not None and f2.base is not None and f1.base != f2.base
    assert f1.history != f2.history  # what the check used to compare: it differs legitimately
    assert f1.applied == f2.applied and len(f1.applied) == 80
    check_policy_independence([f1, f2])
    check_policy_independence([f2, f1])


def test_a_different_order_after_the_later_checkpoint_is_caught() -> None:
    f1, f2 = _gc_prints()
    assert len(f2.history) >= 4
    # two retained contributions swapped: same ids, another order
    h, k, d = list(f2.history), list(f2.order_keys), list(f2.described)
    for seq in (h, k, d):
        seq[-1], seq[-2] = seq[-2], seq[-1]
    swapped = dataclasses.replace(f2, label="swapped", history=tuple(h), order_keys=tuple(k),
                                  described=tuple(d))
    with pytest.raises(GuaranteeViolation,
                       match=r"swapped differs from early: history\(\) after the later "
                             r"checkpoint differs .*first difference at position"):
        check_policy_independence([f1, swapped])


def test_a_different_contribution_inside_a_checkpoint_is_caught() -> None:
    f1, f2 = _gc_prints()
    # the first contribution, folded into both checkpoints: only ``applied`` still names it
    author, seq, cid = f2.applied[0]
    assert cid not in f1.history and cid not in f2.history
    other = dataclasses.replace(
        f2, label="other", applied=((author, seq, "ff" * 32), *f2.applied[1:]))
    with pytest.raises(GuaranteeViolation,
                       match=rf"the contributions applied differ at 1 dot\(s\): {author}#{seq}"):
        check_policy_independence([f1, other])


def test_a_different_version_vector_heads_or_value_is_caught() -> None:
    f1, f2 = _gc_prints()
    cases = {
        "version vectors differ": dataclasses.replace(
            f2, version_vector=(("a", 41), ("b", 40))),
        "heads differ": dataclasses.replace(f2, heads=("00" * 32,)),
        "fields differ": dataclasses.replace(f2, fields_json='{"k0":-1}'),
        "region bytes differ": dataclasses.replace(f2, regions=(("text", "t", b"x"),)),
    }
    for what, broken in cases.items():
        with pytest.raises(GuaranteeViolation, match=what):
            check_policy_independence([f1, broken])


def test_a_compaction_of_overwrites_leaves_the_writers_next_contribution() -> None:
    """G4, writer side (docs/gc.md, "What it costs in G4"): a compaction of the fields
    checkpoint that drops only overwritten entries declares nothing and leaves the Yjs
    update as it was, so the same write keeps its id whether or not the writer compacted
    first. One that drops the chain of a deleted key still changes it (the open part)."""
    for deleted, same in ((False, True), (True, False)):
        ids = []
        for compact in (False, True):
            a, b = (hs.Memory("g4", p, clock=lambda: 0, incarnation=i + 1, gc_min_entries=None)
                    for i, p in enumerate("ab"))
            for r in range(600):  # a fields state well past 4 KB
                a.fields[f"k{r % 300}"] = f"value {r}"
            if deleted:
                del a.fields["k7"]
            sync_pair(a, b)
            if compact:
                assert a.collect() > 0
            a.fields["after"] = 1
            ids.append(a.history()[-1].hex_id)
        assert (ids[0] == ids[1]) is same
