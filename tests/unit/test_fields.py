"""The fields plane through ``mem.fields``: the API of DESIGN.md §2, the value and number
model of docs/fields.md, commits as Yjs v1 updates, transactions, observers and conflicts."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hybridsync as hs
from hybridsync.fields import plain
from hybridsync.testing import assert_converged, snapshot, sync_all, sync_pair

MakeMemory = Callable[..., hs.Memory]


@pytest.fixture
def mem(make_memory: MakeMemory) -> hs.Memory:
    return make_memory("a")


def _doc_of(payloads: list[bytes]) -> dict[str, Any]:
    """What a stock Yjs client sees after applying the payloads: the map ``fields``."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for p in payloads:
        doc.apply_update(p)
    return plain(doc.get("fields", type=pycrdt.Map).to_py())  # type: ignore[no-any-return]


# ---- the mapping API ---------------------------------------------------------------------


def test_design_example(mem: hs.Memory) -> None:
    mem.fields["goal"] = "ship v1"
    mem.fields["tasks"] = {"t1": {"status": "open"}}
    assert mem.fields["tasks"]["t1"]["status"] == "open"
    mem.fields["tasks"]["t1"]["status"] = "done"
    del mem.fields["goal"]
    assert mem.fields.to_dict() == {"tasks": {"t1": {"status": "done"}}}
    assert len(mem.history()) == 4


def test_nested_values_become_nested_crdt_types(mem: hs.Memory) -> None:
    mem.fields["tasks"] = {"t1": {"tags": ["a", {"deep": [1]}]}}
    root = mem.doc.get("fields", type=pycrdt.Map)
    tasks = root["tasks"]
    assert isinstance(tasks, pycrdt.Map)
    assert isinstance(tasks["t1"], pycrdt.Map)
    assert isinstance(tasks["t1"]["tags"], pycrdt.Array)
    assert isinstance(tasks["t1"]["tags"][1], pycrdt.Map)


def test_reads_are_plain_values_or_views_equal_to_them(mem: hs.Memory) -> None:
    mem.fields.update(s="x", n=1, f=2.5, none=None, b=b"\x01", t=True,
                      d={"k": [1, {"z": 2}]}, lst=[1, "two"])
    assert type(mem.fields["s"]) is str and type(mem.fields["n"]) is int
    assert type(mem.fields["f"]) is float and mem.fields["none"] is None
    assert type(mem.fields["b"]) is bytes and mem.fields["t"] is True
    d = mem.fields["d"]
    assert isinstance(d, hs.FieldMap) and d == {"k": [1, {"z": 2}]}
    assert d != {"k": [1, {"z": 3}]} and d != {"k": [1, {"z": 2}], "x": 1}
    lst = mem.fields["lst"]
    assert isinstance(lst, hs.FieldList) and lst == [1, "two"] and lst == (1, "two")
    assert lst != [1, "three"] and lst != [1]
    plain_copy = mem.fields.to_dict()
    assert type(plain_copy) is dict and type(plain_copy["d"]) is dict
    assert type(plain_copy["d"]["k"]) is list and type(plain_copy["d"]["k"][1]) is dict
    assert mem.fields.to_py() == plain_copy
    assert list(mem.fields) == sorted(plain_copy) and len(mem.fields) == 8


def test_missing_keys_and_delete(mem: hs.Memory) -> None:
    with pytest.raises(KeyError):
        mem.fields["absent"]
    assert mem.fields.get("absent") is None and mem.fields.get("absent", 5) == 5
    assert "absent" not in mem.fields and 3 not in mem.fields  # type: ignore[operator]
    with pytest.raises(KeyError):
        del mem.fields["absent"]
    assert mem.history() == []  # a failed delete commits nothing
    mem.fields["k"] = {"inner": 1}
    del mem.fields["k"]["inner"]
    assert mem.fields["k"] == {}
    del mem.fields["k"]
    assert "k" not in mem.fields and mem.fields.to_dict() == {}


