"""The fold of a text region: fuzzy patches applied in the log's total order ``(lamport, id)``.

Contributions usually arrive in that order and apply incrementally; a late concurrent one
that sorts earlier rewinds the fold to the newest checkpoint before it and replays.

A deletion is an entry too. An edit whose author had not seen the deletion (concurrent with
it) cannot resurrect the region: it is dropped and reported; an edit made after seeing the
deletion re-creates the region.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from hybridsync.regions._folds import FoldIssue, HappenedBefore, OrderKey
from hybridsync.regions._textdiff import Hunk, apply_patch

__all__ = ["CHECKPOINT_EVERY", "MAX_CHECKPOINTS", "TextFold"]

CHECKPOINT_EVERY = 16
MAX_CHECKPOINTS = 24


@dataclass(slots=True)
class _Entry:
    key: OrderKey
    cid: bytes
    hunks: list[Hunk] | None  # None: a deletion
    issues: list[FoldIssue] = field(default_factory=list)


class TextFold:
    """The fold of one text region."""

    def __init__(self, happened_before: HappenedBefore) -> None:
        self._hb = happened_before
        self._entries: list[_Entry] = []
        self._keys: list[OrderKey] = []
        self.value = ""
        self.deleted = False
        self._deleted_by: bytes | None = None
        # checkpoints: (number of entries folded, value, deleted, deleted_by)
        self._checkpoints: list[tuple[int, str, bool, bytes | None]] = [(0, "", False, None)]
        self.replays = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def exists(self) -> bool:
        return bool(self._entries) and not self.deleted

    def add(self, key: OrderKey, cid: bytes, hunks: list[Hunk] | None) -> None:
        """Fold in one contribution's patch (``None`` for a deletion)."""
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return  # already folded
        entry = _Entry(key, cid, hunks)
        self._entries.insert(i, entry)
        self._keys.insert(i, key)
        if i == len(self._entries) - 1:
            self._step(entry, i)
            self._maybe_checkpoint()
            return
        # A late contribution that sorts earlier: rewind and replay.
        self.replays += 1
        j = max(k for k, cp in enumerate(self._checkpoints) if cp[0] <= i)
        del self._checkpoints[j + 1 :]
        n, self.value, self.deleted, self._deleted_by = self._checkpoints[j]
        for k in range(n, len(self._entries)):
            self._step(self._entries[k], k)
            if (k + 1) % CHECKPOINT_EVERY == 0:
                self._checkpoints.append((k + 1, self.value, self.deleted, self._deleted_by))
        self._thin()

    def _maybe_checkpoint(self) -> None:
        n = len(self._entries)
        if n % CHECKPOINT_EVERY == 0:
            self._checkpoints.append((n, self.value, self.deleted, self._deleted_by))
            self._thin()

    def _thin(self) -> None:
        """Keep checkpoints bounded: drop every other one from the older half."""
        if len(self._checkpoints) <= MAX_CHECKPOINTS:
            return
        half = len(self._checkpoints) // 2
        older = self._checkpoints[1:half]
        self._checkpoints = [self._checkpoints[0], *older[1::2], *self._checkpoints[half:]]

    def _step(self, e: _Entry, index: int) -> None:
        e.issues = []
        if e.hunks is None:
            # Edits that sort before this deletion but were made without seeing it are
            # wiped by it: say so (G2), on the deletion's entry so a replay recomputes it.
            for j in range(index - 1, -1, -1):
                prev = self._entries[j]
                if prev.hunks is None:
                    break
                if not self._hb(prev.cid, e.cid) and not prev.issues:
                    e.issues.append(FoldIssue(
                        "edit-of-deleted-region", prev.cid, prev.key,
                        "edit made concurrently with the region's deletion; wiped by it",
                        e.cid,
                    ))
            self.value, self.deleted, self._deleted_by = "", True, e.cid
            return
        if self.deleted:
            assert self._deleted_by is not None
            if not self._hb(self._deleted_by, e.cid):
                e.issues.append(FoldIssue(
                    "edit-of-deleted-region", e.cid, e.key,
                    "edit made concurrently with the region's deletion; not applied",
                    self._deleted_by,
                ))
                return
            self.deleted, self._deleted_by = False, None
        self.value, failed = apply_patch(self.value, e.hunks)
        for h in failed:
            e.issues.append(FoldIssue("hunk-failed", e.cid, e.key, h.text))

    def issues(self) -> list[FoldIssue]:
        return [i for e in self._entries for i in e.issues]
