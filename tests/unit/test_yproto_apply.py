"""``Memory.apply_yjs_update``: an outside Yjs client's update becomes a local contribution,
or is refused with the replica unchanged (``hybridsync.interop._apply``)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pycrdt
import pytest

import hybridsync as hs
from hybridsync.errors import YjsDependencyError, YjsUpdateError


def memory(name: str = "host", **kw: Any) -> hs.Memory:
    return hs.Memory("space", name, clock=lambda: 0, incarnation=1, **kw)


def client(client_id: int = 9001, base: bytes = b"") -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    if base:
        doc.apply_update(base)
    return doc


def fields(doc: pycrdt.Doc[Any]) -> pycrdt.Map[Any]:
    return doc.get("fields", type=pycrdt.Map)


def edit(doc: pycrdt.Doc[Any], change: Callable[[pycrdt.Doc[Any]], None]) -> bytes:
    """The update ``change`` makes to ``doc`` (what a Yjs client sends)."""
    sv = doc.get_state()
    change(doc)
    return bytes(doc.get_update(sv))


def snapshot(mem: hs.Memory) -> tuple[str, tuple[str, ...], int, str]:
    return mem.fields_json(), mem.heads, len(mem.history()), mem.state_digest()


def pair_sync(a: hs.Memory, b: hs.Memory) -> None:
    for _ in range(20):
        fa, fb = a.sync_to(b.peer), b.sync_to(a.peer)
        if not fa and not fb:
            return
        for f in fa:
            b.receive(a.peer, f)
        for f in fb:
            a.receive(b.peer, f)


def test_an_update_becomes_one_contribution_noted_with_its_origin() -> None:
    mem = memory()
    doc = client()
    update = edit(doc, lambda d: fields(d).update({"goal": "ship 🚀", "n": 3}))
    c = mem.apply_yjs_update(update, origin="yjs:9001")
    assert c is not None
    assert (c.author, c.seq, c.note, c.kind) == ("host", 1, "yjs:9001", "fields")
    assert mem.history() == [c]
    assert mem.fields.to_dict() == {"goal": "ship 🚀", "n": 3}
    assert type(mem.fields["n"]) is int
    # the same update again, or one with nothing new: no commit
    assert mem.apply_yjs_update(update, origin="yjs:9001") is None
    assert mem.apply_yjs_update(b"\x00\x00", origin="yjs:9001") is None
    assert len(mem.history()) == 1


def test_observers_see_the_commit_and_other_peers_get_it() -> None:
    a, b = memory("a"), memory("b")
    seen: list[hs.Change] = []
    a.observe(seen.append)
    doc = client()
    a.apply_yjs_update(edit(doc, lambda d: fields(d).__setitem__("k", {"x": 1})),
                       origin="yjs:9001")
    assert [(ch.local, ch.note, ch.paths) for ch in seen] == [(True, "yjs:9001", ("k",))]
    pair_sync(a, b)
    assert b.fields.to_dict() == {"k": {"x": 1}}
    assert b.history()[0].note == "yjs:9001"


def test_a_delete_from_the_client_is_committed() -> None:
    mem = memory()
    mem.fields["a"] = 1
    mem.fields["b"] = 2
    doc = client(base=bytes(mem.doc.get_update()))
    c = mem.apply_yjs_update(edit(doc, lambda d: fields(d).pop("a")), origin="yjs:1")
    assert c is not None
    assert mem.fields.to_dict() == {"b": 2}


def test_pending_region_edits_commit_first_on_their_own() -> None:
    mem = memory()
    mem.text("notes").set("draft")
    c = mem.apply_yjs_update(edit(client(), lambda d: fields(d).__setitem__("k", 1)),
                             origin="yjs:1")
    assert c is not None
    kinds = [(x.kind, x.note) for x in mem.history()]
    assert kinds == [("multi", ""), ("fields", "yjs:1")]


def test_missing_dependencies_are_refused_with_the_replica_unchanged() -> None:
    mem = memory()
    mem.fields["base"] = 0
    doc = client(base=bytes(mem.doc.get_update()))
    first = edit(doc, lambda d: fields(d).__setitem__("first", 1))
    second = edit(doc, lambda d: fields(d).__setitem__("second", 2))
    overwrite = edit(doc, lambda d: fields(d).__setitem__("first", 3))  # origin: "first"
    delete = edit(doc, lambda d: fields(d).pop("second"))
    before = snapshot(mem)
    for update in (second, overwrite, delete):
        with pytest.raises(YjsDependencyError):
            mem.apply_yjs_update(update, origin="yjs:9001")
        assert snapshot(mem) == before
    for update in (first, second, overwrite, delete):
        assert mem.apply_yjs_update(update, origin="yjs:9001") is not None
    assert mem.fields.to_dict() == {"base": 0, "first": 3}
    # and nothing is left pending in pycrdt: a replica built from the log is identical
    other = memory("other")
    pair_sync(mem, other)
    assert other.fields_json() == mem.fields_json()


def test_a_dependency_in_the_same_update_is_fine() -> None:
    mem = memory()
    doc = client()
    sv = doc.get_state()
    fields(doc)["a"] = {"b": 1}
    fields(doc)["a"]["b"] = 2
    fields(doc).pop("a")
    fields(doc)["c"] = [1, 2]
    assert mem.apply_yjs_update(bytes(doc.get_update(sv)), origin="yjs:1") is not None
    assert mem.fields.to_dict() == {"c": [1, 2]}


def _refused(mem: hs.Memory, update: bytes, words: str) -> None:
    before = snapshot(mem)
    with pytest.raises(YjsUpdateError) as info:
        mem.apply_yjs_update(update, origin="yjs:1")
    assert not isinstance(info.value, YjsDependencyError)
    assert words in str(info.value)
    assert snapshot(mem) == before


def _set_in_root(d: pycrdt.Doc[Any], key: str, value: Any) -> None:
    fields(d)[key] = value


def test_what_the_fields_model_cannot_hold_is_refused() -> None:
    mem = memory()
    mem.fields["keep"] = 1
    base = bytes(mem.doc.get_update())
    _refused(mem, edit(client(base=base), lambda d: _set_in_root(d, "t", pycrdt.Text("x"))),
             "Y.Text")
    _refused(mem, edit(client(base=base), lambda d: _set_in_root(d, "x", pycrdt.XmlFragment())),
             "Y.XmlFragment")
    _refused(mem, edit(client(base=base), lambda d: _set_in_root(d, "d", pycrdt.Doc())),
             "sub-documents")
    _refused(mem, edit(client(base=base),
                       lambda d: d.get("notes", type=pycrdt.Map).__setitem__("k", 1)),
             "root type 'notes'")
    list_root = client(5)
    list_root.get("fields", type=pycrdt.Array).append(1)
    _refused(mem, bytes(list_root.get_update()), "list items directly in the root")
    nested_text = edit(client(base=base),
                       lambda d: _set_in_root(d, "m", pycrdt.Map({"t": pycrdt.Text("deep")})))
    _refused(mem, nested_text, "Y.Text")
    assert mem.fields.to_dict() == {"keep": 1}


def _any_set_update(client_id: int, key: str, any_value: bytes) -> bytes:
    """A v1 update with one map item ``fields[key] = <lib0 Any>`` (built by hand)."""
    out = bytearray([1, 1])
    out += _varuint(client_id) + b"\x00"  # client, clock 0
    out += bytes([8 | 0x20])  # ContentAny, parent and key written
    out += b"\x01" + _varstring("fields") + _varstring(key)
    out += b"\x01" + any_value  # one value
    out += b"\x00"  # empty delete set
    return bytes(out)


def _varuint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _varstring(s: str) -> bytes:
    raw = s.encode()
    return _varuint(len(raw)) + raw


def test_javascript_bigints_beyond_the_safe_range_are_refused() -> None:
    mem = memory()
    _refused(mem, _any_set_update(11, "big", b"\x7a" + struct.pack(">q", 2**60)), "2**53")
    # a BigInt within ±2**53 is just an int
    small = _any_set_update(12, "small", b"\x7a" + struct.pack(">q", -5))
    assert mem.apply_yjs_update(small, origin="yjs:12") is not None
    assert mem.fields["small"] == -5 and type(mem.fields["small"]) is int
    # the number model's tagged big int is what a client writes instead
    tagged = edit(client(13), lambda d: _set_in_root(d, "t", {"$bigint": str(2**70)}))
    mem.apply_yjs_update(tagged, origin="yjs:13")
    assert mem.fields["t"] == 2**70


def _nest(doc: pycrdt.Doc[Any], levels: int, at: list[str]) -> None:
    cur: Any = fields(doc)
    for k in at:
        cur = cur[k]
    with doc.transaction():
        for _ in range(levels):
            nxt: pycrdt.Map[Any] = pycrdt.Map()
            cur["k"] = nxt
            cur = nxt


def test_nesting_deeper_than_64_is_refused_in_one_update_and_across_updates() -> None:
    mem = memory()
    doc = client()
    _refused(mem, edit(client(), lambda d: _nest(d, 65, [])), "65 levels")
    ok = edit(doc, lambda d: _nest(d, 40, []))
    assert mem.apply_yjs_update(ok, origin="yjs:1") is not None
    # another writer (a remote peer) adds 20 more inside, then the client 10 more: 70
    other = memory("other")
    pair_sync(mem, other)
    path = ["k"] * 40
    view: Any = other.fields
    for k in path:
        view = view[k]
    cur = view
    for _ in range(20):
        cur["k"] = {}
        cur = cur["k"]
    pair_sync(mem, other)
    doc.apply_update(mem.doc.get_update(doc.get_state()))
    _refused(mem, edit(doc, lambda d: _nest(d, 10, ["k"] * 60)), "nest 65 levels")
    exactly = edit(client(77, bytes(mem.doc.get_update())), lambda d: _nest(d, 4, ["k"] * 60))
    assert mem.apply_yjs_update(exactly, origin="yjs:77") is not None  # 64 levels: fine
    assert len(mem.fields_json()) > 0


def test_malformed_updates_are_refused() -> None:
    mem = memory()
    mem.fields["keep"] = 1
    good = edit(client(base=bytes(mem.doc.get_update())), lambda d: _set_in_root(d, "x", 1))
    for bad in (b"", b"\x01", good[:-1], good + b"\x00", b"\x05\x01\x02\x03"):
        _refused(mem, bad, "malformed")
    with pytest.raises(YjsUpdateError):
        mem.apply_yjs_update("text", origin="yjs:1")  # type: ignore[arg-type]


def test_origin_and_transactions_are_checked() -> None:
    mem = memory()
    update = edit(client(), lambda d: _set_in_root(d, "x", 1))
    for origin in ("", 5, "x" * 5000):
        with pytest.raises(hs.ConfigError):
            mem.apply_yjs_update(update, origin=origin)  # type: ignore[arg-type]
    with mem.transaction(), pytest.raises(hs.TransactionError):
        mem.apply_yjs_update(update, origin="yjs:1")
    assert mem.fields.to_dict() == {}


def test_a_client_edit_concurrent_with_a_remote_one_is_a_conflict_everywhere() -> None:
    a, b = memory("a"), memory("b")
    a.fields["task"] = "open"
    pair_sync(a, b)
    doc = client(base=bytes(a.doc.get_update()))
    b.fields["task"] = "b took it"
    a.apply_yjs_update(edit(doc, lambda d: _set_in_root(d, "task", "js took it")),
                       origin="yjs:9001")
    pair_sync(a, b)
    assert a.fields_json() == b.fields_json()
    assert a.conflicts() == b.conflicts()
    [conflict] = a.conflicts()
    assert conflict.location == "task"
    assert set(conflict.values) == {"b took it", "js took it"}