def test_live_views_write_through_and_see_remote_changes(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["tasks"] = {"t1": {"status": "open"}}
    view = a.fields["tasks"]["t1"]
    sync_pair(a, b)
    b.fields["tasks"]["t1"]["status"] = "done"
    b.fields["tasks"]["t2"] = {"status": "new"}
    sync_pair(a, b)
    assert view["status"] == "done"  # the old view is live
    assert a.fields["tasks"] == {"t1": {"status": "done"}, "t2": {"status": "new"}}
    assert_converged([a, b])


def test_list_views(mem: hs.Memory) -> None:
    mem.fields["l"] = [1, 2, 3]
    lst = mem.fields["l"]
    lst.append({"x": 1})
    lst.insert(0, "first")
    lst.insert(-1, "before-last")
    lst.insert(100, "end")
    lst[1] = 10
    del lst[2]
    lst.extend([None, b"\x00"])
    assert lst == ["first", 10, 3, "before-last", {"x": 1}, "end", None, b"\x00"]
    assert lst[-1] == b"\x00" and lst[1:3] == [10, 3]
    lst[4]["x"] = 2
    assert mem.fields["l"][4] == {"x": 2}
    with pytest.raises(IndexError):
        lst[8]
    with pytest.raises(IndexError):
        lst[-9] = 1
    n = len(mem.history())
    with pytest.raises(hs.FieldValueError):
        lst[0:1] = [1]
    with pytest.raises(hs.FieldValueError):
        del lst[0:1]
    with pytest.raises(hs.FieldValueError):
        lst["0"]  # type: ignore[call-overload]
    assert len(mem.history()) == n
    assert _doc_of([c.payload for c in mem.history()])["l"] == lst.to_py()


def test_every_write_outside_a_transaction_is_one_contribution(mem: hs.Memory) -> None:
    writes: list[Callable[[], object]] = [
        lambda: mem.fields.__setitem__("goal", "ship v1"),
        lambda: mem.fields.__setitem__("tasks", {"t1": {"status": "open"}}),
        lambda: mem.fields["tasks"]["t1"].__setitem__("status", "done"),
        lambda: mem.fields.update(a=1, b=[1, 2]),
        lambda: mem.fields["b"].append(3),
        lambda: mem.fields.__delitem__("goal"),
        lambda: mem.fields["tasks"].clear(),
    ]
    for i, write in enumerate(writes, start=1):
        write()
        hist = mem.history()
        assert len(hist) == i
        newest = max(hist, key=lambda c: c.seq)
        assert newest.kind == "fields" and newest.author == "a" and newest.seq == i
        # the payload is a Yjs v1 update: a stock Yjs doc that applies every payload so far
        # sees exactly the replica's fields
        assert _doc_of([c.payload for c in hist]) == mem.fields.to_dict()


def test_payload_is_a_plain_yjs_update(mem: hs.Memory) -> None:
    mem.fields["goal"] = "ship v1"
    (c,) = mem.history()
    assert _doc_of([c.payload]) == {"goal": "ship v1"}
    assert pycrdt.get_state(c.payload)  # decodable by yrs itself


# ---- the value and number model ----------------------------------------------------------

ROUND_TRIPS: list[tuple[object, object]] = [
    (0, 0), (-1, -1), (3, 3), (2**53, 2**53), (-(2**53), -(2**53)),
    (2**53 + 1, 2**53 + 1), (-(2**53 + 1), -(2**53 + 1)), (2**60, 2**60),
    (2**63 - 1, 2**63 - 1), (2**63, 2**63), (-(2**63), -(2**63)), (-(2**200), -(2**200)),
    (2**256 - 1, 2**256 - 1), (-(2**256 - 1), -(2**256 - 1)),
    (2.5, 2.5), (2.0, 2), (-0.0, 0), (1e300, 1e300), (-1.5e-300, -1.5e-300),
    (float("inf"), float("inf")), (float("-inf"), float("-inf")), (2.0**60, 2.0**60),
    (True, True), (False, False), (None, None),
    ("", ""), ("plain", "plain"), ("emoji \N{PARTY POPPER}\N{FACE WITH TEARS OF JOY}", None),
    ("e\u0301 combining \u0301\u0302", None), ("nul \x00 inside", None),
    ("\u05e9\u05dc\u05d5\u05dd rtl", None),
    ("\U0001F468\u200d\U0001F469\u200d\U0001F467 zwj", None),
    (b"", b""), (b"\x00\xff" * 10, b"\x00\xff" * 10), (bytearray(b"ab"), b"ab"),
    (memoryview(b"mv"), b"mv"), ((1, 2), [1, 2]), ([], []), ({}, {}),
    ({"a": {"b": {"c": [1, (2, 3), {"d": None}]}}}, {"a": {"b": {"c": [1, [2, 3], {"d": None}]}}}),
    ([2**60, 2.0, -0.0, b"\x01"], [2**60, 2, 0, b"\x01"]),
]


@pytest.mark.parametrize(
    ("written", "expected"),
    ROUND_TRIPS,
    ids=[f"{i}-{type(w).__name__}" for i, (w, _) in enumerate(ROUND_TRIPS)],
)
def test_value_round_trips_locally_and_through_sync(
    make_memory: MakeMemory, written: object, expected: object
) -> None:
    if expected is None and written is not None:
        expected = written
    a, b = make_memory("a"), make_memory("b")
    a.fields["v"] = written
    sync_pair(a, b)
    for m in (a, b):
        got = m.fields["v"]
        got = got.to_py() if isinstance(got, hs.FieldMap | hs.FieldList) else got
        assert got == expected
        assert type(got) is type(expected)
        if isinstance(expected, float) and expected == 0:
            assert math.copysign(1, got) == math.copysign(1, expected)
    assert a.fields_json() == b.fields_json()


def test_ints_stay_ints_at_every_depth(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["d"] = {"x": [1, 2**60, {"y": -(2**100)}], "z": 7}
    sync_pair(a, b)
    got = b.fields.to_dict()["d"]
    assert got == {"x": [1, 2**60, {"y": -(2**100)}], "z": 7}
    assert [type(v) for v in got["x"][:2]] == [int, int] and type(got["x"][2]["y"]) is int


def test_nan_round_trips(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["v"] = float("nan")
    sync_pair(a, b)
    assert math.isnan(b.fields["v"]) and a.fields_json() == b.fields_json()


def test_bool_is_not_a_number(mem: hs.Memory) -> None:
    mem.fields["flags"] = [True, 1, False, 0]
    got = mem.fields["flags"].to_py()
    assert [type(v) for v in got] == [bool, int, bool, int]


def test_nesting_up_to_the_limit(mem: hs.Memory) -> None:
    value: object = 1
    for _ in range(64):
        value = [value]
    mem.fields["deep"] = value
    assert mem.fields["deep"] == value


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"k": value}
    return value


class _Custom:
    pass


INVALID: list[tuple[str, Callable[[], object]]] = [
    ("set", lambda: {1, 2}),
    ("frozenset", lambda: frozenset()),
    ("object", _Custom),
    ("complex", lambda: 1 + 2j),
    ("int key", lambda: {1: "x"}),
    ("None key", lambda: {None: "x"}),
    ("tuple key", lambda: {(1,): "x"}),
    ("bytes key", lambda: {b"k": "x"}),
    ("nested non-str key", lambda: {"ok": [{"fine": 1}, {2: "bad"}]}),
    ("2**256", lambda: 2**256),
    ("-2**256", lambda: -(2**256)),
    ("nested huge int", lambda: [1, [2, 10**100]]),
    ("65 levels", lambda: _deep(65)),
    ("bytes over 8 MiB", lambda: b"x" * ((8 << 20) + 1)),
    ("str over 8 MiB", lambda: "x" * ((8 << 20) + 1)),
    ("several parts over 8 MiB", lambda: ["x" * (5 << 20), b"y" * (4 << 20)]),
    ("lone surrogate", lambda: "a\ud800b"),
    ("lone surrogate in a list", lambda: ["ok", "\udfff"]),
    ("lone surrogate key", lambda: {"ok": 1, "\ud800": 1}),
    ("reserved bigint tag", lambda: {"$bigint": "5"}),
    ("nested reserved bigint tag", lambda: {"a": [{"$bigint": "12"}]}),
    ("function", lambda: len),
]


@pytest.fixture
def seeded(make_memory: MakeMemory) -> hs.Memory:
    m = make_memory("a")
    m.fields["k"] = "before"
    m.fields["l"] = [1, 2]
    m.fields["d"] = {"x": 1}
    return m


def _assert_rejected(m: hs.Memory, write: Callable[[], object]) -> None:
    before = snapshot(m)
    with pytest.raises(hs.FieldValueError) as info:
        write()
    assert isinstance(info.value, hs.HybridSyncError) and isinstance(info.value, TypeError)
    assert snapshot(m) == before


@pytest.mark.parametrize("name", [n for n, _ in INVALID])
def test_invalid_values_raise_and_change_nothing(name: str, seeded: hs.Memory) -> None:
    make = dict(INVALID)[name]
    m = seeded
    _assert_rejected(m, lambda: m.fields.__setitem__("k", make()))
    _assert_rejected(m, lambda: m.fields.__setitem__("new", make()))
    _assert_rejected(m, lambda: m.fields["d"].__setitem__("x", make()))
    _assert_rejected(m, lambda: m.fields.update(k="fine", other=make()))
    _assert_rejected(m, lambda: m.fields["l"].append(make()))
    _assert_rejected(m, lambda: m.fields["l"].insert(0, make()))
    _assert_rejected(m, lambda: m.fields["l"].extend([0, make()]))
    _assert_rejected(m, lambda: m.fields["l"].__setitem__(0, make()))


@pytest.mark.parametrize("name", [n for n, _ in INVALID])
def test_invalid_value_inside_a_transaction_changes_nothing(name: str, seeded: hs.Memory) -> None:
    make = dict(INVALID)[name]
    before = snapshot(seeded)
    with seeded.transaction():
        seeded.fields["k"] = "inside"
        with pytest.raises(hs.FieldValueError):
            seeded.fields["d"]["x"] = make()
        assert seeded.fields["d"]["x"] == 1
    assert seeded.fields["k"] == "inside"
    assert len(seeded.history()) == len(before.history) + 1


@pytest.mark.parametrize("key", [1, None, b"k", ("t",), 1.5, "\ud800"])
def test_invalid_top_level_keys(key: object, seeded: hs.Memory) -> None:
    _assert_rejected(seeded, lambda: seeded.fields.__setitem__(key, 1))  # type: ignore[index]


def test_value_just_under_the_size_limit_is_accepted(mem: hs.Memory) -> None:
    mem.fields["big"] = b"x" * ((8 << 20) - 10)
    mem.fields["text"] = "y" * ((8 << 20) - 10)  # 8 MiB of UTF-8 is allowed: the limit is bytes
    assert len(mem.fields["text"]) == (8 << 20) - 10


_leaf = (
    st.none() | st.booleans() | st.integers(-(2**255), 2**255)
    | st.floats(allow_nan=False) | st.text() | st.binary(max_size=16)
)
_keys = st.text(max_size=6).filter(lambda k: k != "$bigint")
_level1 = st.lists(_leaf, max_size=4) | st.dictionaries(_keys, _leaf, max_size=4)
_level2 = st.lists(_leaf | _level1, max_size=3) | st.dictionaries(
    _keys, _leaf | _level1, max_size=3
)
json_like = _leaf | _level1 | _level2  # explicit nesting rather than st.recursive


def _model(value: object) -> object:
    """The documented number model: integral floats within ±2**53 read back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [_model(v) for v in value]
    if isinstance(value, dict):
        return {k: _model(v) for k, v in value.items()}
    return value


@settings(max_examples=150)
@given(value=json_like)
def test_any_storable_value_round_trips(value: object) -> None:
    a = hs.Memory("space", "a", clock=lambda: 0, incarnation=1)
    b = hs.Memory("space", "b", clock=lambda: 0, incarnation=2)
    a.fields["v"] = value
    sync_pair(a, b)
    assert a.fields.to_dict()["v"] == b.fields.to_dict()["v"] == _model(value)
    assert a.fields_json() == b.fields_json()


# ---- transactions -------------------------------------------------------------------------


def test_transaction_is_exactly_one_contribution(mem: hs.Memory) -> None:
    mem.fields["tasks"] = {"t1": {"status": "open"}, "t2": {}}
    mem.fields["gone"] = 1
    with mem.transaction(note="claim t1") as m:
        assert m is mem
        mem.fields["tasks"]["t1"]["status"] = "claimed"
        mem.fields["tasks"]["t1"]["by"] = "a"
        mem.fields["owner"] = {"name": "a", "tags": ["x"]}
        mem.fields["owner"]["tags"].append("y")
        del mem.fields["gone"]
        del mem.fields["tasks"]["t2"]
        assert mem.fields["tasks"]["t1"]["status"] == "claimed"  # reads see own writes
    hist = mem.history()
    assert len(hist) == 3
    last = max(hist, key=lambda c: c.seq)
    assert last.note == "claim t1"
    expected = {"owner": {"name": "a", "tags": ["x", "y"]},
                "tasks": {"t1": {"by": "a", "status": "claimed"}}}
    assert mem.fields.to_dict() == expected
    assert _doc_of([c.payload for c in hist]) == expected


def test_empty_transaction_commits_nothing(mem: hs.Memory) -> None:
    with mem.transaction(note="nothing"):
        pass
    assert mem.history() == []


def test_exception_in_a_transaction_rolls_back_visible_changes(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["tasks"] = {"t1": {"status": "open"}}
    a.fields["keep"] = [1, 2]
    a.fields["k"] = "old"
    sync_pair(a, b)
    before = a.fields_json()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), a.transaction(note="fails"):
        a.fields["tasks"]["t1"]["status"] = "claimed"
        a.fields["tasks"]["t2"] = {"x": 1}
        a.fields["keep"].append(3)
        a.fields["keep"][0] = 100
        a.fields["new"] = "value"
        a.fields["k"] = "mid"
        a.fields["k"] = "late"
        del a.fields["tasks"]["t1"]
        raise Boom
    assert a.fields_json() == before
    sync_pair(a, b)
    assert b.fields_json() == before
    assert_converged([a, b])


def test_base_exception_in_a_transaction_also_rolls_back(mem: hs.Memory) -> None:
    mem.fields["k"] = 1
    with pytest.raises(KeyboardInterrupt), mem.transaction():
        mem.fields["k"] = 2
        raise KeyboardInterrupt
    assert mem.fields["k"] == 1


def test_transaction_misuse(mem: hs.Memory, make_memory: MakeMemory) -> None:
    with mem.transaction():
        with pytest.raises(hs.TransactionError), mem.transaction():
            pass
        with pytest.raises(hs.TransactionError):
            mem.sync_to("b")
        with pytest.raises(hs.TransactionError):
            mem.receive("b", b"\x00")
        with pytest.raises(hs.TransactionError):
            mem.commit()
        mem.fields["still"] = "fine"
    assert mem.fields["still"] == "fine" and len(mem.history()) == 1
    for bad in (1, "x" * 5000):
        with pytest.raises(hs.ConfigError), mem.transaction(note=bad):  # type: ignore[arg-type]
            pass


# ---- observers ----------------------------------------------------------------------------


def test_observe_reports_local_and_remote_changes_with_ids(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    seen_a: list[hs.Change] = []
    seen_b: list[hs.Change] = []
    a.observe(seen_a.append)
    b.observe(seen_b.append)
    a.fields["tasks"] = {"t1": {"status": "open"}}
    with a.transaction(note="n"):
        a.fields["tasks"]["t1"]["status"] = "done"
        a.fields["x"] = 1
    sync_pair(a, b)
    ids = [c.hex_id for c in a.history()]
    assert [ch.contribution for ch in seen_a] == ids
    assert [ch.contribution for ch in seen_b] == ids
    assert all(ch.local for ch in seen_a) and not any(ch.local for ch in seen_b)
    assert [(ch.author, ch.seq, ch.note, ch.kind) for ch in seen_b] == [
        ("a", 1, "", "fields"), ("a", 2, "n", "fields")
    ]
    assert "tasks" in seen_a[0].paths
    assert set(seen_b[1].paths) >= {"tasks/t1/status", "x"}


def test_unsubscribe(mem: hs.Memory) -> None:
    seen: list[hs.Change] = []
    unsubscribe = mem.observe(seen.append)
    mem.fields["a"] = 1
    unsubscribe()
    unsubscribe()  # idempotent
    mem.fields["b"] = 2
    assert len(seen) == 1
    with pytest.raises(hs.ConfigError):
        mem.observe("not callable")  # type: ignore[arg-type]


def test_observer_that_raises_does_not_break_sync(
    make_memory: MakeMemory, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make_memory("a"), make_memory("b")
    seen: list[str] = []

    def broken(change: hs.Change) -> None:
        raise RuntimeError("observer bug")

    def also_broken(change: hs.Change) -> None:
        raise hs.FieldValueError("observer misuse")

    b.observe(broken)
    b.observe(also_broken)
    b.observe(lambda ch: seen.append(ch.contribution))
    a.fields["x"] = 1
    a.fields["y"] = 2
    with caplog.at_level(logging.ERROR, logger="hybridsync"):
        sync_pair(a, b)
        b.fields["z"] = 3  # local writes are not broken either
        sync_pair(a, b)
    assert len(seen) == 3
    assert_converged([a, b])
    assert any("observer" in r.getMessage() for r in caplog.records)


def test_observer_may_write(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")

    def react(change: hs.Change) -> None:
        if not change.local and "ping" in b.fields and "pong" not in b.fields:
            b.fields["pong"] = b.fields["ping"] + 1

    b.observe(react)
    a.fields["ping"] = 1
    sync_pair(a, b)
    assert b.fields["pong"] == 2 and a.fields["pong"] == 2
    assert_converged([a, b])


# ---- conflicts ----------------------------------------------------------------------------


def _ids(m: hs.Memory, author: str) -> list[str]:
    return [c.hex_id for c in m.history() if c.author == author]


def test_concurrent_writes_to_one_key_on_two_replicas(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["k"] = "from a"
    b.fields["k"] = "from b"
    sync_pair(a, b)
    assert a.conflicts() == b.conflicts()
    (conflict,) = a.conflicts()
    assert conflict.plane == "fields" and conflict.location == "k"
    assert set(conflict.contributions) == {_ids(a, "a")[0], _ids(a, "b")[0]}
    order = [c.hex_id for c in a.history()]
    assert list(conflict.contributions) == sorted(conflict.contributions, key=order.index)
    by_author = dict(zip(conflict.authors, conflict.values, strict=True))
    assert by_author == {"a": "from a", "b": "from b"}
    assert conflict.paths == ("k", "k")
    assert a.fields["k"] in ("from a", "from b") and a.fields_json() == b.fields_json()
    assert "k" in conflict.detail and a.stats().conflicts == 1


def _three_way(make_memory: MakeMemory) -> list[hs.Memory]:
    mems = [make_memory(p) for p in ("a", "b", "c")]
    for m in mems:
        m.fields["k"] = {"by": m.peer}
        m.fields[f"own-{m.peer}"] = 1
    return mems


@pytest.mark.parametrize("order", list(itertools.permutations("abc")))
def test_three_replica_conflicts_identical_in_every_delivery_order(
    make_memory: MakeMemory, order: tuple[str, ...]
) -> None:
    writers = {m.peer: m for m in _three_way(make_memory)}
    reader = make_memory("reader", batch_size=1)
    for peer in order:
        frames = writers[peer].sync_to("reader")
        for frame in reversed(frames):
            reader.receive(peer, frame)
    sync_all([*writers.values(), reader])
    conflicts = reader.conflicts()
    assert len(conflicts) == 3  # a-b, a-c, b-c
    assert {frozenset(c.authors) for c in conflicts} == {
        frozenset("ab"), frozenset("ac"), frozenset("bc")
    }
    assert all(c.location == "k" for c in conflicts)
    for c in conflicts:
        assert dict(zip(c.authors, c.values, strict=True)) == {
            author: {"by": author} for author in c.authors
        }
    assert_converged([*writers.values(), reader])


def test_three_replica_conflicts_through_pairwise_gossip(make_memory: MakeMemory) -> None:
    a, b, c = _three_way(make_memory)
    sync_pair(a, b)
    sync_pair(b, c)
    sync_pair(c, a)
    sync_all([a, b, c])
    snap = assert_converged([a, b, c])
    assert len(snap.conflicts) == 3


def test_set_delete_conflict(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["k"] = "v0"
    sync_pair(a, b)
    a.fields["k"] = "v1"
    del b.fields["k"]
    sync_pair(a, b)
    (conflict,) = a.conflicts()
    assert conflict.location == "k"
    assert dict(zip(conflict.authors, conflict.values, strict=True)) == {
        "a": "v1", "b": hs.DELETED
    }
    assert_converged([a, b])


def test_replacing_a_parent_concurrently_with_a_nested_write(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["tasks"] = {"t1": {"status": "open"}}
    sync_pair(a, b)
    a.fields["tasks"] = {"replaced": True}
    b.fields["tasks"]["t1"]["status"] = "done"
    sync_pair(a, b)
    (conflict,) = a.conflicts()
    assert conflict.location == "tasks"
    paths = dict(zip(conflict.authors, conflict.paths, strict=True))
    assert paths == {"a": "tasks", "b": "tasks/t1/status"}
    values = dict(zip(conflict.authors, conflict.values, strict=True))
    assert values == {"a": {"replaced": True}, "b": "done"}
    assert_converged([a, b])


def test_deleting_a_parent_concurrently_with_a_nested_write(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["tasks"] = {"t1": {"status": "open"}}
    sync_pair(a, b)
    del a.fields["tasks"]
    b.fields["tasks"]["t1"]["status"] = "done"
    sync_pair(a, b)
    (conflict,) = b.conflicts()
    assert conflict.location == "tasks"
    assert_converged([a, b])


def test_no_conflict_for_causally_ordered_writes(make_memory: MakeMemory) -> None:
    a, b, c = (make_memory(p) for p in "abc")
    a.fields["k"] = 1
    sync_all([a, b, c])
    b.fields["k"] = 2
    sync_all([a, b, c])
    c.fields["k"] = {"nested": 3}
    sync_all([a, b, c])
    del a.fields["k"]
    sync_all([a, b, c])
    for m in (a, b, c):
        assert m.conflicts() == []


@pytest.mark.parametrize(
    "scenario", ["different keys", "both delete", "both append", "siblings in a map"]
)
def test_concurrent_but_not_conflicting(make_memory: MakeMemory, scenario: str) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["k"] = "v"
    a.fields["l"] = [0]
    a.fields["m"] = {"x": 0, "y": 0}
    sync_pair(a, b)
    if scenario == "different keys":
        a.fields["k1"] = 1
        b.fields["k2"] = 2
    elif scenario == "both delete":
        del a.fields["k"]
        del b.fields["k"]
    elif scenario == "both append":
        a.fields["l"].append("a")
        b.fields["l"].append("b")
    else:
        a.fields["m"]["x"] = 1
        b.fields["m"]["y"] = 2
    sync_pair(a, b)
    assert a.conflicts() == b.conflicts() == []
    assert_converged([a, b])


def test_rolled_back_transaction_keeps_concurrent_nested_writes(make_memory: MakeMemory) -> None:
    """A transaction that changed nothing (rolled back) must not destroy what another replica
    wrote concurrently inside the same top-level key."""
    a, b = make_memory("a"), make_memory("b")
    a.fields["tasks"] = {"t1": {"status": "open"}}
    sync_pair(a, b)
    with pytest.raises(ValueError), a.transaction():
        a.fields["tasks"]["t1"]["status"] = "claimed"
        raise ValueError
    b.fields["tasks"]["t2"] = {"status": "new"}
    sync_pair(a, b)
    expected = {"t1": {"status": "open"}, "t2": {"status": "new"}}
    assert a.fields["tasks"] == expected and b.fields["tasks"] == expected


def test_views_taken_before_a_rolled_back_transaction_stay_live(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["tasks"] = {"t1": {"status": "open"}}
    tasks, root = a.fields["tasks"], a.fields
    with pytest.raises(ValueError), a.transaction():
        a.fields["x"] = 1
        tasks["t1"]["status"] = "claimed"
        raise ValueError
    tasks["t2"] = {"status": "new"}
    root["y"] = 2
    expected = {"tasks": {"t1": {"status": "open"}, "t2": {"status": "new"}}, "y": 2}
    assert a.fields.to_dict() == expected and tasks["t1"]["status"] == "open"
    sync_pair(a, b)
    assert b.fields.to_dict() == expected
