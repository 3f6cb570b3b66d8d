"""The fold of a buffer region: per-block last writer wins in the log's total order.

Out-of-order arrivals need no replay (each block keeps the order key of its winner); only a
deletion forces a replay from zeros, which is rare. Concurrent writers of one block are
reported (the later one in the order won).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from hybridsync.regions._folds import FoldIssue, HappenedBefore, OrderKey

__all__ = ["BufferFold"]


class BufferFold:
    """The fold of one buffer region: per-block last writer wins in the total order.

    Out-of-order arrivals need no replay (each block keeps the order key of its winner);
    only a deletion forces a replay from zeros, which is rare.
    """

    def __init__(
        self, shape: tuple[int, ...], dtype: str, block_bytes: int,
        happened_before: HappenedBefore,
    ) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.block_bytes = block_bytes
        self._hb = happened_before
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.data = np.zeros(self.nbytes, dtype=np.uint8)
        self.blocks = -(-self.nbytes // block_bytes) if self.nbytes else 0
        self._winner: dict[int, OrderKey] = {}
        self._entries: list[_BufEntry] = []
        self._keys: list[OrderKey] = []
        self._writers: dict[int, list[tuple[OrderKey, bytes]]] = {}
        self._pair_issues: list[FoldIssue] = []
        self._seen_pairs: set[tuple[bytes, bytes, int]] = set()
        self.deleted = False
        self._deleted_by: bytes | None = None
        self._has_delete = False
        self._drop_issues: list[FoldIssue] = []
        # garbage collection: the value of the entries compacted away (None: zeros)
        self._base: np.ndarray | None = None
        self._base_state: tuple[bool, bytes | None] = (False, None)
        self._has_base = False
        self._archived: list[FoldIssue] = []  # frozen drop issues naming compacted entries

    def same_layout(self, shape: tuple[int, ...], dtype: str, block_bytes: int) -> bool:
        return (tuple(shape) == self.shape and np.dtype(dtype) == self.dtype
                and block_bytes == self.block_bytes)

    @property
    def exists(self) -> bool:
        return (bool(self._entries) or self._has_base) and not self.deleted

    def add(self, key: OrderKey, cid: bytes, blocks: list[tuple[int, bytes]] | None) -> None:
        """Fold in a block delta (``None`` for a deletion)."""
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return
        entry = _BufEntry(key, cid, blocks)
        self._entries.insert(i, entry)
        self._keys.insert(i, key)
        if blocks is not None:
            self._note_writers(key, cid, blocks)
        if blocks is None or self._has_delete:
            self._has_delete = True
            self._replay()
            return
        self._write(key, blocks, last_wins_by_key=True)

    def _note_writers(self, key: OrderKey, cid: bytes, blocks: list[tuple[int, bytes]]) -> None:
        """Record concurrent writers of one block as conflicts (the later one won)."""
        for idx, _ in blocks:
            writers = self._writers.setdefault(idx, [])
            for k2, c2 in writers:
                if c2 == cid or self._hb(c2, cid) or self._hb(cid, c2):
                    continue
                first, second = sorted([(key, cid), (k2, c2)])
                pair = (first[1], second[1], idx)
                if pair in self._seen_pairs:
                    continue
                self._seen_pairs.add(pair)
                self._pair_issues.append(FoldIssue(
                    "block-overwritten", first[1], first[0],
                    f"block {idx} written concurrently; the later write in the order won",
                    second[1],
                ))
            writers.append((key, cid))

    def _write(self, key: OrderKey, blocks: list[tuple[int, bytes]], *,
               last_wins_by_key: bool) -> None:
        bb, nbytes, data = self.block_bytes, self.nbytes, self.data
        for idx, chunk in blocks:
            if not 0 <= idx < self.blocks:
                continue
            start = idx * bb
            end = min(start + bb, nbytes)
            if len(chunk) != end - start:
                continue
            won = self._winner.get(idx)
            if last_wins_by_key and won is not None and won > key:
                continue
            self._winner[idx] = key
            data[start:end] = np.frombuffer(chunk, dtype=np.uint8)

    def _replay(self) -> None:
        self._replay_entries(len(self._entries))

    def _replay_entries(self, upto: int) -> None:
        """Refold the first ``upto`` entries on top of the base."""
        if self._base is None:
            self.data[:] = 0
        else:
            np.copyto(self.data, self._base)
        self._winner.clear()
        self.deleted, self._deleted_by = self._base_state
        self._drop_issues = list(self._archived)
        for idx, e in enumerate(self._entries[:upto]):
            if e.blocks is None:
                for j in range(idx - 1, -1, -1):
                    prev = self._entries[j]
                    if prev.blocks is None:
                        break
                    if not self._hb(prev.cid, e.cid):
                        self._drop_issues.append(FoldIssue(
                            "edit-of-deleted-region", prev.cid, prev.key,
                            "write made concurrently with the region's deletion; wiped by it",
                            e.cid,
                        ))
                self.data[:] = 0
                self._winner.clear()
                self.deleted, self._deleted_by = True, e.cid
                continue
            if self.deleted:
                assert self._deleted_by is not None
                if not self._hb(self._deleted_by, e.cid):
                    self._drop_issues.append(FoldIssue(
                        "edit-of-deleted-region", e.cid, e.key,
                        "write made concurrently with the region's deletion; not applied",
                        self._deleted_by,
                    ))
                    continue
                self.deleted, self._deleted_by = False, None
            self._write(e.key, e.blocks, last_wins_by_key=False)

    def array(self) -> np.ndarray:
        return self.data.view(self.dtype).reshape(self.shape)

    def issues(self) -> list[FoldIssue]:
        return [*self._pair_issues, *self._drop_issues]

    # ---- garbage collection (the replica calls these at the causal-stability frontier) ----
    def compact(self, upto: OrderKey) -> list[FoldIssue]:
        """Fold every entry with key ``<= upto`` into the base and drop it; the value does not
        change. Returns the issues that only name dropped entries (for the archive)."""
        m = bisect.bisect_right(self._keys, upto)
        if m == 0:
            return []
        current = self.data.copy()
        state = (self.deleted, self._deleted_by)
        winner = dict(self._winner)
        drops = list(self._drop_issues)
        self._replay_entries(m)
        self._base = self.data.copy()
        self._base_state = (self.deleted, self._deleted_by)
        np.copyto(self.data, current)
        self.deleted, self._deleted_by = state
        self._drop_issues = drops
        # blocks won by a compacted write keep an order key below every live one
        self._winner = {i: k for i, k in winner.items() if k > upto}
        gone = {e.cid for e in self._entries[:m]}
        del self._entries[:m]
        del self._keys[:m]
        for idx in list(self._writers):
            kept = [(k, c) for k, c in self._writers[idx] if k > upto]
            if kept:
                self._writers[idx] = kept
            else:
                del self._writers[idx]
        out = [i for i in self._pair_issues if i.other in gone]
        self._pair_issues = [i for i in self._pair_issues if i.other not in gone]
        self._seen_pairs = {p for p in self._seen_pairs if p[1] not in gone}
        out += [i for i in self._drop_issues if i.cid in gone and (i.other in gone)]
        # an edit wiped by a live deletion keeps its issue although the edit is compacted
        self._archived = [i for i in self._drop_issues
                          if i.cid in gone and i.other not in gone]
        self._drop_issues = [i for i in self._drop_issues if i not in out]
        self._has_base = True
        return out

    def base(self) -> tuple[bytes, bool, bytes | None] | None:
        """The base ``(bytes, deleted, deleted_by)``, or None before any compaction."""
        if not self._has_base:
            return None
        data = self._base.tobytes() if self._base is not None else bytes(self.nbytes)
        return data, *self._base_state

    def restore_base(self, data: bytes, deleted: bool, deleted_by: bytes | None) -> None:
        """Start an empty fold from a checkpoint's base."""
        assert not self._entries, "restore_base() needs an empty fold"
        self._base = np.frombuffer(data, dtype=np.uint8).copy()
        self._base_state = (deleted, deleted_by)
        np.copyto(self.data, self._base)
        self.deleted, self._deleted_by = deleted, deleted_by
        self._has_base = True

    @property
    def idle(self) -> bool:
        """Deleted with nothing left to fold: the tombstone can go."""
        return self.deleted and not self._entries

    def referenced(self) -> set[bytes]:
        out = {x for i in self.issues() for x in (i.cid, i.other) if x is not None}
        for by in (self._deleted_by, self._base_state[1]):
            if by is not None:
                out.add(by)
        return out


@dataclass(slots=True)
class _BufEntry:
    key: OrderKey
    cid: bytes
    blocks: list[tuple[int, bytes]] | None
