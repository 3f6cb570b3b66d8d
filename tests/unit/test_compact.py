"""Unit tests of the Yjs v1 struct codec (``_yencode``) and tombstone compaction (``_compact``).

Documents come from pycrdt; each scenario names the Yjs rule it depends on (origins of map
entries, YATA ordering by client id, GC of items whose origin or parent is gone).
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from hybridsync.errors import PayloadError
from hybridsync.fields._compact import (
    VOID,
    DroppedRanges,
    compact_state,
    export_needed,
    export_update,
    rewrite_needed,
    rewrite_update,
)
from hybridsync.fields._yencode import (
    REF_DELETED,
    REF_GC,
    REF_STRING,
    RawStruct,
    RawUpdate,
    decode_raw,
    encode_raw,
    merge_content,
    scan_items,
    split_content,
)
from hybridsync.fields._yupdate import decode_update

ROOTS: dict[str, type[Any]] = {
    "fields": pycrdt.Map,
    "list": pycrdt.Array,
    "text": pycrdt.Text,
    "xml": pycrdt.XmlFragment,
}


def doc(client_id: int, *updates: bytes, skip_gc: bool = False) -> pycrdt.Doc[Any]:
    d: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id, skip_gc=skip_gc)
    for name, kind in ROOTS.items():
        d.get(name, type=kind)
    for u in updates:
        d.apply_update(u)
    return d


def fields(d: pycrdt.Doc[Any]) -> Any:
    return d.get("fields", type=pycrdt.Map).to_py()


def everything(d: pycrdt.Doc[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind in ROOTS.items():
        root = d.get(name, type=kind)
        out[name] = str(root) if kind is pycrdt.XmlFragment else root.to_py()
    return out


def delta(d: pycrdt.Doc[Any], action: Any) -> bytes:
    """Run ``action`` in one transaction and return its update."""
    sv = d.get_state()
    with d.transaction():
        action()
    return d.get_update(sv)


def sync(*docs: pycrdt.Doc[Any]) -> None:
    for a in docs:
        for b in docs:
            if a is not b:
                b.apply_update(a.get_update(b.get_state()))


def rich_docs() -> list[pycrdt.Doc[Any]]:
    """Two concurrent writers touching every kind of content pycrdt writes."""
    a, b = doc(5), doc(2**40 + 7)
    fa, fb = a.get("fields", type=pycrdt.Map), b.get("fields", type=pycrdt.Map)
    fa["int"] = 1
    fa["float"] = 0.5
    fa["str"] = "héllo 😀"
    fa["bin"] = b"\x00\xff"
    fa["none"] = None
    fa["list"] = [1, "x", {"k": [None, False]}]
    fa["nested"] = pycrdt.Map({"x": 1, "arr": pycrdt.Array([1, 2, pycrdt.Text("in")])})
    text = a.get("text", type=pycrdt.Text)
    text += "a😀bc"
    text.insert(1, "é")
    text.format(0, 3, {"bold": True})  # pycrdt offsets are UTF-8 bytes: "aé"
    text.insert_embed(3, {"img": "x.png"})
    xml = a.get("xml", type=pycrdt.XmlFragment)
    xml.children.append(pycrdt.XmlElement("p", {"class": "c"}, [pycrdt.XmlText("hi")]))
    a.get("list", type=pycrdt.Array).extend([1, 2, 3, 4])
    sync(a, b)
    fa["int"] = 2
    fb["int"] = 3
    del fa["str"]
    fb["nested"]["x"] = 2
    del fa["nested"]["arr"]
    b.get("list", type=pycrdt.Array).insert(2, "z")
    del a.get("list", type=pycrdt.Array)[0:2]
    del text[0:1]
    sync(a, b)
    return [a, b]


# -- the codec ------------------------------------------------------------------------------


def test_round_trip_is_byte_exact_for_pycrdt_states_and_updates() -> None:
    a, b = rich_docs()
    updates: list[bytes] = []
    c = doc(77)
    sub = c.observe(lambda e: updates.append(e.update))
    c.get("fields", type=pycrdt.Map)["k"] = pycrdt.Map({"a": [1, 2]})
    del c.get("fields", type=pycrdt.Map)["k"]
    c.unobserve(sub)
    states = [a.get_update(), b.get_update(), a.get_update(b"\x00")]
    for data in [*states, *updates]:
        assert encode_raw(decode_raw(data)) == data
    for data in states:
        assert everything(doc(1, encode_raw(decode_raw(data)))) == everything(a)
    assert everything(doc(1, *updates)) == everything(c)


def test_decode_raw_agrees_with_decode_update() -> None:
    data = rich_docs()[0].get_update()
    raw = decode_raw(data)
    parsed = decode_update(data)
    flat = [s for _, structs in raw.clients for s in structs]
    assert [(s.client, s.clock, s.length) for s in flat] == [
        (i.client, i.clock, i.length) for i in parsed.items
    ]
    assert [(s.origin, s.right_origin) for s in flat] == [
        (i.origin, i.right_origin) for i in parsed.items
    ]
    assert [(c, k, n) for c, spans in raw.deletes for k, n in spans] == list(parsed.deletes)


def test_encoder_rejects_inconsistent_structs() -> None:
    gc = RawStruct(1, 0, 2, REF_GC, None, None, None, None, b"")
    assert decode_raw(encode_raw(RawUpdate(((1, (gc,)),), ()))).clients[0][1] == (gc,)
    gap = RawStruct(1, 5, 1, REF_GC, None, None, None, None, b"")
    with pytest.raises(PayloadError):
        encode_raw(RawUpdate(((1, (gc, gap)),), ()))
    orphan = RawStruct(1, 0, 1, REF_DELETED, None, None, None, None, b"\x01")
    with pytest.raises(PayloadError):
        encode_raw(RawUpdate(((1, (orphan,)),), ()))
    with pytest.raises(PayloadError):
        encode_raw(RawUpdate(((1, ()),), ()))


def test_split_and_merge_content() -> None:
    text = "a😀b"
    content = bytes([len(text.encode())]) + text.encode()
    left, right = split_content(REF_STRING, content, 2)  # inside the surrogate pair
    assert left[1:].decode() == "a\ufffd" and right[1:].decode() == "\ufffdb"
    left, right = split_content(REF_STRING, content, 3)
    assert merge_content(REF_STRING, left, right) == content
    assert split_content(REF_DELETED, b"\x05", 2) == (b"\x02", b"\x03")
    assert merge_content(REF_DELETED, b"\x02", b"\x03") == b"\x05"
    assert merge_content(7, b"\x01", b"\x01") is None
    with pytest.raises(PayloadError):
        split_content(7, b"\x01", 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x01\x01\x05\x00\x28",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        b"\x00",
    ],
)
def test_decoder_and_compaction_reject_garbage(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_raw(data)
    with pytest.raises(PayloadError):
        compact_state(data)
    with pytest.raises(PayloadError):
        rewrite_update(data, DroppedRanges())


def test_empty_items_written_by_yrs_round_trip_and_are_left_out() -> None:
    """A pycrdt edit at a UTF-8 offset inside a character makes yrs write empty string items;
    they still round-trip, and compaction leaves them out."""
    d = doc(5)
    text = d.get("text", type=pycrdt.Text)
    text += "aé😀b"
    text.format(0, 2, {"bold": True})  # byte 2 is inside "é"
    state = d.get_update()
    raw = decode_raw(state)
    assert any(s.length == 0 for _, structs in raw.clients for s in structs)
    assert encode_raw(raw) == state
    result = compact_state(state)
    assert all(s.length for _, structs in decode_raw(result.update).clients for s in structs)
    assert everything(doc(1, result.update)) == everything(doc(1, state))


# -- compaction -----------------------------------------------------------------------------


def overwritten_doc() -> pycrdt.Doc[Any]:
    d = doc(11)
    f = d.get("fields", type=pycrdt.Map)
    for i in range(300):
        f[f"k{i % 20}"] = f"v{i}"
    for i in range(50):
        f[f"gone{i}"] = i
        del f[f"gone{i}"]
    f["n"] = pycrdt.Map({"a": 1, "b": pycrdt.Map({"c": 1})})
    f["n"]["a"] = 2
    del f["n"]["b"]
    return d


def test_compacted_state_shows_the_same_fields_with_the_same_state_vector() -> None:
    for d in [overwritten_doc(), *rich_docs()]:
        state = d.get_update()
        result = compact_state(state)
        loaded = doc(1, result.update)
        assert everything(loaded) == everything(d)
        assert loaded.get_state() == d.get_state()
        assert len(result.update) <= len(state)


def test_compaction_drops_overwrites_and_deleted_keys() -> None:
    d = overwritten_doc()
    result = compact_state(d.get_update())
    kinds = [s.ref for _, structs in decode_raw(result.update).clients for s in structs]
    # live items: 20 overwritten keys, n, n.a; one GC run per gap between them
    assert result.kept_items == 22
    assert kinds.count(REF_DELETED) == 0
    assert len(result.dropped.anchors) == 51  # gone0..gone49 and n.b
    assert {key for _, key in result.dropped.anchors} == {f"gone{i}" for i in range(50)} | {"b"}


def test_compaction_is_idempotent_and_canonical() -> None:
    d = overwritten_doc()
    once = compact_state(d.get_update())
    assert compact_state(once.update).update == once.update
    # the same contributions, delivered in another order and kept with skip_gc: same bytes
    a, b = doc(3), doc(4)
    ups: list[bytes] = []
    fa, fb = a.get("fields", type=pycrdt.Map), b.get("fields", type=pycrdt.Map)
    ups.append(delta(a, lambda: fa.update({"x": 1, "t": pycrdt.Text("hello")})))
    b.apply_update(ups[-1])
    ups.append(delta(b, lambda: fb.__setitem__("x", 2)))
    ups.append(delta(a, lambda: fa["t"].insert(2, "__")))
    ups.append(delta(a, lambda: fa.__setitem__("y", 1)))
    ups.append(delta(a, lambda: fa.pop("y")))
    forward = doc(9, *ups)
    backward = doc(9, ups[0], ups[2], ups[3], ups[4], ups[1], skip_gc=True)  # b's write last
    assert fields(forward) == fields(backward)
    assert compact_state(forward.get_update()).update == compact_state(backward.get_update()).update


def test_sequence_tombstones_stay() -> None:
    """A later insert names deleted neighbours as origin and right origin: array tombstones
    are kept (as ContentDeleted) and a concurrent insert lands exactly as without compaction."""
    a = doc(100)
    arr = a.get("list", type=pycrdt.Array)
    arr.extend(list(range(10)))
    b = doc(200, a.get_update())
    late = delta(b, lambda: b.get("list", type=pycrdt.Array).insert(5, "late"))
    del arr[3:8]
    result = compact_state(a.get_update())
    assert result.dropped_items == 0
    refs = [s.ref for _, structs in decode_raw(result.update).clients for s in structs]
    assert REF_DELETED in refs
    compacted = doc(1, result.update, rewrite_update(late, result.dropped))
    assert rewrite_update(late, result.dropped) is late
    a.apply_update(late)
    assert everything(compacted) == everything(a)


def test_subdocuments_are_refused() -> None:
    d = doc(1)
    d.get("fields", type=pycrdt.Map)["sub"] = pycrdt.Doc()
    with pytest.raises(PayloadError, match="sub-document"):
        compact_state(d.get_update())


def test_states_with_gaps_are_refused() -> None:
    a = doc(1)
    a.get("fields", type=pycrdt.Map)["x"] = 1
    sv = a.get_state()
    a.get("fields", type=pycrdt.Map)["y"] = 2
    with pytest.raises(PayloadError, match="clock 0"):
        compact_state(a.get_update(sv))
    skip = RawStruct(1, 0, 3, 10, None, None, None, None, b"")
    with pytest.raises(PayloadError, match="skip"):
        compact_state(encode_raw(RawUpdate(((1, (skip,)),), ())))


# -- rewriting and exporting ----------------------------------------------------------------


def test_a_deleted_key_set_again_by_an_uncompacted_replica() -> None:
    """yjs: a map ``set`` names the key's current item — here a deleted tail — as origin; an
    item whose origin is GC is itself GC'd. Without the rewrite the write would vanish."""
    a = doc(1)
    fa = a.get("fields", type=pycrdt.Map)
    fa["k"] = "old"
    del fa["k"]
    b = doc(2, a.get_update())
    late = delta(b, lambda: b.get("fields", type=pycrdt.Map).__setitem__("k", "new"))
    result = compact_state(a.get_update())
    assert result.dropped.find((1, 0)) == 0
    assert result.dropped.anchors == (("fields", "k"),)
    assert fields(doc(3, result.update, late)) == {}  # the write is lost without the rewrite
    rewritten = rewrite_update(late, result.dropped)
    assert rewritten != late
    assert fields(doc(3, result.update, rewritten)) == fields(b) == {"k": "new"}


