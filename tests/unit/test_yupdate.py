"""Unit tests of our Yjs v1 update decoder (hybridsync.fields._yupdate).

Real updates come from pycrdt; hand-built ones (for content kinds pycrdt never writes and
for malformed input) come from the tiny lib0 writer below.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import pycrdt
import pytest

from hybridsync.errors import PayloadError
from hybridsync.fields._yupdate import MAX_NESTING, YItem, YUpdate, decode_update

# -- a minimal lib0 writer for hand-built updates -------------------------------------------


def uvar(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def svar(n: int) -> bytes:
    neg = n < 0
    n = -n if neg else n
    out = bytearray([(0x80 if n > 0x3F else 0) | (0x40 if neg else 0) | (n & 0x3F)])
    n >>= 6
    while n:
        out.append((0x80 if n > 0x7F else 0) | (n & 0x7F))
        n >>= 7
    return bytes(out)


def vstr(s: str) -> bytes:
    raw = s.encode()
    return uvar(len(raw)) + raw


def any_(v: object) -> bytes:
    if v is None:
        return b"\x7e"
    if v is True:
        return b"\x78"
    if v is False:
        return b"\x79"
    if isinstance(v, int):
        return b"\x7d" + svar(v)
    if isinstance(v, float):
        return b"\x7b" + struct.pack(">d", v)
    if isinstance(v, str):
        return b"\x77" + vstr(v)
    if isinstance(v, bytes):
        return b"\x74" + uvar(len(v)) + v
    if isinstance(v, list):
        return b"\x75" + uvar(len(v)) + b"".join(any_(x) for x in v)
    if isinstance(v, dict):
        return b"\x76" + uvar(len(v)) + b"".join(vstr(k) + any_(x) for k, x in v.items())
    raise TypeError(v)


def root_item(ref: int, content: bytes, *, name: str = "root", key: str | None = None) -> bytes:
    """One struct with a root parent written (no origins)."""
    info = ref | (0x20 if key is not None else 0)
    out = bytes([info]) + uvar(1) + vstr(name)
    if key is not None:
        out += vstr(key)
    return out + content


def update(client: int, clock: int, structs: list[bytes], ds: bytes = b"\x00") -> bytes:
    return b"\x01" + uvar(len(structs)) + uvar(client) + uvar(clock) + b"".join(structs) + ds


def one_any(*values: object) -> bytes:
    """An update holding one ContentAny item with ``values``."""
    return update(3, 0, [root_item(8, uvar(len(values)) + b"".join(any_(v) for v in values))])


# -- helpers for real pycrdt updates ---------------------------------------------------------


class Recorder:
    """A pycrdt doc with a root map ``fields`` whose transaction updates are recorded."""

    def __init__(self, client_id: int) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.fields = self.doc.get("fields", type=pycrdt.Map)
        self.updates: list[bytes] = []
        self._sub = self.doc.observe(lambda ev: self.updates.append(ev.update))

    def last(self) -> YUpdate:
        return decode_update(self.updates[-1])


def state_vector(sv: bytes) -> dict[int, int]:
    """Decode a Yjs state vector (varuint count, then client/clock pairs)."""
    pos = 0

    def read() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            b = sv[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    return {read(): read() for _ in range(read())}


def ends(upd: YUpdate) -> dict[int, int]:
    out: dict[int, int] = {}
    for it in upd.items:
        out[it.client] = max(out.get(it.client, 0), it.clock + it.length)
    return out


def check_clocks(upd: YUpdate) -> None:
    """Within a client block, clocks are contiguous: each starts where the last ended."""
    prev: YItem | None = None
    for it in upd.items:
        if prev is not None and prev.client == it.client:
            assert it.clock == prev.clock + prev.length
        prev = it


# -- real updates ----------------------------------------------------------------------------


def test_empty_update() -> None:
    assert decode_update(b"\x00\x00") == YUpdate((), ())
    assert decode_update(pycrdt.Doc().get_update()) == YUpdate((), ())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),  # pycrdt stores ints ≤ 2**53 as float64 numbers
        (-3, -3.0),
        (2**53, float(2**53)),
        (1.5, 1.5),
        (0.1, 0.1),
        (-2.5e300, -2.5e300),
        ("hello", "hello"),
        ("", ""),
        ("naïve 😀", "naïve 😀"),
        (True, True),
        (False, False),
        (None, None),
        (b"\x00\xffxy", b"\x00\xffxy"),
        (b"", b""),
        (2**60 + 1, 2**60 + 1),  # not a float64: written as bigint64
        (-(2**60) - 1, -(2**60) - 1),
        ([1, "x", {"k": None}], [1.0, "x", {"k": None}]),
        ({"a": [True, b"z"], "b": {}}, {"a": [True, b"z"], "b": {}}),
    ],
)
def test_root_map_set_scalars(value: object, expected: object) -> None:
    rec = Recorder(7)
    rec.fields["other"] = 0
    rec.fields["key"] = value
    upd = rec.last()
    assert upd.deletes == ()
    (item,) = upd.items
    assert item == YItem(
        client=7,
        clock=1,
        length=1,
        origin=None,
        right_origin=None,
        parent="fields",
        parent_sub="key",
        kind="any",
        values=(expected,),
        type_ref=None,
    )
    assert type(item.values[0]) is type(expected)


def test_nested_map_value() -> None:
    rec = Recorder(11)
    rec.fields["m"] = pycrdt.Map({"x": 1, "s": "y"})
    upd = rec.last()
    head, *children = upd.items
    assert (head.kind, head.type_ref, head.parent, head.parent_sub) == ("type", 1, "fields", "m")
    assert (head.client, head.clock, head.length, head.values) == (11, 0, 1, ())
    assert {c.parent_sub: c.values for c in children} == {"x": (1.0,), "s": ("y",)}
    for c in children:
        assert c.parent == (11, 0)
        assert c.kind == "any"
        assert c.origin is None
    check_clocks(upd)


def test_nested_array_value() -> None:
    rec = Recorder(12)
    rec.fields["a"] = pycrdt.Array([1, "a", [2, 3]])
    upd = rec.last()
    head, *children = upd.items
    assert (head.kind, head.type_ref, head.parent, head.parent_sub) == ("type", 0, "fields", "a")
    assert all(c.parent_sub is None for c in children)
    assert children[0].parent == (12, head.clock)
    assert [v for c in children for v in c.values] == [1.0, "a", [2.0, 3.0]]
    assert sum(c.length for c in children) == 3
    check_clocks(upd)


def test_nested_text_value() -> None:
    rec = Recorder(13)
    rec.fields["t"] = pycrdt.Text("hi😀")
    head, body = rec.last().items
    assert (head.kind, head.type_ref) == ("type", 2)
    assert (body.kind, body.values, body.length, body.parent) == ("string", ("hi😀",), 4, (13, 0))


def test_overwrite_existing_key() -> None:
    rec = Recorder(21)
    rec.fields["k"] = "old"
    rec.fields["k"] = "new"
    upd = rec.last()
    (item,) = upd.items
    assert (item.client, item.clock) == (21, 1)
    assert item.origin == (21, 0)  # the old item
    assert item.right_origin is None
    assert item.parent is None  # copied from the origin, so not written
    assert item.parent_sub is None
    assert item.values == ("new",)
    assert upd.deletes == ((21, 0, 1),)


def test_delete_key() -> None:
    rec = Recorder(22)
    rec.fields["a"] = 1
    rec.fields["b"] = 2
    del rec.fields["b"]
    upd = rec.last()
    assert upd.items == ()
    assert upd.deletes == ((22, 1, 1),)


def test_merged_update_from_two_clients() -> None:
    a, b = Recorder(1), Recorder(2)
    a.fields["x"] = 1
    a.fields["y"] = "two"
    b.fields["z"] = True
    b.fields["z"] = False
    merged = pycrdt.merge_updates(*a.updates, *b.updates)
    upd = decode_update(merged)
    check_clocks(upd)
    by_client: dict[int, list[YItem]] = {}
    for it in upd.items:
        by_client.setdefault(it.client, []).append(it)
    assert set(by_client) == {1, 2}
    assert [(i.clock, i.parent_sub, i.values) for i in by_client[1]] == [
        (0, "x", (1.0,)),
        (1, "y", ("two",)),
    ]
    assert [(i.clock, i.kind) for i in by_client[2]] == [(0, "any"), (1, "any")]
    assert by_client[2][1].origin == (2, 0)
    assert upd.deletes == ((2, 0, 1),)
    assert ends(upd) == state_vector(pycrdt.get_state(merged))


def test_text_with_emoji_counts_utf16_units() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=31)
    text = doc.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    sub = doc.observe(lambda ev: updates.append(ev.update))
    text += "a😀b"
    text.insert(1, "é")
    text += "👩‍👩‍👧"  # ZWJ sequence: 3 astral code points + 2 ZWJ = 8 UTF-16 units
    del sub
    first, second, third = (decode_update(u) for u in updates)
    (ins,) = first.items
    assert (ins.kind, ins.values, ins.length, ins.clock, ins.parent) == (
        "string",
        ("a😀b",),
        4,
        0,
        "t",
    )
    (mid,) = second.items
    assert mid.clock == 4  # after the 4 UTF-16 units of "a😀b"
    assert (mid.origin, mid.right_origin, mid.parent) == ((31, 0), (31, 1), None)
    (tail,) = third.items
    assert (tail.clock, tail.length) == (5, 8)
    full = decode_update(doc.get_update())
    check_clocks(full)
    assert ends(full) == {31: 13} == state_vector(doc.get_state())
    assert "".join(str(i.values[0]) for i in full.items) == "a😀bé👩‍👩‍👧"  # clock order


def test_get_update_after_several_transactions() -> None:
    rec = Recorder(41)
    with rec.doc.transaction():
        rec.fields["a"] = 1
        rec.fields["b"] = "x"
    rec.fields["a"] = 2  # overwrite: the first "a" becomes a deleted struct
    rec.fields["c"] = pycrdt.Map({"inner": [1, 2]})
    del rec.fields["b"]
    list_start = state_vector(rec.doc.get_state())[41]
    arr = rec.doc.get("list", type=pycrdt.Array)
    arr.extend([1, 2, 3])
    arr.append("four")
    full_bytes = rec.doc.get_update()
    full = decode_update(full_bytes)
    check_clocks(full)
    assert ends(full) == state_vector(rec.doc.get_state()) == {41: 9}
    kinds = [(i.clock, i.kind) for i in full.items]
    assert kinds[:2] == [(0, "deleted"), (1, "deleted")]
    assert full.items[0].parent_sub == "a"  # deleted structs keep their parent info
    assert full.items[0].parent == "fields"
    assert (2, "any") in kinds and (3, "type") in kinds
    list_items = [i for i in full.items if i.clock >= list_start]
    assert list_items[0].parent == "list"
    assert [v for i in list_items for v in i.values] == [1.0, 2.0, 3.0, "four"]
    assert set(full.deletes) == {(41, 0, 2)}
    # merging the incremental updates gives the same state
    assert ends(decode_update(pycrdt.merge_updates(*rec.updates))) == ends(full)


def test_gc_and_skip_structs_from_real_updates() -> None:
    rec = Recorder(51)
    rec.fields["n"] = pycrdt.Map({"x": 1, "y": pycrdt.Array([1, 2])})
    del rec.fields["n"]  # the nested content is garbage-collected
    full = decode_update(rec.doc.get_update())
    assert [(i.kind, i.clock, i.length) for i in full.items] == [("deleted", 0, 1), ("gc", 1, 4)]
    gc = full.items[1]
    assert (gc.origin, gc.parent, gc.values, gc.type_ref) == (None, None, (), None)

    arr = rec.doc.get("arr", type=pycrdt.Array)
    for v in (1, 2, 3):
        arr.append(v)
    gap = decode_update(pycrdt.merge_updates(rec.updates[-3], rec.updates[-1]))
    assert [(i.kind, i.clock, i.length) for i in gap.items] == [
        ("any", 5, 1),
        ("skip", 6, 1),
        ("any", 7, 1),
    ]


def test_large_client_id_and_clock() -> None:
    rec = Recorder(2**53 - 1)
    for i in range(200):
        rec.fields[f"k{i}"] = i
    (item,) = rec.last().items
    assert (item.client, item.clock) == (2**53 - 1, 199)


def test_accepts_bytes_like() -> None:
    data = one_any("x")
    expected = decode_update(data)
    assert decode_update(bytearray(data)) == expected  # type: ignore[arg-type]
    assert decode_update(memoryview(data)) == expected  # type: ignore[arg-type]


# -- lib0 primitives and content kinds (hand-built) ------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, 1, 63, 64, -1, -63, -64, -65, 8191, -8192, 2**31, -(2**31), 2**53 - 1, -(2**53) + 1],
)
def test_any_signed_varint(value: int) -> None:
    (item,) = decode_update(one_any(value)).items
    assert item.values == (value,)
    assert type(item.values[0]) is int


def test_any_signed_varint_encoding() -> None:
    # 0x40 sign bit in the first byte; continuation groups carry 7 bits each.
    assert decode_update(update(1, 0, [root_item(8, b"\x01\x7d\xc1\x01")])).items[0].values == (
        -65,
    )
    assert decode_update(update(1, 0, [root_item(8, b"\x01\x7d\x80\x01")])).items[0].values == (64,)


def test_any_fixed_width_numbers() -> None:
    content = (
        b"\x04"
        + b"\x7c"
        + struct.pack(">f", 1.25)
        + b"\x7b"
        + struct.pack(">d", -0.1)
        + b"\x7a"
        + struct.pack(">q", -(2**62))
        + b"\x7a"
        + struct.pack(">q", 2**63 - 1)
    )
    (item,) = decode_update(update(1, 0, [root_item(8, content)])).items
    assert item.values == (1.25, -0.1, -(2**62), 2**63 - 1)
    assert item.length == 4


def test_any_special_floats() -> None:
    content = b"\x02\x7b" + struct.pack(">d", math.inf) + b"\x7c" + struct.pack(">f", math.nan)
    (item,) = decode_update(update(1, 0, [root_item(8, content)])).items
    assert item.values[0] == math.inf
    assert isinstance(item.values[1], float) and math.isnan(item.values[1])


def test_any_undefined_null_bools_and_containers() -> None:
    content = b"\x03\x7f\x7e" + any_({"a": [True, False, b"\x01", {"n": None}], "": "é"})
    (item,) = decode_update(update(1, 0, [root_item(8, content)])).items
    assert item.values == (None, None, {"a": [True, False, b"\x01", {"n": None}], "": "é"})
    assert item.length == 3


def test_any_nesting_limit() -> None:
    ok: object = 1
    for _ in range(MAX_NESTING):
        ok = [ok]
    assert decode_update(one_any(ok)).items[0].values == (ok,)
    with pytest.raises(PayloadError, match="nested deeper"):
        decode_update(one_any([ok]))
    with pytest.raises(PayloadError, match="nested deeper"):
        decode_update(one_any({"k": ok}))


def test_all_content_kinds() -> None:
    structs = [
        root_item(1, uvar(5)),  # deleted, length 5
        root_item(2, uvar(3) + vstr('{"a": [1, 2]}') + vstr("undefined") + vstr("null")),
        root_item(3, uvar(3) + b"\x00\x01\x02"),  # binary
        root_item(4, vstr("x😀")),  # string: 3 UTF-16 units
        root_item(5, vstr('{"image": "p.png"}')),  # embed
        root_item(6, vstr("bold") + vstr("true")),  # format
        root_item(7, uvar(3) + vstr("p")),  # XmlElement with its node name
        root_item(7, uvar(5) + vstr("hook")),  # XmlHook with its hook name
        root_item(7, uvar(6)),  # XmlText
        root_item(7, uvar(15)),  # yrs' undefined placeholder
        root_item(7, uvar(7) + b"\x01" + uvar(1) + uvar(2) + uvar(1) + uvar(3)),  # yrs weak
        root_item(9, vstr("guid-1") + any_({"gc": True})),  # doc
        root_item(11, svar(1) + uvar(9) + uvar(4)),  # move, collapsed
        root_item(11, svar(2 | (-5 << 6)) + uvar(9) + uvar(4) + uvar(9) + uvar(6)),  # move
        b"\x00" + uvar(7),  # gc
        b"\x0a" + uvar(2),  # skip
        root_item(8, uvar(2) + any_(1) + any_("z"), key="k"),
    ]
    upd = decode_update(
        update(9, 100, structs, ds=b"\x02" + uvar(9) + b"\x01\x64\x05\x01\x01\x00\x01")
    )
    got = [(i.kind, i.clock, i.length, i.values, i.type_ref) for i in upd.items]
    assert got == [
        ("deleted", 100, 5, (), None),
        ("json", 105, 3, ({"a": [1, 2]}, None, None), None),
        ("binary", 108, 1, (b"\x00\x01\x02",), None),
        ("string", 109, 3, ("x😀",), None),
        ("embed", 112, 1, (), None),
        ("format", 113, 1, (), None),
        ("type", 114, 1, (), 3),
        ("type", 115, 1, (), 5),
        ("type", 116, 1, (), 6),
        ("type", 117, 1, (), 15),
        ("type", 118, 1, (), 7),
        ("doc", 119, 1, (), None),
        ("move", 120, 1, (), None),
        ("move", 121, 1, (), None),
        ("gc", 122, 7, (), None),
        ("skip", 129, 2, (), None),
        ("any", 131, 2, (1, "z"), None),
    ]
    assert all(i.parent == "root" for i in upd.items if i.kind not in ("gc", "skip"))
    assert upd.items[-1].parent_sub == "k"
    assert upd.deletes == ((9, 100, 5), (1, 0, 1))


def test_parent_as_item_id_and_origins() -> None:
    # info 0x08 with parent info 0 -> parent is an id; 0xc8 -> both origins, no parent.
    s1 = b"\x28" + uvar(0) + uvar(4) + uvar(2) + vstr("key") + b"\x01\x7e"
    s2 = b"\xe8" + uvar(4) + uvar(3) + uvar(5) + uvar(6) + b"\x01\x78"
    upd = decode_update(update(4, 0, [s1, s2]))
    a, b = upd.items
    assert (a.parent, a.parent_sub, a.origin, a.right_origin) == ((4, 2), "key", None, None)
    # the 0x20 bit is ignored when an origin is present (yrs sets it, writes no key)
    assert (b.parent, b.parent_sub, b.origin, b.right_origin) == (None, None, (4, 3), (5, 6))


def test_multi_byte_varuints() -> None:
    client, clock = 2**40 + 5, 300
    upd = decode_update(update(client, clock, [root_item(8, b"\x01" + any_("v"))]))
    assert (upd.items[0].client, upd.items[0].clock) == (client, clock)


# -- malformed input ---------------------------------------------------------------------------


def real_update() -> bytes:
    rec = Recorder(77)
    rec.fields["k"] = {"a": [1, "two", None, b"3"], "t": True}
    rec.fields["s"] = "text 😀"
    rec.fields["k"] = 2**60 + 1
    del rec.fields["s"]
    return rec.doc.get_update()


def test_every_truncation_is_rejected() -> None:
    data = real_update()
    decode_update(data)
    for cut in range(len(data)):
        with pytest.raises(PayloadError):
            decode_update(data[:cut])


def test_trailing_garbage_is_rejected() -> None:
    data = real_update()
    with pytest.raises(PayloadError, match="trailing"):
        decode_update(data + b"\x00")


def _bad(data: bytes, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        decode_update(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"\x00", "truncated"),
        (update(1, 0, [root_item(8, b"\x01\x70")]), "unknown Any tag 112"),
        (update(1, 0, [root_item(12, b"")]), "unknown content ref 12"),
        (update(1, 0, [root_item(31, b"")]), "unknown content ref 31"),
        (update(1, 0, [root_item(7, uvar(8))]), "unknown type ref 8"),
        (update(1, 0, [b"\x08\x02" + vstr("r") + b"\x01\x7e"]), "parent info"),
        (update(1, 0, [root_item(8, uvar(1000) + b"\x7e")]), "exceeds the remaining"),
        (update(1, 0, [root_item(8, b"\x01\x75" + uvar(10**9))]), "exceeds the remaining"),
        (update(1, 0, [root_item(8, b"\x01\x76" + uvar(10**9))]), "exceeds the remaining"),
        (update(1, 0, [root_item(2, uvar(10**12))]), "exceeds the remaining"),
        (b"\xff\xff\xff\xff\x0f" + b"\x00" * 8, "client count"),
        (b"\x01" + uvar(2**40) + b"\x01\x00" + b"\x00" * 8, "struct count"),
        (b"\x00" + uvar(10**6) + b"\x00", "delete-set client count"),
        (b"\x00\x01\x01" + uvar(10**6) + b"\x00", "delete range count"),
        (b"\x01" + b"\xff" * 11 + b"\x01", "longer than 10 bytes"),
        (b"\x01" + b"\xff" * 9 + b"\x7f", "exceeds 64 bits"),
        (update(1, 0, [root_item(8, b"\x01\x7d" + b"\xff" * 12)]), "signed varint"),
        (update(1, 0, [root_item(4, b"\x02\xc3\x28")]), "UTF-8"),
        (update(1, 0, [root_item(4, b"\x03\xed\xa0\x80")]), "UTF-8"),  # encoded surrogate
        (update(1, 0, [root_item(4, b"\x09ab")]), "runs past the end"),
        (update(1, 0, [root_item(3, b"\x09ab")]), "runs past the end"),
        (update(1, 0, [root_item(8, b"\x01\x7b\x00\x00")]), "float64"),
        (update(1, 0, [root_item(8, b"\x01\x7c\x00")]), "float32"),
        (update(1, 0, [root_item(8, b"\x01\x7a\x00")]), "bigint64"),
        (update(1, 0, [root_item(2, b"\x01" + vstr("{nope"))]), "invalid JSON"),
        (update(1, 0, [root_item(2, b"\x01" + vstr("NaN"))]), "invalid JSON"),
        (update(1, 0, [root_item(5, vstr("[" * 100_000))]), "nested deeper"),
        (update(1, 0, [root_item(6, vstr("b") + vstr('{"a":' * 70 + "1" + "}" * 70))]), "nested"),
    ],
)
def test_malformed_inputs(data: bytes, match: str) -> None:
    _bad(data, match)


def test_json_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '["' + "[{" * 200 + '\\"]"]'
    (item,) = decode_update(update(1, 0, [root_item(2, b"\x01" + vstr(text))])).items
    assert item.values == (["[{" * 200 + '"]'],)


def test_non_bytes_input_is_rejected() -> None:
    with pytest.raises(PayloadError, match="bytes-like"):
        decode_update("\x00\x00")  # type: ignore[arg-type]


def test_single_bit_flips_raise_only_payload_error() -> None:
    data = real_update()
    flips: Iterator[bytes] = (
        data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
        for i in range(len(data))
        for bit in range(8)
    )
    decoded = 0
    for mutated in flips:
        try:
            decode_update(mutated)
            decoded += 1
        except PayloadError:
            pass
    assert decoded > 0  # many single-bit flips still parse (e.g. inside values)
