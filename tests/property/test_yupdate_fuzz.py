"""Fuzzing our Yjs v1 update decoder: whatever the bytes, decode_update either returns an
update or raises PayloadError — never another exception, never a hang.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pycrdt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridsync.errors import PayloadError
from hybridsync.fields._yupdate import YUpdate, decode_update

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_reject(data: bytes) -> YUpdate | None:
    """The property under test: success or PayloadError, nothing else."""
    try:
        return decode_update(data)
    except PayloadError:
        return None


@functools.cache
def corpus() -> tuple[bytes, ...]:
    """Real updates covering every struct kind pycrdt writes."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2**40 + 3)
    updates: list[bytes] = []
    sub = doc.observe(lambda ev: updates.append(ev.update))
    fields = doc.get("fields", type=pycrdt.Map)
    fields["i"] = 1
    fields["f"] = 0.1
    fields["s"] = "héllo 😀"
    fields["b"] = b"\x00\xff"
    fields["n"] = None
    fields["t"] = True
    fields["big"] = 2**60 + 1
    fields["l"] = [1, "x", {"k": [None, False]}]
    fields["m"] = pycrdt.Map({"x": 1, "a": pycrdt.Array([1, 2, pycrdt.Text("in")])})
    fields["i"] = 2
    del fields["s"]
    del fields["m"]  # nested content gets garbage-collected: gc structs
    text = doc.get("text", type=pycrdt.Text)
    text += "a😀b"
    text.insert(1, "é")
    del text[0:2]
    arr = doc.get("arr", type=pycrdt.Array)
    arr.extend([1, 2, 3])
    arr.append("x")
    other: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    other.get("fields", type=pycrdt.Map)["o"] = "other"
    del sub
    return (
        *updates,
        doc.get_update(),
        other.get_update(),
        pycrdt.merge_updates(doc.get_update(), other.get_update()),
        pycrdt.merge_updates(updates[0], updates[2], updates[5]),  # gaps: skip structs
    )


def test_corpus_decodes() -> None:
    kinds = {item.kind for upd in corpus() for item in decode_update(upd).items}
    assert {"any", "string", "type", "deleted", "gc", "skip"} <= kinds


real_updates = st.sampled_from(corpus())


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_or_reject(data)


@FUZZ
@given(real_updates, st.data())
def test_truncation_is_always_rejected(update: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(update) - 1))
    # Decoding is sequential and deterministic, so a strict prefix runs out of bytes.
    assert decode_or_reject(update[:cut]) is None


@FUZZ
@given(real_updates, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=6))
def test_bit_flips(update: bytes, flips: list[tuple[int, int]]) -> None:
    mutated = bytearray(update)
    for index, bit in flips:
        mutated[index % len(mutated)] ^= 1 << bit
    decode_or_reject(bytes(mutated))


@FUZZ
@given(real_updates, st.binary(min_size=1, max_size=64))
def test_appended_garbage_is_rejected(update: bytes, garbage: bytes) -> None:
    assert decode_or_reject(update + garbage) is None


@FUZZ
@given(real_updates, st.data(), st.binary(max_size=40))
def test_spliced_bytes(update: bytes, data: st.DataObject, junk: bytes) -> None:
    start = data.draw(st.integers(0, len(update)))
    stop = data.draw(st.integers(start, len(update)))
    decode_or_reject(update[:start] + junk + update[stop:])


# -- random real documents: what pycrdt writes, we read back --------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def as_stored(value: object) -> object:
    """What pycrdt writes for a Python value: ints become float64 numbers."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [as_stored(v) for v in value]
    if isinstance(value, dict):
        return {k: as_stored(v) for k, v in value.items()}
    return value


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), json_like | st.just(...)), min_size=1, max_size=8)
)
def test_random_map_sessions_round_trip(ops: list[tuple[str, object]]) -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=99)
    fields = doc.get("fields", type=pycrdt.Map)
    updates: list[bytes] = []
    sub = doc.observe(lambda ev: updates.append(ev.update))
    n_sets = 0
    for key, value in ops:
        before = len(updates)
        if value is ...:
            if key in fields:
                del fields[key]
                (upd,) = (decode_update(u) for u in updates[before:])
                assert upd.items == () and len(upd.deletes) == 1
            continue
        fields[key] = value
        n_sets += 1
        (upd,) = (decode_update(u) for u in updates[before:])
        (item,) = upd.items
        assert item.kind == "any" and item.length == 1
        assert same(item.values[0], as_stored(value))
        if item.origin is None:
            assert (item.parent, item.parent_sub) == ("fields", key)
        else:
            assert (item.parent, item.parent_sub) == (None, None)
    del sub
    full = decode_update(doc.get_update())
    merged = decode_update(pycrdt.merge_updates(*updates))
    # every set wrote one struct of length 1, so the clock ends at the number of sets
    assert max((i.clock + i.length for i in full.items), default=0) == n_sets
    assert max((i.clock + i.length for i in merged.items), default=0) == n_sets
