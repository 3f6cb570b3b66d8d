"""Buffer regions: numpy working copies, the cycle's block deltas and their wire form.

There is no shadow copy: the fold (``BufferFold``) holds the value as of this replica's heads
already, so the cycle compares the working copy with the fold's bytes block by block
(``BLOCK_BYTES``) and ships the changed blocks. After a fold, only the blocks it wrote are
copied into the working copy.

Finding the changed blocks (``_BufferState.changed_blocks``) compares the xxh3-64 of each
block of the working copy with the folded block's (kept, and recomputed where a fold wrote).
Writes made with ``write()`` mark their blocks, and while no array handed out by ``.array``
is alive the cycle hashes only those; otherwise it hashes every block (docs/benchmarks.md, W4).

With ``codec="q4"`` (float16 only) a delta carries the changed blocks as Q4 groups
(``_q4.py``, ~0.28x the bytes). The region's value is the *dequantized* data, so every replica
holds the same bytes; the writer's working copy takes them after its cycle. Groups of a changed
block whose values did not change are re-sent as they were (no drift from re-quantizing).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import numpy.typing as npt
import xxhash

from hybridsync.errors import ConfigError, PayloadError
from hybridsync.regions._bufferfold import CODECS, BufferDelta, BufferFold, Layout
from hybridsync.regions._folds import HappenedBefore
from hybridsync.regions._parts import Part
from hybridsync.regions._q4 import GROUP_SIZE, Q4Block, q4_encode
from hybridsync.regions._textdiff import unpack_list

if TYPE_CHECKING:
    from hybridsync.regions._plane import RegionsPlane

__all__ = [
    "BLOCK_BYTES",
    "BufferRegion",
    "buffer_layout",
    "decode_delta",
    "encode_delta",
    "layout_from_wire",
]

BLOCK_BYTES = 4096  # one page: ~0.1 % framing overhead per changed block, cheap to compare
MAX_BUFFER_BYTES = 1 << 34
DTYPES = {"float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
          "uint32", "int64", "uint64", "bool"}
COMPARE_CHUNK_BLOCKS = 1024  # 4 MiB of each side per step: temporaries stay in cache
# One cycle ships at most this many bytes of blocks (a contribution must fit in one frame,
# MAX_PAYLOAD_BYTES); the remaining changed blocks go with the next cycles.
MAX_DELTA_BYTES = 12 << 20
_NO_BLOCKS = np.zeros(0, dtype=np.int64)
_NO_BLOCKS.setflags(write=False)
_xxh3 = xxhash.xxh3_64_intdigest


def buffer_layout(shape: Any, dtype: Any, codec: str | None) -> Layout:
    """Validate a handle's arguments; :class:`ConfigError` on anything unsupported."""
    dims = shape if isinstance(shape, tuple | list) else (shape,)
    if not dims or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) for n in dims
    ):
        raise ConfigError(f"buffer shape must be an int or a tuple of ints, got {shape!r}")
    shp = tuple(int(n) for n in dims)
    try:
        dt = np.dtype(dtype).name
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad buffer dtype: {exc}") from None
    if dt not in DTYPES or any(n < 0 for n in shp):
        raise ConfigError(f"unsupported buffer dtype {dt!r} or negative shape")
    count = 1
    for n in shp:  # Python ints: a huge dimension cannot overflow the check
        count *= n
    if count * np.dtype(dt).itemsize > MAX_BUFFER_BYTES:
        raise ConfigError("buffer too large")
    codec = "raw" if codec is None else codec
    if codec not in CODECS:
        raise ConfigError(f"unknown buffer codec {codec!r}; use one of {CODECS}")
    if codec == "q4" and dt != "float16":
        raise ConfigError(f"the q4 codec stores float16 buffers, not {dt}")
    return Layout(shp, dt, BLOCK_BYTES, codec)


# ---- wire form ---------------------------------------------------------------------------


