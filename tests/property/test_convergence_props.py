"""Convergence properties (G1, G4): the final state depends only on which contributions a
replica holds — not on delivery order, duplication, batching, loss or topology."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import hybridsync as hs
from hybridsync.testing import (
    LossyChannel,
    ReplicaSnapshot,
    assert_converged,
    snapshot,
    sync_all,
    sync_pair,
)

KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(
    st.integers(-3, 3), st.text(max_size=3), st.none(),
    st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 2), max_size=2),
    st.lists(st.integers(0, 2), max_size=2),
)
# an op: (writer, kind, key, value); kind "sync" exchanges between the writer and the next one
OPS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["set", "set", "del", "nested", "sync"]),
              KEYS, VALUES),
    min_size=1,
    max_size=14,
)

PROPS = settings(max_examples=max(60, settings.default.max_examples // 20), deadline=None)


def _writers(ops: list[tuple[int, str, str, Any]], batch_size: int = 512) -> list[hs.Memory]:
    """Run the script on three writers with fixed clocks and incarnations: the same script
    always yields the same contributions (same ids)."""
    ws = [hs.Memory("props", f"w{i}", clock=lambda i=i: 1000 * (i + 1), incarnation=i + 1,
                    batch_size=batch_size) for i in range(3)]
    for who, kind, key, value in ops:
        w = ws[who]
        if kind == "set":
            w.fields[key] = value
        elif kind == "del":
            if key in w.fields:
                del w.fields[key]
        elif kind == "nested":
            current = w.fields.get(key)
            if isinstance(current, hs.FieldMap):
                current["n"] = value
            else:
                w.fields[key] = {"n": value}
        else:
            sync_pair(w, ws[(who + 1) % 3])
    return ws


def _frames(ws: list[hs.Memory], reader: str) -> list[tuple[str, bytes]]:
    return [(w.peer, f) for w in ws for f in w.sync_to(reader)]


def _read(frames: list[tuple[str, bytes]], name: str = "r") -> hs.Memory:
    r = hs.Memory("props", name, clock=lambda: 0, incarnation=99)
    for src, f in frames:
        r.receive(src, f)
    return r


def _reference(ops: list[tuple[int, str, str, Any]]) -> ReplicaSnapshot:
    return snapshot(_read(_frames(_writers(ops), "r")))


@PROPS
@given(ops=OPS, seed=st.integers(0, 2**32 - 1))
def test_delivery_order_and_duplication_do_not_matter(
    ops: list[tuple[int, str, str, Any]], seed: int
) -> None:
    ws = _writers(ops, batch_size=1)
    frames = _frames(ws, "r")
    rng = random.Random(seed)
    shuffled = frames + rng.sample(frames, k=min(len(frames), 3))
    rng.shuffle(shuffled)
    r = _read(shuffled)
    for src, f in frames:  # anything parked and evicted is resent
        r.receive(src, f)
    assert snapshot(r) == _reference(ops)


@PROPS
@given(ops=OPS, batch_size=st.sampled_from([1, 2, 3, 7]))
def test_batching_does_not_matter(ops: list[tuple[int, str, str, Any]], batch_size: int) -> None:
    r = _read(_frames(_writers(ops, batch_size=batch_size), "r"))
    assert snapshot(r) == _reference(ops)


@PROPS
@given(ops=OPS, topology=st.sampled_from(["mesh", "star", "chain", "ring"]))
def test_topology_does_not_matter(ops: list[tuple[int, str, str, Any]], topology: str) -> None:
    ws = _writers(ops)
    if topology == "mesh":
        sync_all(ws)
    elif topology == "star":
        for _ in range(2):
            sync_pair(ws[0], ws[1])
            sync_pair(ws[0], ws[2])
    elif topology == "chain":
        for _ in range(2):
            sync_pair(ws[0], ws[1])
            sync_pair(ws[1], ws[2])
    else:
        for _ in range(2):
            for i in range(3):
                sync_pair(ws[i], ws[(i + 1) % 3])
    snap = assert_converged(ws)
    reader = _reference(ops)
    assert (snap.fields_json, snap.heads, snap.history, snap.conflicts) == (
        reader.fields_json, reader.heads, reader.history, reader.conflicts
    )


@PROPS
@given(
    ops=OPS,
    seed=st.integers(0, 10_000),
    loss=st.sampled_from([0.0, 0.2, 0.5]),
    dup=st.sampled_from([0.0, 0.3]),
)
def test_lossy_channel_converges_to_the_same_state(
    ops: list[tuple[int, str, str, Any]], seed: int, loss: float, dup: float
) -> None:
    ws = _writers(ops)
    channel = LossyChannel(seed=seed, loss_probability=loss, duplicate_probability=dup)
    for _ in range(5):  # a faulty phase...
        for a in ws:
            for b in ws:
                if a is not b:
                    for f in a.sync_to(b.peer):
                        channel.send(a.peer, b.peer, f)
        channel.deliver(ws)
    channel.loss_probability = 0.0  # ...then the faults stop
    sync_all(ws, channel=channel)
    snap = assert_converged(ws)
    reader = _reference(ops)
    assert (snap.fields_json, snap.history, snap.conflicts) == (
        reader.fields_json, reader.history, reader.conflicts
    )


_MISSING = "<missing>"


def _recorded_writes(
    ops: list[tuple[int, str, str, Any]],
) -> tuple[list[hs.Memory], list[tuple[str, str, object]]]:
    """Run the script like :func:`_writers`, recording ``(key, contribution id, the
    writer's view of the key right after the write)`` for every write."""
    ws = [hs.Memory("props", f"w{i}", clock=lambda i=i: 1000 * (i + 1), incarnation=i + 1)
          for i in range(3)]
    writes: list[tuple[str, str, object]] = []
    for who, kind, key, value in ops:
        w = ws[who]
        n = len(w.history())
        if kind == "sync":
            sync_pair(w, ws[(who + 1) % 3])
            continue
        if kind == "set":
            w.fields[key] = value
        elif kind == "del":
            if key not in w.fields:
                continue
            del w.fields[key]
        else:
            current = w.fields.get(key)
            if isinstance(current, hs.FieldMap):
                current["n"] = value
            else:
                w.fields[key] = {"n": value}
        assert len(w.history()) == n + 1
        newest = max((c for c in w.history() if c.author == w.peer), key=lambda c: c.seq)
        writes.append((key, newest.hex_id, w.fields.to_dict().get(key, _MISSING)))
    return ws, writes


@PROPS
@given(ops=OPS)
def test_every_write_survives_or_is_a_conflict(ops: list[tuple[int, str, str, Any]]) -> None:
    """G2 for fields: after convergence, each key shows what its causally last write left,
    and writes that are concurrent with each other are recorded as conflicts."""
    ws, writes = _recorded_writes(ops)
    sync_all(ws)
    assert_converged(ws)
    history = {c.hex_id: c for c in ws[0].history()}
    ancestors: dict[str, set[str]] = {}

    def past(cid: str) -> set[str]:
        if cid not in ancestors:
            out: set[str] = set()
            for p in history[cid].parents:
                out.add(p.hex())
                out |= past(p.hex())
            ancestors[cid] = out
        return ancestors[cid]

    conflicting = {
        frozenset(c.contributions)
        for c in ws[0].conflicts()
    }
    final = ws[0].fields.to_dict()
    for key in {k for k, _, _ in writes}:
        mine = [(cid, view) for k, cid, view in writes if k == key]
        maximal = [(cid, view) for cid, view in mine
                   if not any(cid in past(other) for other, _ in mine)]
        shown = final.get(key, _MISSING)
        assert shown in [view for _, view in maximal], (key, shown, maximal)
        for i, (a, va) in enumerate(maximal):
            for b, vb in maximal[i + 1:]:
                if va is _MISSING and vb is _MISSING:
                    continue  # both deleted: no conflict, nothing lost
                assert frozenset((a, b)) in conflicting, (key, va, vb)
