"""The fold of a text region: patches applied in the log's total order ``(lamport, id)``.

Each patch goes through ``_textdiff.apply_patch`` (anchored: a hunk applies only onto its own
old text, else it is reported as ``hunk-failed``). Contributions usually arrive in that order
and apply incrementally; a late concurrent one that sorts earlier rewinds the fold to the
newest checkpoint before it and replays.

The value is a :class:`Rope`: an edit shares every chunk it does not touch, so applying a
patch costs what it changes and a checkpoint costs the chunks changed since the previous one.
It starts *compact* (wide chunks kept as UTF-8, about half the memory of a ``str`` for text
with a few characters beyond Latin-1) and is made *hot* (:meth:`TextFold.hot`) on a replica
that hands over whole texts.
An entry keeps a patch decoded from the wire as the encoded ``bytes`` it came in
(:class:`~hybridsync.regions._textdiff.Patch` ``.data``, the very object the contribution's
part holds), not as hunks: a few hundred bytes an edit instead of the hunk objects, and the
first contribution's whole-text insert is not kept beside the rope as a decoded ``str``. A
replay or a compaction decodes it again (a pure function of the bytes: the same hunks).

A deletion is an entry too. An edit whose author had not seen the deletion (concurrent with
it) cannot resurrect the region: it is dropped and reported; an edit made after seeing the
deletion re-creates the region.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from hybridsync.regions._folds import FoldIssue, HappenedBefore, OrderKey
from hybridsync.regions._rope import Rope
from hybridsync.regions._textdiff import Hunk, Patch, apply_patch, decode_patch

__all__ = ["CHECKPOINT_EVERY", "MAX_CHECKPOINTS", "TextFold"]

CHECKPOINT_EVERY = 16
MAX_CHECKPOINTS = 24
_EMPTY = Rope([], compact=True)


@dataclass(slots=True)
class _Entry:
    key: OrderKey
    cid: bytes
    # the patch as add() took it: its encoding (bytes) or hunks; None: a deletion
    hunks: bytes | list[Hunk] | None
    issues: list[FoldIssue] = field(default_factory=list)

    def decoded(self) -> list[Hunk]:
        h = self.hunks
        assert h is not None
        return decode_patch(h) if isinstance(h, bytes) else h


def _kept(hunks: bytes | list[Hunk] | None) -> bytes | list[Hunk] | None:
    """What an entry keeps of a patch: the bytes a decoded one came from, else as given."""
    return hunks.data if isinstance(hunks, Patch) else hunks


class TextFold:
    """The fold of one text region."""

    def __init__(self, happened_before: HappenedBefore) -> None:
        self._hb = happened_before
        self._entries: list[_Entry] = []
        self._keys: list[OrderKey] = []
        self.rope = _EMPTY
        self.deleted = False
        self._deleted_by: bytes | None = None
        # checkpoints: (number of entries folded, value, deleted, deleted_by)
        self._checkpoints: list[tuple[int, Rope, bool, bytes | None]] = [(0, _EMPTY, False, None)]
        self.replays = 0
        # The last add: (the value it started from, the entry) when it appended at the end
        # without a replay, else None. Lets the text state skip re-reading a value it knows.
        self.last_append: tuple[Rope, _Entry] | None = None
        # garbage collection: entries folded into the base checkpoint (``_checkpoints[0]``)
        # and the issues of live deletions that name compacted edits (a replay from the base
        # cannot see those edits any more, so their issues are kept as they were)
        self._has_base = False
        self._frozen: dict[bytes, list[FoldIssue]] = {}

    @property
    def value(self) -> str:
        """The region's text (joins the rope: O(size))."""
        return str(self.rope)

    @value.setter
    def value(self, text: str | Rope) -> None:
        self.rope = text if isinstance(text, Rope) else Rope.of(text, compact=True)

    def hot(self) -> Rope:
        """Make the value's rope hot (every chunk a ``str``: see :meth:`Rope.hot`) and return
        it. The replica that hands over whole texts does, before comparing them with it; a
        rewind to an older (compact) checkpoint makes it compact again until the next time."""
        self.rope = self.rope.hot()
        return self.rope

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def exists(self) -> bool:
        return (bool(self._entries) or self._has_base) and not self.deleted

    def add(self, key: OrderKey, cid: bytes, hunks: bytes | list[Hunk] | None) -> None:
        """Fold in one contribution's patch: hunks, or their encoding (``encode_patch``);
        ``None`` for a deletion. A :class:`Patch` is kept as the bytes it was decoded from."""
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return  # already folded
        if isinstance(hunks, bytes):
            hunks = decode_patch(hunks)  # PayloadError before anything changes
        entry = _Entry(key, cid, _kept(hunks))
        self._entries.insert(i, entry)
        self._keys.insert(i, key)
        if i == len(self._entries) - 1:
            before = self.rope
            # the hunks in hand (not decoded again) for the step that appends
            self._step(entry, i, hunks)
            self.last_append = (before, entry)
            self._maybe_checkpoint()
            return
        # A late contribution that sorts earlier: rewind and replay.
        self.replays += 1
        self.last_append = None
        j = max(k for k, cp in enumerate(self._checkpoints) if cp[0] <= i)
        del self._checkpoints[j + 1 :]
        n, self.rope, self.deleted, self._deleted_by = self._checkpoints[j]
        for k in range(n, len(self._entries)):
            self._step(self._entries[k], k)
            if (k + 1) % CHECKPOINT_EVERY == 0:
                self._checkpoints.append((k + 1, self.rope, self.deleted, self._deleted_by))
        self._thin()

    def _maybe_checkpoint(self) -> None:
        n = len(self._entries)
        if n % CHECKPOINT_EVERY == 0:
            self._checkpoints.append((n, self.rope, self.deleted, self._deleted_by))
            self._thin()

    def _thin(self) -> None:
        """Keep checkpoints bounded: drop every other one from the older half."""
        if len(self._checkpoints) <= MAX_CHECKPOINTS:
            return
        half = len(self._checkpoints) // 2
        older = self._checkpoints[1:half]
        self._checkpoints = [self._checkpoints[0], *older[1::2], *self._checkpoints[half:]]

    def _step(self, e: _Entry, index: int, hunks: list[Hunk] | None = None) -> None:
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
            self.rope, self.deleted, self._deleted_by = _EMPTY, True, e.cid
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
        self.rope, failed = apply_patch(self.rope, e.decoded() if hunks is None else hunks)
        for h in failed:
            e.issues.append(FoldIssue("hunk-failed", e.cid, e.key, h.text))

    def issues(self) -> list[FoldIssue]:
        frozen = [i for e in self._entries for i in self._frozen.get(e.cid, ())]
        return [*frozen, *(i for e in self._entries for i in e.issues)]

    # ---- garbage collection (the replica calls these at the causal-stability frontier) ----
    def compact(self, upto: OrderKey) -> list[FoldIssue]:
        """Fold every entry with key ``<= upto`` into the base and drop it.

        The caller guarantees that no entry sorting at or before ``upto`` can arrive any more
        (they are stable), so the base never needs to be rewound. Returns the issues of the
        dropped entries (for the conflict archive). The value does not change.
        """
        m = bisect.bisect_right(self._keys, upto)
        if m == 0:
            return []
        j = max(k for k, cp in enumerate(self._checkpoints) if cp[0] <= m)
        n, rope, deleted, deleted_by = self._checkpoints[j]
        current = (self.rope, self.deleted, self._deleted_by)
        self.rope, self.deleted, self._deleted_by = rope, deleted, deleted_by
        for k in range(n, m):
            self._step(self._entries[k], k)
        base = (self.rope, self.deleted, self._deleted_by)
        self.rope, self.deleted, self._deleted_by = current
        dropped = self._entries[:m]
        gone = {e.cid for e in dropped}
        out = [i for e in dropped for i in (*self._frozen.pop(e.cid, ()), *e.issues)]
        for e in self._entries[m:]:
            named = [i for i in e.issues if i.cid in gone]
            if named:
                self._frozen.setdefault(e.cid, []).extend(named)
        del self._entries[:m]
        del self._keys[:m]
        self._checkpoints = [(0, *base)] + [
            (cn - m, r, d, b) for cn, r, d, b in self._checkpoints if cn > m
        ]
        self._has_base = True
        self.last_append = None
        return out

    def base(self) -> tuple[str, bool, bytes | None] | None:
        """The base checkpoint ``(value, deleted, deleted_by)``, or None before any compaction."""
        if not self._has_base:
            return None
        _, rope, deleted, deleted_by = self._checkpoints[0]
        return str(rope), deleted, deleted_by

    def restore_base(self, value: str, deleted: bool, deleted_by: bytes | None) -> None:
        """Start an empty fold from a checkpoint's base."""
        assert not self._entries, "restore_base() needs an empty fold"
        self.value = value
        self.deleted, self._deleted_by = deleted, deleted_by
        self._checkpoints = [(0, self.rope, deleted, deleted_by)]
        self._has_base = True

    @property
    def idle(self) -> bool:
        """Deleted with nothing left to fold: the tombstone can go."""
        return self.deleted and not self._entries

    def referenced(self) -> set[bytes]:
        """Ids this fold still names: live issues and the deletions it remembers."""
        out = {x for i in self.issues() for x in (i.cid, i.other) if x is not None}
        for _, _, _, by in self._checkpoints:
            if by is not None:
                out.add(by)
        if self._deleted_by is not None:
            out.add(self._deleted_by)
        return out
