"""The stateful machine with garbage collection on (docs/gc.md).

Replicas (2–5) compact at their own small thresholds (``gc_min_entries`` 2–8, drawn per
replica), some on SQLite under a temporary directory so a restart reloads the checkpoint from
the store. Rules: the local edits of ``_stateful_common.LocalEdits`` (field writes, deletes
and nested maps, transactions, text inserts, deletes and rewrites, buffer blocks,
``delete_region``, commits), a sync from one replica to another whose frames are delivered,
dropped or held back (a held-back frame arrives later, maybe after compactions and
restarts on either side), ``collect()`` on a replica, a restart (a new incarnation over the
same store: it keeps what it committed, uncommitted text and buffer edits die), and a heal
that delivers what was held back and syncs everyone to quiescence.

Checked after every step and at every compaction (also the ones ``receive`` runs by itself):

- a compaction changes nothing visible: fields JSON, region bytes, conflicts, heads and the
  version vector are the same before and after (and across a restart);
- ``stats()`` agrees with the replica (log length, heads, version vector, conflicts), its
  byte counts are finite, the stable frontier is within the version vector, and every
  retained contribution sorts after the checkpoint;
- observers hear of a contribution at most once per incarnation;
- after a heal every replica is byte-identical: fields JSON, region bytes, conflicts, heads,
  version vectors (G1).

``GcReplicasDeclared`` declares every member (``members=...``): the configuration in which
docs/gc.md promises every guarantee, so nothing is refused as late and nothing is rolled back.
``GcReplicasLearned`` lets replicas learn members as they hear of them and checks only what
docs/gc.md promises there (see the class).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

import pytest
from _stateful_common import INDEX, LocalEdits
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

import hybridsync as hs
from hybridsync.testing import sync_all

SOAK = os.environ.get("HYBRIDSYNC_SOAK") == "1"
FATES = st.sampled_from(["deliver", "drop", "hold"])


def _visible(mem: hs.Memory) -> tuple[Any, ...]:
    """What no compaction and no restart may change."""
    return (mem.fields_json(), mem.region_bytes(), tuple(mem.conflicts()), mem.heads,
            mem.version_vector.to_dict())


class CheckedMemory(hs.Memory):
    """A replica that proves, at every compaction (``collect()``, the ones ``receive`` runs
    once ``gc_min_entries`` contributions are stable, and the catch-up to an author's declared
    fields cut), that nothing visible changed. (``_compact`` is the seam
    ``tests/sim/_gc_helpers.CheckedMemory`` wraps too; this one also compares region bytes
    and the version vector.)"""

    compactions = 0

    def _compact(self, n: int, **kw: Any) -> None:
        before = _visible(self)
        super()._compact(n, **kw)
        assert _visible(self) == before, f"a compaction of {n} changed {self.peer}'s state"
        self.compactions += 1


class GcReplicas(LocalEdits):
    """The machine; subclasses say whether members are declared."""

    declared: ClassVar[bool] = True
    introduce: ClassVar[bool] = False  # see GcReplicasLearned

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="hs-stateful-gc-")
        self.stores: list[hs.MemoryStore | None] = []  # None: SQLite at self._path(i)
        self.thresholds: list[int] = []
        self.held: dict[tuple[int, int], list[bytes]] = {}
        self.incarnations = 0
        self.compactions = 0  # by replicas already closed
        self.collected = 0
        self.batch = 512

    # ---- setup -------------------------------------------------------------------------
    @initialize(
        n=st.integers(2, 5),
        thresholds=st.lists(st.integers(2, 8), min_size=5, max_size=5),
        sqlite=st.lists(st.booleans(), min_size=5, max_size=5),
        batch=st.sampled_from([1, 2, 512]),
    )
    def make_replicas(self, n: int, thresholds: list[int], sqlite: list[bool],
                      batch: int) -> None:
        self.batch = batch
        self.thresholds = thresholds[:n]
        self.stores = [None if sqlite[i] else hs.MemoryStore() for i in range(n)]
        self.mems = [self._open(i) for i in range(n)]
        self.held = {(i, j): [] for i in range(n) for j in range(n) if i != j}
        if self.introduce:
            sync_all(self.mems, max_rounds=20)

    def _path(self, i: int) -> str:
        return os.path.join(self.tmp.name, f"p{i}.sqlite")

    def _open(self, i: int) -> CheckedMemory:
        self.incarnations += 1
        n = len(self.stores)
        store = self.stores[i]
        mem = CheckedMemory(
            "gc", f"p{i}", store=store, path=self._path(i) if store is None else None,
            clock=self.clock, incarnation=self.incarnations, batch_size=self.batch,
            retransmit_rounds=1, gc_min_entries=self.thresholds[i],
            members=[f"p{k}" for k in range(n)] if self.declared else (),
        )
        told: set[str] = set()

        def once(change: hs.Change) -> None:
            assert change.contribution not in told, \
                f"p{i} told its observers of {change.contribution[:12]} twice"
            told.add(change.contribution)

        mem.observe(once, paths=False)
        return mem

    # ---- restarts and collection -----------------------------------------------------------
    @rule(i=INDEX)
    def restart(self, i: int) -> None:
        """Close and reopen over the same store (MemoryStore or SQLite file) with a new
        incarnation: the checkpoint and the retained suffix come back, nothing else; frames
        held back from the old incarnation may still arrive."""
        k = i % len(self.mems)
        old = self.mems[k]
        before = (_visible(old), [c.id for c in old.history()], old.compacted_upto)
        assert isinstance(old, CheckedMemory)
        self.compactions += old.compactions
        old.close()
        new = self.mems[k] = self._open(k)
        after = (_visible(new), [c.id for c in new.history()], new.compacted_upto)
        assert after == before, f"p{k} came back from its store with another state"
        if self.introduce:
            self._introduce(k)

    def _introduce(self, k: int) -> None:
        """``p{k}`` and every other replica exchange one round of frames both ways."""
        for j in range(len(self.mems)):
            if j != k:
                for a, b in ((k, j), (j, k)):
                    for frame in self.mems[a].sync_to(f"p{b}"):
                        self.mems[b].receive(f"p{a}", frame)

    @rule(i=INDEX)
    def collect(self, i: int) -> None:
        mem = self._mem(i)
        before = _visible(mem)
        if mem.collect():
            self.collected += 1
        assert _visible(mem) == before, f"collect() changed {mem.peer}'s visible state"

    # ---- the network ---------------------------------------------------------------------
    @rule(i=INDEX, j=INDEX, fates=st.lists(FATES, max_size=4), answer=st.booleans())
    def sync(self, i: int, j: int, fates: list[str], answer: bool) -> None:
        """``p{i}`` syncs to ``p{j}``: its k-th frame meets ``fates[k]`` (delivered when the
        list is shorter); with ``answer``, ``p{j}`` answers at once over a perfect link."""
        n = len(self.mems)
        src, dst = i % n, j % n
        if src == dst:
            return
        for k, frame in enumerate(self.mems[src].sync_to(f"p{dst}")):
            fate = fates[k] if k < len(fates) else "deliver"
            if fate == "deliver":
                self.mems[dst].receive(f"p{src}", frame)  # honest frames never raise
            elif fate == "hold":
                self.held[(src, dst)].append(frame)
        if answer:
            for frame in self.mems[dst].sync_to(f"p{src}"):
                self.mems[src].receive(f"p{dst}", frame)

    @rule(link=st.integers(0, 20), k=st.integers(0, 20))
    def deliver_held(self, link: int, k: int) -> None:
        """A frame held back arrives now (late, and perhaps at a restarted replica)."""
        busy = [key for key, bag in sorted(self.held.items()) if bag]
        if busy:
            src, dst = busy[link % len(busy)]
            bag = self.held[(src, dst)]
            self.mems[dst].receive(f"p{src}", bag.pop(k % len(bag)))

    @rule()
    def heal(self) -> None:
        """Faults stop: what was held back arrives, then everyone syncs to quiescence."""
        for (src, dst), bag in sorted(self.held.items()):
            while bag:
                self.mems[dst].receive(f"p{src}", bag.pop(0))
        sync_all(self.mems, max_rounds=200)
        self.check_converged()

    def converged_view(self, mem: hs.Memory) -> tuple[Any, ...]:
        """What every replica must show identically after a heal (G1): fields JSON, region
        bytes, conflicts, heads, version vector."""
        return _visible(mem)

    def check_converged(self) -> None:
        first = self.converged_view(self.mems[0])
        for mem in self.mems[1:]:
            view = self.converged_view(mem)
            diff = [k for k, (a, b) in enumerate(zip(first, view, strict=True)) if a != b]
            assert not diff, (f"after a heal p0 and {mem.peer} differ in "
                              f"{[self.VIEW_NAMES[k] for k in diff]} (G1)")

    VIEW_NAMES: ClassVar[tuple[str, ...]] = (
        "fields", "region bytes", "conflicts", "heads", "version vector")

    # ---- invariants ----------------------------------------------------------------------
    @invariant()
    def stats_agree_with_the_replica(self) -> None:
        for mem in self.mems:
            s = mem.stats()
            history = mem.history()
            assert 0 <= s.metadata_bytes < 1 << 40 and 0 <= s.content_bytes < 1 << 40
            assert s.log_length == len(history)
            assert s.heads == len(mem.heads)
            assert s.version_vector == mem.version_vector.to_dict()
            assert s.conflicts == len(mem.conflicts())
            assert s.compacted >= 0 and s.pending >= 0
            assert all(0 <= seq <= s.version_vector.get(a, 0)
                       for a, seq in s.stable_frontier.items()), "frontier beyond what is held"
            keys = [c.order_key for c in history]
            assert keys == sorted(keys), "history() is not in the deterministic order"
            base = mem.compacted_upto
            assert base is None or all(key > base for key in keys), \
                "a retained contribution sorts inside the checkpoint"
            if self.declared:
                # with every member declared no compaction passes a member's place in the
                # order, so no work is late and nothing is rolled back (docs/gc.md)
                assert (s.late, s.rollbacks) == (0, 0), f"{mem.peer}: late work {s}"

    def teardown(self) -> None:
        try:
            if self.mems:
                self.heal()
                # what the run reached (pytest --hypothesis-show-statistics)
                done = self.compactions + sum(
                    m.compactions for m in self.mems if isinstance(m, CheckedMemory))
                event(f"compactions: {min(done, 10)}{'+' if done >= 10 else ''}")
                event(f"collect() calls that compacted: {min(self.collected, 3)}")
                event(f"restarts: {min(self.incarnations - len(self.mems), 3)}")
                if any(m.stats().late for m in self.mems):
                    event("late work refused")
                if any(m.stats().rollbacks for m in self.mems):
                    event("roll-back")
        finally:
            for mem in self.mems:
                mem.close()
            self.tmp.cleanup()


class GcReplicasDeclared(GcReplicas):
    """Every member declared: every guarantee holds (docs/gc.md "Declared members")."""

    declared = True


class GcReplicasLearned(GcReplicas):
    """Members learned as replicas hear of them (no ``members=``).

    After a heal values, region bytes, heads and version vectors must converge, but not
    ``conflicts()``: a replica that compacted a contribution before it heard of a member never
    compares that member's concurrent work with it and misses their conflict (docs/gc.md,
    "Known limits and open bugs", "Still open with members learned": only ``conflicts()``
    differs; learned-star seeds 118, 235, 866 are strict xfails for it). Late work and
    roll-backs are allowed here, and a compaction must still change nothing visible.
    """

    declared = False

    # Before any edit every replica hears of every other (one full sync of the empty
    # replicas), and a restarted replica, which knows only the authors in its store, at once
    # exchanges one round of frames with every other. A replica that compacts before it has
    # heard of a member that wrote concurrently is the open bug class of
    # tests/unit/test_gc_found_by_stateful.py (strict xfails: values diverge for good, or
    # ``receive`` raises ``IntegrityError``); without these introductions this machine finds
    # it within a few examples. Members are still learned (from links, gossip and the log),
    # not declared.
    introduce = True

    def converged_view(self, mem: hs.Memory) -> tuple[Any, ...]:
        fields, regions, _conflicts, heads, vv = _visible(mem)
        return (fields, regions, None, heads, vv)


_DEFAULT = settings(max_examples=60, stateful_step_count=40, deadline=None)
_SOAK = settings(max_examples=600, stateful_step_count=60, deadline=None)
_LEARNED = settings(max_examples=25, stateful_step_count=40, deadline=None)
_LEARNED_SOAK = settings(max_examples=300, stateful_step_count=60, deadline=None)
_soak_only = [
    pytest.mark.soak,
    pytest.mark.skipif(not SOAK, reason="soak test: run with `make soak` (HYBRIDSYNC_SOAK=1)"),
]


# (``Machine.TestCase`` is one class per machine: subclasses give each test its settings)
TestGcReplicasDeclared = type(
    "TestGcReplicasDeclared", (GcReplicasDeclared.TestCase,), {"settings": _DEFAULT})
TestGcReplicasLearned = type(
    "TestGcReplicasLearned", (GcReplicasLearned.TestCase,), {"settings": _LEARNED})
TestGcReplicasDeclaredSoak = type(
    "TestGcReplicasDeclaredSoak", (GcReplicasDeclared.TestCase,),
    {"settings": _SOAK, "pytestmark": _soak_only})
TestGcReplicasLearnedSoak = type(
    "TestGcReplicasLearnedSoak", (GcReplicasLearned.TestCase,),
    {"settings": _LEARNED_SOAK, "pytestmark": _soak_only})
