"""Hypothesis fuzzing of ``Memory.receive``: whatever bytes arrive, ``receive`` either accepts
them or raises a :class:`~hybridsync.HybridSyncError` and leaves the replica exactly as it was;
and afterwards the honest frames still bring the replica to the honest state."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hybridsync as hs
from hybridsync.testing import ReplicaSnapshot, snapshot, sync_pair

SPACE = "space"


def _clock(ms: int) -> Any:
    return lambda: ms


def _senders(space: str) -> list[tuple[str, bytes]]:
    """Honest frames to ``r`` from ``w`` (which relays ``v``): several authors, merges,
    nested values, a transaction with a note, a deletion; small batches so there are many."""
    w = hs.Memory(space, "w", clock=_clock(1_000), incarnation=11, batch_size=2)
    v = hs.Memory(space, "v", clock=_clock(2_000), incarnation=12, batch_size=2)
    w.fields["goal"] = "ship \N{ROCKET}"
    v.fields["tasks"] = {"t1": {"status": "open"}, "n": 2**60}
    v.fields["goal"] = "concurrent"
    sync_pair(w, v)
    with w.transaction(note="claim"):
        w.fields["tasks"]["t1"]["status"] = "claimed"
        w.fields["list"] = [1, 2.5, None, b"\x00"]
    del v.fields["goal"]
    sync_pair(w, v)
    w.fields["list"].append("x")
    return [("w", f) for f in w.sync_to("r")]


@functools.cache
def honest_frames() -> tuple[tuple[str, bytes], ...]:
    frames = tuple(_senders(SPACE))
    assert len(frames) >= 3
    return frames


@functools.cache
def other_space_frames() -> tuple[tuple[str, bytes], ...]:
    return tuple(_senders("other-space"))


def make_receiver(partial: bool) -> hs.Memory:
    """A receiver with writes of its own, optionally already holding the first frame."""
    r = hs.Memory(SPACE, "r", clock=_clock(3_000), incarnation=13)
    r.fields["mine"] = {"k": [1, 2]}
    r.fields["goal"] = "r's goal"
    if partial:
        src, frame = honest_frames()[0]
        r.receive(src, frame)
    return r


@functools.cache
def expected_final() -> ReplicaSnapshot:
    r = make_receiver(False)
    for src, frame in honest_frames():
        r.receive(src, frame)
    return snapshot(r)


def check(receiver: hs.Memory, src: str, data: bytes, *, may_change: bool) -> None:
    """Feed ``data``; on error the replica must be unchanged (and, when the input cannot
    carry a valid contribution, also on success). Then the honest frames must still lead
    to the honest state."""
    before = snapshot(receiver)
    try:
        receiver.receive(src, data)
    except hs.HybridSyncError:
        assert snapshot(receiver) == before
    else:
        if not may_change:
            assert snapshot(receiver) == before
    for s, frame in honest_frames():
        receiver.receive(s, frame)
    assert snapshot(receiver) == expected_final()


FUZZ = settings(
    max_examples=max(250, settings.default.max_examples),  # the soak profile runs more
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(data=st.binary(max_size=600), partial=st.booleans())
def test_arbitrary_bytes(data: bytes, partial: bool) -> None:
    check(make_receiver(partial), "w", data, may_change=False)


@FUZZ
@given(
    data=st.sampled_from([b"\x96\x01\x01", b"\x96\x01\x01\x00\x91\xa1w\x91\x01\x90"]).flatmap(
        lambda head: st.binary(max_size=200).map(lambda tail: head + tail)
    ),
    partial=st.booleans(),
)
def test_bytes_after_a_valid_frame_header(data: bytes, partial: bool) -> None:
    check(make_receiver(partial), "w", data, may_change=False)


@st.composite
def byte_mutations(draw: st.DrawFn) -> tuple[str, bytes]:
    src, frame = draw(st.sampled_from(honest_frames()))
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set", "dup"]))
        n = len(data)
        if n == 0:
            break
        i = draw(st.integers(0, n - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0xC0, 0xC1, 0xC4, 0xCF,
                                           0xD3, 0xDC, 0xDD, 0xFF]))
        else:
            j = draw(st.integers(i, min(n, i + 16)))
            data[j:j] = data[i:j]
    return src, bytes(data)


@FUZZ
@given(mutated=byte_mutations(), partial=st.booleans())
def test_byte_level_mutations_of_valid_frames(mutated: tuple[str, bytes], partial: bool) -> None:
    src, data = mutated
    check(make_receiver(partial), src, data, may_change=True)


def _paths(obj: object, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix]
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            out.extend(_paths(item, (*prefix, i)))
    return out


scalars = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2, 7, 2**31, 2**53 - 1, 2**53, 2**63 - 1, 2**64 - 1, -(2**63)]),
    st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=12), st.binary(max_size=12),
)
# explicit nesting (not st.recursive): two levels are plenty for frame arrays
msgpack_values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.lists(st.lists(scalars, max_size=3), max_size=3)
)


def _swap_type(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return {"0": value[0]} if value else {}
    if value is None:
        return 0
    return None


@st.composite
def structural_edits(draw: st.DrawFn) -> tuple[str, bytes]:
    src, frame = draw(st.sampled_from(honest_frames()))
    obj = msgpack.unpackb(frame, raw=False)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(obj) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = obj
        for i in path[:-1]:
            parent = parent[i]
        i = path[-1]
        op = draw(st.sampled_from(["replace", "swap", "delete", "insert", "duplicate"]))
        if op == "replace":
            parent[i] = draw(msgpack_values)
        elif op == "swap":
            parent[i] = _swap_type(parent[i])
        elif op == "delete":
            del parent[i]
        elif op == "insert":
            parent.insert(i, draw(msgpack_values))
        else:
            parent.insert(i, parent[i])
    try:
        data = msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        data = frame[:-1]
    return src, data


@FUZZ
@given(edited=structural_edits(), partial=st.booleans())
def test_msgpack_level_edits_of_decoded_frames(edited: tuple[str, bytes], partial: bool) -> None:
    src, data = edited
    check(make_receiver(partial), src, data, may_change=True)


@FUZZ
@given(
    index=st.integers(0, 50),
    mutated=st.one_of(st.none(), byte_mutations()),
    partial=st.booleans(),
)
def test_frames_replayed_from_another_space(
    index: int, mutated: tuple[str, bytes] | None, partial: bool
) -> None:
    """Ids hash the space in: nothing from another space can ever be applied."""
    src, frame = other_space_frames()[index % len(other_space_frames())]
    receiver = make_receiver(partial)
    check(receiver, src, frame, may_change=False)
    receiver = make_receiver(partial)
    for s, f in other_space_frames():
        before = snapshot(receiver)
        with contextlib.suppress(hs.HybridSyncError):
            receiver.receive(s, f)
        assert snapshot(receiver) == before


@FUZZ
@given(
    order=st.permutations(range(8)),
    partial=st.booleans(),
    dup=st.integers(0, 7),
)
def test_honest_frames_in_any_order_with_duplicates(
    order: list[int], partial: bool, dup: int
) -> None:
    frames = list(honest_frames())
    picks = [frames[i % len(frames)] for i in order] + [frames[dup % len(frames)]]
    receiver = make_receiver(partial)
    for src, frame in picks:
        receiver.receive(src, frame)  # honest frames never raise, in any order
    for src, frame in frames:
        receiver.receive(src, frame)
    assert snapshot(receiver) == expected_final()
