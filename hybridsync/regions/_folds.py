"""What the folds share: the order key, the causal predicate, and the issues they report.

A region's value is a deterministic function of the contributions that touched it: texts in
``_textfold.py`` (anchored patches applied in the log's total order, with checkpoints and
rewind),
buffers in ``_bufferfold.py`` (last writer wins per block in the same order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FoldIssue", "HappenedBefore", "OrderKey"]

OrderKey = tuple[int, bytes]
# happened_before(a, b): is contribution a in the causal past of contribution b?
HappenedBefore = Callable[[bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class FoldIssue:
    """Something the fold could not do faithfully; becomes a ``Conflict``."""

    kind: str  # "hunk-failed" | "edit-of-deleted-region" | "shape-mismatch"
    cid: bytes
    key: OrderKey
    detail: str
    other: bytes | None = None
