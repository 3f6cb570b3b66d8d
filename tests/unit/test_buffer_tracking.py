"""Which blocks a buffer's cycle looks at: ``write()`` marks its blocks, and the cycle hashes
only those while no array handed out by ``.array`` can still be alive; otherwise it hashes
every block. The tests below write through every kind of kept or dropped view and check that
no write is ever missed (the replicas must equal a plain numpy model after every sync)."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import hybridsync as hs
from hybridsync.regions._buffer import BLOCK_BYTES, _BufferState, decode_delta
from hybridsync.regions._parts import decode_parts
from hybridsync.testing import assert_converged, sync_pair

MakeMemory = Callable[..., hs.Memory]
F16_BLOCK = BLOCK_BYTES // 2  # float16 values in one block
SHAPE = (8, F16_BLOCK)


@pytest.fixture
def full_scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the cycles that hash every block (a full scan asks for the block views)."""
    calls: list[int] = []
    real = _BufferState._block_views

    def counting(self: _BufferState, layout: Any) -> list[memoryview]:
        calls.append(1)
        return real(self, layout)

    monkeypatch.setattr(_BufferState, "_block_views", counting)
    yield calls


def shipped_blocks(mem: hs.Memory) -> list[int]:
    """Block indices of the buffer part of ``mem``'s last contribution."""
    parts = [p for p in decode_parts(mem.history()[-1].payload) if p.plane == "buffer"]
    assert len(parts) == 1
    return [int(i) for i in decode_delta(parts[0].data).indices]


def value(mem: hs.Memory) -> np.ndarray:
    return mem.buffer("kv", shape=SHAPE, dtype="float16").read()


def pair(make_memory: MakeMemory) -> tuple[hs.Memory, hs.Memory, hs.BufferRegion]:
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=SHAPE, dtype="float16")
    kv.write(0, np.arange(F16_BLOCK, dtype=np.float16))  # block 0, no array handed out
    sync_pair(a, b)
    return a, b, kv


# ---- kept views ----------------------------------------------------------------------------


