"""Unit and property tests for the Q4 codec (hybridsync.regions._q4)."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridsync.errors import ConfigError, PayloadError
from hybridsync.regions._q4 import (
    FORMAT_BYTE,
    GROUP_SIZE,
    HEADER_SIZE,
    Q4Block,
    q4_decode,
    q4_encode,
    q4_error,
)

F16_MAX = 65504.0
PROPERTY = settings(max_examples=200, deadline=None)


def _ulp16(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Spacing of float16 numbers at |values| (subnormal spacing 2**-24 near zero)."""
    _, exponent = np.frexp(np.abs(values))  # |v| = m * 2**e with 0.5 <= m < 1
    return np.asarray(np.ldexp(1.0, np.maximum(exponent - 1, -14) - 10), dtype=np.float64)


def _group_stats(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Per-group min and max over the real (unpadded) values."""
    groups = -(-x.size // GROUP_SIZE)
    padded = np.empty(groups * GROUP_SIZE)
    padded[: x.size] = x
    padded[x.size :] = x[-1] if x.size else 0.0
    rows = padded.reshape(groups, GROUP_SIZE)
    return rows.min(axis=1), rows.max(axis=1)


def assert_within_bound(values: npt.NDArray[Any], block: Q4Block) -> None:
    """|x - x̂| <= scale/2 per group, plus float16 rounding of x̂ and float32 slack."""
    x = values.reshape(-1).astype(np.float16).astype(np.float64)
    decoded = q4_decode(block)
    assert decoded.dtype == np.float16
    assert decoded.shape == (x.size,)
    assert np.isfinite(decoded).all()
    xh = decoded.astype(np.float64)
    scales = block.scales.astype(np.float64)
    per_value = np.repeat(scales, GROUP_SIZE)[: x.size]
    bound = per_value / 2 + per_value * 2.0**-16 + _ulp16(xh)
    err = np.abs(x - xh)
    worst = int(np.argmax(err - bound)) if x.size else 0
    assert (err <= bound).all(), (
        f"value {x[worst]!r} decoded as {xh[worst]!r}: error {err[worst]} > bound {bound[worst]}"
    )
    # The stored parameters are the tight ones: bias is the group minimum, and scale is
    # range/15 rounded up to the next float16 (so 15*scale covers the range).
    if x.size:
        lo, hi = _group_stats(x)
        np.testing.assert_array_equal(block.biases.astype(np.float64), lo)
        exact = (hi - lo) / 15
        assert (scales >= exact).all()
        assert (scales <= exact + _ulp16(exact)).all()


def _codes_of(block: Q4Block) -> npt.NDArray[np.uint8]:
    """Unpacked 4-bit codes, one per (padded) value."""
    q = np.empty(block.codes.size * 2, np.uint8)
    q[0::2] = block.codes & 0x0F
    q[1::2] = block.codes >> 4
    return q


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 127, 128, 129, 1000, 4096, 10_001])
def test_round_trip_normal_data_within_bound(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float16)
    block = q4_encode(x)
    assert block.length == n
    assert block.groups == -(-n // GROUP_SIZE)
    assert_within_bound(x, block)
    assert Q4Block.from_bytes(block.to_bytes()) == block


def test_length_not_multiple_of_group_size_pads_with_zero_codes() -> None:
    x = np.random.default_rng(1).uniform(-3, 3, 1000).astype(np.float16)
    block = q4_encode(x)
    assert block.groups == 16
    assert block.codes.shape == (16 * 32,)
    codes = _codes_of(block)
    assert not codes[1000:].any()
    assert q4_decode(block).shape == (1000,)
    assert_within_bound(x, block)


def test_padding_does_not_widen_the_last_group() -> None:
    # 64 values near 0, then one lone value at 1000: the padded last group must stay constant.
    x = np.concatenate([np.linspace(0, 1, 64), [1000.0]]).astype(np.float16)
    block = q4_encode(x)
    assert block.scales[1] == 0
    assert block.biases[1] == np.float16(1000.0)
    assert q4_decode(block)[64] == np.float16(1000.0)
    # Values in [100, 101] with padding: scale ~ 1/15, not ~ 101/15.
    y = np.linspace(100, 101, 70).astype(np.float16)
    assert float(q4_encode(y).scales[1]) < 0.07


def test_empty_array() -> None:
    for shape in [(0,), (0, 5), (3, 0, 2)]:
        block = q4_encode(np.empty(shape, np.float16))
        assert block.length == 0
        assert block.groups == 0
        assert block.scales.shape == block.biases.shape == block.codes.shape == (0,)
        data = block.to_bytes()
        assert data == bytes([FORMAT_BYTE]) + struct.pack("<Q", 0)
        assert len(data) == HEADER_SIZE == block.nbytes
        assert Q4Block.from_bytes(data) == block
        out = q4_decode(block)
        assert out.dtype == np.float16 and out.shape == (0,)
        assert q4_error(np.empty(shape, np.float16)) == {
            "max_abs": 0.0,
            "rms": 0.0,
            "relative_rms": 0.0,
            "snr_db": math.inf,
        }


@pytest.mark.parametrize("value", [0.0, -0.0, 3.0, -2.5, 6e-8, F16_MAX, -F16_MAX])
def test_constant_groups_are_exact(value: float) -> None:
    x = np.full(200, value, np.float16)
    block = q4_encode(x)
    assert (block.scales == 0).all()
    assert not block.codes.any()
    np.testing.assert_array_equal(q4_decode(block), x)
    err = q4_error(x)
    assert err["max_abs"] == 0.0 and err["rms"] == 0.0
    assert err["relative_rms"] == 0.0 and err["snr_db"] == math.inf


def test_mixed_constant_and_varying_groups() -> None:
    x = np.concatenate(
        [np.full(64, 7.0), np.linspace(-1, 1, 64), np.zeros(64), np.full(10, -3.0)]
    ).astype(np.float16)
    block = q4_encode(x)
    np.testing.assert_array_equal(block.scales == 0, [True, False, True, True])
    out = q4_decode(block)
    np.testing.assert_array_equal(out[:64], x[:64])
    np.testing.assert_array_equal(out[128:], x[128:])
    assert_within_bound(x, block)


def test_sixteen_levels_are_exact() -> None:
    # A group holding exactly bias + k*scale for k = 0..15 with a float16 scale decodes exactly.
    x = (np.arange(64) % 16 * 0.25 - 1.0).astype(np.float16)
    block = q4_encode(x)
    assert block.scales[0] == np.float16(0.25)
    np.testing.assert_array_equal(q4_decode(block), x)


def test_extreme_float16_range_stays_finite() -> None:
    x = np.array([-F16_MAX, F16_MAX, 0.0, 1.0, -1.0, 30000.0] * 11, np.float16)
    block = q4_encode(x)
    assert np.isfinite(block.scales).all()
    out = q4_decode(block)
    assert np.isfinite(out).all()
    assert out.max() == np.float16(F16_MAX) and out.min() == np.float16(-F16_MAX)
    assert_within_bound(x, block)


def test_subnormal_ranges_keep_a_nonzero_scale() -> None:
    tiny = float(np.float16(2.0**-24))
    x = np.array([0.0, tiny, 2 * tiny, 0.0] * 16, np.float16)
    block = q4_encode(x)
    assert block.scales[0] == np.float16(tiny)
    np.testing.assert_array_equal(q4_decode(block), x)


@pytest.mark.parametrize(
    "shape", [(), (1,), (3, 5, 7), (2, 64), (64, 2), (7, 9, 11, 13), (1, 1, 129)]
)
def test_odd_shapes_flatten_in_c_order(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float16)
    block = q4_encode(x)
    assert block.length == x.size
    assert_within_bound(x, block)
    assert q4_encode(x.reshape(-1)) == block


def test_non_contiguous_and_byte_swapped_inputs() -> None:
    x = np.random.default_rng(5).standard_normal((40, 30)).astype(np.float16)
    for view in [x.T, x[::2, ::3], x[:, ::-1]]:
        assert q4_encode(view) == q4_encode(np.ascontiguousarray(view))
    assert q4_encode(x.astype(">f2")) == q4_encode(x)
    assert q4_encode(x.astype(">f4")) == q4_encode(x)


def test_float32_input_is_converted_to_float16() -> None:
    x = np.random.default_rng(6).standard_normal(300).astype(np.float32)
    assert q4_encode(x) == q4_encode(x.astype(np.float16))
    # 65519 rounds to 65504 in float16: inside the range, accepted.
    y = np.array([65519.0, -65519.0, 0.0], np.float32)
    block = q4_encode(y)
    np.testing.assert_array_equal(q4_decode(block)[:2], [F16_MAX, -F16_MAX])
    assert_within_bound(y, block)


# --- rejected inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        np.zeros(4, np.float64),
        np.zeros(4, np.int16),
        np.zeros(4, np.uint8),
        np.zeros(4, bool),
        np.zeros(4, np.complex64),
        np.zeros(4, object),
        np.zeros(4, "U1"),
    ],
    ids=lambda v: str(v.dtype),
)
def test_other_dtypes_raise_config_error(values: npt.NDArray[Any]) -> None:
    with pytest.raises(ConfigError, match="float16 or float32"):
        q4_encode(values)


def test_non_arrays_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="numpy array"):
        q4_encode([1.0, 2.0])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_non_finite_values_raise_config_error(bad: float, dtype: type[np.floating[Any]]) -> None:
    x = np.zeros(100, dtype)
    x[70] = bad
    with pytest.raises(ConfigError, match=r"non-finite value .* at flat index 70"):
        q4_encode(x)
    with pytest.raises(ConfigError):
        q4_error(x)


@pytest.mark.parametrize("big", [65520.0, -1e6, 3.4e38])
def test_float32_beyond_float16_range_raises_config_error(big: float) -> None:
    x = np.ones(10, np.float32)
    x[3] = big
    with pytest.raises(ConfigError, match="beyond the float16 range"):
        q4_encode(x)


# --- size and byte layout ------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 17, 1024])
def test_size_ratio_is_exactly_36_over_128(groups: int) -> None:
    n = groups * GROUP_SIZE
    x = np.random.default_rng(groups).standard_normal(n).astype(np.float16)
    data = q4_encode(x).to_bytes()
    assert len(data) == HEADER_SIZE + 36 * groups
    assert (len(data) - HEADER_SIZE) / x.nbytes == 0.28125
    assert q4_encode(x).nbytes == len(data)


def test_byte_layout() -> None:
    x = np.concatenate([np.arange(16), np.zeros(48), [5.0, 6.0, 7.0]]).astype(np.float16)
    block = q4_encode(x)
    data = block.to_bytes()
    assert data[0] == FORMAT_BYTE
    assert struct.unpack_from("<Q", data, 1) == (67,)
    scales = np.frombuffer(data, "<f2", 2, HEADER_SIZE)
    biases = np.frombuffer(data, "<f2", 2, HEADER_SIZE + 4)
    # 2/15 is not a float16: the scale is rounded *up* so that 15*scale covers the range.
    s1 = np.float16(2.0 / 15)
    if float(s1) < 2.0 / 15:
        s1 = np.nextafter(s1, np.float16(1))
    np.testing.assert_array_equal(scales, [np.float16(1.0), s1])
    np.testing.assert_array_equal(biases, [0.0, 5.0])
    codes = data[HEADER_SIZE + 8 :]
    assert len(codes) == 64
    assert codes[0] == 0x10 and codes[1] == 0x32  # values 0,1 and 2,3: low nibble first
    assert codes[8:32] == bytes(24)
    # Group 1: 5 -> 0, 6 -> round(1/scale) = 7 (scale > 2/15), 7 -> 15; padding nibbles zero.
    q6 = round(1.0 / float(s1))
    assert q6 == 7
    assert codes[32] == q6 << 4 and codes[33] == 15
    assert codes[34:] == bytes(30)


def test_blocks_are_read_only_hashable_values() -> None:
    x = np.random.default_rng(8).standard_normal(100).astype(np.float16)
    block = q4_encode(x)
    for array in (block.scales, block.biases, block.codes):
        assert not array.flags.writeable
    parsed = Q4Block.from_bytes(block.to_bytes())
    for array in (parsed.scales, parsed.biases, parsed.codes):
        assert not array.flags.writeable
    assert parsed == block and hash(parsed) == hash(block)
    assert block != q4_encode(x[:99])
    assert block != "not a block"
    assert "length=100" in repr(block)


def test_from_bytes_accepts_bytes_like() -> None:
    block = q4_encode(np.linspace(-1, 1, 90).astype(np.float16))
    data = bytearray(block.to_bytes())
    parsed = Q4Block.from_bytes(data)  # type: ignore[arg-type]
    data[HEADER_SIZE] ^= 0xFF  # the parsed block must not alias the caller's buffer
    assert parsed == block
    assert Q4Block.from_bytes(memoryview(block.to_bytes())) == block  # type: ignore[arg-type]


# --- malformed payloads --------------------------------------------------------------------


def _valid_payload() -> bytes:
    x = np.concatenate([np.linspace(-2, 2, 100), np.full(20, 3.0)]).astype(np.float16)
    return q4_encode(x).to_bytes()  # 120 values: groups [varying, varying+constant tail]


def test_from_bytes_rejects_every_truncation() -> None:
    data = _valid_payload()
    for cut in range(len(data)):
        with pytest.raises(PayloadError):
            Q4Block.from_bytes(data[:cut])


def test_from_bytes_rejects_trailing_bytes() -> None:
    with pytest.raises(PayloadError, match="trailing"):
        Q4Block.from_bytes(_valid_payload() + b"\x00")


@pytest.mark.parametrize("length", [0, 1, 64, 129, 192, 2**40, 2**63, 2**64 - 1])
def test_from_bytes_rejects_length_mismatch(length: int) -> None:
    data = bytearray(_valid_payload())  # 120 values, 2 groups
    struct.pack_into("<Q", data, 1, length)
    with pytest.raises(PayloadError, match=r"truncated|trailing"):
        Q4Block.from_bytes(bytes(data))


def test_from_bytes_length_within_the_last_group() -> None:
    # Growing the length into zero-coded padding gives another valid payload (the codec has no
    # checksum; the transport's integrity check covers bit flips). Shrinking it below a nonzero
    # code is caught, because the cut-off code becomes nonzero padding.
    data = bytearray(_valid_payload())
    struct.pack_into("<Q", data, 1, 121)
    assert q4_decode(Q4Block.from_bytes(bytes(data))).shape == (121,)
    struct.pack_into("<Q", data, 1, 99)
    with pytest.raises(PayloadError, match="padding"):
        Q4Block.from_bytes(bytes(data))


def test_from_bytes_rejects_bad_format_byte_and_garbage() -> None:
    data = bytearray(_valid_payload())
    for fmt in (0x00, 0x50, 0x52, 0xFF):
        data[0] = fmt
        with pytest.raises(PayloadError, match="format byte"):
            Q4Block.from_bytes(bytes(data))
    rng = np.random.default_rng(9)
    for size in [0, 1, 8, 9, 10, 45, 81, 500]:
        with pytest.raises(PayloadError):
            Q4Block.from_bytes(rng.integers(0, 256, size, np.uint8).tobytes())
    with pytest.raises(PayloadError, match="bytes-like"):
        Q4Block.from_bytes("not bytes")  # type: ignore[arg-type]


def _with_f16(data: bytes, offset: int, value: float) -> bytes:
    out = bytearray(data)
    out[offset : offset + 2] = np.array([value], "<f2").tobytes()
    return bytes(out)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, -0.0])
def test_from_bytes_rejects_bad_scales(value: float) -> None:
    with pytest.raises(PayloadError, match="scales"):
        Q4Block.from_bytes(_with_f16(_valid_payload(), HEADER_SIZE, value))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_from_bytes_rejects_non_finite_biases(value: float) -> None:
    with pytest.raises(PayloadError, match="biases"):
        Q4Block.from_bytes(_with_f16(_valid_payload(), HEADER_SIZE + 4, value))


def test_from_bytes_rejects_nonzero_padding_and_constant_group_codes() -> None:
    data = _valid_payload()
    codes_at = HEADER_SIZE + 8
    for offset, value in [
        (codes_at + 32 + 28, 0x01),  # first padding byte (values 120, 121)
        (codes_at + 63, 0x10),  # last padding nibble
    ]:
        bad = bytearray(data)
        bad[offset] = value
        with pytest.raises(PayloadError, match="padding"):
            Q4Block.from_bytes(bytes(bad))

    # Odd length: the high nibble of the byte holding the last value is padding.
    odd = q4_encode(np.linspace(0, 1, 67).astype(np.float16)).to_bytes()
    bad = bytearray(odd)
    assert bad[HEADER_SIZE + 8 + 32 + 1] >> 4 == 0
    bad[HEADER_SIZE + 8 + 32 + 1] |= 0x10
    with pytest.raises(PayloadError, match="padding"):
        Q4Block.from_bytes(bytes(bad))

    const = q4_encode(np.full(64, 2.0, np.float16)).to_bytes()
    bad = bytearray(const)
    bad[HEADER_SIZE + 4 + 5] = 0x22
    with pytest.raises(PayloadError, match="constant group"):
        Q4Block.from_bytes(bytes(bad))


def test_direct_construction_is_validated() -> None:
    f16 = np.zeros(2, np.float16)
    codes = np.zeros(64, np.uint8)
    Q4Block(100, f16, f16, codes)
    with pytest.raises(ConfigError, match="length"):
        Q4Block(-1, f16, f16, codes)
    with pytest.raises(ConfigError, match="length"):
        Q4Block(True, f16, f16, codes)
    with pytest.raises(ConfigError, match="scales"):
        Q4Block(100, f16.astype(np.float32), f16, codes)
    with pytest.raises(ConfigError, match="biases"):
        Q4Block(200, np.zeros(4, np.float16), f16, np.zeros(128, np.uint8))
    with pytest.raises(ConfigError, match="codes"):
        Q4Block(100, f16, f16, codes[:63])
    with pytest.raises(ConfigError, match="codes"):
        Q4Block(100, f16, f16, [0] * 64)  # type: ignore[arg-type]


# --- error measurement ---------------------------------------------------------------------


def test_q4_error_on_normal_data() -> None:
    x = np.random.default_rng(10).standard_normal(1 << 16).astype(np.float16)
    err = q4_error(x)
    assert set(err) == {"max_abs", "rms", "relative_rms", "snr_db"}
    # Range of 64 normals is ~4.7σ, so scale ~0.31σ and uniform rounding error ~scale/√12.
    assert 0.07 < err["relative_rms"] < 0.11
    assert err["snr_db"] == pytest.approx(-20 * math.log10(err["relative_rms"]))
    assert err["max_abs"] <= 0.5 * float(q4_encode(x).scales.max()) * 1.01
    assert err["rms"] <= err["max_abs"]


def test_q4_error_measures_against_float32_input() -> None:
    x = np.random.default_rng(11).standard_normal(4096).astype(np.float32)
    err32 = q4_error(x)
    err16 = q4_error(x.astype(np.float16))
    assert err32["rms"] == pytest.approx(err16["rms"], rel=0.05)
    assert err32["rms"] != err16["rms"]


# --- properties ----------------------------------------------------------------------------

finite_f16 = st.floats(width=16, allow_nan=False, allow_infinity=False)
f16_arrays = hnp.arrays(
    np.float16,
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=70),
    elements=finite_f16,
)


@PROPERTY
@given(f16_arrays)
def test_property_round_trip_within_bound(x: npt.NDArray[np.float16]) -> None:
    block = q4_encode(x)
    assert_within_bound(x, block)
    data = block.to_bytes()
    assert len(data) == HEADER_SIZE + 36 * block.groups
    parsed = Q4Block.from_bytes(data)
    assert parsed == block
    assert parsed.to_bytes() == data
    np.testing.assert_array_equal(q4_decode(parsed), q4_decode(block))


@PROPERTY
@given(
    hnp.arrays(
        np.float16,
        st.integers(0, 300),
        elements=finite_f16,
        fill=st.sampled_from([0.0, 1.0, -2.0]),
    )
)
def test_property_structured_groups_within_bound(x: npt.NDArray[np.float16]) -> None:
    # A fill value makes long constant runs, so constant and mixed groups both show up.
    assert_within_bound(x, q4_encode(x))


@PROPERTY
@given(st.integers(0, 200), st.data())
def test_property_from_bytes_accepts_only_canonical_payloads(
    length: int, data: st.DataObject
) -> None:
    groups = -(-length // GROUP_SIZE)
    body = data.draw(st.binary(min_size=36 * groups, max_size=36 * groups))
    payload = bytes([FORMAT_BYTE]) + struct.pack("<Q", length) + body
    try:
        block = Q4Block.from_bytes(payload)
    except PayloadError:
        return
    assert block.to_bytes() == payload
    out = q4_decode(block)
    assert out.shape == (length,)
    assert np.isfinite(out).all()


@PROPERTY
@given(st.binary(max_size=200))
def test_property_garbage_raises_payload_error_or_round_trips(payload: bytes) -> None:
    try:
        block = Q4Block.from_bytes(payload)
    except PayloadError:
        return
    assert block.to_bytes() == payload
