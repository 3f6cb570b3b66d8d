"""Conflict paths of retained writes after a fields-checkpoint compaction (docs/gc.md).

A write made concurrently with the deletion of the container it writes into (``k0/n1`` or an
append to the list ``k0`` while another replica replaces ``k0``) is invisible, but it still
conflicts with a concurrent ``set`` of ``k0``. A conflict index reseeded from the compacted
state must find the same key paths as one that saw every update (simulator seed 820150):

* the compaction keeps the chain such a write names, and the deleted map holding it stays a
  *type* (yjs and yrs turn an item whose parent is not a type into GC when they load it);
* the same for a list: a dead sequence a concurrent update inserts into is kept;
* the index finds an item inside an entry that merges several (the compacted state and yrs
  merge adjacent deleted items of one chain).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest

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
    """The update of one transaction, as a replica commits it: its own deletions only (a
    state diff would carry the document's whole delete set)."""
    got: list[bytes] = []
    sub = d.observe(lambda event: got.append(event.update))
    with d.transaction():
        action()
    d.unobserve(sub)
    (update,) = got
    return update


def _refs(update: bytes) -> dict[tuple[int, int], int]:
    return {(s.client, s.clock): s.ref for _, structs in decode_raw(update).clients
            for s in structs}


def _fields_contribution(author: str, seq: int, update: bytes) -> Contribution:
    return Contribution.create("s", author, seq, (), seq, 0, "fields", update)


def _writes(index: FieldsConflictIndex, c: Contribution) -> list[tuple[str, str]]:
    return sorted({(w.path, w.action) for w in index.writes_of(c)})


def _truth(updates: list[bytes]) -> FieldsConflictIndex:
    """An index that saw every update (in causal order) and never compacted."""
    full = FieldsConflictIndex()
    for i, u in enumerate(updates, 1):
        full.writes_of(_fields_contribution("f", i, u))
    return full


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
    w = _fields_contribution("b", 1, nested)
    assert _writes(seeded, w) == [("k0/n1", "delete"), ("k0/n1", "set")]  # an overwrite
    assert _writes(seeded, w) == _writes(_truth([made, replaced]), w)


def test_a_dead_list_a_concurrent_update_inserts_into_is_kept() -> None:
    a, b = _doc(1), _doc(2)
    fa, fb = a.get("fields", type=pycrdt.Map), b.get("fields", type=pycrdt.Map)
    made = _delta(a, lambda: fa.__setitem__("l", pycrdt.Array([1, 2])))
    b.apply_update(made)
    replaced = _delta(a, lambda: fa.__setitem__("l", "replaced"))
    appended = _delta(b, lambda: fb["l"].append(3))  # names the dead list's last element
    result = compact_state(_doc(9, made, replaced).get_update(), concurrent=[appended])
    assert result.dropped_items == 0
    loaded = _doc(9, result.update)
    state = loaded.get_update()
    assert REF_GC not in {ref for (client, _), ref in _refs(state).items() if client == 1}
    loaded.apply_update(rewrite_update(appended, result.dropped))
    assert loaded.get("fields", type=pycrdt.Map).to_py() == {"l": "replaced"}
    assert compact_state(state, concurrent=[appended]).update == result.update
    seeded = FieldsConflictIndex()
    seeded.seed(state, result.dropped)
    w = _fields_contribution("b", 1, appended)
    assert _writes(seeded, w) == [("l/[]", "insert")]
    assert _writes(seeded, w) == _writes(_truth([made, replaced]), w)
    # without a concurrent update the dead list goes
    assert compact_state(_doc(9, made, replaced).get_update()).dropped_items > 0


def test_an_overwrite_of_an_item_merged_into_its_predecessor_is_found() -> None:
    """F: a sets k twice (1:0, then 1:1 with origin 1:0), c overwrites k (deletes 1:1). b
    overwrites k concurrently with c (it deletes 1:1 too), so k's chain is kept; 1:0 and 1:1
    are both deleted, and the compacted state merges them into one struct at 1:0."""
    a, b, c = _doc(1), _doc(2), _doc(3)
    fa = a.get("fields", type=pycrdt.Map)
    first = _delta(a, lambda: fa.__setitem__("k", "a0"))
    second = _delta(a, lambda: fa.__setitem__("k", "a1"))
    b.apply_update(first)
    b.apply_update(second)
    c.apply_update(first)
    c.apply_update(second)
    by_c = _delta(c, lambda: c.get("fields", type=pycrdt.Map).__setitem__("k", "c"))
    by_b = _delta(b, lambda: b.get("fields", type=pycrdt.Map).__setitem__("k", "b"))
    result = compact_state(_doc(9, first, second, by_c).get_update(), concurrent=[by_b])
    state = _doc(9, result.update).get_update()
    ((_, structs),) = [(cl, ss) for cl, ss in decode_raw(state).clients if cl == 1]
    assert [(x.clock, x.length) for x in structs] == [(0, 2)]  # merged
    seeded = FieldsConflictIndex()
    seeded.seed(state, result.dropped)
    w = _fields_contribution("b", 1, by_b)
    assert _writes(seeded, w) == [("k", "delete"), ("k", "set")]
    assert _writes(seeded, w) == _writes(_truth([first, second, by_c]), w)


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


def _set_n1(k0: Any) -> None:
    k0["n1"] = 77


def _append(k0: Any) -> None:
    k0.append(3)


# what a writes into the container k0 that b replaces, and the path of that write
INTO: dict[str, tuple[Any, Callable[[Any], None], str]] = {
    "map": ({"n1": 1}, _set_n1, "k0/n1"),
    "list": ([1, 2], _append, "k0/[]"),
}


def _write_into_a_replaced_container(a: hs.Memory, b: hs.Memory, c: hs.Memory,
                                     kind: str) -> str:
    """a writes into ``k0`` while b replaces ``k0``; a compacts a cut holding b's replacement
    but not its own write (c has not seen it), with its fields checkpoint (the large value
    makes it due). Returns the id of a's write."""
    value, write, _ = INTO[kind]
    a.fields["big"] = "x" * 6000  # the checkpoint state passes the 4 KiB compaction floor
    a.fields["k0"] = value
    sync_all([a, b, c])
    b.fields["k0"] = "replaced"  # lamport 3
    a.fields["pad"] = 1  # lamport 3, seen by b and c before a's next write
    _relay(a, b)
    _relay(a, c)
    write(a.fields["k0"])  # lamport 4, into what b replaced: invisible, yet it conflicts
    _relay(b, a)
    _relay(b, c)
    _relay(c, a)  # every member now acknowledges b's replacement and a's pad, not a's write
    assert a.collect() == 4  # big, k0, the replacement and pad: a's write is retained
    assert a._fields_cut is not None  # the fields checkpoint was compacted (and reseeded)
    return a.history()[-1].hex_id


def _pair(m: hs.Memory, x: str, y: str) -> list[tuple[str, tuple[str, ...]]]:
    """The conflicts ``m`` reports between contributions ``x`` and ``y``: location, paths."""
    return [(c.location, tuple(sorted(c.paths))) for c in m.conflicts()
            if set(c.contributions) == {x, y}]


@pytest.mark.parametrize("kind", sorted(INTO))
def test_a_conflict_found_after_a_fields_compaction_is_found_everywhere(kind: str) -> None:
    a, b, c = _replicas()
    written = _write_into_a_replaced_container(a, b, c, kind)
    c.fields["k0"] = "from c"
    set_by_c = c.history()[-1].hex_id
    _relay(c, a)  # a finds the conflict with its reseeded conflict index
    expected = [("k0", ("k0", INTO[kind][2]))]
    assert _pair(a, written, set_by_c) == expected
    for _ in range(3):
        sync_all([a, b, c])
    assert a.state_digest() == b.state_digest() == c.state_digest()
    assert _pair(b, written, set_by_c) == expected  # b never compacted
    assert _conflicts(a) == _conflicts(b) == _conflicts(c)


@pytest.mark.parametrize("kind", sorted(INTO))
def test_a_replica_restarted_after_a_fields_compaction_reports_the_same_conflicts(
    tmp_path: Path, kind: str,
) -> None:
    path = str(tmp_path / "a.db")
    a, b, c = _replicas(path)
    written = _write_into_a_replaced_container(a, b, c, kind)
    c.fields["k0"] = "from c"
    set_by_c = c.history()[-1].hex_id
    sync_pair(a, c)
    before, digest = _conflicts(a), a.state_digest()
    assert _pair(a, written, set_by_c) == [("k0", ("k0", INTO[kind][2]))]
    a.close()
    again = hs.Memory("s", "a", clock=lambda: 0, incarnation=9, gc_min_entries=None,
                      members=("a", "b", "c"), path=path)
    assert again.state_digest() == digest
    assert _conflicts(again) == before  # recomputed from the checkpoint and the retained log
