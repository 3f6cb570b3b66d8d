"""Hypothesis: the conflict index's shortcut chooses exactly the conflicts a comparison of
every pair of writes would.

``FieldsConflictIndex.conflicting`` keeps one write per (path, action) of each contribution
(the smallest value by ``repr``) and meets only the writes a path or its ancestors can relate
to, so a full group-commit batch (8,192 writes, many at one path) is not compared pair by
pair. Both shortcuts must leave what the replica records unchanged: here ``choose_conflicts``
(the replica's selection) gets the brute-force pairs of random writes and the shortcut's
pairs, and must return the same conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridsync.causal import Contribution
from hybridsync.fields import DELETED, FieldsConflictIndex, FieldWrite, choose_conflicts
from hybridsync.fields._conflicts import _related


@dataclass(frozen=True)
class _Stand:
    """What the selection reads of a contribution."""

    id: bytes
    order_key: tuple[int, bytes]


_paths = st.lists(st.sampled_from(["a", "b", "[]", "c/d"]), min_size=1, max_size=3).map("/".join)
_writes = st.lists(
    st.tuples(_paths, st.sampled_from(["set", "delete", "insert"]),
              st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", 1.0]))).map(
        lambda t: FieldWrite(t[0], t[1], DELETED if t[1] == "delete" else (
            None if t[1] == "insert" else t[2]))),
    max_size=25,
)


class _Index(FieldsConflictIndex):
    """The index with its writes given instead of decoded from Yjs updates."""

    def __init__(self, writes: dict[bytes, tuple[FieldWrite, ...]]) -> None:
        super().__init__()
        self._writes.update(writes)


def _brute(c: Any, others: list[Any], writes: dict[bytes, tuple[FieldWrite, ...]]) -> list[Any]:
    return [(o, wo, wc) for o in others for wo in writes[o.id] for wc in writes[c.id]
            if _related(wo, wc)]


@settings(max_examples=400, deadline=None)
@given(mine=_writes, theirs=st.lists(_writes, min_size=1, max_size=3),
       mine_first=st.booleans())
def test_the_shortcut_chooses_what_every_pair_would(
    mine: list[FieldWrite], theirs: list[list[FieldWrite]], mine_first: bool,
) -> None:
    c = _Stand(b"c", (5 if not mine_first else 1, b"c"))
    others = [_Stand(bytes([i]), (3, bytes([i]))) for i in range(len(theirs))]
    writes = {c.id: tuple(mine), **{o.id: tuple(w) for o, w in zip(others, theirs, strict=True)}}
    index = _Index(writes)
    cc = cast(Contribution, c)
    oo = cast(list[Contribution], others)
    fast = choose_conflicts(cc, index.conflicting(cc, oo))
    slow = choose_conflicts(cc, _brute(c, others, writes))
    assert [(loc, f.id, s.id, wf.path, wf.action, repr(wf.value), ws.path, ws.action,
             repr(ws.value)) for loc, f, s, wf, ws in fast] == \
           [(loc, f.id, s.id, wf.path, wf.action, repr(wf.value), ws.path, ws.action,
             repr(ws.value)) for loc, f, s, wf, ws in slow]
