"""The only place the library reads the real clock or draws real randomness.

The sans-I/O core receives these as arguments; the simulator passes simulated ones instead.
"""

from __future__ import annotations

import os
import time

__all__ = ["random_incarnation", "wall_clock_ms"]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def random_incarnation() -> int:
    return int.from_bytes(os.urandom(4), "big") or 1
