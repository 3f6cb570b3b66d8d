"""Sibling helper modules of the property tests (``_stateful_common``) are imported by name,
as in ``tests/sim``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
