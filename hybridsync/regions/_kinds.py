"""The kind rule: one name made a text on one replica and a buffer on another, concurrently.

Both folds are kept. The one whose first write sorts first in the total order ``(lamport, id)``
is the region (its fold is visible); every contribution part of the other kind is reported as
a ``kind-mismatch`` conflict and never applied. The rank is a function of the contributions
held, so every replica, whatever the delivery order, shows the same kind and the same
conflicts; a later-sorting creation that arrived first is undone when the earlier one comes.

A fold with a compacted base sorts first: garbage collection only compacts the stable prefix,
and the winner's first write precedes the loser's, so it is compacted first.
"""

from __future__ import annotations

from typing import Any

from hybridsync.regions._bufferfold import BufferFold
from hybridsync.regions._folds import FoldIssue, OrderKey
from hybridsync.regions._textfold import TextFold

__all__ = ["kind_issues", "kind_rank", "prune_loser"]


def _writes(fold: Any) -> list[tuple[OrderKey, bytes, bool]]:
    """``(key, id, is_write)`` of every live entry of a text or buffer fold, in order."""
    if isinstance(fold, BufferFold):
        return [(e.key, e.cid, e.delta is not None) for e in fold._entries]
    return [(e.key, e.cid, e.hunks is not None) for e in fold._entries]


def kind_rank(fold: Any) -> tuple[Any, ...]:
    """Sorts first for the fold whose kind the name has."""
    if getattr(fold, "_base", None) is not None or getattr(fold, "_has_base", False):
        return (0,)
    entries = _writes(fold)
    first_write = next((k for k, _, w in entries if w), None)
    if first_write is not None:
        return (1, first_write)
    return (2, entries[0][0]) if entries else (3,)


def kind_issues(name: str, winner: str, fold: Any) -> list[FoldIssue]:
    """One conflict per live entry of the losing fold."""
    loser = "buffer" if winner == "text" else "text"
    detail = (f"{name!r} is a {winner} region (its first write sorts first); "
              f"this {loser} part was not applied")
    return [FoldIssue("kind-mismatch", cid, key, detail) for key, cid, _ in _writes(fold)]


def prune_loser(name: str, winner: str, state: Any, upto: OrderKey,
                make: Any) -> tuple[Any, list[FoldIssue]]:
    """Drop the losing fold's entries at or before ``upto`` (GC): returns the state to keep
    (``None`` when nothing is left) and the conflicts of the dropped entries, for the archive.
    The loser is rebuilt from its remaining entries, so it never gets a base."""
    issues = kind_issues(name, winner, state.fold)
    gone = [i for i in issues if i.key <= upto]
    if not gone:
        return state, []
    fresh = make()
    old = state.fold
    if isinstance(old, BufferFold):
        for b in old._entries:
            if b.key > upto:
                fresh.fold.add(b.key, b.cid, b.delta)
    else:
        assert isinstance(old, TextFold)
        for t in old._entries:
            if t.key > upto:
                fresh.fold.add(t.key, t.cid, t.hunks)
    return (fresh if fresh.fold._entries else None), gone
