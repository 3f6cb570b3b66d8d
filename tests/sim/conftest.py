"""Fixtures of the simulator tests: the soak switch and the known-core-bug classifier.

Soak tests (``@pytest.mark.soak``) run only with ``HYBRIDSYNC_SOAK=1`` (``make soak``). pytest
hands ``pytest_collection_modifyitems`` every collected item, so this applies to soak tests in
any directory.

Seed sweeps fail loudly on any violation, except the ones whose every detail matches a core
bug listed in ``KNOWN_CORE_BUGS``: those seeds are reported as xfail with the bug's name. Each
known bug has a minimal strict-xfail reproduction in ``test_regressions.py``; when the core is
fixed that test XPASSes (and fails), and its entry here must go.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hybridsync.sim import RunResult

SOAK = os.environ.get("HYBRIDSYNC_SOAK") == "1"

# sibling helper modules (``_gc_helpers``) are imported by name
_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# name -> (regex every matching violation detail satisfies, where it is reproduced)
KNOWN_CORE_BUGS: dict[str, tuple[str, str]] = {}  # none open; see test_regressions.py


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SOAK:
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak` (HYBRIDSYNC_SOAK=1)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def known_bug(result: RunResult) -> str | None:
    """The known core bug(s) that explain every detail of a failed run, or ``None``."""
    if result.ok:
        return None
    names: set[str] = set()
    for detail in result.details or [result.violation or ""]:
        hits = [n for n, (rx, _) in KNOWN_CORE_BUGS.items() if re.search(rx, detail, re.S)]
        if not hits:
            return None
        names.update(hits)
    return ", ".join(sorted(names))


@pytest.fixture
def classify() -> Callable[[RunResult], str | None]:
    """``known_bug``: the known core bug(s) explaining a failed run, or ``None``."""
    return known_bug


@pytest.fixture
def expect_ok() -> Callable[[RunResult], None]:
    """Pass on a clean run, xfail on a run explained by known core bugs, fail otherwise."""

    def check(result: RunResult) -> None:
        if result.ok:
            return
        bug = known_bug(result)
        if bug is not None:
            pytest.xfail(f"known core bug ({bug}); replay: {result.replay}")
        pytest.fail(f"{result.violation}\nreplay: {result.replay}", pytrace=False)

    return check
