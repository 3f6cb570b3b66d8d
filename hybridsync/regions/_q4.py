"""Q4: group-wise 4-bit affine quantization for KV-cache style float16 buffers.

The flattened input is cut into groups of :data:`GROUP_SIZE` (64) values. Each group keeps a
float16 ``bias`` (its minimum) and a float16 ``scale`` (its range / 15, rounded *up* to the next
float16 so that ``bias + 15 * scale`` always covers the group's maximum), and 64 4-bit codes::

    q = clip(round((x - bias) / scale), 0, 15)        x̂ = q * scale + bias

so every reconstructed value is within ``scale / 2`` of the original, plus the final float16
rounding of ``x̂``. A constant group has ``scale == 0`` and all codes 0; it decodes exactly.

Padding: the last group is padded to 64 values. The padding never takes part in the group's
minimum/maximum (it would widen the range and cost precision), and its codes are stored as 0,
so the encoding is canonical: one input has exactly one byte string.

Non-finite input is rejected: nan, ±inf, and float32 values whose float16 conversion overflows
(``|x| > 65504`` after rounding) raise :class:`~hybridsync.errors.ConfigError`. A 4-bit code has
no spare value to carry them without costing every finite group precision, and a KV cache that
holds inf/nan is already broken upstream; failing loudly is the better contract.

Byte layout of :meth:`Q4Block.to_bytes` (all little-endian), for ``G = ceil(length / 64)``:

======  ==========  ===========================================================
offset  size        content
======  ==========  ===========================================================
0       1           format byte ``0x51`` (``'Q'``: Q4, layout version 1)
1       8           ``length``, uint64: number of real values
9       2·G         ``scales``, float16
9+2G    2·G         ``biases``, float16
9+4G    32·G        ``codes``, 4-bit codes two per byte; value ``2i`` in the low
                    nibble of byte ``i``, value ``2i+1`` in the high nibble
======  ==========  ===========================================================

Total ``9 + 36·G`` bytes, i.e. 36 bytes per 128 bytes of float16 (0.28125×) plus 9 bytes.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridsync.errors import ConfigError, PayloadError

__all__ = [
    "FORMAT_BYTE",
    "GROUP_SIZE",
    "HEADER_SIZE",
    "Q4Block",
    "q4_decode",
    "q4_encode",
    "q4_error",
]

GROUP_SIZE = 64
"""Values per group; each group carries one float16 scale and one float16 bias."""

FORMAT_BYTE = 0x51
"""First byte of every encoded block: ``'Q'``, Q4 layout version 1."""

_HEADER = struct.Struct("<BQ")
HEADER_SIZE = _HEADER.size
"""Bytes before the arrays: the format byte and the uint64 length."""

_CODE_BYTES = GROUP_SIZE // 2  # 32 bytes of packed codes per group
_GROUP_BYTES = 2 + 2 + _CODE_BYTES  # scale + bias + codes = 36
_LEVELS = 15  # largest 4-bit code
_F16_MAX = float(np.finfo(np.float16).max)  # 65504.0
_ERROR_CHUNK = 1 << 20  # values per chunk in q4_error (bounds its float64 temporaries)
_CHUNK_GROUPS = 1 << 12  # groups per step of q4_encode/q4_decode: 1 MiB of float32 scratch

_F16 = np.dtype(np.float16)
_F16_LE = np.dtype("<f2")
_U8 = np.dtype(np.uint8)


def _groups_for(length: int) -> int:
    return -(-length // GROUP_SIZE)


def _readonly(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, slots=True)
class Q4Block:
    """One encoded array. Construct it with :func:`q4_encode` or :meth:`from_bytes`.

    The arrays made by this module are read-only. Direct construction is validated:
    a block that :meth:`from_bytes` would reject raises :class:`ConfigError`.
    """

    length: int
    scales: npt.NDArray[np.float16]
    biases: npt.NDArray[np.float16]
    codes: npt.NDArray[np.uint8]

    def __post_init__(self) -> None:
        problem = _block_problem(self.length, self.scales, self.biases, self.codes)
        if problem is not None:
            raise ConfigError(f"invalid Q4Block: {problem}")

    @property
    def groups(self) -> int:
        """Number of 64-value groups (the last one may be partly padding)."""
        return _groups_for(self.length)

    @property
    def nbytes(self) -> int:
        """Size of :meth:`to_bytes`."""
        return HEADER_SIZE + _GROUP_BYTES * self.groups

    def to_bytes(self) -> bytes:
        """Serialize as ``format byte, uint64 length, scales, biases, codes`` (see module doc)."""
        return b"".join(
            (
                _HEADER.pack(FORMAT_BYTE, self.length),
                self.scales.astype(_F16_LE, copy=False).tobytes(),
                self.biases.astype(_F16_LE, copy=False).tobytes(),
                self.codes.tobytes(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Q4Block:
        """Parse and validate :meth:`to_bytes` output.

        Raises :class:`PayloadError` for anything malformed: a short or unknown header, a size
        that does not match the declared length (truncated or trailing bytes), non-finite or
        negative scales, non-finite biases, nonzero codes in a constant group or in padding.
        """
        try:
            view = memoryview(data).cast("B")
        except TypeError as exc:
            raise PayloadError(f"Q4 payload must be bytes-like, not {type(data).__name__}") from exc
        if len(view) < HEADER_SIZE:
            raise PayloadError(
                f"Q4 payload truncated: {len(view)} bytes, header needs {HEADER_SIZE}"
            )
        fmt, length = _HEADER.unpack_from(view)
        if fmt != FORMAT_BYTE:
            raise PayloadError(
                f"not a Q4 payload: format byte 0x{fmt:02x}, expected 0x{FORMAT_BYTE:02x}"
            )
        groups = _groups_for(length)
        expected = HEADER_SIZE + _GROUP_BYTES * groups
        if len(view) != expected:
            kind = "truncated" if len(view) < expected else "has trailing bytes"
            raise PayloadError(
                f"Q4 payload {kind}: {len(view)} bytes, length {length} needs {expected}"
            )
        offset = HEADER_SIZE
        scales = np.frombuffer(view, _F16_LE, groups, offset).astype(_F16)
        offset += 2 * groups
        biases = np.frombuffer(view, _F16_LE, groups, offset).astype(_F16)
        offset += 2 * groups
        codes = np.frombuffer(view, _U8, groups * _CODE_BYTES, offset).copy()
        try:
            return cls(length, _readonly(scales), _readonly(biases), _readonly(codes))
        except ConfigError as exc:
            raise PayloadError(f"invalid Q4 payload: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Q4Block):
            return NotImplemented
        return (
            self.length == other.length
            and self.scales.tobytes() == other.scales.tobytes()
            and self.biases.tobytes() == other.biases.tobytes()
            and self.codes.tobytes() == other.codes.tobytes()
        )

    def __hash__(self) -> int:
        return hash((self.length, self.scales.tobytes(), self.biases.tobytes()))

    def __repr__(self) -> str:
        return f"Q4Block(length={self.length}, groups={self.groups}, nbytes={self.nbytes})"


def _block_problem(length: object, scales: object, biases: object, codes: object) -> str | None:
    """Why these fields do not form a valid block, or None. Never allocates per value."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        return f"length must be a non-negative int, not {length!r}"
    groups = _groups_for(length)
    for name, array, dtype, size in (
        ("scales", scales, _F16, groups),
        ("biases", biases, _F16, groups),
        ("codes", codes, _U8, groups * _CODE_BYTES),
    ):
        if not isinstance(array, np.ndarray):
            return f"{name} must be a numpy array, not {type(array).__name__}"
        if array.dtype != dtype or array.shape != (size,):
            return f"{name} must be {dtype} of shape ({size},), not {array.dtype} {array.shape}"
    assert isinstance(scales, np.ndarray) and isinstance(biases, np.ndarray)
    assert isinstance(codes, np.ndarray)
    if groups == 0:
        return None
    if not np.isfinite(scales).all() or np.signbit(scales).any():
        return "scales must be finite and non-negative"
    if not np.isfinite(biases).all():
        return "biases must be finite"
    rows = codes.reshape(groups, _CODE_BYTES)
    if rows[scales == 0].any():
        return "a constant group (scale 0) has nonzero codes"
    tail = length - (groups - 1) * GROUP_SIZE  # real values in the last group, 1..64
    if tail < GROUP_SIZE:
        last = rows[-1]
        if tail % 2 and last[tail // 2] >> 4:
            return "padding codes must be zero"
        if last[(tail + 1) // 2 :].any():
            return "padding codes must be zero"
    return None


def _as_float16(values: npt.NDArray[Any]) -> npt.NDArray[np.float16]:
    """Flatten ``values`` to float16, or raise ConfigError (wrong type/dtype, non-finite)."""
    if not isinstance(values, np.ndarray):
        raise ConfigError(f"q4_encode needs a numpy array, not {type(values).__name__}")
    dtype = values.dtype
    if dtype.kind != "f" or dtype.itemsize not in (2, 4):
        raise ConfigError(f"q4_encode needs float16 or float32 values, not {dtype}")
    flat = values.reshape(-1)
    if dtype.itemsize == 2:
        return flat.astype(_F16, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        return flat.astype(_F16)


def _reject_non_finite(values: npt.NDArray[Any], flat16: npt.NDArray[np.float16]) -> None:
    """Raise the precise ConfigError for a non-finite value (slow path, only on error)."""
    bad = ~np.isfinite(flat16)
    index = int(np.argmax(bad))
    original = values.reshape(-1)[index]
    if np.isfinite(original):
        raise ConfigError(
            f"q4_encode: value {float(original)!r} at flat index {index} is beyond the float16 "
            f"range (±{_F16_MAX:g})"
        )
    raise ConfigError(
        f"q4_encode: non-finite value {float(original)!r} at flat index {index}; "
        "Q4 encodes finite values only"
    )


def q4_encode(values: npt.NDArray[Any], *, saturate: bool = False) -> Q4Block:
    """Quantize an array of any shape (float16, or float32 converted to float16) to Q4.

    Raises :class:`ConfigError` for other dtypes, for nan/±inf, and for float32 values
    beyond the float16 range; with ``saturate=True`` those values are encoded as if nan were
    0 and ±inf (or an out-of-range float32) were ±65504 instead (what a buffer's cycle does).
    """
    flat16 = _as_float16(values)
    length = int(flat16.size)
    groups = _groups_for(length)
    if groups == 0:
        empty16 = _readonly(np.empty(0, _F16))
        return Q4Block(0, empty16, empty16, _readonly(np.empty(0, _U8)))
    scales = np.empty(groups, _F16)
    biases = np.empty(groups, _F16)
    codes = np.empty(groups * _CODE_BYTES, _U8)
    # Chunks of groups: the float32 work array stays in cache and its size is bounded.
    work = np.empty((min(groups, _CHUNK_GROUPS), GROUP_SIZE), np.float32)
    for g0 in range(0, groups, _CHUNK_GROUPS):
        g1 = min(groups, g0 + _CHUNK_GROUPS)
        if not _encode_groups(flat16, g0, g1, work, scales, biases, codes):
            if not saturate:
                _reject_non_finite(values, flat16)
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.nan_to_num(flat16, nan=0.0, posinf=_F16_MAX, neginf=-_F16_MAX)
            return q4_encode(finite)
    return Q4Block(length, _readonly(scales), _readonly(biases), _readonly(codes))


def _encode_groups(
    flat16: npt.NDArray[np.float16], g0: int, g1: int, work: npt.NDArray[np.float32],
    scales: npt.NDArray[np.float16], biases: npt.NDArray[np.float16],
    codes: npt.NDArray[np.uint8],
) -> bool:
    """Encode groups ``g0:g1`` of ``flat16`` into ``scales``, ``biases`` and ``codes``, using
    ``work`` as scratch. False (nothing usable written) if a value is not finite."""
    n = (g1 - g0) * GROUP_SIZE
    rows = work[: g1 - g0]
    flat32 = rows.reshape(-1)
    first = g0 * GROUP_SIZE
    real = min(int(flat16.size), first + n) - first
    # Work in float32: numpy's float16 arithmetic is emulated and slow, and every float16 is
    # exact in float32 (converted through a table: 2.5x faster than numpy's cast). Pad the
    # last group with its own last value so the padding cannot widen the group's range.
    bits = flat16[first : first + real].view(np.uint16)
    np.take(_float32_of_float16(), bits, out=flat32[:real], mode="wrap")  # never wraps
    flat32[real:] = flat32[real - 1]

    # reduceat over contiguous groups is ~2x faster than min(axis=1) on (groups, 64)
    starts = np.arange(0, n, GROUP_SIZE)
    lo = np.minimum.reduceat(flat32, starts)
    hi = np.maximum.reduceat(flat32, starts)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # nan propagates through both
        return False
    lo += np.float32(0.0)  # -0.0 -> +0.0: a zero minimum is always stored as +0.0
    hi += np.float32(0.0)

    # scale = range / 15, rounded up to a float16 so that bias + 15*scale >= max. The range of
    # two float16 values is at most 131008, so the scale (<= 8734) never overflows float16,
    # and rounding up keeps it nonzero for any nonconstant group.
    exact = (hi.astype(np.float64) - lo.astype(np.float64)) / _LEVELS
    scale = exact.astype(_F16)
    short = scale.astype(np.float64) < exact
    scale[short] = np.nextafter(scale[short], _F16.type(np.inf))
    scales[g0:g1] = scale
    biases[g0:g1] = lo  # exact: lo is a float16 value

    divisor = scale.astype(np.float32)
    divisor[divisor == 0] = 1.0  # constant group: x - bias == 0, so every code is 0
    rows -= lo[:, None]
    rows /= divisor[:, None]
    np.rint(rows, out=rows)
    np.clip(rows, 0, _LEVELS, out=rows)
    q = rows.astype(_U8)
    q.reshape(-1)[real:] = 0  # canonical padding
    # two codes per byte: value 2i in the low nibble. As little-endian uint16 pairs
    # (lo | hi << 8), ``pair | pair >> 4`` holds ``lo | hi << 4`` in its low byte.
    pairs = q.reshape(-1).view("<u2")
    np.copyto(codes[g0 * _CODE_BYTES : g1 * _CODE_BYTES], pairs | (pairs >> 4),
              casting="unsafe")  # keeps the low byte
    return True


@functools.cache
def _float32_of_float16() -> npt.NDArray[np.float32]:
    """The float32 value of every float16 bit pattern (256 KiB, made once)."""
    return _readonly(np.arange(1 << 16, dtype=np.uint16).view(_F16).astype(np.float32))


def q4_decode(
    block: Q4Block, out: npt.NDArray[np.float16] | None = None,
) -> npt.NDArray[np.float16]:
    """Reconstruct the flat float16 array of ``block.length`` values (into ``out`` if given:
    a contiguous float16 array of that size; the flat view of it is returned).

    Every value is ``clip(q * scale + bias)`` computed in float32, then rounded to float16;
    the 16 possible values of each group are computed once and the codes pick among them.
    """
    length = block.length
    if out is None:
        out = np.empty(length, _F16)
    if out.dtype != _F16 or out.size != length or not out.flags.c_contiguous:
        raise ConfigError(f"q4_decode needs a contiguous float16 output of {length} values")
    flat = out.reshape(-1)
    groups = block.groups
    scales = block.scales.astype(np.float32)
    biases = block.biases.astype(np.float32)
    levels = np.arange(_LEVELS + 1, dtype=np.float32)
    for g0 in range(0, groups, _CHUNK_GROUPS):
        g1 = min(groups, g0 + _CHUNK_GROUPS)
        k = g1 - g0
        table = levels * scales[g0:g1, None]
        table += biases[g0:g1, None]
        # bias + 15*scale may pass 65504 by up to a scale step (scale is rounded up); every
        # original value was finite, so saturating loses nothing and keeps the output finite.
        np.clip(table, -_F16_MAX, _F16_MAX, out=table)
        values = table.astype(_F16).reshape(-1)  # the group's 16 values, group after group
        packed = block.codes[g0 * _CODE_BYTES : g1 * _CODE_BYTES].reshape(k, _CODE_BYTES)
        index = np.empty((k, GROUP_SIZE), np.intp)
        np.bitwise_and(packed, 0x0F, out=index[:, 0::2])
        np.right_shift(packed, 4, out=index[:, 1::2])
        index += np.arange(0, k * (_LEVELS + 1), _LEVELS + 1, dtype=np.intp)[:, None]
        first = g0 * GROUP_SIZE
        stop = min(length, g1 * GROUP_SIZE)
        np.take(values, index.reshape(-1)[: stop - first], out=flat[first:stop])
    return flat


def q4_error(values: npt.NDArray[Any]) -> dict[str, float]:
    """Round-trip ``values`` through Q4 and measure the reconstruction error.

    Returns ``max_abs``, ``rms``, ``relative_rms`` (rms error / rms of the input) and
    ``snr_db`` (``-20·log10(relative_rms)``), measured against the input as given, so a float32
    input includes its float16 conversion error. An exact round trip gives ``relative_rms`` 0 and
    ``snr_db`` +inf; an all-zero input with nonzero error (impossible in practice) gives +inf
    ``relative_rms``.
    """
    decoded = q4_decode(q4_encode(values))
    flat = values.reshape(-1)
    n = int(flat.size)
    max_abs = 0.0
    err_sq = 0.0
    sig_sq = 0.0
    for start in range(0, n, _ERROR_CHUNK):  # chunks of 1 Mi values, not groups
        x = flat[start : start + _ERROR_CHUNK].astype(np.float64)
        diff = decoded[start : start + _ERROR_CHUNK].astype(np.float64) - x
        max_abs = max(max_abs, float(np.max(np.abs(diff))))
        err_sq += float(np.dot(diff, diff))
        sig_sq += float(np.dot(x, x))
    rms = math.sqrt(err_sq / n) if n else 0.0
    signal_rms = math.sqrt(sig_sq / n) if n else 0.0
    if rms == 0.0:
        relative = 0.0
    elif signal_rms == 0.0:
        relative = math.inf
    else:
        relative = rms / signal_rms
    snr_db = math.inf if relative == 0.0 else -20.0 * math.log10(relative)
    return {"max_abs": max_abs, "rms": rms, "relative_rms": relative, "snr_db": snr_db}
