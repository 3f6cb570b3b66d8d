"""Buffer regions in depth: the Q4 codec option, the layout and kind rules for concurrent
creations (in every delivery order), the delta wire form and its validation, block change
detection, and compaction of buffer folds."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import msgpack
import numpy as np
import pytest

import hybridsync as hs
from hybridsync.causal import Contribution
from hybridsync.regions._buffer import (
    BLOCK_BYTES,
    COMPARE_CHUNK_BLOCKS,
    _BufferState,
    _changed_blocks,
    buffer_layout,
    decode_delta,
    encode_delta,
)
from hybridsync.regions._bufferfold import BufferFold, Layout
from hybridsync.regions._parts import Part, encode_parts
from hybridsync.regions._q4 import q4_decode, q4_encode
from hybridsync.testing import assert_converged, snapshot, sync_all, sync_pair
from hybridsync.wire import encode_frame

MakeMemory = Callable[..., hs.Memory]
F16_BLOCK = BLOCK_BYTES // 2  # float16 values in one block


def frames_for(m: hs.Memory, frames: list[tuple[str, bytes]]) -> None:
    """Commit ``m`` and record what it sends an observer ``o`` now."""
    m.commit()
    frames.extend((m.peer, f) for f in m.sync_to("o"))


def replay_every_order(
    make_memory: MakeMemory,
    frames: list[tuple[str, bytes]],
    check: Callable[[hs.Memory], None] | None = None,
) -> tuple[hs.Memory, int]:
    """Deliver ``frames`` to fresh observers in every order; all must end identical.
    Returns the first observer and the number of orders tried."""
    first: hs.Memory | None = None
    count = 0
    for order in itertools.permutations(range(len(frames))):
        o = make_memory("o")
        for i in order:
            o.receive(*frames[i])
        if first is None:
            first = o
        else:
            assert snapshot(o) == snapshot(first), f"delivery order {order} diverged"
            assert o.regions() == first.regions()
        if check is not None:
            check(o)
        count += 1
    assert first is not None
    return first, count


# ---- Q4 ------------------------------------------------------------------------------------


def test_q4_buffer_ships_quantized_and_every_replica_holds_the_dequantized_values(
    make_memory: MakeMemory,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    shape = (64, F16_BLOCK)  # 64 blocks, 256 KiB
    kv = a.buffer("kv", shape=shape, dtype="float16", codec="q4")
    assert kv.codec == "q4"
    values = np.random.default_rng(3).standard_normal(shape).astype(np.float16)
    kv.array[:] = values
    a.commit()
    expected = q4_decode(q4_encode(values)).reshape(shape)
    # the writer's working copy took the dequantized values
    np.testing.assert_array_equal(kv.array, expected)
    payload = a.history()[-1].payload
    assert len(payload) <= 0.2825 * values.nbytes + 200
    sync_pair(a, b)
    got = b.buffer("kv", shape=shape, dtype="float16")  # codec=None opens any codec
    assert got.codec == "q4"
    assert got.read().tobytes() == expected.tobytes()
    assert_converged([a, b])
    err = np.abs(got.read().astype(np.float32) - values.astype(np.float32)).max()
    assert 0 < err < 0.5


def test_q4_rewrite_of_one_value_keeps_every_other_group_exactly(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    shape = (4, F16_BLOCK)
    kv = a.buffer("kv", shape=shape, dtype="float16", codec="q4")
    kv.array[:] = np.random.default_rng(5).uniform(-3, 3, shape).astype(np.float16)
    sync_pair(a, b)
    before = kv.read()
    for _ in range(3):  # repeated edits of one value: the other groups never drift
        kv.array[1, 70] += np.float16(1.0)
        sync_pair(a, b)
    after = kv.read()
    changed = np.flatnonzero((after != before).reshape(-1, 64).any(axis=1))
    assert changed.tolist() == [(F16_BLOCK + 70) // 64]
    assert b.buffer("kv", shape=shape, dtype="float16").read().tobytes() == after.tobytes()
    # only one block went over the wire per edit, as Q4
    assert len(a.history()[-1].payload) < BLOCK_BYTES // 2


def test_q4_saturates_non_finite_values_at_the_cycle(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=(128,), dtype="float16", codec="q4")
    kv.array[:] = 1.0
    kv.array[0] = np.inf
    kv.array[1] = -np.inf
    kv.array[64] = np.nan
    sync_pair(a, b)
    arr = b.buffer("kv", shape=(128,), dtype="float16").read()
    assert np.isfinite(arr).all()
    assert arr[0] == 65504.0 and arr[1] == -65504.0
    assert abs(float(arr[64])) <= 1.0  # nan became 0, quantized with its group
    np.testing.assert_array_equal(kv.array, arr)
    assert_converged([a, b])


def test_q4_handle_arguments_are_checked(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    with pytest.raises(hs.ConfigError, match="float16"):
        a.buffer("x", shape=(4,), dtype="float32", codec="q4")
    with pytest.raises(hs.ConfigError, match="codec"):
        a.buffer("x", shape=(4,), dtype="float16", codec="zstd")
    a.buffer("kv", shape=(4,), dtype="float16", codec="q4")
    a.buffer("kv", shape=(4,), dtype="float16")  # any codec
    with pytest.raises(hs.ConfigError, match="q4"):
        a.buffer("kv", shape=(4,), dtype="float16", codec="raw")
    a.buffer("raw", shape=(4,), dtype="float16")
    with pytest.raises(hs.ConfigError):
        a.buffer("raw", shape=(4,), dtype="float16", codec="q4")


def _delta_contribution(layout: list[object], indices: bytes, data: bytes) -> Contribution:
    delta = msgpack.packb([*layout, indices, data], use_bin_type=True)
    payload = encode_parts([Part("buffer", "kv", delta)])
    return Contribution.create("space", "x", 1, (), 1, 0, "multi", payload)


GOOD_Q4 = q4_encode(np.ones(F16_BLOCK, dtype=np.float16)).to_bytes()
IDX0 = np.array([0], dtype="<u4").tobytes()


@pytest.mark.parametrize(
    ("layout", "indices", "data"),
    [
        ([[F16_BLOCK], "float16", BLOCK_BYTES, "q4"], IDX0, GOOD_Q4[:-1]),  # truncated
        ([[F16_BLOCK], "float16", BLOCK_BYTES, "q4"], IDX0, GOOD_Q4 + b"\0"),  # trailing
        ([[F16_BLOCK], "float16", BLOCK_BYTES, "q4"], IDX0, b"\x00" + GOOD_Q4[1:]),  # format
        (
            [[F16_BLOCK], "float16", BLOCK_BYTES, "q4"],
            IDX0,  # nan scale
            GOOD_Q4[:9] + b"\x00\x7e" + GOOD_Q4[11:],
        ),
        ([[2 * F16_BLOCK], "float16", BLOCK_BYTES, "q4"], IDX0 * 2, GOOD_Q4),  # repeated block
        (
            [[2 * F16_BLOCK], "float16", BLOCK_BYTES, "q4"],  # one block's values for two blocks
            np.array([0, 1], dtype="<u4").tobytes(),
            GOOD_Q4,
        ),
        ([[F16_BLOCK], "float32", BLOCK_BYTES, "q4"], IDX0, GOOD_Q4),  # q4 of float32
        ([[F16_BLOCK], "float16", 100, "q4"], IDX0, GOOD_Q4),  # blocks split groups
        ([[F16_BLOCK], "float16", BLOCK_BYTES, "lz4"], IDX0, GOOD_Q4),  # unknown codec
        ([[F16_BLOCK], "float16", BLOCK_BYTES, "raw"], IDX0, b"\0" * 10),  # short raw
        ([[F16_BLOCK], "float16", BLOCK_BYTES, "raw"], b"\1\0\0\0", b"\0" * BLOCK_BYTES),
        ([[F16_BLOCK], "float16", BLOCK_BYTES, "raw"], b"\0\0\0", b""),  # ragged indices
    ],
    ids=[
        "truncated",
        "trailing",
        "format",
        "nan-scale",
        "repeated",
        "too-few-values",
        "q4-float32",
        "group-split",
        "codec",
        "short-raw",
        "index-range",
        "ragged",
    ],
)
def test_bad_deltas_are_rejected_before_anything_changes(
    make_memory: MakeMemory,
    layout: list[object],
    indices: bytes,
    data: bytes,
) -> None:
    with pytest.raises(hs.PayloadError):
        decode_delta(msgpack.packb([*layout, indices, data], use_bin_type=True))
    r = make_memory("r")
    r.buffer("kv", shape=(8,), dtype="uint8").array[0] = 1
    r.commit()
    before = snapshot(r)
    with pytest.raises(hs.ProtocolError):
        r.receive(
            "x", encode_frame(1, [("x", 1)], [_delta_contribution(layout, indices, data)], None)
        )
    assert snapshot(r) == before


def test_delta_round_trip_with_a_short_last_block() -> None:
    layout = buffer_layout((3 * F16_BLOCK + 100,), "float16", "q4")
    values = np.arange(F16_BLOCK + 100, dtype=np.float16)
    indices = np.array([1, 3], dtype=np.int64)
    delta = decode_delta(encode_delta(layout, indices, q4_encode(values).to_bytes()))
    assert delta.layout == layout and delta.indices.tolist() == [1, 3]
    assert delta.block_bytes().nbytes == values.nbytes
    raw = buffer_layout((3 * BLOCK_BYTES + 7,), "uint8", None)
    data = bytes(range(256)) * 16 + b"tail123"
    d = decode_delta(encode_delta(raw, np.array([2, 3]), data))
    assert d.data == data


# ---- the layout rule ----------------------------------------------------------------------


def test_concurrent_layouts_converge_in_every_delivery_order(make_memory: MakeMemory) -> None:
    """Three concurrent creations of ``kv`` with three layouts; the first in the order wins on
    every replica, the other two are reported; the later-sorting creations that arrived
    first are undone. Then the losers write again through the winning layout."""
    a, b, c = make_memory("a"), make_memory("b"), make_memory("c")
    layouts = {
        "a": ((4,), "uint8", None),
        "b": ((8,), "uint8", None),
        "c": ((2 * F16_BLOCK,), "float16", "q4"),
    }
    frames: list[tuple[str, bytes]] = []
    for m in (a, b, c):
        shape, dtype, codec = layouts[m.peer]
        m.buffer("kv", shape=shape, dtype=dtype, codec=codec).array[0] = 3
        frames_for(m, frames)
    sync_all([a, b, c])
    ref = assert_converged([a, b, c])
    creations = [x for x in a.history() if x.author in "abc"]
    winner, *losers = creations
    shape, dtype, codec = layouts[winner.author]
    mismatches = [x for x in ref.conflicts if x.kind == "layout-mismatch"]
    # a conflict lists its contributions in the order: the creation, then the loser
    assert sorted(x.contributions[1] for x in mismatches) == sorted(x.hex_id for x in losers)
    assert all(x.contributions[0] == winner.hex_id for x in mismatches)
    for m in (a, b, c):  # the losers' handles switched to the winning layout
        kv = m.buffer("kv", shape=shape, dtype=dtype)
        assert kv.shape == shape and kv.dtype == np.dtype(dtype)
        assert kv.read().reshape(-1)[0] == 3
        if m.peer != winner.author:
            with pytest.raises(hs.ConfigError):
                m.buffer("kv", shape=layouts[m.peer][0], dtype=layouts[m.peer][1])
    loser = next(m for m in (a, b, c) if m.peer == losers[0].author)
    loser.buffer("kv", shape=shape, dtype=dtype).array[-1] = 7
    frames_for(loser, frames)
    sync_all([a, b, c])
    final = assert_converged([a, b, c])
    assert a.buffer("kv", shape=shape, dtype=dtype).read().reshape(-1)[-1] == 7
    undone = 0

    def check(o: hs.Memory) -> None:
        assert o.buffer("kv", shape=shape, dtype=dtype).read().tobytes() == (
            a.buffer("kv", shape=shape, dtype=dtype).read().tobytes()
        )

    o, count = replay_every_order(make_memory, frames, check)
    assert count == 24
    assert snapshot(o) == final
    # a later-sorting creation delivered alone shows its own layout until the winner comes
    for peer, frame in frames[:3]:
        if peer != winner.author:
            x = make_memory("o")
            x.receive(peer, frame)
            assert (
                x.buffer("kv", shape=layouts[peer][0], dtype=layouts[peer][1]).shape
                == (layouts[peer][0])
            )
            undone += 1
    assert undone == 2


def test_write_after_seeing_a_deletion_recreates_with_its_own_layout() -> None:
    """A hostile or future writer may re-create a deleted buffer with another layout: the
    fold takes it (it saw the deletion), and a write concurrent with it is reported."""
    ids = {n: bytes([n]) * 32 for n in range(1, 5)}
    order = {ids[1]: 0, ids[2]: 1, ids[3]: 2, ids[4]: 2}

    def hb(x: bytes, y: bytes) -> bool:
        return order[x] < order[y]

    small = buffer_layout((4,), "uint8", None)
    big = buffer_layout((8,), "uint8", None)

    def delta(layout: Layout, value: int) -> object:
        return decode_delta(encode_delta(layout, np.array([0]), bytes([value]) * layout.nbytes))

    fold = BufferFold(None, hb)
    fold.add((3, ids[3]), ids[3], delta(big, 9))  # arrives first
    fold.add((3, ids[4]), ids[4], delta(small, 5))  # concurrent with ids[3]: mismatch
    fold.add((1, ids[1]), ids[1], delta(small, 1))
    fold.add((2, ids[2]), ids[2], None)
    assert fold.exists and fold.layout == big
    assert fold.array().tolist() == [9] * 8
    assert [i.kind for i in fold.issues()] == ["layout-mismatch"]
    assert fold.issues()[0].cid == ids[4] and fold.issues()[0].other == ids[3]


# ---- the kind rule ------------------------------------------------------------------------


def test_text_and_buffer_of_one_name_converge_in_every_delivery_order(
    make_memory: MakeMemory,
) -> None:
    a, b, c = make_memory("a"), make_memory("b"), make_memory("c")
    frames: list[tuple[str, bytes]] = []
    a.text("x").set("text by a")
    frames_for(a, frames)
    b.buffer("x", shape=(4,), dtype="uint8").array[:] = 2
    frames_for(b, frames)
    c.text("x").set("text by c")
    frames_for(c, frames)
    sync_all([a, b, c])
    ref = assert_converged([a, b, c])
    creations = [x for x in a.history() if x.author in "abc"]
    kind = "buffer" if creations[0].author == "b" else "text"
    assert a.regions() == {"x": kind}
    mismatches = {x.contributions[0] for x in ref.conflicts if x.kind == "kind-mismatch"}
    losing = {x.hex_id for x in creations if (x.author == "b") != (kind == "buffer")}
    assert mismatches == losing and losing
    for m in (a, b, c):
        if kind == "buffer":
            assert m.buffer("x", shape=(4,), dtype="uint8").read().tolist() == [2] * 4
            with pytest.raises(hs.ConfigError):
                m.text("x")
        else:
            with pytest.raises(hs.ConfigError):
                m.buffer("x", shape=(4,), dtype="uint8")
            assert set(m.text("x").value.split("text by ")) <= {"", "a", "c"}  # both survive
    o, count = replay_every_order(make_memory, frames)
    assert count == 6 and snapshot(o) == ref


@pytest.mark.parametrize("late_first", [True, False])
def test_an_earlier_creation_arriving_late_undoes_the_other_kind(
    make_memory: MakeMemory,
    late_first: bool,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("x").set("text")
    a.commit()
    b.fields["pad"] = 1  # b's buffer sorts after a's text (higher lamport)
    b.buffer("x", shape=(4,), dtype="uint8").array[:] = 9
    b.commit()
    o = make_memory("o")
    first, second = (b, a) if late_first else (a, b)
    for m in (first, second):
        for f in m.sync_to("o"):
            o.receive(m.peer, f)
    if late_first:
        assert [c.kind for c in o.conflicts()] == ["kind-mismatch"]
    assert o.regions() == {"x": "text"} and o.text("x").value == "text"
    (conflict,) = o.conflicts()
    assert conflict.plane == "buffer" and conflict.authors == ("b",)
    sync_pair(a, b)
    sync_pair(b, o)
    assert_converged([a, b, o])


# ---- change detection and compaction ------------------------------------------------------


@pytest.mark.parametrize("tail", [0, 1, 8, BLOCK_BYTES - 1])
def test_changed_blocks_finds_exactly_the_changed_blocks(tail: int) -> None:
    rng = np.random.default_rng(tail)
    n_blocks = 2 * COMPARE_CHUNK_BLOCKS + 3
    ref = rng.integers(0, 256, n_blocks * BLOCK_BYTES + tail, dtype=np.uint8)
    work = ref.copy()
    assert _changed_blocks(ref, work).tolist() == []
    picks = sorted(
        {
            0,
            COMPARE_CHUNK_BLOCKS - 1,
            COMPARE_CHUNK_BLOCKS,
            n_blocks - 1,
            *rng.choice(n_blocks, 20).tolist(),
        }
    )
    for i in picks:
        work[i * BLOCK_BYTES + int(rng.integers(BLOCK_BYTES))] ^= 0x80
    expected = picks + ([n_blocks] if tail else [])
    if tail:
        work[-1] ^= 1
    assert _changed_blocks(ref, work).tolist() == expected
    # misaligned views take the byte path and agree
    assert _changed_blocks(ref[1:], work[1:], BLOCK_BYTES).size >= len(picks)


@pytest.mark.parametrize("codec", [None, "q4"])
def test_compaction_keeps_the_value_and_a_q4_base_is_small(
    make_memory: MakeMemory,
    codec: str | None,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    shape = (8, F16_BLOCK)
    kv = a.buffer("kv", shape=shape, dtype="float16", codec=codec)
    rng = np.random.default_rng(11)
    for _ in range(3):
        kv.array[int(rng.integers(8))] = rng.standard_normal(F16_BLOCK).astype(np.float16)
        a.commit()
    b.buffer("kv", shape=shape, dtype="float16", codec=codec).array[7, 0] = 5
    sync_pair(a, b)
    fold = a._regions.buffers["kv"].fold
    value, issues = fold.data.tobytes(), fold.issues()
    upto = a.history()[-2].order_key
    dropped = fold.compact(upto)
    assert fold.data.tobytes() == value
    assert sorted(map(repr, [*fold.issues(), *dropped])) == sorted(map(repr, issues))
    base = fold.base()
    assert base is not None
    nbytes = int(np.prod(shape)) * 2
    assert len(base[1]) == (nbytes if codec is None else 9 + 36 * nbytes // 128)
    fresh = BufferFold(None, fold._hb)
    lay = base[0]
    fresh.restore_base(Layout(tuple(lay[0]), lay[1], lay[2], lay[3]), *base[1:])
    entries = fold._entries
    for e in entries:
        fresh.add(e.key, e.cid, e.delta)
    assert fresh.data.tobytes() == value
    # a late write still folds on top of the base
    kv.array[0, 0] = 1.0
    sync_pair(a, b)
    assert_converged([a, b])


def test_writing_back_the_value_a_remote_write_replaced_is_sent(make_memory: MakeMemory) -> None:
    """The block hashes must follow remote folds: a's last hashed value of block 0 is v0; b
    writes v1; a writes v0 again, which must differ from the fold (v1) and be shipped."""
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=(8, BLOCK_BYTES), dtype="uint8")
    kv.array[0, :] = 5
    sync_pair(a, b)
    a.commit()  # a hashes its spans (block 0 holds v0 = 5)
    b.buffer("kv", shape=(8, BLOCK_BYTES), dtype="uint8").array[0, :] = 6
    sync_pair(a, b)
    assert kv.array[0, 0] == 6
    kv.array[0, :] = 5
    a.commit()
    assert a.history()[-1].author == "a"
    sync_pair(a, b)
    assert b.buffer("kv", shape=(8, BLOCK_BYTES), dtype="uint8").read()[0, 0] == 5
    assert_converged([a, b])


def test_a_delta_larger_than_one_payload_goes_out_over_several_cycles(
    make_memory: MakeMemory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hybridsync.regions._buffer.MAX_DELTA_BYTES", 2 * BLOCK_BYTES)
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=(5, BLOCK_BYTES), dtype="uint8")
    kv.array[:] = np.arange(5, dtype=np.uint8)[:, None] + 1
    a.commit()
    assert len(a.history()) == 1 and len(a.history()[0].payload) < 3 * BLOCK_BYTES
    sync_pair(a, b)  # every sync_to runs a cycle: the rest follows
    assert len([c for c in a.history() if c.author == "a"]) == 3
    assert b.buffer("kv", shape=(5, BLOCK_BYTES), dtype="uint8").read().tobytes() == (
        kv.read().tobytes())
    assert_converged([a, b])


def test_a_replica_that_never_touches_the_array_does_not_scan_it(
    make_memory: MakeMemory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    scans: list[int] = []
    real = _BufferState._block_views
    monkeypatch.setattr(_BufferState, "_block_views",
                        lambda st, layout: scans.append(1) or real(st, layout))
    a, b = make_memory("a"), make_memory("b")
    a.buffer("kv", shape=(4, BLOCK_BYTES), dtype="uint8").array[1] = 3
    sync_pair(a, b)
    assert scans == [1]  # a's cycle after its .array write
    state = b._regions.buffers["kv"]
    assert state.changed_blocks().size == 0
    assert b.buffer("kv", shape=(4, BLOCK_BYTES), dtype="uint8").read()[1, 0] == 3
    b.buffer("kv", shape=(4, BLOCK_BYTES), dtype="uint8").write(0, [9])  # read() copies
    assert state.changed_blocks().tolist() == [0]
    assert scans == [1]  # b never hashed more than what it wrote
