"""Conflict paths of retained writes after a fields-checkpoint compaction (docs/gc.md).

A write made concurrently with the deletion of the map it writes into (``k0/n1`` while
another replica replaces ``k0``) is invisible, but it still conflicts with a concurrent
``set`` of ``k0``. The compaction keeps the chain it writes to; the map that holds the chain
must then stay a *type* in the compacted state: yjs (and yrs) turn an item whose parent is
not a type into GC when they load it, which lost the chain, and the conflict index reseeded
from the compacted state found no key path for the write (simulator seed 820150).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pycrdt

import hybridsync as hs
from hybridsync.causal import Contribution
from hybridsync.fields import FieldsConflictIndex
from hybridsync.fields._compact import compact_state, rewrite_update
from hybridsync.fields._yencode import REF_GC, REF_TYPE, decode_raw
from hybridsync.testing import sync_all, sync_pair


def _doc(client_id: int, *updates: bytes) -> pycrdt.Doc[Any]:
    d: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id, skip_gc=True)
    d.get("fields", type=pycrdt.Map)
    for u in updates:
        d.apply_update(u)
    return d


def _delta(d: pycrdt.Doc[Any], action: Any) -> bytes:
    sv = d.get_state()
    with d.transaction():
        action()
    return d.get_update(sv)


def _refs(update: bytes) -> dict[tuple[int, int], int]:
    return {(s.client, s.clock): s.ref for _, structs in decode_raw(update).clients
            for s in structs}


def _fields_contribution(author: str, seq: int, update: bytes) -> Contribution:
    return Contribution.create("s", author, seq, (), seq, 0, "fields", update)


def test_a_deleted_map_that_holds_a_kept_chain_stays_a_type() -> None:
    a, b = _doc(1), _doc(2)
    fa, fb = a.get("fields", type=pycrdt.Map), b.get("fields", type=pycrdt.Map)
    made = _delta(a, lambda: fa.__setitem__("k0", pycrdt.Map({"n1": 1})))
    b.apply_update(made)
    replaced = _delta(a, lambda: fa.__setitem__("k0", "replaced"))  # F = {made, replaced}
    nested = _delta(b, lambda: fb["k0"].__setitem__("n1", 77))  # concurrent with `replaced`
    result = compact_state(_doc(9, made, replaced).get_update(), concurrent=[nested])
    assert result.dropped_items == 0
    assert _refs(result.update)[(1, 0)] == REF_TYPE  # the deleted map k0 keeps its type
    # loaded as yrs loads it: the chain k0/n1 (client 1, clock 1) is still an item
    loaded = _doc(9, result.update)
    state = loaded.get_update()
    assert _refs(state)[(1, 1)] != REF_GC
    assert compact_state(state, concurrent=[nested]).update == result.update  # idempotent
    loaded.apply_update(rewrite_update(nested, result.dropped))
    reference = _doc(9, made, replaced, nested)
    assert loaded.get("fields", type=pycrdt.Map).to_py() == {"k0": "replaced"}
    assert reference.get("fields", type=pycrdt.Map).to_py() == {"k0": "replaced"}
    # a conflict index seeded from the compacted state finds the write's key path, as one
    # that indexed every update does
    seeded = FieldsConflictIndex()
    seeded.seed(state, result.dropped)
    full = FieldsConflictIndex()
    for i, u in enumerate((made, replaced), 1):
        full.writes_of(_fields_contribution("a", i, u))
    w = _fields_contribution("b", 1, nested)
    assert [x.path for x in seeded.writes_of(w)] == ["k0/n1", "k0/n1"]  # set and overwrite
    assert seeded.writes_of(w) == full.writes_of(w)


def _replicas(path: str | None = None) -> list[hs.Memory]:
    members = ("a", "b", "c")
    return [
        hs.Memory("s", p, clock=lambda: 0, incarnation=i + 1, gc_min_entries=None,
                  members=members, path=path if p == "a" else None)
        for i, p in enumerate(members)
    ]


def _relay(src: hs.Memory, dst: hs.Memory) -> None:
    for frame in src.sync_to(dst.peer):
        dst.receive(src.peer, frame)


def _conflicts(m: hs.Memory) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return [(c.kind, c.location, c.contributions, c.paths) for c in m.conflicts()]


def _write_into_a_replaced_map(a: hs.Memory, b: hs.Memory, c: hs.Memory) -> None:
    """a writes ``k0/n1`` while b replaces ``k0``; a compacts a cut holding b's replacement
    but not its own write (c has not seen it), with its fields checkpoint (the large value
    makes it due)."""
    a.fields["big"] = "x" * 6000  # the checkpoint state passes the 4 KiB compaction floor
    a.fields["k0"] = {"n1": 1}
    sync_all([a, b, c])
    b.fields["k0"] = "replaced"  # lamport 3
    a.fields["pad"] = 1  # lamport 3, seen by b and c before a's next write
    _relay(a, b)
    _relay(a, c)
    a.fields["k0"]["n1"] = 77  # lamport 4, into the map b replaced: invisible, yet it conflicts
    _relay(b, a)
    _relay(b, c)
    _relay(c, a)  # every member now acknowledges b's replacement and a's pad, not a's write
    assert a.collect() == 4  # big, k0, the replacement and pad: a's write is retained
    assert a._fields_cut is not None  # the fields checkpoint was compacted (and reseeded)


def test_a_conflict_found_after_a_fields_compaction_is_found_everywhere() -> None:
    a, b, c = _replicas()
    _write_into_a_replaced_map(a, b, c)
    written = a.history()[-1].hex_id  # a's write into the replaced map
    c.fields["k0"] = "from c"
    set_by_c = c.history()[-1].hex_id
    _relay(c, a)  # a finds the (k0/n1, k0) conflict with its reseeded conflict index
    assert _pair(a, written, set_by_c) == [("k0", ("k0", "k0/n1"))]
    for _ in range(3):
        sync_all([a, b, c])
    assert a.state_digest() == b.state_digest() == c.state_digest()
    assert _pair(b, written, set_by_c) == [("k0", ("k0", "k0/n1"))]  # b never compacted
    assert _conflicts(a) == _conflicts(b) == _conflicts(c)


def _pair(m: hs.Memory, x: str, y: str) -> list[tuple[str, tuple[str, ...]]]:
    """The conflicts ``m`` reports between contributions ``x`` and ``y``: location, paths."""
    return [(c.location, tuple(sorted(c.paths))) for c in m.conflicts()
            if set(c.contributions) == {x, y}]


def test_a_replica_restarted_after_a_fields_compaction_reports_the_same_conflicts(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "a.db")
    a, b, c = _replicas(path)
    _write_into_a_replaced_map(a, b, c)
    written = a.history()[-1].hex_id
    c.fields["k0"] = "from c"
    set_by_c = c.history()[-1].hex_id
    sync_pair(a, c)
    before, digest = _conflicts(a), a.state_digest()
    assert _pair(a, written, set_by_c) == [("k0", ("k0", "k0/n1"))]
    a.close()
    again = hs.Memory("s", "a", clock=lambda: 0, incarnation=9, gc_min_entries=None,
                      members=("a", "b", "c"), path=path)
    assert again.state_digest() == digest
    assert _conflicts(again) == before  # recomputed from the checkpoint and the retained log
