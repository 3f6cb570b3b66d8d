"""A Hypothesis state machine over 2–5 replicas and an adversarial network.

Rules write, delete, write nested values, run (and roll back) transactions, edit texts
(inserts of any non-surrogate text, deletes, whole rewrites with ``set()``), write buffer
blocks, delete regions, commit, restart a replica from its store (uncommitted text and buffer
edits die with it), and move frames: ``sync_to`` puts frames into per-link in-flight bags; a
frame is delivered, duplicated or dropped in any order. No honest frame may ever be
rejected, and no replica may apply a contribution before its parents (G3). At the end every
frame still in flight is delivered and a bounded, fair pump must bring every replica to the
same fields, heads, history, region bytes and conflicts (G1).
"""

from __future__ import annotations

# shared with test_stateful_gc.py (imported by name: tests/property/conftest.py)
from _stateful_common import INDEX, LocalEdits
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import hybridsync as hs
from hybridsync.testing import assert_converged, sync_all


class ReplicasUnderChaos(LocalEdits):
    def __init__(self) -> None:
        super().__init__()  # the clock, the replicas and the local-edit rules
        self.stores: list[hs.MemoryStore] = []
        self.in_flight: dict[tuple[int, int], list[bytes]] = {}
        self.incarnations = 0
        self.applied: list[set[str]] = []

    # ---- setup -------------------------------------------------------------------------
    @initialize(n=st.integers(2, 5), batch=st.sampled_from([1, 2, 512]))
    def make_replicas(self, n: int, batch: int) -> None:
        self.batch = batch
        for i in range(n):
            self.stores.append(hs.MemoryStore())
            self.applied.append(set())
            self.mems.append(self._open(i))
        self.in_flight = {(i, j): [] for i in range(n) for j in range(n) if i != j}

    def _open(self, i: int) -> hs.Memory:
        self.incarnations += 1
        mem = hs.Memory(
            "chaos", f"p{i}", store=self.stores[i], clock=self.clock,
            incarnation=self.incarnations, batch_size=self.batch, retransmit_rounds=1,
        )
        applied = self.applied[i] = {c.hex_id for c in mem.history()}

        def causal_delivery(change: hs.Change) -> None:
            by_id = {c.hex_id: c for c in mem.history()}
            c = by_id[change.contribution]
            missing = [p.hex() for p in c.parents if p.hex() not in applied]
            assert not missing, f"p{i} applied {change.contribution[:12]} before {missing} (G3)"
            assert change.contribution not in applied, f"p{i} applied a contribution twice"
            applied.add(change.contribution)

        mem.observe(causal_delivery)
        return mem

    # ---- restarts (the local-edit rules come from LocalEdits) ----------------------------
    @rule(i=INDEX)
    def restart(self, i: int) -> None:
        """Crash and restart from the store with a new incarnation; frames in flight from
        the old incarnation may still arrive."""
        k = i % len(self.mems)
        old = self.mems[k]
        before = (old.fields_json(), old.heads, [c.id for c in old.history()],
                  old.region_bytes())
        old.close()
        self.mems[k] = self._open(k)
        new = self.mems[k]
        assert (new.fields_json(), new.heads, [c.id for c in new.history()],
                new.region_bytes()) == before

    # ---- the network -------------------------------------------------------------------
    @rule(i=INDEX, j=INDEX)
    def sync(self, i: int, j: int) -> None:
        n = len(self.mems)
        src, dst = i % n, j % n
        if src != dst:
            self.in_flight[(src, dst)].extend(self.mems[src].sync_to(f"p{dst}"))

    def _pick(self, link: int, k: int) -> tuple[tuple[int, int], int] | None:
        busy = [key for key, bag in sorted(self.in_flight.items()) if bag]
        if not busy:
            return None
        key = busy[link % len(busy)]
        return key, k % len(self.in_flight[key])

    @rule(link=st.integers(0, 20), k=st.integers(0, 20))
    def deliver(self, link: int, k: int) -> None:
        picked = self._pick(link, k)
        if picked is not None:
            (src, dst), idx = picked
            frame = self.in_flight[(src, dst)].pop(idx)
            self.mems[dst].receive(f"p{src}", frame)  # honest frames never raise

    @rule(link=st.integers(0, 20), k=st.integers(0, 20))
    def duplicate(self, link: int, k: int) -> None:
        picked = self._pick(link, k)
        if picked is not None:
            key, idx = picked
            self.in_flight[key].append(self.in_flight[key][idx])

    @rule(link=st.integers(0, 20), k=st.integers(0, 20))
    def drop(self, link: int, k: int) -> None:
        picked = self._pick(link, k)
        if picked is not None:
            key, idx = picked
            del self.in_flight[key][idx]

    @precondition(lambda self: bool(self.mems))
    @rule()
    def deliver_everything_in_flight(self) -> None:
        for (src, dst), bag in sorted(self.in_flight.items()):
            while bag:
                self.mems[dst].receive(f"p{src}", bag.pop(0))

    # ---- invariants --------------------------------------------------------------------
    @invariant()
    def histories_are_in_the_deterministic_order(self) -> None:
        for mem in self.mems:
            keys = [c.order_key for c in mem.history()]
            assert keys == sorted(keys)
            assert all(len(set(c.authors)) == 2 for c in mem.conflicts()
                       if c.kind == "concurrent-write"), "a conflict of an author with itself"

    def teardown(self) -> None:
        if not self.mems:
            return
        self.deliver_everything_in_flight()
        sync_all(self.mems, max_rounds=500)
        assert_converged(self.mems)
        regions = self.mems[0].region_bytes()
        conflicts = self.mems[0].conflicts()
        for mem in self.mems[1:]:
            assert mem.region_bytes() == regions, "region bytes differ (G1)"
            assert mem.conflicts() == conflicts, "conflicts differ (G1)"
        for mem in self.mems:
            assert mem.sync_to(next(m.peer for m in self.mems if m is not mem)) == []


ReplicasUnderChaos.TestCase.settings = settings(
    max_examples=max(50, settings.default.max_examples // 20),
    stateful_step_count=40,
    deadline=None,
)
TestReplicasUnderChaos = ReplicasUnderChaos.TestCase
