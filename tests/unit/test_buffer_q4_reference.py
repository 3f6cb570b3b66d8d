"""The vectorized Q4 codec (chunked, table-driven) against a plain reference written from the
formulas in ``docs/q4.md``: the same bytes for every input, including chunk boundaries,
padding, zero signs, subnormals and the float16 extremes; ``saturate`` and ``out``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hybridsync.errors import ConfigError
from hybridsync.regions._q4 import _CHUNK_GROUPS, GROUP_SIZE, Q4Block, q4_decode, q4_encode

F16_MAX = 65504.0


def reference_encode(values: npt.NDArray[np.float16]) -> Q4Block:
    """One group at a time, straight from the docs: bias = min (a zero min as +0.0), scale =
    (max - min) / 15 rounded up to a float16, q = clip(rint((x - bias) / scale), 0, 15) in
    float32, padding codes 0."""
    flat = values.reshape(-1)
    n = flat.size
    groups = -(-n // GROUP_SIZE)
    scales = np.zeros(groups, np.float16)
    biases = np.zeros(groups, np.float16)
    codes = np.zeros(groups * GROUP_SIZE // 2, np.uint8)
    for g in range(groups):
        x = flat[g * GROUP_SIZE : (g + 1) * GROUP_SIZE].astype(np.float32)
        lo, hi = np.float32(x.min()) + np.float32(0), np.float32(x.max()) + np.float32(0)
        exact = (float(hi) - float(lo)) / 15
        scale = np.float16(exact)
        if float(scale) < exact:
            scale = np.nextafter(scale, np.float16(np.inf))
        scales[g], biases[g] = scale, lo
        divisor = np.float32(scale) if scale != 0 else np.float32(1)
        q = np.clip(np.rint((x - lo) / divisor), 0, 15).astype(np.uint8)
        q = np.concatenate([q, np.zeros(GROUP_SIZE - q.size, np.uint8)])
        codes[g * 32 : (g + 1) * 32] = q[0::2] | (q[1::2] << 4)
    return Q4Block(n, scales, biases, codes)


def reference_decode(block: Q4Block) -> npt.NDArray[np.float16]:
    q = np.empty(block.groups * GROUP_SIZE, np.float32)
    q[0::2] = block.codes & 0x0F
    q[1::2] = block.codes >> 4
    x = q.reshape(-1, GROUP_SIZE) * block.scales.astype(np.float32)[:, None]
    x += block.biases.astype(np.float32)[:, None]
    return np.clip(x, -F16_MAX, F16_MAX).reshape(-1)[: block.length].astype(np.float16)


def inputs() -> list[tuple[str, npt.NDArray[np.float16]]]:
    rng = np.random.default_rng(12)
    bits = rng.integers(0, 1 << 16, 5000, dtype=np.uint16).view(np.float16)
    special = np.array([0.0, -0.0, 6e-8, -6e-8, 1e-5, F16_MAX, -F16_MAX, 1.0, -1.0],
                       np.float16)
    return [
        ("normal", rng.standard_normal(3 * GROUP_SIZE + 17).astype(np.float16)),
        ("every bit pattern", np.where(np.isfinite(bits), bits, np.float16(0))),
        ("zeros of both signs", rng.choice(np.array([0.0, -0.0], np.float16), 640)),
        ("specials", rng.choice(special, 1000)),
        ("subnormal", (rng.integers(-3, 4, 700) * 6e-8).astype(np.float16)),
        ("constant", np.full(130, -3.5, np.float16)),
        ("one value", np.array([2.5], np.float16)),
        ("over a chunk", rng.uniform(-9, 9, _CHUNK_GROUPS * GROUP_SIZE + 100).astype(np.float16)),
    ]


@pytest.mark.parametrize(("name", "values"), inputs(), ids=[n for n, _ in inputs()])
def test_same_bytes_as_the_reference(name: str, values: npt.NDArray[np.float16]) -> None:
    if name == "over a chunk":  # the reference is slow: check its first and last groups
        head, tail = values[: 2 * GROUP_SIZE], values[-(GROUP_SIZE + 100) :]
        block = q4_encode(values)
        g0 = (values.size - tail.size) // GROUP_SIZE
        for part, first in ((head, 0), (tail, g0)):
            ref = reference_encode(part)
            assert block.scales[first : first + ref.groups].tobytes() == ref.scales.tobytes()
            assert block.biases[first : first + ref.groups].tobytes() == ref.biases.tobytes()
            assert (block.codes[first * 32 : (first + ref.groups) * 32].tobytes()
                    == ref.codes.tobytes())
        assert q4_decode(block).tobytes() == reference_decode(block).tobytes()
        return
    block = q4_encode(values)
    assert block == reference_encode(values)
    assert q4_decode(block).tobytes() == reference_decode(block).tobytes()


def test_a_zero_minimum_is_stored_as_positive_zero() -> None:
    block = q4_encode(np.array([-0.0] * 64 + [-0.0, 0.0, 1.0] * 20, np.float16))
    assert block.biases.view(np.uint16).tolist() == [0, 0]


def test_decode_into_an_output_array() -> None:
    values = np.random.default_rng(3).standard_normal((5, 100)).astype(np.float16)
    block = q4_encode(values)
    out = np.full((5, 100), np.nan, np.float16)
    flat = q4_decode(block, out=out)
    assert np.shares_memory(flat, out)
    assert out.tobytes() == q4_decode(block).tobytes()
    bad: list[Any] = [np.empty(499, np.float16), np.empty(500, np.float32),
                      np.empty((100, 10), np.float16)[:, :5]]
    for o in bad:
        with pytest.raises(ConfigError):
            q4_decode(block, out=o)


def test_saturate_encodes_non_finite_values_as_their_finite_limits() -> None:
    values = np.linspace(-2, 2, 192).astype(np.float16)
    values[[0, 70, 130]] = [np.nan, np.inf, -np.inf]
    with pytest.raises(ConfigError):
        q4_encode(values)
    expected = values.copy()
    expected[[0, 70, 130]] = [0.0, F16_MAX, -F16_MAX]
    assert q4_encode(values, saturate=True) == q4_encode(expected)
    big = np.array([1e6, -1.0], np.float32)  # beyond float16: saturates too
    assert q4_encode(big, saturate=True) == q4_encode(np.array([F16_MAX, -1.0], np.float16))
