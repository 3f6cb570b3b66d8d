"""Hypothesis: compaction of Yjs map tombstones at a cut never changes what any replica shows.

2–4 pycrdt documents with distinct client ids make random concurrent edits (top-level and
nested map sets and deletes, list inserts/deletes, text edits) and exchange their updates in
random causal orders. A cut F is taken at the contributions every replica holds; each
replica compacts at a moment of its own (``compact_state`` on the state of exactly F, with the
updates not causally after F as ``concurrent``), then keeps editing and receiving: a compacted
replica rewrites what it receives (``rewrite_update``) and exports what it writes
(``export_update``). A second cut may follow once every replica has compacted the first.

Checked after every step: two replicas holding the same contributions show the same fields,
compacted or not. At the end (everything delivered, every replica compacted): all replicas
equal the uncompacted reference (a fresh document with every update), all replicas computed
byte-identical compacted states, and each compacted state has the checkpoint's state vector.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import pycrdt
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from hybridsync.errors import PayloadError
from hybridsync.fields._compact import (
    DroppedRanges,
    compact_state,
    export_update,
    rewrite_update,
)

KEYS = ("a", "b", "c", "d")
SUBKEYS = ("x", "y")
MAX_CUTS = 2


@dataclass
class Update:
    wire: bytes
    deps: frozenset[int]
    author: int


@dataclass
class Replica:
    client_id: int
    doc: pycrdt.Doc[Any]
    held: list[int] = field(default_factory=list)
    epoch: int = 0
    dropped: DroppedRanges = field(default_factory=DroppedRanges)
    compacted: bytes = b""  # the latest compacted state

    @property
    def root(self) -> pycrdt.Map[Any]:
        return self.doc.get("fields", type=pycrdt.Map)


@dataclass
class Cut:
    members: frozenset[int]  # F
    concurrent: tuple[int, ...]  # updates not causally after F


def fresh(client_id: int, *updates: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc.get("fields", type=pycrdt.Map)
    for u in updates:
        doc.apply_update(u)
    return doc


def state_vector(doc: pycrdt.Doc[Any]) -> dict[int, int]:
    sv = doc.get_state()
    # lib0: count, then (client, clock) varuint pairs
    values: list[int] = []
    pos = 0
    while pos < len(sv):
        value = shift = 0
        while True:
            b = sv[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        values.append(value)
    return dict(zip(values[1::2], values[2::2], strict=True))


class World:
    """Replicas, a causal log of updates, cuts and compactions (no randomness of its own)."""

    def __init__(self, n: int) -> None:
        self.replicas = [Replica(client_id=1 + 1000 * i, doc=fresh(1 + 1000 * i)) for i in range(n)]
        self.updates: list[Update] = []
        self.cuts: list[Cut] = []
        self.counter = 0
        self.states: dict[tuple[int, int], bytes] = {}  # (cut, replica) -> compacted bytes
        self.dropped_items = 0

    def replica(self, i: int) -> Replica:
        return self.replicas[i % len(self.replicas)]

    def _value(self) -> int:
        self.counter += 1
        return self.counter

    def _write(self, r: Replica, action: Any) -> None:
        captured: list[bytes] = []
        sub = r.doc.observe(lambda event: captured.append(event.update))
        try:
            with r.doc.transaction():
                action(r.root)
        finally:
            r.doc.unobserve(sub)
        for u in captured:
            wire = export_update(u, r.dropped) if r.epoch else u
            self.updates.append(Update(wire, frozenset(r.held), self.replicas.index(r)))
            r.held.append(len(self.updates) - 1)

    # -- edits -----------------------------------------------------------------------------

    def set_key(self, i: int, k: str, kind: int) -> None:
        v = self._value()

        def act(root: pycrdt.Map[Any]) -> None:
            if kind == 0:
                root[k] = v
            elif kind == 1:
                root[k] = pycrdt.Map({"x": v})
            else:
                root[k] = pycrdt.Array([v])

        self._write(self.replica(i), act)

    def delete_key(self, i: int, k: str) -> None:
        r = self.replica(i)
        if k in r.root:
            self._write(r, lambda root: root.pop(k))

    def edit_inside(self, i: int, k: str, sub: str, delete: bool, pos: int) -> None:
        r = self.replica(i)
        target = r.root.get(k)
        v = self._value()
        if isinstance(target, pycrdt.Map):
            if delete and sub in target:
                self._write(r, lambda _root: target.pop(sub))
            elif not delete:
                self._write(r, lambda _root: target.__setitem__(sub, v))
        elif isinstance(target, pycrdt.Array):
            n = len(target)
            if delete and n:
                self._write(r, lambda _root: target.pop(pos % n))
            elif not delete:
                self._write(r, lambda _root: target.insert(pos % (n + 1), v))

    # -- delivery --------------------------------------------------------------------------

    def _apply(self, r: Replica, uid: int) -> None:
        wire = self.updates[uid].wire
        r.doc.apply_update(rewrite_update(wire, r.dropped) if r.epoch else wire)
        r.held.append(uid)

    def _deliverable(self, src: Replica, dst: Replica) -> list[int]:
        have = set(dst.held)
        return [u for u in src.held if u not in have and self.updates[u].deps <= have]

    def deliver(self, i: int, j: int, pick: int, count: int) -> None:
        src, dst = self.replica(i), self.replica(j)
        for _ in range(count):
            ready = self._deliverable(src, dst)
            if not ready:
                return
            self._apply(dst, ready[pick % len(ready)])

    def deliver_all(self) -> None:
        for _ in range(len(self.updates) * len(self.replicas) + 1):
            moved = False
            for src in self.replicas:
                for dst in self.replicas:
                    for uid in self._deliverable(src, dst):
                        self._apply(dst, uid)
                        moved = True
            if not moved:
                break

    # -- cuts ------------------------------------------------------------------------------

    def cut(self) -> bool:
        """Take a cut at what every replica holds; False when there is nothing new to cut."""
        if len(self.cuts) >= MAX_CUTS:
            return False
        if self.cuts and any(r.epoch < len(self.cuts) for r in self.replicas):
            return False  # a second cut only once everyone compacted the first
        members = frozenset.intersection(*(frozenset(r.held) for r in self.replicas))
        if self.cuts and members <= self.cuts[-1].members:
            return False
        concurrent = tuple(
            u for u, upd in enumerate(self.updates) if u not in members and not members <= upd.deps
        )
        self.cuts.append(Cut(members, concurrent))
        return True

    def compact(self, i: int) -> None:
        r = self.replica(i)
        if r.epoch >= len(self.cuts):
            return
        cut = self.cuts[r.epoch]
        previous = r.dropped
        base = (r.compacted,) if r.epoch else ()

        def fit(uid: int) -> bytes:
            wire = self.updates[uid].wire
            return rewrite_update(wire, previous) if r.epoch else wire

        in_f = [u for u in r.held if u in cut.members]
        checkpoint = fresh(99, *base, *(fit(u) for u in in_f))
        result = compact_state(checkpoint.get_update(), concurrent=[fit(u) for u in cut.concurrent])
        dropped = previous.union(result.dropped) if r.epoch else result.dropped
        doc = fresh(r.client_id, result.update)
        assert state_vector(doc) == state_vector(checkpoint)
        for u in r.held:
            if u not in cut.members:
                doc.apply_update(rewrite_update(self.updates[u].wire, dropped))
        r.doc, r.dropped, r.compacted = doc, dropped, result.update
        self.states[(r.epoch, self.replicas.index(r))] = result.update
        self.dropped_items += result.dropped_items
        r.epoch += 1

    # -- checks ----------------------------------------------------------------------------

    def check_same_contributions_same_fields(self) -> None:
        seen: dict[frozenset[int], Any] = {}
        for r in self.replicas:
            key = frozenset(r.held)
            value = r.root.to_py()
            if key in seen:
                assert value == seen[key], (key, value, seen[key])
            else:
                seen[key] = value

    def finish(self) -> None:
        """Deliver everything, compact everywhere, compare with the uncompacted reference."""
        self.deliver_all()
        for i, r in enumerate(self.replicas):
            while r.epoch < len(self.cuts):
                self.compact(i)
        reference = fresh(5, *(u.wire for u in self.updates))
        expected = reference.get("fields", type=pycrdt.Map).to_py()
        for r in self.replicas:
            assert len(r.held) == len(self.updates)
            assert r.root.to_py() == expected
        for c in range(len(self.cuts)):
            states = {self.states[(c, i)] for i in range(len(self.replicas))}
            assert len(states) == 1, f"cut {c}: replicas computed different compacted states"


def random_step(world: World, rnd: random.Random) -> None:
    """One random edit or delivery."""
    i = rnd.randrange(len(world.replicas))
    roll = rnd.random()
    k = rnd.choice(KEYS)
    if roll < 0.25:
        world.set_key(i, k, rnd.choice((0, 0, 1, 2)))
    elif roll < 0.40:
        world.delete_key(i, k)
    elif roll < 0.60:
        world.edit_inside(i, k, rnd.choice(SUBKEYS), rnd.random() < 0.4, rnd.randrange(6))
    elif roll < 0.97:
        world.deliver(
            i, rnd.randrange(len(world.replicas)), rnd.randrange(1000), rnd.randrange(1, 6)
        )
    else:
        world.deliver_all()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 4), second_cut=st.booleans())
def test_random_histories_with_cuts(seed: int, n: int, second_cut: bool) -> None:
    """Seeded random programs: edits and deliveries, a cut, compactions interleaved with more
    edits (some made before the author compacted), maybe a second cut, then the end state."""
    rnd = random.Random(seed)
    world = World(n)
    for _ in range(rnd.randrange(20, 60)):
        random_step(world, rnd)
    world.cut()
    for cut_round in range(2 if second_cut else 1):
        pending = list(range(n))
        rnd.shuffle(pending)
        for _ in range(rnd.randrange(20, 60)):
            random_step(world, rnd)
            if pending and rnd.random() < 0.15:
                world.compact(pending.pop())
            world.check_same_contributions_same_fields()
        for i in pending:
            world.compact(i)
        if cut_round == 0 and second_cut:
            world.deliver(0, 1, 0, 3)
            world.cut()
    event(f"cuts: {len(world.cuts)}")
    event(f"anchors: {min(max(len(r.dropped.anchors) for r in world.replicas), 3)}+")
    event(f"concurrent: {min(sum(len(c.concurrent) for c in world.cuts), 3)}+")
    event(f"dropped items: {min(world.dropped_items, 10)}+")
    world.finish()


class CompactionMachine(RuleBasedStateMachine):
    """The same world driven by Hypothesis rules (shrinks to a minimal failing history)."""

    @initialize(n=st.integers(2, 4))
    def setup(self, n: int) -> None:
        self.world = World(n)

    @rule(i=st.integers(0, 3), k=st.sampled_from(KEYS), kind=st.integers(0, 2))
    def set_key(self, i: int, k: str, kind: int) -> None:
        self.world.set_key(i, k, kind)

    @rule(i=st.integers(0, 3), k=st.sampled_from(KEYS))
    def delete_key(self, i: int, k: str) -> None:
        self.world.delete_key(i, k)

    @rule(
        i=st.integers(0, 3),
        k=st.sampled_from(KEYS),
        sub=st.sampled_from(SUBKEYS),
        delete=st.booleans(),
        pos=st.integers(0, 5),
    )
    def edit_inside(self, i: int, k: str, sub: str, delete: bool, pos: int) -> None:
        self.world.edit_inside(i, k, sub, delete, pos)

    @rule(i=st.integers(0, 3), j=st.integers(0, 3), pick=st.integers(0, 1000), many=st.booleans())
    def deliver(self, i: int, j: int, pick: int, many: bool) -> None:
        self.world.deliver(i, j, pick, 8 if many else 1)

    @rule()
    def sync_all(self) -> None:
        self.world.deliver_all()

    @precondition(lambda self: len(self.world.updates) >= 6 * (1 + len(self.world.cuts)))
    @rule()
    def cut(self) -> None:
        self.world.cut()

    @rule(i=st.integers(0, 3))
    def compact(self, i: int) -> None:
        self.world.compact(i)

    @invariant()
    def same_contributions_same_fields(self) -> None:
        if hasattr(self, "world"):
            self.world.check_same_contributions_same_fields()

    def teardown(self) -> None:
        if hasattr(self, "world"):
            self.world.finish()


CompactionMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=80, deadline=None
)
TestCompaction = CompactionMachine.TestCase


# -- totality ---------------------------------------------------------------------------------


def _corpus() -> tuple[bytes, bytes, DroppedRanges]:
    a = fresh(7)
    root = a.get("fields", type=pycrdt.Map)
    for i in range(30):
        root[f"k{i % 4}"] = i
    root["n"] = pycrdt.Map({"x": pycrdt.Array([1, 2]), "t": pycrdt.Text("hi")})
    root["gone"] = 1
    del root["gone"]
    b = fresh(8, a.get_update())
    sv = b.get_state()
    b.get("fields", type=pycrdt.Map)["gone"] = 2
    b.get("fields", type=pycrdt.Map)["k1"] = "x"
    return a.get_update(), b.get_update(sv), compact_state(a.get_update()).dropped


CORPUS = _corpus()


@settings(max_examples=200, deadline=None)
@given(
    which=st.integers(0, 1),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 2)), max_size=4
    ),
    cut=st.integers(0, 10_000),
)
def test_mangled_input_is_rejected_cleanly(
    which: int, edits: list[tuple[int, int, int]], cut: int
) -> None:
    """Whatever the bytes: a result or PayloadError, never another exception or a hang."""
    data = bytearray(CORPUS[which])
    for pos, byte, kind in edits:
        at = pos % (len(data) + 1)
        if kind == 0 and at < len(data):
            data[at] = byte
        elif kind == 1:
            data.insert(at, byte)
        elif at < len(data):
            del data[at]
    if cut % 3 == 0:
        data = data[: cut % (len(data) + 1)]
    blob = bytes(data)
    for fn in (
        compact_state,
        lambda d: rewrite_update(d, CORPUS[2]),
        lambda d: export_update(d, CORPUS[2]),
        DroppedRanges.decode,
    ):
        with contextlib.suppress(PayloadError):
            fn(blob)
