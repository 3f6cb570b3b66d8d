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

    def same_layout(self, shape: tuple[int, ...], dtype: str, block_bytes: int) -> bool:
        return (tuple(shape) == self.shape and np.dtype(dtype) == self.dtype
                and block_bytes == self.block_bytes)

    @property
    def exists(self) -> bool:
        return bool(self._entries) and not self.deleted

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
        self.data[:] = 0
        self._winner.clear()
        self.deleted, self._deleted_by = False, None
        self._drop_issues = []
        for idx, e in enumerate(self._entries):
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


@dataclass(slots=True)
class _BufEntry:
    key: OrderKey
    cid: bytes
    blocks: list[tuple[int, bytes]] | None