def test_export_makes_compacted_writes_land_right_on_uncompacted_replicas() -> None:
    """YATA orders items with equal origins by client id: an origin-less ``set`` from a lower
    client id lands *before* the old tail on an uncompacted replica and is deleted there.
    ``export_update`` names the tail as origin instead; ``rewrite_update`` undoes it."""
    a = doc(1000)
    fa = a.get("fields", type=pycrdt.Map)
    fa["k"] = "old"
    del fa["k"]
    result = compact_state(a.get_update())
    compacted = doc(5, result.update)
    local = delta(compacted, lambda: compacted.get("fields", type=pycrdt.Map).__setitem__("k", 1))
    assert fields(doc(6, a.get_update(), local)) == {}  # lost on an uncompacted replica
    wire = export_update(local, result.dropped)
    assert fields(doc(6, a.get_update(), wire)) == {"k": 1}
    assert rewrite_update(wire, result.dropped) == local
    assert export_update(local, DroppedRanges()) is local


def test_concurrent_contributions_keep_their_chains() -> None:
    """A contribution outside F that is concurrent with F can name any item of a chain, not
    only its tail. p (client 3) sets k; y (client 3) overwrites it; z (client 5) overwrites p
    concurrently. F = {p, y}. Uncompacted: y and z both follow p, ordered by client id: p, y,
    z → z wins. Dropping p without knowing z loses z (its origin is gone: yjs GCs it); turning
    z's origin into "none" instead (the first design) happens to work here but resurrects
    deleted values elsewhere (see docs/gc.md). ``concurrent=[z]`` keeps k's chain whole."""
    a, b = doc(3), doc(5)
    fa = a.get("fields", type=pycrdt.Map)
    p = delta(a, lambda: fa.__setitem__("k", "p"))
    b.apply_update(p)
    z = delta(b, lambda: b.get("fields", type=pycrdt.Map).__setitem__("k", "z"))
    y = delta(a, lambda: fa.__setitem__("k", "y"))
    checkpoint = doc(9, p, y).get_update()  # F: what every replica holds
    reference = doc(9, p, y, z)
    assert fields(reference) == {"k": "z"}

    blind = compact_state(checkpoint)
    assert fields(doc(9, blind.update, rewrite_update(z, blind.dropped))) == {"k": "y"}

    kept = compact_state(checkpoint, concurrent=[z])
    assert kept.dropped_items == 0
    assert fields(doc(9, kept.update, rewrite_update(z, kept.dropped))) == fields(reference)