def encode_delta(layout: Layout, indices: npt.NDArray[np.int64], data: Any) -> bytes:
    """``[shape, dtype, block_bytes, codec, indices (uint32 LE), data]``: raw data is the
    blocks' bytes concatenated, Q4 data one ``Q4Block`` of their concatenated values."""
    out: bytes = msgpack.packb(
        [list(layout.shape), layout.dtype, layout.block_bytes, layout.codec,
         indices.astype("<u4").tobytes(), data],
        use_bin_type=True,
    )
    return out


def decode_delta(data: bytes) -> BufferDelta:
    """Parse and validate a delta; :class:`PayloadError` on anything malformed."""
    raw = unpack_list(data, "buffer delta")
    if len(raw) != 6:
        raise PayloadError("a buffer delta is [shape, dtype, block_bytes, codec, indices, data]")
    *lay, idx, blob = raw
    layout = layout_from_wire(lay)
    if type(idx) is not bytes or len(idx) % 4 or type(blob) is not bytes:
        raise PayloadError("delta indices and data must be bytes (indices: uint32 each)")
    indices = np.frombuffer(idx, dtype="<u4").astype(np.int64)
    if len(indices) and (int(indices[-1]) >= layout.blocks
                         or (len(indices) > 1 and not (np.diff(indices) > 0).all())):
        raise PayloadError("delta block indices must increase strictly and lie in the buffer")
    size = layout.block_sizes(indices)
    if layout.codec == "raw":
        if len(blob) != size:
            raise PayloadError(f"delta data is {len(blob)} bytes; its blocks need {size}")
        return BufferDelta(layout, indices, data=blob)
    block = Q4Block.from_bytes(blob)
    if block.length != size // 2:
        raise PayloadError(f"Q4 delta holds {block.length} values; its blocks need {size // 2}")
    return BufferDelta(layout, indices, q4=block)


def layout_from_wire(raw: Any) -> Layout:
    """``[shape, dtype, block_bytes, codec]`` from a peer; :class:`PayloadError` if bad."""
    if type(raw) is not list or len(raw) != 4:
        raise PayloadError("a buffer layout is [shape, dtype, block_bytes, codec]")
    shape, dtype, bb, codec = raw
    if (type(shape) is not list or len(shape) > 32
            or any(type(n) is not int or not 0 <= n < 1 << 40 for n in shape)):
        raise PayloadError("buffer shape must be a list of non-negative ints")
    if type(dtype) is not str or dtype not in DTYPES:
        raise PayloadError(f"unsupported buffer dtype {dtype!r}")
    if type(bb) is not int or not 64 <= bb <= 1 << 24:
        raise PayloadError("bad block size")
    if type(codec) is not str or codec not in CODECS:
        raise PayloadError(f"unknown buffer codec {codec!r}")
    if codec == "q4" and (dtype != "float16" or bb % (2 * GROUP_SIZE)):
        raise PayloadError("a q4 buffer is float16 with blocks of whole 64-value groups")
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > MAX_BUFFER_BYTES:
        raise PayloadError("buffer too large")
    return Layout(tuple(shape), dtype, bb, codec)


# ---- the working copy and the cycle ------------------------------------------------------


