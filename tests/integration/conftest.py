"""Integration tests import their helpers (``_aio``, ``_cluster``, ``_netns``, ``_proxy``)
as sibling modules: put this folder on the import path once, for every test module here."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
