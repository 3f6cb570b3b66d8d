"""Fuzzing the y-protocols endpoint below the sockets.

* the codec: every message round-trips; any bytes decode to a message or raise
  ``YjsMessageError`` — nothing else, never a hang;
* ``Memory.apply_yjs_update`` on mutated real updates: a contribution or ``YjsUpdateError``,
  and the document never holds anything the log does not (a replica rebuilt from the log is
  identical, so nothing was half-applied or left pending);
* the room fed arbitrary and mutated messages: it never raises, a bad message closes only its
  connection, and the same document/log invariant holds.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pycrdt
from hypothesis import given, settings
from hypothesis import strategies as st

import hybridsync as hs
from hybridsync.errors import YjsMessageError, YjsUpdateError
from hybridsync.interop import (
    AuthDenied,
    AwarenessEntry,
    AwarenessUpdate,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    encode_message,
    encode_state_vector,
)
from hybridsync.interop._room import YjsRoom

FUZZ = settings(max_examples=300)
SLOW = settings(max_examples=60)

u53 = st.integers(min_value=0, max_value=2**53 - 1)
json_text = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
).map(json.dumps)
messages: st.SearchStrategy[Message] = st.one_of(
    st.dictionaries(u53, u53, max_size=4).map(encode_state_vector).map(SyncStep1),
    st.binary(max_size=64).map(SyncStep2),
    st.binary(max_size=64).map(SyncUpdate),
    st.lists(st.builds(AwarenessEntry, u53, u53, json_text), max_size=4)
    .map(lambda es: AwarenessUpdate(tuple(es))),
    st.just(QueryAwareness()),
    st.text(max_size=20).map(AuthDenied),
)


def decode_or_reject(data: bytes) -> Message | None:
    """The property under test: a message or YjsMessageError, nothing else."""
    try:
        return decode_message(data)
    except YjsMessageError:
        return None


@FUZZ
@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_one_error(data: bytes) -> None:
    decoded = decode_or_reject(data)
    if decoded is not None:  # what decodes re-encodes (minimal varints) to the same message
        assert decode_message(encode_message(decoded)) == decoded


@FUZZ
@given(messages, st.data())
def test_mutated_messages_decode_or_raise_one_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[at:]
        else:
            raw.insert(at, data.draw(st.integers(0, 255)))
    decode_or_reject(bytes(raw))


@functools.cache
def base_and_updates() -> tuple[bytes, tuple[bytes, ...]]:
    """A host state and real client updates on top of it (sets, nested maps and lists,
    deletes, overwrites)."""
    host: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    hf = host.get("fields", type=pycrdt.Map)
    hf["a"] = {"x": 1, "l": [1, 2, 3]}
    hf["b"] = "text 😀"
    base = bytes(host.get_update())
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2)
    doc.apply_update(base)
    f = doc.get("fields", type=pycrdt.Map)
    out = []
    for change in (
        lambda: f.__setitem__("c", 7),
        lambda: f["a"].__setitem__("x", 2.5),
        lambda: f["a"]["l"].append("z"),
        lambda: f.pop("b"),
        lambda: f.__setitem__("d", {"deep": {"deeper": [None, True, b"\x01"]}}),
        lambda: f.__setitem__("c", "overwritten ✓"),
    ):
        sv = doc.get_state()
        change()
        out.append(bytes(doc.get_update(sv)))
    return base, tuple(out)


def fresh_host() -> hs.Memory:
    base, _ = base_and_updates()
    mem = hs.Memory("space", "host", clock=lambda: 0, incarnation=1)
    assert mem.apply_yjs_update(base, origin="yjs:1") is not None
    return mem


def log_matches_document(mem: hs.Memory) -> bool:
    """A replica that only receives ``mem``'s contributions has the same fields."""
    other = hs.Memory("space", "check", clock=lambda: 0, incarnation=2)
    for _ in range(10):
        frames = mem.sync_to("check")
        if not frames:
            break
        for f in frames:
            other.receive("host", f)
    return other.fields_json() == mem.fields_json()


def mutate(raw: bytearray, data: st.DataObject) -> bytes:
    for _ in range(data.draw(st.integers(1, 3))):
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "byte"]))
        if op == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[at:]
        else:
            raw[at] = data.draw(st.integers(0, 255))
    return bytes(raw)


@SLOW
@given(st.data())
def test_mutated_client_updates_commit_or_refuse_cleanly(data: st.DataObject) -> None:
    _, updates = base_and_updates()
    mem = fresh_host()
    for update in data.draw(st.lists(st.sampled_from(updates), min_size=1, max_size=4)):
        sent = mutate(bytearray(update), data) if data.draw(st.booleans()) else update
        before = (mem.fields_json(), mem.heads)
        try:
            mem.apply_yjs_update(sent, origin="yjs:2")
        except YjsUpdateError:
            assert (mem.fields_json(), mem.heads) == before
    assert log_matches_document(mem)


@SLOW
@given(st.data())
def test_the_room_survives_any_input_and_keeps_document_and_log_equal(
    data: st.DataObject,
) -> None:
    _, updates = base_and_updates()
    mem = fresh_host()
    closed: dict[int, int] = {}
    room = YjsRoom(mem, send=lambda c, d: None,
                   close=lambda c, code, r: closed.__setitem__(c, code), now=lambda: 0.0)
    valid = [encode_message(SyncUpdate(u)) for u in updates] + [
        encode_message(SyncStep1(b"\x00")),
        encode_message(AwarenessUpdate((AwarenessEntry(9, 1, '{"u":1}'),))),
        encode_message(QueryAwareness()),
    ]
    for conn in range(1, data.draw(st.integers(1, 4)) + 1):
        room.connect(conn)
        for _ in range(data.draw(st.integers(1, 5))):
            kind = data.draw(st.sampled_from(["valid", "mutated", "random"]))
            if kind == "random":
                msg = data.draw(st.binary(max_size=64))
            else:
                msg = data.draw(st.sampled_from(valid))
                if kind == "mutated":
                    msg = mutate(bytearray(msg), data)
            room.receive(conn, msg)
        room.tick()
        room.disconnect(conn)
    assert all(code in (1002, 1003, 1008, 1009) for code in closed.values()), closed
    room.shutdown()
    assert log_matches_document(mem)
