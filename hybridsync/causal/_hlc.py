"""Hybrid logical clock (Kulkarni et al., 2014) fed by an injected physical clock.

A timestamp is one int: 48 bits of milliseconds, 16 bits of logical counter. The clock never
reads time itself; ``now_ms`` is a callable handed in by the driver or the simulator.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HybridLogicalClock", "hlc_split"]

_LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << _LOGICAL_BITS) - 1
HLC_MAX = (1 << 64) - 1


def hlc_split(ts: int) -> tuple[int, int]:
    """``(milliseconds, logical)`` of a packed timestamp."""
    return ts >> _LOGICAL_BITS, ts & _LOGICAL_MASK


class HybridLogicalClock:
    """Monotonic timestamps that stay close to physical time and respect causality."""

    __slots__ = ("_last", "_now_ms")

    def __init__(self, now_ms: Callable[[], int], last: int = 0) -> None:
        self._now_ms = now_ms
        self._last = last

    @property
    def last(self) -> int:
        return self._last

    def tick(self) -> int:
        """A timestamp for a local event, greater than every one issued or observed before."""
        physical = int(self._now_ms()) << _LOGICAL_BITS
        ts = physical if physical > self._last else self._last + 1
        self._last = min(ts, HLC_MAX)
        return self._last

    def observe(self, remote: int) -> None:
        """Take a remote timestamp into account so later ticks sort after it."""
        if self._last < remote <= HLC_MAX:
            self._last = remote