def test_writes_into_a_deleted_nested_map_stay_invisible() -> None:
    a = doc(1)
    fa = a.get("fields", type=pycrdt.Map)
    fa["n"] = pycrdt.Map({"x": 1})
    b = doc(2, a.get_update())
    stale = b.get("fields", type=pycrdt.Map)["n"]
    del fa["n"]
    late = delta(b, lambda: stale.__setitem__("y", 2))
    later = delta(b, lambda: stale.__setitem__("x", 3))
    result = compact_state(a.get_update())
    compacted = doc(3, result.update)
    for u in (late, later):
        compacted.apply_update(rewrite_update(u, result.dropped))
        a.apply_update(u)
    assert fields(compacted) == fields(a) == {}


def test_duplicates_of_dropped_items_are_ignored() -> None:
    a = overwritten_doc()
    old = a.get_update()
    result = compact_state(old)
    compacted = doc(3, result.update)
    before = compacted.get_update()
    rewritten = rewrite_update(old, result.dropped)
    kinds = {s.ref for _, structs in decode_raw(rewritten).clients for s in structs}
    assert REF_GC in kinds
    compacted.apply_update(rewritten)
    compacted.apply_update(old)
    assert compacted.get_update() == before
    assert fields(compacted) == fields(a)


def test_a_resent_struct_straddling_a_dropped_range_is_split() -> None:
    """b typed "abc" into a text of map n (in F), a deleted n (in F), b — not knowing — typed
    "def"; yrs merges b's two runs into one struct, so b's full state re-sends "abcdef" as one
    struct straddling a dropped range. The dropped part becomes GC, the rest follows it (its
    origin is gone, so it is GC'd too: its parent is deleted anyway). (With GC on, yrs
    turns "abc" into GC itself; a ``skip_gc`` checkpoint leaves the dropping to us.)"""
    a, b = doc(1, skip_gc=True), doc(2)
    fa = a.get("fields", type=pycrdt.Map)
    fa["n"] = pycrdt.Map({"t": pycrdt.Text()})
    b.apply_update(a.get_update())
    stale_text = b.get("fields", type=pycrdt.Map)["n"]["t"]
    stale_text += "abc"
    a.apply_update(b.get_update())
    del fa["n"]
    result = compact_state(a.get_update())
    assert result.dropped.find((2, 0)) == VOID
    stale_text += "def"
    resent = b.get_update()
    b_structs = dict(decode_raw(resent).clients)[2]
    assert [(s.clock, s.length) for s in b_structs] == [(0, 6)]
    rewritten = rewrite_update(resent, result.dropped)
    pieces = dict(decode_raw(rewritten).clients)[2]
    assert [(s.clock, s.length, s.ref) for s in pieces] == [(0, 3, REF_GC), (3, 3, REF_GC)]
    compacted = doc(3, result.update, rewritten)
    reference = doc(7, a.get_update(), resent)
    assert fields(compacted) == fields(reference) == {}


