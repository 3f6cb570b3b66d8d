"""Shared fixtures and Hypothesis profiles for the hybridsync test suite.

Profiles (``HYPOTHESIS_PROFILE``): ``default`` keeps ``make test`` quick, ``soak`` runs many
more examples (``make soak``). Deadlines are off everywhere: timing never decides a result.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

import hybridsync as hs
from hybridsync.testing import ManualClock

settings.register_profile(
    "default",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "soak",
    parent=settings.get_profile("default"),
    max_examples=5_000,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

MemoryFactory = Callable[..., hs.Memory]


@pytest.fixture
def clock() -> ManualClock:
    """A manual millisecond clock shared by the replicas a test makes."""
    return ManualClock(1_700_000_000_000)


@pytest.fixture
def make_memory(clock: ManualClock) -> Iterator[MemoryFactory]:
    """``make_memory(peer, space="space", **options)``: a replica on the manual clock with a
    deterministic, never reused incarnation."""
    incarnations = itertools.count(1)
    made: list[hs.Memory] = []

    def make(peer: str, space: str = "space", **options: object) -> hs.Memory:
        options.setdefault("clock", clock)
        options.setdefault("incarnation", next(incarnations))
        mem = hs.Memory(space, peer, **options)  # type: ignore[arg-type]
        made.append(mem)
        return mem

    yield make
    for mem in made:
        mem.close()
