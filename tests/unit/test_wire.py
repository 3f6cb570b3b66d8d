"""Sync frames: round trips, limits, and total validation (anything else is a FrameError that
leaves the replica exactly as it was)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import hybridsync as hs
from hybridsync.causal import ID_PREFIX_BYTES, KINDS, Contribution
from hybridsync.testing import snapshot
from hybridsync.wire import (
    MAX_AUTHOR_BYTES,
    MAX_FRAME_BYTES,
    MAX_NOTE_BYTES,
    MAX_PAYLOAD_BYTES,
    VERSION,
    decode_frame,
    encode_frame,
)

MakeMemory = Callable[..., hs.Memory]
Frame = list[Any]


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.fixture
def sender(make_memory: MakeMemory) -> hs.Memory:
    w = make_memory("w")
    w.fields["goal"] = "ship"
    with w.transaction(note="two \N{SNOWMAN}"):
        w.fields["tasks"] = {"t1": {"status": "open"}}
        w.fields["n"] = 2**60
    return w


@pytest.fixture
def receiver(make_memory: MakeMemory, sender: hs.Memory) -> hs.Memory:
    """A replica with state of its own, so "unchanged" means something."""
    r = make_memory("r")
    r.fields["mine"] = [1, 2]
    return r


@pytest.fixture
def valid(sender: hs.Memory) -> Frame:
    (frame,) = sender.sync_to("r")
    obj = msgpack.unpackb(frame, raw=False)
    assert obj[:2] == [VERSION, 1] and len(obj) == 6 and len(obj[5]) == 2
    return obj  # type: ignore[no-any-return]


# ---- round trips -------------------------------------------------------------------------


def test_frame_round_trip(sender: hs.Memory) -> None:
    history = sender.history()
    dots = {c.id: (c.author, c.seq) for c in history}
    data = encode_frame(77, [("w", 2)], history, dots.__getitem__)
    frame = decode_frame(data)
    assert frame.incarnation == 77 and frame.vv == {"w": 2}
    assert len(frame.drafts) == len(history)
    for d, c in zip(frame.drafts, history, strict=True):
        assert (d.author, d.seq, d.lamport, d.hlc, d.kind, d.note, d.payload) == (
            c.author, c.seq, c.lamport, c.hlc, c.kind, c.note, c.payload
        )
        assert d.id_prefix == c.id[:ID_PREFIX_BYTES]
        assert d.parent_dots == tuple(dots[p] for p in c.parents)


def test_frame_without_vv_or_contributions() -> None:
    frame = decode_frame(encode_frame(0, None, [], None))
    assert frame.vv is None and frame.drafts == () and frame.incarnation == 0
    frame = decode_frame(bytearray(encode_frame(2**64 - 1, [("a", 3)], [], None)))
    assert frame.vv == {"a": 3} and frame.incarnation == 2**64 - 1


def test_frame_with_many_authors_and_parents() -> None:
    heads = [Contribution.create("s", f"p{i}", 1, (), 1, 0, "fields", b"\x00\x00")
             for i in range(40)]
    merge = Contribution.create("s", "m", 1, tuple(h.id for h in heads), 2, 5, "multi", b"x",
                                "n" * MAX_NOTE_BYTES)
    dots = {h.id: (h.author, 1) for h in heads}
    vv = sorted([(h.author, 1) for h in heads] + [("m", 1)])
    frame = decode_frame(encode_frame(1, vv, [*heads, merge], dots.__getitem__))
    assert frame.drafts[-1].kind == "multi" and len(frame.drafts[-1].parent_dots) == 40
    assert frame.drafts[-1].note == "n" * MAX_NOTE_BYTES


def test_replica_frames_decode(sender: hs.Memory, receiver: hs.Memory) -> None:
    frames = sender.sync_to("r")
    for data in frames:
        decode_frame(data)
        receiver.receive("w", data)
    assert receiver.fields["goal"] == "ship" and receiver.fields["n"] == 2**60


def test_kinds_are_the_documented_ones() -> None:
    assert KINDS == ("fields", "multi")


# ---- rejection: FrameError and an unchanged replica ---------------------------------------


def _set(path: tuple[int, ...], value: object) -> Callable[[Frame], object]:
    def mutate(obj: Frame) -> object:
        target: Any = obj
        for i in path[:-1]:
            target = target[i]
        target[path[-1]] = value
        return obj
    return mutate


def _apply(fn: Callable[[Frame], None]) -> Callable[[Frame], object]:
    def mutate(obj: Frame) -> object:
        fn(obj)
        return obj
    return mutate


C0, C1 = (5, 0), (5, 1)  # the two contributions of the valid frame

MUTATIONS: dict[str, Callable[[Frame], object]] = {
    # the frame array
    "not an array": lambda obj: {"v": 1},
    "an int": lambda obj: 1,
    "a string": lambda obj: "frame",
    "empty array": lambda obj: [],
    "two elements": lambda obj: obj[:2],
    "five elements": lambda obj: obj[:5],
    "seven elements": lambda obj: [*obj, None],
    "version 0": _set((0,), 0),
    "version 2": _set((0,), 2),
    "version as str": _set((0,), "1"),
    "version as float": _set((0,), 1.0),
    "version as bool": _set((0,), True),
    "type 0": _set((1,), 0),
    "type 2": _set((1,), 2),
    "type as bool": _set((1,), True),
    # incarnation
    "incarnation negative": _set((2,), -1),
    "incarnation int64 min": _set((2,), -(2**63)),
    "incarnation str": _set((2,), "1"),
    "incarnation float": _set((2,), 1.0),
    "incarnation nil": _set((2,), None),
    # author table
    "authors not a list": _set((3,), "w"),
    "author not a str": _set((3, 0), 7),
    "author empty": _set((3, 0), ""),
    "author too long": _set((3, 0), "x" * (MAX_AUTHOR_BYTES + 1)),
    "author bytes": _set((3, 0), b"w"),
    "author twice": _apply(lambda obj: (obj[3].append("w"), obj[4].append(2))),
    "too many authors": _apply(lambda obj: obj.__setitem__(3, [f"a{i}" for i in range(4097)])),
    # version vector
    "vv not a list": _set((4,), {"w": 2}),
    "vv too short": _set((4,), []),
    "vv too long": _apply(lambda obj: obj[4].append(1)),
    "vv negative": _set((4, 0), -1),
    "vv over 2**53": _set((4, 0), 2**53),
    "vv str": _set((4, 0), "2"),
    "vv float": _set((4, 0), 2.0),
    # contributions
    "body not a list": _set((5,), "body"),
    "contribution not a list": _set(C0, "c"),
    "contribution of 8": _apply(lambda obj: obj[5][0].pop()),
    "contribution of 10": _apply(lambda obj: obj[5][0].append(0)),
    "author index out of range": _set((*C0, 0), 1),
    "author index negative": _set((*C0, 0), -1),
    "author index str": _set((*C0, 0), "w"),
    "seq 0": _set((*C0, 1), 0),
    "seq over 2**53": _set((*C0, 1), 2**53),
    "seq float": _set((*C0, 1), 1.0),
    "parents not a list": _set((*C1, 2), None),
    "parents odd length": _set((*C1, 2), [0]),
    "parent author out of range": _set((*C1, 2), [3, 1]),
    "parent seq 0": _set((*C1, 2), [0, 0]),
    "parent named twice": _set((*C1, 2), [0, 1, 0, 1]),
    "self as parent": _set((*C1, 2), [0, 1, 0, 2]),
    "later own parent": _set((*C1, 2), [0, 1, 0, 3]),
    "own previous missing": _set((*C1, 2), []),
    "too many parents": _set((*C1, 2), [0, 1] * 1025),
    "lamport 0": _set((*C0, 3), 0),
    "lamport negative": _set((*C0, 3), -5),
    "lamport str": _set((*C0, 3), "1"),
    "hlc negative": _set((*C0, 4), -1),
    "hlc float": _set((*C0, 4), 0.5),
    "kind unknown": _set((*C0, 5), len(KINDS)),
    "kind as str": _set((*C0, 5), "fields"),
    "note not a str": _set((*C0, 6), b""),
    "note too long": _set((*C0, 6), "n" * (MAX_NOTE_BYTES + 1)),
    "note nil": _set((*C0, 6), None),
    "payload str": _set((*C0, 7), "payload"),
    "payload nil": _set((*C0, 7), None),
    "payload list": _set((*C0, 7), [1, 2]),
    "prefix short": _set((*C0, 8), b"\x00" * 7),
    "prefix long": _set((*C0, 8), b"\x00" * 9),
    "prefix str": _set((*C0, 8), "00000000"),
    "same dot twice": _apply(lambda obj: obj[5].append(copy.deepcopy(obj[5][0]))),
}


@pytest.fixture(params=sorted(MUTATIONS))
def malformed(request: pytest.FixtureRequest, valid: Frame) -> bytes:
    name = request.param
    return _pack(MUTATIONS[name](copy.deepcopy(valid)))


def test_malformed_frame_is_rejected_and_changes_nothing(
    malformed: bytes, receiver: hs.Memory
) -> None:
    before = snapshot(receiver)
    rejected = receiver.stats().rejected
    with pytest.raises(hs.FrameError):
        receiver.receive("w", malformed)
    assert snapshot(receiver) == before
    assert receiver.stats().rejected == rejected + 1
    with pytest.raises(hs.FrameError):
        decode_frame(malformed)


@pytest.mark.parametrize("bad", [None, "frame", 17, ["not", "bytes"], b"", bytearray()])
def test_non_bytes_and_empty_input(bad: object, receiver: hs.Memory) -> None:
    before = snapshot(receiver)
    with pytest.raises(hs.FrameError):
        receiver.receive("w", bad)  # type: ignore[arg-type]
    assert snapshot(receiver) == before


def test_every_truncation_is_rejected(valid: Frame, receiver: hs.Memory) -> None:
    data = _pack(valid)
    before = snapshot(receiver)
    for n in range(len(data)):
        with pytest.raises(hs.FrameError):
            receiver.receive("w", data[:n])
    assert snapshot(receiver) == before


def test_trailing_bytes_are_rejected(valid: Frame, receiver: hs.Memory) -> None:
    before = snapshot(receiver)
    for tail in (b"\x00", b"\xc0", _pack(valid)):
        with pytest.raises(hs.FrameError):
            receiver.receive("w", _pack(valid) + tail)
    assert snapshot(receiver) == before


@pytest.mark.parametrize(
    "data",
    [
        b"\x91" * 100_000 + b"\xc0",  # absurdly deep nesting
        b"\xdd\xff\xff\xff\xff",  # an array that claims 4 G elements
        b"\x96\x01\x01\x00\x90\xc0\xdd\x00\x04\x00\x01",  # a body over the array limit
        b"\xc1",  # a reserved byte
        b"\x96\x01\x01\x00\x90\xc0\x91\xd4\x01\x00",  # an ext type inside
        b"\x96\x01\x01\x00\x81\xa1k\x01\xc0\x90",  # a map as author table
        b"\x96\x01\x01\x00\x91\xc4\x01w\xc0\x90",  # author as bin
        b"\x96\x01\x01\x00\x91\xa2\xff\xfe\xc0\x90",  # author with invalid UTF-8
    ],
    ids=["deep", "huge-array", "body-limit", "reserved", "ext", "map", "bin-author", "bad-utf8"],
)
def test_msgpack_level_garbage(data: bytes, receiver: hs.Memory) -> None:
    before = snapshot(receiver)
    with pytest.raises(hs.FrameError):
        receiver.receive("w", data)
    assert snapshot(receiver) == before


def test_oversized_frame_is_rejected_before_decoding(valid: Frame, receiver: hs.Memory) -> None:
    data = _pack(valid)
    oversized = data + b"\x00" * (MAX_FRAME_BYTES + 1 - len(data))
    assert len(oversized) == MAX_FRAME_BYTES + 1
    before = snapshot(receiver)
    with pytest.raises(hs.FrameError, match="limit"):
        receiver.receive("w", oversized)
    assert snapshot(receiver) == before


def test_oversized_payload_is_rejected(valid: Frame, receiver: hs.Memory) -> None:
    valid[5][0][7] = b"\x00" * (MAX_PAYLOAD_BYTES + 1)
    data = _pack(valid)
    assert len(data) <= MAX_FRAME_BYTES
    before = snapshot(receiver)
    with pytest.raises(hs.FrameError):
        receiver.receive("w", data)
    assert snapshot(receiver) == before


def test_a_valid_frame_after_rejections_still_applies(
    valid: Frame, receiver: hs.Memory, sender: hs.Memory
) -> None:
    for bad in (b"", b"\xc1", _pack(valid)[:-3]):
        with pytest.raises(hs.FrameError):
            receiver.receive("w", bad)
    receiver.receive("w", _pack(valid))
    assert receiver.fields["tasks"] == {"t1": {"status": "open"}}
    assert receiver.stats().rejected == 3


# ---- structurally valid frames that lie: IntegrityError, replica unchanged ------------------

LIES: dict[str, Callable[[Frame], object]] = {
    "payload edited": _set((*C0, 7), b"\x00\x00"),
    "note edited": _set((*C1, 6), "forged"),
    "hlc edited": _set((*C0, 4), 12345),
    "kind edited": _set((*C0, 5), 1),
    "prefix edited": _set((*C1, 8), b"\xff" * 8),
    "lamport skipped": _set((*C1, 3), 5),
    "author renamed": _set((3, 0), "mallory"),
}


@pytest.mark.parametrize("name", sorted(LIES))
def test_lying_frame_is_rejected_and_changes_nothing(
    name: str, valid: Frame, receiver: hs.Memory
) -> None:
    data = _pack(LIES[name](copy.deepcopy(valid)))
    decode_frame(data)  # well-formed: the lie is caught by the causal layer
    before = snapshot(receiver)
    with pytest.raises(hs.IntegrityError):
        receiver.receive("w", data)
    assert snapshot(receiver) == before


def test_lie_in_the_second_contribution_rejects_the_whole_frame(
    valid: Frame, receiver: hs.Memory
) -> None:
    valid[5][1][7] = valid[5][1][7] + b"\x00"
    before = snapshot(receiver)
    with pytest.raises(hs.IntegrityError):
        receiver.receive("w", _pack(valid))
    assert snapshot(receiver) == before  # the honest first one was not applied either