def test_rewrite_returns_the_same_object_when_nothing_points_into_dropped_ranges() -> None:
    a = overwritten_doc()
    result = compact_state(a.get_update())
    compacted = doc(3, result.update)
    fresh_write = delta(
        compacted, lambda: compacted.get("fields", type=pycrdt.Map).update({"z": 1})
    )
    assert rewrite_update(fresh_write, result.dropped) is fresh_write
    assert rewrite_update(fresh_write, DroppedRanges()) is fresh_write


def test_header_scan_agrees_with_the_full_decoder() -> None:
    """``scan_items`` reads exactly the headers ``decode_raw`` reads, for every content kind
    it steps over, and gives up (None) on the kinds it does not."""
    a, b = rich_docs()
    updates = [a.get_update(), b.get_update(), overwritten_doc().get_update()]
    m = a.get("fields", type=pycrdt.Map)
    updates.append(delta(a, lambda: m.update({"n": {"deep": [1, {"x": "é😀"}]}, "f": 1.5})))
    updates.append(delta(a, lambda: m.pop("n")))
    scanned = 0
    for u in updates:
        heads = scan_items(u)
        if heads is None:
            continue
        scanned += 1
        want = [(s.client, s.clock, s.length, s.origin, s.right_origin, s.parent, s.parent_sub)
                for _, structs in decode_raw(u).clients for s in structs if s.is_item]
        assert heads == want
    assert scanned == 3
    assert scan_items(a.get_update()) is None  # formats, embeds, XML: the full path decides
    assert scan_items(b"\x01\x01") is None  # truncated: never raises


