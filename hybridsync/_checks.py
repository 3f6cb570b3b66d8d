"""Validation of option values shared by the I/O drivers (``Peer``, ``Inspector``)."""

from __future__ import annotations

from hybridsync.errors import ConfigError

__all__ = ["count", "positive"]


def positive(value: object, what: str) -> float:
    """``value`` as a float of seconds; :class:`ConfigError` unless it is a positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def count(value: object, what: str, lo: int, hi: int) -> int:
    """``value`` unchanged; :class:`ConfigError` unless it is an int in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{what} must be an int in [{lo}, {hi}], got {value!r}")
    return value