def _keep_array(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    arr = kv.array

    def put(block: int, x: float) -> None:
        arr[block, 1] = x

    return put


def _keep_row(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    rows = [kv.array[i] for i in range(SHAPE[0])]  # each .array dies right away

    def put(block: int, x: float) -> None:
        rows[block][1] = x

    return put


def _keep_bytes(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    raw = kv.array.reshape(-1).view(np.uint8)

    def put(block: int, x: float) -> None:
        raw[block * BLOCK_BYTES + 2 : block * BLOCK_BYTES + 4] = (
            np.array([x], dtype=np.float16).view(np.uint8))

    return put


def _keep_transpose(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    t = kv.array.T

    def put(block: int, x: float) -> None:
        t[1, block] = x

    return put


def _keep_strided(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    firsts = np.lib.stride_tricks.as_strided(kv.array[:, 1], shape=(SHAPE[0],),
                                             strides=(BLOCK_BYTES,))

    def put(block: int, x: float) -> None:
        firsts[block] = x

    return put


def _keep_memoryview(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    mv = memoryview(kv.array).cast("B")

    def put(block: int, x: float) -> None:
        encoded = np.array([x], dtype=np.float16).tobytes()
        mv[block * BLOCK_BYTES + 2 : block * BLOCK_BYTES + 4] = encoded

    return put


def _keep_ctypes(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    handle = kv.array.ctypes  # keeps the array alive while it is

    def put(block: int, x: float) -> None:
        encoded = np.array([x], dtype=np.float16).tobytes()
        ctypes.memmove(handle.data + block * BLOCK_BYTES + 2, encoded, 2)

    return put


def _keep_flat(kv: hs.BufferRegion) -> Callable[[int, float], None]:
    it = kv.array.flat

    def put(block: int, x: float) -> None:
        it[block * F16_BLOCK + 1] = x

    return put


KEEPERS = {
    "array": _keep_array, "row": _keep_row, "uint8 view": _keep_bytes,
    "transpose": _keep_transpose, "as_strided": _keep_strided, "memoryview": _keep_memoryview,
    "ctypes": _keep_ctypes, "flatiter": _keep_flat,
}


@pytest.mark.parametrize("how", sorted(KEEPERS))
def test_writes_through_a_kept_view_are_never_missed(make_memory: MakeMemory, how: str) -> None:
    """The handed-out array itself may be gone; whatever was derived from it still writes."""
    a, b, kv = pair(make_memory)
    put = KEEPERS[how](kv)
    gc.collect()
    sync_pair(a, b)  # a cycle with the view alive and nothing written
    for block, x in ((5, 1.5), (2, -2.0), (5, 3.0)):
        put(block, x)
        sync_pair(a, b)
        assert a.history()[-1].author == "a" and shipped_blocks(a) == [block]
        assert value(b)[block, 1] == x
        np.testing.assert_array_equal(value(b), kv.read())
    kv.write(7 * F16_BLOCK, [4.0])  # write() next to a live view: both paths at once
    put(6, 5.0)
    sync_pair(a, b)
    assert shipped_blocks(a) == [6, 7]
    assert_converged([a, b])


def test_writes_through_an_array_dropped_before_the_cycle_are_seen(
    make_memory: MakeMemory, full_scans: list[int],
) -> None:
    """No array is alive at the cycle, but one was since the last scan: scan everything."""
    a, b, kv = pair(make_memory)
    arr = kv.array
    arr[3, 0] = 7.0
    del arr
    gc.collect()
    sync_pair(a, b)
    assert shipped_blocks(a) == [3] and value(b)[3, 0] == 7.0
    kv.array[4, 0] = 8.0  # a temporary: dead before the cycle
    sync_pair(a, b)
    assert shipped_blocks(a) == [4] and value(b)[4, 0] == 8.0
    assert len(full_scans) == 2
    # with nothing handed out since, write() cycles look at their blocks only
    for i in range(3):
        kv.write(i * F16_BLOCK + 5, [float(i + 1)])
        sync_pair(a, b)
        assert shipped_blocks(a) == [i]
    assert len(full_scans) == 2
    assert_converged([a, b])


def test_array_is_the_same_object_while_it_is_alive(make_memory: MakeMemory) -> None:
    kv = make_memory("a").buffer("kv", shape=SHAPE, dtype="float16")
    arr = kv.array
    assert kv.array is arr
    assert arr.flags.writeable and arr.shape == SHAPE and arr.dtype == np.float16
    arr[0, 0] = 2.0
    assert kv.read()[0, 0] == 2.0


# ---- write() marks ---------------------------------------------------------------------------


def test_write_ships_exactly_the_blocks_it_touched_without_a_full_scan(
    make_memory: MakeMemory, full_scans: list[int],
) -> None:
    a, b = make_memory("a"), make_memory("b")
    n = 3 * F16_BLOCK + 10  # a short last block of 20 bytes
    kv = a.buffer("kv", shape=(n,), dtype="float16")
    kv.write(F16_BLOCK - 2, [1, 2, 3, 4])  # across the boundary of blocks 0 and 1
    sync_pair(a, b)
    assert shipped_blocks(a) == [0, 1]
    kv.write(n - 3, [5, 6, 7])  # the short last block
    sync_pair(a, b)
    assert shipped_blocks(a) == [3]
    kv.write(2 * F16_BLOCK, np.zeros(F16_BLOCK))  # a whole block, its values unchanged
    before = len(a.history())
    sync_pair(a, b)
    assert len(a.history()) == before  # marked, hashed, equal: nothing to commit
    got = b.buffer("kv", shape=(n,), dtype="float16").read()
    np.testing.assert_array_equal(got, kv.read())
    assert got[F16_BLOCK - 2 : F16_BLOCK + 2].tolist() == [1, 2, 3, 4]
    assert got[-3:].tolist() == [5, 6, 7]
    assert full_scans == []
    assert_converged([a, b])


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float64"])
def test_write_marks_blocks_by_byte_offset_for_every_item_size(
    make_memory: MakeMemory, dtype: str,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    per_block = BLOCK_BYTES // np.dtype(dtype).itemsize
    kv = a.buffer("kv", shape=(4 * per_block,), dtype=dtype)
    kv.write(per_block - 1, [9, 9])  # the last item of block 0 and the first of block 1
    kv.write(3 * per_block + per_block // 2, [3])
    sync_pair(a, b)
    assert shipped_blocks(a) == [0, 1, 3]
    np.testing.assert_array_equal(b.buffer("kv", shape=(4 * per_block,), dtype=dtype).read(),
                                  kv.read())


def test_write_back_of_the_value_a_remote_write_replaced_is_sent(make_memory: MakeMemory) -> None:
    """The folded block's hash must follow the remote fold: a wrote v0, b overwrote it with
    v1; a writing v0 again differs from the fold (v1) and must ship."""
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=(4, BLOCK_BYTES), dtype="uint8")
    kv.write(0, np.full(BLOCK_BYTES, 5))
    sync_pair(a, b)
    b.buffer("kv", shape=(4, BLOCK_BYTES), dtype="uint8").write(0, np.full(BLOCK_BYTES, 6))
    sync_pair(a, b)
    assert kv.read()[0, 0] == 6
    kv.write(0, np.full(BLOCK_BYTES, 5))
    sync_pair(a, b)
    assert a.history()[-1].author == "a" and shipped_blocks(a) == [0]
    assert b.buffer("kv", shape=(4, BLOCK_BYTES), dtype="uint8").read()[0, 0] == 5
    assert_converged([a, b])


def test_an_aborted_transaction_drops_its_writes_and_marks(make_memory: MakeMemory) -> None:
    a, b, kv = pair(make_memory)
    before = kv.read()
    with pytest.raises(RuntimeError), a.transaction():
        kv.write(3 * F16_BLOCK, [1.0, 2.0])
        raise RuntimeError("abort")
    np.testing.assert_array_equal(kv.read(), before)
    kv.write(4 * F16_BLOCK, [3.0])
    sync_pair(a, b)
    assert shipped_blocks(a) == [4]
    np.testing.assert_array_equal(value(b), kv.read())


def test_q4_buffer_written_with_write(make_memory: MakeMemory, full_scans: list[int]) -> None:
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=SHAPE, dtype="float16", codec="q4")
    rng = np.random.default_rng(8)
    for block in (1, 6):
        kv.write(block * F16_BLOCK, rng.standard_normal(F16_BLOCK))
        sync_pair(a, b)
        assert shipped_blocks(a) == [block]
    got = b.buffer("kv", shape=SHAPE, dtype="float16")
    assert got.codec == "q4" and got.read().tobytes() == kv.read().tobytes()
    assert full_scans == []
    assert_converged([a, b])


def test_a_layout_change_forgets_arrays_over_the_old_working_copy(
    make_memory: MakeMemory, full_scans: list[int],
) -> None:
    """b's creation of the region sorts before a's (a wrote a field first), so a's working
    copy takes b's layout; a's array over the old memory no longer aliases the working copy,
    and a's write() cycles stay marked-only."""
    a, b = make_memory("a"), make_memory("b")
    a.fields["first"] = 1  # a's buffer write gets lamport 2
    old = a.buffer("kv", shape=(4,), dtype="uint8").array
    old[0] = 1
    a.commit()
    b.buffer("kv", shape=(2, BLOCK_BYTES), dtype="uint8").write(0, [9])
    b.commit()  # lamport 1: sorts first, decides the layout
    sync_pair(a, b)
    assert [c.kind for c in a.conflicts()] == ["layout-mismatch"]
    scans = len(full_scans)
    kv = a.buffer("kv", shape=(2, BLOCK_BYTES), dtype="uint8")
    kv.write(BLOCK_BYTES, [4])
    sync_pair(a, b)
    assert shipped_blocks(a) == [1] and len(full_scans) == scans
    assert b.buffer("kv", shape=(2, BLOCK_BYTES), dtype="uint8").read().tolist() == (
        kv.read().tolist())
    assert kv.read()[0, 0] == 9 and kv.read()[1, 0] == 4
    assert old[0] == 1  # the old array still holds its own memory
    assert_converged([a, b])


# ---- a model ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_every_write_path_matches_a_numpy_model(make_memory: MakeMemory, seed: int) -> None:
    """Random writes by ``write()``, by kept and dropped views, and by the other replica, one
    sync after each: both replicas always equal the model (the last write wins)."""
    rng = np.random.default_rng(seed)
    a, b = make_memory("a"), make_memory("b")
    shape = (6, BLOCK_BYTES // 4)
    model = np.zeros(shape, dtype=np.float32)
    kv = a.buffer("kv", shape=shape, dtype="float32")
    other = b.buffer("kv", shape=shape, dtype="float32")
    kept: list[tuple[int, np.ndarray]] = []  # rows of arrays from kv.array, kept
    for _ in range(60):
        op = int(rng.integers(6))
        row, col = int(rng.integers(shape[0])), int(rng.integers(shape[1]))
        x = float(rng.integers(1, 1000))
        if op == 0:
            kv.write(row * shape[1] + col, [x])
        elif op == 1:
            kv.array[row, col] = x
        elif op == 2:
            kept.append((row, kv.array[row]))
            kept[-1][1][col] = x
        elif op == 3 and kept:
            row, view = kept[int(rng.integers(len(kept)))]
            view[col] = x
        elif op == 4:
            kept.clear()
            gc.collect()
            continue
        else:
            other.write(row * shape[1] + col, [x])
        model[row, col] = x
        sync_pair(a, b)
        np.testing.assert_array_equal(kv.read(), model)
        np.testing.assert_array_equal(other.read(), model)
    assert_converged([a, b])
