"""Q4 codec benchmark: size ratio, encode/decode throughput and reconstruction error.

Run from the repository root::

    python -m benchmarks.q4_error              # 64 MiB of float16 per data set
    python -m benchmarks.q4_error --mib 8      # quicker

Prints a Markdown table, one row per data set:

* ``normal``: i.i.d. standard normal values;
* ``uniform``: i.i.d. uniform values in [-1, 1);
* ``kv``: KV-cache-like keys, a (tokens × 128 channels) matrix: rank-8 signal plus small noise,
  a log-normal scale per token (row), and 4 outlier channels 16× larger than the rest, as
  attention keys have; flattened token-major (the natural cache layout);
* ``kv, no outliers``: the same without the outlier channels, to show what they cost;
* ``kv, channel-major``: the ``kv`` matrix transposed before encoding, so each group of 64 holds
  one channel over 64 tokens and the outlier channels get groups of their own.

The last column is the relative RMS error over the 124 regular channels alone: what the outliers
do to everyone else in their groups.

Throughput counts float16 input bytes (MiB/s), best of ``--repeat`` runs, single-threaded numpy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks._common import cpu_model
from hybridsync.regions._q4 import Q4Block, q4_decode, q4_encode, q4_error

CHANNELS = 128
RANK = 8
OUTLIER_CHANNELS = 4
OUTLIER_GAIN = 16.0
NOISE = 0.05

F16 = npt.NDArray[np.float16]


def normal_data(n: int, rng: np.random.Generator) -> F16:
    return rng.standard_normal(n, np.float32).astype(np.float16)


def uniform_data(n: int, rng: np.random.Generator) -> F16:
    return rng.uniform(-1.0, 1.0, n).astype(np.float16)


def outlier_channels() -> npt.NDArray[np.intp]:
    """The fixed outlier channels of :func:`kv_keys`."""
    return np.sort(np.random.default_rng(0).choice(CHANNELS, OUTLIER_CHANNELS, replace=False))


def kv_keys(n: int, rng: np.random.Generator, *, outliers: bool) -> F16:
    """A (tokens × CHANNELS) float16 key matrix with low-rank structure and per-token scales."""
    tokens = max(1, n // CHANNELS)
    u = rng.standard_normal((tokens, RANK), np.float32)
    v = rng.standard_normal((RANK, CHANNELS), np.float32) / np.float32(np.sqrt(RANK))
    keys = u @ v
    keys += NOISE * rng.standard_normal(keys.shape, np.float32)
    keys *= np.exp(0.3 * rng.standard_normal((tokens, 1), np.float32))
    if outliers:
        keys[:, outlier_channels()] *= np.float32(OUTLIER_GAIN)
    return keys.astype(np.float16)


def best_seconds(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def regular_rel_rms(values: F16, decoded: F16, regular: npt.NDArray[np.bool_]) -> float:
    """Relative RMS error over the regular (non-outlier) channels only."""
    x = values[regular].astype(np.float64)
    diff = decoded[regular].astype(np.float64) - x
    return float(np.sqrt(np.mean(diff * diff) / np.mean(x * x)))


def measure(
    name: str, values: F16, repeat: int, regular: npt.NDArray[np.bool_] | None = None
) -> dict[str, Any]:
    mib = values.nbytes / 2**20
    block: Q4Block = q4_encode(values)
    encode_s = best_seconds(lambda: q4_encode(values), repeat)
    decode_s = best_seconds(lambda: q4_decode(block), repeat)
    err = q4_error(values)
    peak = float(np.max(np.abs(values.astype(np.float32))))
    return {
        "data": name,
        "ratio": len(block.to_bytes()) / values.nbytes,
        "encode": mib / encode_s,
        "decode": mib / decode_s,
        "relative_rms": err["relative_rms"],
        "snr_db": err["snr_db"],
        "max_abs": err["max_abs"],
        "max_rel_peak": err["max_abs"] / peak if peak else 0.0,
        "regular": None if regular is None else regular_rel_rms(values, q4_decode(block), regular),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    header = (
        "| data | size ratio | encode MiB/s | decode MiB/s | relative RMS | SNR dB "
        "| max abs err | max err / peak | relative RMS, regular channels |"
    )
    lines = [header, "| --- |" + " ---: |" * 8]
    for r in rows:
        regular = "–" if r["regular"] is None else f"{r['regular']:.4f}"
        lines.append(
            f"| {r['data']} | {r['ratio']:.5f} | {r['encode']:.0f} | {r['decode']:.0f} "
            f"| {r['relative_rms']:.4f} | {r['snr_db']:.2f} | {r['max_abs']:.4g} "
            f"| {r['max_rel_peak']:.4f} | {regular} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mib", type=float, default=64.0, help="MiB of float16 per data set")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs, best is kept")
    parser.add_argument("--seed", type=int, default=20261121)
    args = parser.parse_args(argv)
    n = max(CHANNELS, int(args.mib * 2**20) // 2)
    rng = np.random.default_rng(args.seed)

    kv = kv_keys(n, rng, outliers=True)
    is_outlier = np.zeros(CHANNELS, bool)
    is_outlier[outlier_channels()] = True
    token_major = np.tile(~is_outlier, kv.shape[0])
    channel_major = np.repeat(~is_outlier, kv.shape[0])
    datasets: list[tuple[str, Callable[[], F16], npt.NDArray[np.bool_] | None]] = [
        ("normal", lambda: normal_data(n, rng), None),
        ("uniform", lambda: uniform_data(n, rng), None),
        ("kv", lambda: kv.reshape(-1), token_major),
        ("kv, no outliers", lambda: kv_keys(n, rng, outliers=False).reshape(-1), token_major),
        ("kv, channel-major", lambda: np.ascontiguousarray(kv.T).reshape(-1), channel_major),
    ]
    print(
        f"Q4 benchmark: {n:,} float16 values ({n * 2 / 2**20:.1f} MiB) per data set, "
        f"best of {args.repeat}; numpy {np.__version__}; CPU {cpu_model()}"
    )
    print()
    rows = [measure(name, make(), args.repeat, regular) for name, make, regular in datasets]
    print(markdown(rows))


if __name__ == "__main__":
    main()