def test_the_fast_checks_never_skip_a_needed_rewrite_or_export() -> None:
    """``rewrite_needed`` / ``export_needed`` False must mean the full functions return the
    update itself; the straddling re-send and a yjs-style set of a deleted key need them."""
    a = overwritten_doc()
    result = compact_state(a.get_update())
    dropped = result.dropped
    compacted = doc(3, result.update)
    cm = compacted.get("fields", type=pycrdt.Map)
    candidates = [a.get_update(), *(delta(compacted, lambda i=i: cm.update({f"k{i}": i}))
                                    for i in range(8))]
    assert dropped.tails  # overwritten_doc deletes a key
    (_parent, key), _tail = next(iter(dropped.tails.items()))
    candidates.append(delta(compacted, lambda: cm.update({key: "again"})))
    for u in candidates:
        if not rewrite_needed(u, dropped):
            assert rewrite_update(u, dropped) is u
        if not export_needed(u, dropped):
            assert export_update(u, dropped) is u
    assert rewrite_needed(a.get_update(), dropped)  # re-sends dropped items
    assert export_needed(candidates[-1], dropped)  # sets a key that has an anchor
    assert not rewrite_needed(candidates[1], dropped)
    assert not rewrite_needed(candidates[1], DroppedRanges())


# -- the dropped ranges ---------------------------------------------------------------------


def test_dropped_ranges_encode_union_and_lookup() -> None:
    one = DroppedRanges.build([(5, 0, 3, VOID), (5, 3, 4, 0), (5, 4, 9, VOID)], [("fields", "a")])
    two = DroppedRanges.build([(7, 10, 12, 0), (5, 20, 21, 0)], [((5, 2), "a")])
    both = one.union(two)
    assert DroppedRanges.decode(both.encode()) == both
    assert both.find((5, 3)) == 0 and both.find((7, 11)) == 1 and both.find((5, 5)) == VOID
    assert both.find((5, 9)) is None and both.find((6, 0)) is None
    assert both.overlaps(5, 2, 5) == [(2, 3, VOID), (3, 4, 0), (4, 5, VOID)]
    assert both.clocks() == 12 and len(both) == 5
    assert both.tails == {("fields", "a"): (5, 3), ((5, 2), "a"): (5, 20)}
    with pytest.raises(PayloadError):
        DroppedRanges.build([(5, 0, 3, VOID), (5, 2, 4, VOID)], [])
    with pytest.raises(PayloadError):
        DroppedRanges.build([(5, 0, 3, 4)], [])
    for bad in (b"", b"\x01\x02", both.encode()[:-1], both.encode() + b"\x00"):
        with pytest.raises(PayloadError):
            DroppedRanges.decode(bad)