class _BufferState:
    """The working copy of one buffer region and its fold (the fold's bytes are the shadow).

    Change tracking. ``_dirty`` marks the blocks that may differ from the fold. It is
    *complete* (every other block equals the fold's) while ``_tracked`` holds and no array
    handed out by :meth:`handout` is alive: ``write()`` marks what it writes, a fold's refresh
    unmarks what it copies, and the cycle then looks at the marked blocks only. An array
    handed out for writing in place clears ``_tracked``; the cycles then hash every block,
    and the first scan that starts with no such array alive makes ``_dirty`` complete again.

    A handed-out array is ``frombuffer(memoryview(v))`` of a private view ``v`` of the
    working copy. numpy collapses a view's ``base`` only down to the first object that is not
    an ndarray (the memoryview), so every array, memoryview or ctypes object derived from a
    handed-out array keeps ``v`` alive: ``v`` dead means no such object is left.

    Hashes (xxh3-64, DESIGN.md section 5: hashing one array is faster than comparing two):
    ``_hash`` holds the folded value's per block where ``_hash_valid``; a fold's refresh
    clears the flag of what it wrote, and the next look at those blocks rehashes them.
    """

    __slots__ = ("_array_ref", "_dirty", "_gone", "_hash", "_hash_valid", "_tracked",
                 "_view_ref", "_views", "fold", "layout", "working")

    def __init__(self, layout: Layout | None, hb: HappenedBefore) -> None:
        self.fold = BufferFold(layout, hb)
        self._gone: bytes | None = None  # the deletion in effect at the last refresh
        self.layout = layout
        self.fold.take_touched()
        self._set_working(
            np.zeros(layout.shape, dtype=layout.dtype) if layout is not None
            else np.zeros(0, dtype=np.uint8))

    def _set_working(self, working: np.ndarray) -> None:
        """A new working copy, equal to the folded value (or zeros before any write)."""
        self.working = working
        blocks = self.layout.blocks if self.layout is not None else 0
        self._dirty = np.zeros(blocks, dtype=bool)
        self._tracked = True
        # arrays handed out earlier view the old memory: they no longer alias this one
        self._view_ref: weakref.ref[np.ndarray] | None = None
        self._array_ref: weakref.ref[np.ndarray] | None = None
        self._hash = np.zeros(blocks, dtype=np.uint64)
        self._hash_valid = np.zeros(blocks, dtype=bool)
        self._views: list[memoryview] | None = None  # the working copy's blocks, made lazily

    def open(self, name: str, layout: Layout, *, any_codec: bool) -> None:
        """A handle asks for ``layout``: adopt it if nothing decided one yet, else check it."""
        have = self.layout
        if have is None:  # only deletions folded so far
            self.fold.propose(layout)
            self.fold.take_touched()
            self.layout = layout
            self._set_working(np.zeros(layout.shape, dtype=layout.dtype))
            return
        if have == layout or (any_codec and have == Layout(
                layout.shape, layout.dtype, layout.block_bytes, have.codec)):
            return
        raise ConfigError(f"buffer {name!r} exists with {have.describe()}")

    # ---- writes ------------------------------------------------------------------------------
    def handout(self) -> np.ndarray:
        """A writable array over the working copy (the same one while it is alive)."""
        arr = self._array_ref() if self._array_ref is not None else None
        if arr is None:
            view = self._view_ref() if self._view_ref is not None else None
            if view is None:
                view = self.working.view()
                self._view_ref = weakref.ref(view)
            arr = np.frombuffer(view.data, dtype=view.dtype).reshape(view.shape)
            self._array_ref = weakref.ref(arr)
        self._tracked = False
        return arr

    def _handed_out(self) -> bool:
        """Whether anything that can write through a handed-out array may still exist."""
        return self._view_ref is not None and self._view_ref() is not None

    def write(self, offset: int, values: npt.NDArray[Any]) -> None:
        """Flat elements ``offset ...`` take ``values`` (in range); their blocks are marked."""
        flat = self.working.reshape(-1)
        flat[offset : offset + values.size] = values
        if values.size and self.layout is not None:
            bb, item = self.layout.block_bytes, flat.itemsize
            first = offset * item // bb
            last = ((offset + values.size) * item - 1) // bb
            self._dirty[first : last + 1] = True

    # ---- the cycle -----------------------------------------------------------------------------
    def _working_bytes(self) -> npt.NDArray[np.uint8]:
        return self.working.reshape(-1).view(np.uint8)

    def changed_blocks(self) -> npt.NDArray[np.int64]:
        """Blocks where the working copy differs from the folded value (sorted).

        A block is reported when its xxh3-64 differs from the folded block's, so a reported
        block did change; a change is missed only if it keeps the hash (a collision, ~2^-64
        per changed block)."""
        layout = self.layout
        if layout is None or layout != self.fold.layout:
            return _NO_BLOCKS
        changed: npt.NDArray[np.int64]
        if self._tracked and not self._handed_out():
            marked = np.flatnonzero(self._dirty)
            ours = _hashes(self._working_bytes().data, layout.block_bytes, marked)
            changed = marked[ours != self._fold_hashes(marked)]
        else:
            # nothing can write behind the scan's back once no handed-out array is alive
            self._tracked = not self._handed_out()
            views = self._block_views(layout)
            ours = np.fromiter(map(_xxh3, views), dtype=np.uint64, count=len(views))
            changed = np.flatnonzero(ours != self._fold_hashes(None))
        self._dirty[:] = False
        self._dirty[changed] = True
        return changed

    def _fold_hashes(self, blocks: npt.NDArray[np.int64] | None) -> npt.NDArray[np.uint64]:
        """xxh3-64 of the folded value's ``blocks`` (``None``: all), rehashing stale ones."""
        assert self.layout is not None
        valid = self._hash_valid if blocks is None else self._hash_valid[blocks]
        stale = np.flatnonzero(~valid) if blocks is None else blocks[~valid]
        if stale.size:
            self._hash[stale] = _hashes(self.fold.data.data, self.layout.block_bytes, stale)
            self._hash_valid[stale] = True
        return self._hash if blocks is None else self._hash[blocks]

    def _block_views(self, layout: Layout) -> list[memoryview]:
        """One memoryview per block of the working copy (~4.7 % of its size), kept: making
        them costs about as much as hashing what they show. Only a full scan needs them."""
        if self._views is None:
            data = self._working_bytes().data
            bb = layout.block_bytes
            self._views = [data[i : i + bb] for i in range(0, len(data), bb)]
        return self._views

    def dirty(self) -> bool:
        return bool(self.changed_blocks().size)

    def cycle_part(self, name: str) -> Part | None:
        """The block delta from the folded value to the working copy, if any block changed."""
        changed = self.changed_blocks()
        if not changed.size:
            return None
        layout = self.layout
        assert layout is not None
        per_block = layout.block_bytes * (36 / 128 if layout.codec == "q4" else 1)
        changed = changed[: max(1, int(MAX_DELTA_BYTES // per_block))]
        blocks = _gather(self._working_bytes(), layout, changed)
        if layout.codec == "q4":
            return Part("buffer", name, encode_delta(
                layout, changed, self._q4_blocks(changed, blocks).to_bytes()))
        return Part("buffer", name, encode_delta(layout, changed, blocks.data))

    def _q4_blocks(self, changed: npt.NDArray[np.int64], blocks: npt.NDArray[np.uint8]) -> Q4Block:
        """Q4 of the changed blocks; groups whose values did not change keep their codes.
        Non-finite values saturate (the cycle runs inside sync; documented in q4.md)."""
        assert self.layout is not None
        fresh = q4_encode(blocks.view(np.float16), saturate=True)
        keep = np.flatnonzero(~_groups_differ(_gather(self.fold.data, self.layout, changed),
                                              blocks))
        if not len(keep):
            return fresh
        gpb = self.layout.groups_per_block
        groups = (changed[:, None] * gpb + np.arange(gpb)).reshape(-1)[: fresh.groups]
        src = groups[keep]
        scales, biases = fresh.scales.copy(), fresh.biases.copy()
        codes = fresh.codes.reshape(-1, GROUP_SIZE // 2).copy()
        scales[keep] = self.fold.scales[src]
        biases[keep] = self.fold.biases[src]
        codes[keep] = self.fold.codes[src]
        return Q4Block(fresh.length, scales, biases, codes.reshape(-1))

    def refresh(self) -> None:
        """After folding: the blocks the fold wrote are copied into the working copy."""
        layout = self.fold.layout
        touched = self.fold.take_touched()
        if layout is None:
            return
        if self.fold._deleted_by != self._gone:
            self._gone = self.fold._deleted_by
            if self._gone is not None:  # deleted: arrays handed out before cannot re-create it
                self.layout = layout
                self._set_working(self.fold.array().copy())
                return
        if layout != self.layout:
            self.layout = layout
            self._set_working(self.fold.array().copy())
            return
        if touched is None:
            np.copyto(self.working, self.fold.array())
            self._hash_valid[:] = False
            self._dirty[:] = False
        elif touched.size:
            _put(self._working_bytes(), layout, touched, _gather(self.fold.data, layout, touched))
            self._dirty[touched] = False  # equal to the fold now
            if self._views is None:
                self._hash_valid[touched] = False  # rehashed if ever looked at
            else:  # this replica scans: rehash now, while the blocks are in cache
                self._hash[touched] = _hashes(self.fold.data.data, layout.block_bytes, touched)
                self._hash_valid[touched] = True

    def revert(self) -> None:
        """Drop uncommitted writes: changed blocks return to the folded value."""
        changed = self.changed_blocks()
        if changed.size:
            assert self.layout is not None
            _put(self._working_bytes(), self.layout, changed,
                 _gather(self.fold.data, self.layout, changed))
            self._dirty[changed] = False


class BufferRegion:
    """A binary/numpy region synced by block deltas. Write in place through ``array``, or
    with ``write()``."""

    __slots__ = ("_epoch", "_gone", "_plane", "name")

    def __init__(self, plane: RegionsPlane, name: str) -> None:
        self._plane = plane
        self.name = name
        # what the handle was taken after: a later deletion makes it stale (ConfigError)
        st = plane.buffers.get(name)
        self._gone = st.fold._deleted_by if st is not None else None
        self._epoch = plane.epochs.get(name, 0)

    @property
    def _state(self) -> _BufferState:
        st = self._plane.buffers.get(self.name)
        if st is None:
            raise ConfigError(f"buffer region {self.name!r} was deleted or is a text: "
                              f"mem.buffer({self.name!r}, shape=...) re-creates it")
        self._plane.stale("buffer", self.name, st, self._epoch, self._gone)
        return st

    @property
    def array(self) -> np.ndarray:
        """The live working array: write in place; the next cycle commits what changed.

        While this array, or anything derived from it, is alive, every cycle hashes the
        whole buffer to find what changed; drop it (or use :meth:`write`) and the cycles
        look only at the blocks ``write()`` touched. Writing through a raw address taken
        from it (``ctypes.data``) after every array over it is gone is not supported."""
        return self._state.handout()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._state.working.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._state.working.dtype

    @property
    def codec(self) -> str:
        """``"raw"`` or ``"q4"`` (values are stored and shipped 4-bit quantized)."""
        layout = self._state.layout
        return "raw" if layout is None else layout.codec

    def write(self, offset: int, data: Any) -> None:
        """Write ``data`` at flat element ``offset``. The next cycle looks at the blocks
        written (and no others, unless an array from :attr:`array` is alive)."""
        st = self._state
        if not isinstance(offset, int | np.integer) or isinstance(offset, bool):
            raise ConfigError(f"write offset must be an int, got {offset!r}")
        try:
            values = np.asarray(data, dtype=st.working.dtype).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot write {type(data).__name__} to a {st.working.dtype} "
                              f"buffer: {exc}") from None
        if not 0 <= offset <= st.working.size - values.size:
            raise ConfigError(f"write of {values.size} elements at {offset} is out of range")
        st.write(offset, values)

    def read(self) -> np.ndarray:
        return self._state.working.copy()

    def __repr__(self) -> str:
        return f"BufferRegion({self.name!r}, shape={self.shape}, dtype={self.dtype})"


# ---- block helpers -----------------------------------------------------------------------


def _changed_blocks(
    ref: npt.NDArray[np.uint8], work: npt.NDArray[np.uint8], block_bytes: int = BLOCK_BYTES,
) -> npt.NDArray[np.int64]:
    """Indices of the blocks where ``work`` differs from ``ref`` (flat uint8, same size).

    Full blocks are compared as uint64 words, ``COMPARE_CHUNK_BLOCKS`` at a time into one
    reused boolean scratch array, so no temporary grows with the buffer.
    """
    n = ref.size
    full = n // block_bytes
    found: list[npt.NDArray[np.int64]] = []
    if full:
        words = block_bytes // 8
        a: npt.NDArray[Any]
        b: npt.NDArray[Any]
        if block_bytes % 8 or ref[:0].ctypes.data % 8 or work[:0].ctypes.data % 8:
            a = ref[: full * block_bytes].reshape(full, block_bytes)
            b = work[: full * block_bytes].reshape(full, block_bytes)
            words = block_bytes
        else:
            a = ref[: full * block_bytes].view(np.uint64).reshape(full, words)
            b = work[: full * block_bytes].view(np.uint64).reshape(full, words)
        step = min(full, COMPARE_CHUNK_BLOCKS)
        scratch = np.empty((step, words), dtype=bool)
        for start in range(0, full, step):
            stop = min(start + step, full)
            ne = scratch[: stop - start]
            np.not_equal(a[start:stop], b[start:stop], out=ne)
            hits = np.flatnonzero(ne.any(axis=1))
            if hits.size:
                found.append(hits + start)
    tail = full * block_bytes
    if n % block_bytes and not np.array_equal(ref[tail:], work[tail:]):
        found.append(np.array([full], dtype=np.int64))
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(found).astype(np.int64, copy=False)


def _hashes(data: memoryview, size: int, indices: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """xxh3-64 of the pieces ``indices`` of ``size`` bytes of ``data`` (the last may be short)."""
    starts = (indices * size).tolist()
    pieces = map(data.__getitem__, map(slice, starts, [i + size for i in starts]))
    return np.fromiter(map(_xxh3, pieces), dtype=np.uint64, count=len(starts))


def _groups_differ(old: npt.NDArray[np.uint8], new: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Per Q4 group (64 float16 values = 128 bytes; the last may be short) of two equal-size
    byte arrays: whether its bytes differ."""
    n = old.size
    full = n // 128
    out = np.empty(-(-n // 128), dtype=bool)
    if full:
        ne = old[: full * 128].view(np.uint64) != new[: full * 128].view(np.uint64)
        words = ne.view(np.uint64).reshape(full, 2)  # 16 booleans per group, as 2 words
        np.not_equal(words[:, 0] | words[:, 1], 0, out=out[:full])
    if n % 128:
        out[full] = not np.array_equal(old[full * 128 :], new[full * 128 :])
    return out


def _gather(
    flat: npt.NDArray[np.uint8], layout: Layout, indices: npt.NDArray[np.int64],
) -> npt.NDArray[np.uint8]:
    """The bytes of blocks ``indices`` (sorted), concatenated, in one new array."""
    bb, full = layout.block_bytes, layout.full_blocks
    out = np.empty(layout.block_sizes(indices), dtype=np.uint8)
    k_full = len(indices) - (len(indices) > 0 and int(indices[-1]) >= full)
    if k_full:
        np.take(flat[: full * bb].reshape(full, bb), indices[:k_full], axis=0,
                out=out[: k_full * bb].reshape(k_full, bb))
    if k_full < len(indices):
        out[k_full * bb :] = flat[full * bb :]
    return out


def _put(
    flat: npt.NDArray[np.uint8], layout: Layout, indices: npt.NDArray[np.int64],
    blocks: npt.NDArray[np.uint8],
) -> None:
    """Blocks ``indices`` (sorted) of ``flat`` take ``blocks`` (as made by :func:`_gather`)."""
    bb, full = layout.block_bytes, layout.full_blocks
    k_full = len(indices) - (len(indices) > 0 and int(indices[-1]) >= full)
    if k_full:
        flat[: full * bb].reshape(full, bb)[indices[:k_full]] = (
            blocks[: k_full * bb].reshape(k_full, bb))
    if k_full < len(indices):
        flat[full * bb :] = blocks[k_full * bb :]
