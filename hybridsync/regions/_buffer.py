"""Buffer regions: numpy working copies, their shadows, block deltas and their wire form.

The cycle compares the working copy with its shadow block by block (``BLOCK_BYTES``) and
ships the changed blocks; ``BufferFold`` owns the folded value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from hybridsync.errors import ConfigError, PayloadError
from hybridsync.regions._bufferfold import BufferFold
from hybridsync.regions._folds import HappenedBefore
from hybridsync.regions._parts import Part
from hybridsync.regions._textdiff import unpack_list

if TYPE_CHECKING:
    from hybridsync.regions._plane import RegionsPlane

__all__ = ["BLOCK_BYTES", "BufferRegion", "decode_delta", "encode_delta"]

BLOCK_BYTES = 4096  # one page: ~0.1 % framing overhead per changed block, cheap to compare
MAX_BUFFER_BYTES = 1 << 34
DTYPES = {"float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
          "uint32", "int64", "uint64", "bool"}


def encode_delta(shape: tuple[int, ...], dtype: str, blocks: list[tuple[int, bytes]]) -> bytes:
    out: bytes = msgpack.packb(
        [list(shape), dtype, BLOCK_BYTES, [[i, b] for i, b in blocks]], use_bin_type=True
    )
    return out


def decode_delta(data: bytes) -> tuple[tuple[int, ...], str, int, list[tuple[int, bytes]]]:
    raw = unpack_list(data, "buffer delta")
    if len(raw) != 4:
        raise PayloadError("a buffer delta is [shape, dtype, block_bytes, blocks]")
    shape, dtype, bb, blocks = raw
    if (type(shape) is not list or len(shape) > 32
            or any(type(n) is not int or not 0 <= n < 1 << 40 for n in shape)):
        raise PayloadError("buffer shape must be a list of non-negative ints")
    if type(dtype) is not str or dtype not in DTYPES:
        raise PayloadError(f"unsupported buffer dtype {dtype!r}")
    if type(bb) is not int or not 64 <= bb <= 1 << 24:
        raise PayloadError("bad block size")
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes > MAX_BUFFER_BYTES:
        raise PayloadError("buffer too large")
    if type(blocks) is not list:
        raise PayloadError("blocks must be a list")
    out = []
    for b in blocks:
        if (type(b) is not list or len(b) != 2 or type(b[0]) is not int
                or type(b[1]) is not bytes or not 0 <= b[0] * bb < max(nbytes, 1)):
            raise PayloadError("a block is [index, bytes] within the buffer")
        out.append((b[0], b[1]))
    return tuple(shape), dtype, bb, out



class _BufferState:
    __slots__ = ("fold", "shadow", "working")

    def __init__(self, shape: tuple[int, ...], dtype: str, hb: HappenedBefore) -> None:
        self.fold = BufferFold(shape, dtype, BLOCK_BYTES, hb)
        self.working = np.zeros(shape, dtype=dtype)
        self.shadow = np.zeros(shape, dtype=dtype)

    def cycle_part(self, name: str) -> Part | None:
        """The block delta from the shadow to the working copy, if any block changed."""
        blocks = _changed_blocks(self.shadow, self.working)
        if not blocks:
            return None
        raw = self.working.reshape(-1).view(np.uint8)
        delta = [(i, raw[i * BLOCK_BYTES : (i + 1) * BLOCK_BYTES].tobytes()) for i in blocks]
        return Part("buffer", name, encode_delta(
            tuple(self.working.shape), self.working.dtype.name, delta))



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
            raise ConfigError(f"buffer region {self.name!r} was deleted")
        return st

    @property
    def array(self) -> np.ndarray:
        """The live working array: write in place; the next cycle commits what changed."""
        return self._state.working

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._state.working.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._state.working.dtype

    def write(self, offset: int, data: Any) -> None:
        """Write ``data`` at flat element ``offset``."""
        flat = self._state.working.reshape(-1)
        values = np.asarray(data, dtype=flat.dtype).reshape(-1)
        if not 0 <= offset <= flat.size - values.size:
            raise ConfigError(f"write of {values.size} elements at {offset} is out of range")
        flat[offset : offset + values.size] = values

    def read(self) -> np.ndarray:
        return self._state.working.copy()

    def __repr__(self) -> str:
        return f"BufferRegion({self.name!r}, shape={self.shape}, dtype={self.dtype})"



def _changed_blocks(shadow: np.ndarray, working: np.ndarray) -> list[int]:
    """Indices of the blocks where ``working`` differs from ``shadow``."""
    a = shadow.reshape(-1).view(np.uint8)
    b = working.reshape(-1).view(np.uint8)
    n = a.size
    if n == 0:
        return []
    full = n // BLOCK_BYTES
    changed: list[int] = []
    if full:
        head_a = a[: full * BLOCK_BYTES].view(np.uint64).reshape(full, BLOCK_BYTES // 8)
        head_b = b[: full * BLOCK_BYTES].view(np.uint64).reshape(full, BLOCK_BYTES // 8)
        changed = np.flatnonzero((head_a != head_b).any(axis=1)).tolist()
    if n % BLOCK_BYTES and not np.array_equal(a[full * BLOCK_BYTES :], b[full * BLOCK_BYTES :]):
        changed.append(full)
    return changed
