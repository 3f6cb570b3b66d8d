"""A Hypothesis state machine over 2–5 replicas and an adversarial network.

Rules write, delete, write nested values, run (and roll back) transactions, restart a replica
from its store, and move frames: ``sync_to`` puts frames into per-link in-flight bags; a
frame is delivered, duplicated or dropped in any order. No honest frame may ever be
rejected, and no replica may apply a contribution before its parents (G3). At the end every
frame still in flight is delivered and a bounded, fair pump must bring every replica to the
same fields, heads, history and conflicts (G1).
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import hybridsync as hs
from hybridsync.testing import ManualClock, assert_converged, sync_all

KEYS = st.sampled_from(["a", "b", "c", "d"])
SUBKEYS = st.sampled_from(["x", "y"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.integers(2**53, 2**60),
    st.floats(allow_nan=False, width=32), st.text(max_size=4), st.binary(max_size=3),
)
_NESTED = st.lists(SCALARS, max_size=3) | st.dictionaries(SUBKEYS, SCALARS, max_size=2)
VALUES = st.one_of(
    SCALARS,
    _NESTED,
    st.lists(SCALARS | _NESTED, max_size=2),
    st.dictionaries(SUBKEYS, SCALARS | _NESTED, max_size=2),
)
INDEX = st.integers(0, 4)


class Rollback(Exception):
    pass


class ReplicasUnderChaos(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1_700_000_000_000)
        self.mems: list[hs.Memory] = []
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

    def _mem(self, i: int) -> hs.Memory:
        return self.mems[i % len(self.mems)]

    # ---- local writes ------------------------------------------------------------------
    @rule(i=INDEX, key=KEYS, value=VALUES)
    def write(self, i: int, key: str, value: Any) -> None:
        self.clock.advance(1)
        self._mem(i).fields[key] = value

    @rule(i=INDEX, key=KEYS)
    def delete(self, i: int, key: str) -> None:
        mem = self._mem(i)
        if key in mem.fields:
            del mem.fields[key]

    @rule(i=INDEX, key=KEYS, sub=SUBKEYS, value=VALUES)
    def nested_write(self, i: int, key: str, sub: str, value: Any) -> None:
        mem = self._mem(i)
        current = mem.fields.get(key)
        if isinstance(current, hs.FieldMap):
            current[sub] = value
        elif isinstance(current, hs.FieldList):
            current.append(value)
        else:
            mem.fields[key] = {sub: value}

    @rule(
        i=INDEX,
        writes=st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), min_size=1, max_size=4),
        fail=st.booleans(),
    )
    def transaction(self, i: int, writes: list[tuple[str, Any]], fail: bool) -> None:
        mem = self._mem(i)
        before = mem.fields_json()
        try:
            with mem.transaction(note="rule"):
                for key, value in writes:
                    if value is None and key in mem.fields:
                        del mem.fields[key]
                    else:
                        mem.fields[key] = value
                if fail:
                    raise Rollback
        except Rollback:
            assert mem.fields_json() == before, "a failed transaction left visible changes"

    @rule(i=INDEX)
    def restart(self, i: int) -> None:
        """Crash and restart from the store with a new incarnation; frames in flight from
        the old incarnation may still arrive."""
        k = i % len(self.mems)
        old = self.mems[k]
        before = (old.fields_json(), old.heads, [c.id for c in old.history()])
        old.close()
        self.mems[k] = self._open(k)
        new = self.mems[k]
        assert (new.fields_json(), new.heads, [c.id for c in new.history()]) == before

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
        for mem in self.mems:
            assert mem.sync_to(next(m.peer for m in self.mems if m is not mem)) == []


ReplicasUnderChaos.TestCase.settings = settings(
    max_examples=max(50, settings.default.max_examples // 20),
    stateful_step_count=40,
    deadline=None,
)
TestReplicasUnderChaos = ReplicasUnderChaos.TestCase
