"""Buffer regions: numpy working copies, the cycle's block deltas and their wire form.

There is no shadow copy: the fold (``BufferFold``) holds the value as of this replica's heads
already, so the cycle compares the working copy with the fold's bytes block by block
(``BLOCK_BYTES``), in chunks, and ships the changed blocks. After a fold, only the blocks it
wrote are copied into the working copy.

With ``codec="q4"`` (float16 only) a delta carries the changed blocks as Q4 groups
(``_q4.py``, ~0.28x the bytes). The region's value is the *dequantized* data, so every replica
holds the same bytes; the writer's working copy takes them after its cycle. Groups of a changed
block whose values did not change are re-sent as they were (no drift from re-quantizing).
"""

from __future__ import annotations

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
# The cycle hashes the working copy in spans of this many blocks (xxh3-64; reading one array
# is faster than comparing two) and compares block by block only in spans whose hash differs
# from the folded value's, or that a fold or a write since changed (DESIGN.md section 5).
HASH_SPAN_BLOCKS = 4
_F16_MAX = 65504.0


def buffer_layout(shape: Any, dtype: Any, codec: str | None) -> Layout:
    """Validate a handle's arguments; :class:`ConfigError` on anything unsupported."""
    try:
        shp = tuple(int(n) for n in (shape if isinstance(shape, tuple | list) else (shape,)))
        dt = np.dtype(dtype).name
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad buffer shape or dtype: {exc}") from None
    if dt not in DTYPES or any(n < 0 for n in shp):
        raise ConfigError(f"unsupported buffer dtype {dt!r} or negative shape")
    if int(np.prod(shp, dtype=np.int64)) * np.dtype(dt).itemsize > MAX_BUFFER_BYTES:
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
    """The working copy of one buffer region and its fold (the fold's bytes are the shadow)."""

    __slots__ = ("_scratch", "_span_hash", "_span_valid", "exposed", "fold", "layout",
                 "working")

    def __init__(self, layout: Layout | None, hb: HappenedBefore) -> None:
        self.fold = BufferFold(layout, hb)
        self.layout = layout
        self.working: np.ndarray = (
            np.zeros(layout.shape, dtype=layout.dtype) if layout is not None
            else np.zeros(0, dtype=np.uint8)
        )
        self.fold.take_touched()
        # False until the working array is handed out or written: until then it equals the
        # folded value and the cycle need not compare anything (a replica that only receives)
        self.exposed = False
        # xxh3 of the folded value per span of HASH_SPAN_BLOCKS blocks, where known valid
        self._span_hash = np.zeros(0, dtype=np.uint64)
        self._span_valid = np.zeros(0, dtype=bool)
        self._scratch: dict[str, npt.NDArray[Any]] = {}  # reused compare buffers

    def open(self, name: str, layout: Layout, *, any_codec: bool) -> None:
        """A handle asks for ``layout``: adopt it if nothing decided one yet, else check it."""
        have = self.layout
        if have is None:  # only deletions folded so far
            self.fold.propose(layout)
            self.fold.take_touched()
            self.layout = layout
            self.working = np.zeros(layout.shape, dtype=layout.dtype)
            return
        if have == layout or (any_codec and have == Layout(
                layout.shape, layout.dtype, layout.block_bytes, have.codec)):
            return
        raise ConfigError(f"buffer {name!r} exists with {have.describe()}")

    def _working_bytes(self) -> npt.NDArray[np.uint8]:
        return self.working.reshape(-1).view(np.uint8)

    def changed_blocks(self) -> npt.NDArray[np.int64]:
        """Blocks where the working copy differs from the folded value.

        Spans whose hash matches a valid hash of the folded value are equal (xxh3-64: a
        collision, ~2^-64 per changed span, would hide a write); every other span is
        compared exactly, so a reported block did change."""
        layout = self.layout
        if not self.exposed or layout is None or layout != self.fold.layout:
            return np.zeros(0, dtype=np.int64)
        work, ref = self._working_bytes(), self.fold.data
        span = HASH_SPAN_BLOCKS * layout.block_bytes
        hashes = _span_hashes(work, span)
        if self._span_valid.shape != hashes.shape or self._span_hash.shape != hashes.shape:
            self._span_hash = np.zeros(len(hashes), dtype=np.uint64)
            self._span_valid = np.zeros(len(hashes), dtype=bool)
        suspect = np.flatnonzero(~self._span_valid | (hashes != self._span_hash))
        changed = _changed_in_spans(ref, work, layout.block_bytes, suspect, self._scratch)
        self._span_hash = hashes
        self._span_valid[:] = True  # equal spans: the working copy's hash is the fold's
        self._span_valid[changed // HASH_SPAN_BLOCKS] = False  # until the next cycle checks
        return changed

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
        """Q4 of the changed blocks; groups whose values did not change keep their codes."""
        assert self.layout is not None
        values = blocks.view(np.float16)
        if not np.isfinite(values).all():
            # the cycle runs inside sync: saturate instead of failing (documented in q4.md)
            values = np.nan_to_num(values, nan=0.0, posinf=_F16_MAX, neginf=-_F16_MAX)
        fresh = q4_encode(values)
        old = _gather(self.fold.data, self.layout, changed).view(np.uint16)
        same = np.zeros(fresh.groups * GROUP_SIZE, dtype=bool)
        np.equal(old, blocks.view(np.uint16), out=same[: len(old)])
        same[len(old) :] = True
        keep = np.flatnonzero(same.reshape(-1, GROUP_SIZE).all(axis=1))
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
        if layout != self.layout:
            self.layout = layout
            self.working = self.fold.array().copy()
            self._span_valid = np.zeros(0, dtype=bool)
            return
        if touched is None:
            np.copyto(self.working, self.fold.array())
            self._span_valid[:] = False
        elif touched.size:
            _put(self._working_bytes(), layout, touched, _gather(self.fold.data, layout, touched))
            if self._span_valid.size:  # empty: nothing known yet, every span is suspect
                # the spans the fold wrote: hash the folded bytes again (a few % of the buffer)
                spans = np.unique(touched // HASH_SPAN_BLOCKS)
                span = HASH_SPAN_BLOCKS * layout.block_bytes
                data, digest = memoryview(self.fold.data.data), xxhash.xxh3_64_intdigest
                self._span_hash[spans] = np.fromiter(
                    (digest(data[s * span : (s + 1) * span]) for s in spans.tolist()),
                    dtype=np.uint64, count=spans.size)
                self._span_valid[spans] = True

    def revert(self) -> None:
        """Drop uncommitted writes: changed blocks return to the folded value."""
        changed = self.changed_blocks()
        if changed.size:
            assert self.layout is not None
            _put(self._working_bytes(), self.layout, changed,
                 _gather(self.fold.data, self.layout, changed))


class BufferRegion:
    """A binary/numpy region synced by block deltas. Write in place through ``array``."""

    __slots__ = ("_plane", "name")

    def __init__(self, plane: RegionsPlane, name: str) -> None:
        self._plane = plane
        self.name = name

    @property
    def _state(self) -> _BufferState:
        st = self._plane.buffers.get(self.name)
        if st is None:
            raise ConfigError(f"buffer region {self.name!r} was deleted or is a text")
        return st

    @property
    def array(self) -> np.ndarray:
        """The live working array: write in place; the next cycle commits what changed."""
        st = self._state
        st.exposed = True
        return st.working

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
        """Write ``data`` at flat element ``offset``."""
        st = self._state
        st.exposed = True
        flat = st.working.reshape(-1)
        values = np.asarray(data, dtype=flat.dtype).reshape(-1)
        if not 0 <= offset <= flat.size - values.size:
            raise ConfigError(f"write of {values.size} elements at {offset} is out of range")
        flat[offset : offset + values.size] = values

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


def _changed_in_spans(
    ref: npt.NDArray[np.uint8], work: npt.NDArray[np.uint8], block_bytes: int,
    spans: npt.NDArray[np.intp], scratch: dict[str, npt.NDArray[Any]],
) -> npt.NDArray[np.int64]:
    """The changed blocks inside the spans ``spans`` (sorted), compared exactly: whole spans
    are gathered 256 blocks at a time into ``scratch`` arrays (kept: fresh pages cost more
    than the compare)."""
    span = HASH_SPAN_BLOCKS * block_bytes
    full = ref.size // span
    whole = spans[spans < full]
    found: list[npt.NDArray[np.int64]] = []
    aligned = not (block_bytes % 8 or ref[:0].ctypes.data % 8 or work[:0].ctypes.data % 8)
    if whole.size and aligned:
        words = block_bytes // 8
        a = ref[: full * span].view(np.uint64).reshape(full, HASH_SPAN_BLOCKS * words)
        b = work[: full * span].view(np.uint64).reshape(full, HASH_SPAN_BLOCKS * words)
        step = max(1, 256 // HASH_SPAN_BLOCKS)
        shape = (step, a.shape[1])
        if scratch.get("a", np.zeros(0)).shape != shape:
            scratch["a"] = np.empty(shape, dtype=np.uint64)
            scratch["b"] = np.empty(shape, dtype=np.uint64)
            scratch["ne"] = np.empty(shape, dtype=bool)
        sa, sb, ne = scratch["a"], scratch["b"], scratch["ne"]
        for start in range(0, whole.size, step):
            idx = whole[start : start + step]
            n = idx.size
            np.take(a, idx, axis=0, out=sa[:n])
            np.take(b, idx, axis=0, out=sb[:n])
            np.not_equal(sa[:n], sb[:n], out=ne[:n])
            rows, cols = np.nonzero(ne[:n].reshape(n, HASH_SPAN_BLOCKS, words).any(axis=2))
            if rows.size:
                found.append(idx[rows].astype(np.int64) * HASH_SPAN_BLOCKS + cols)
    elif whole.size:
        for s in whole.tolist():
            hits = _changed_blocks(ref[s * span : (s + 1) * span],
                                   work[s * span : (s + 1) * span], block_bytes)
            found.append(hits + s * HASH_SPAN_BLOCKS)
    if spans.size and spans[-1] >= full:  # the short last span
        hits = _changed_blocks(ref[full * span :], work[full * span :], block_bytes)
        found.append(hits + full * HASH_SPAN_BLOCKS)
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(found)


def _span_hashes(flat: npt.NDArray[np.uint8], span: int) -> npt.NDArray[np.uint64]:
    """xxh3-64 of every ``span`` bytes of ``flat`` (the last span may be short)."""
    view = memoryview(flat.data)
    digest = xxhash.xxh3_64_intdigest
    n = -(-len(view) // span)
    return np.fromiter((digest(view[i : i + span]) for i in range(0, len(view), span)),
                       dtype=np.uint64, count=n)


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
