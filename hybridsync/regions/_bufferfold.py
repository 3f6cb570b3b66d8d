"""The fold of a buffer region: per-block last writer wins in the log's total order.

Every block delta carries the layout it was written with (shape, dtype, block size, codec).
The fold walks its entries in the order ``(lamport, id)``:

* the first write decides the layout (the region's *creation*); a later write of another
  layout is not applied and is reported (``layout-mismatch``), on every replica alike;
* a deletion wipes the value; a write made without seeing it is not applied (reported), a
  write made after seeing it re-creates the region, with its own layout;
* otherwise each written block takes the delta's bytes (a Q4 delta: its dequantized values).

Out-of-order arrivals need no replay while the fold is *simple* (no deletion, one layout):
each block keeps the order key of its winner. Anything else replays from zeros, which is
rare. Concurrent writers of one block are reported (the later one in the order won).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridsync.errors import PayloadError
from hybridsync.regions._folds import FoldIssue, HappenedBefore, OrderKey
from hybridsync.regions._q4 import GROUP_SIZE, Q4Block, q4_decode

__all__ = ["CODECS", "BufferDelta", "BufferFold", "Layout"]

CODECS = ("raw", "q4")
_Q4_CODE_BYTES = GROUP_SIZE // 2


@dataclass(frozen=True, slots=True)
class Layout:
    """What a buffer region is: shape, numpy dtype name, block size and codec."""

    shape: tuple[int, ...]
    dtype: str
    block_bytes: int
    codec: str = "raw"
    nbytes: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nbytes", math.prod(self.shape) * np.dtype(self.dtype).itemsize)

    @property
    def blocks(self) -> int:
        return -(-self.nbytes // self.block_bytes)

    @property
    def full_blocks(self) -> int:
        return self.nbytes // self.block_bytes

    @property
    def groups_per_block(self) -> int:
        """Q4 groups in one full block (the codec needs ``block_bytes % 128 == 0``)."""
        return self.block_bytes // (2 * GROUP_SIZE)

    def block_sizes(self, indices: npt.NDArray[np.int64]) -> int:
        """Bytes of the blocks ``indices`` (sorted; only the last block may be short)."""
        k = len(indices)
        if not k:
            return 0
        short = self.blocks * self.block_bytes - self.nbytes
        return k * self.block_bytes - (short if int(indices[-1]) == self.blocks - 1 else 0)

    def describe(self) -> str:
        codec = "" if self.codec == "raw" else f", codec {self.codec}"
        return f"shape {self.shape}, dtype {self.dtype}{codec}"


@dataclass(frozen=True, slots=True, eq=False)
class BufferDelta:
    """A decoded, validated block delta: the blocks ``indices`` (strictly increasing) take
    ``data`` (raw: their bytes, concatenated) or the values of ``q4`` (Q4: one block of their
    concatenated values; a full block is a whole number of groups)."""

    layout: Layout
    indices: npt.NDArray[np.int64]
    data: bytes | None = None
    q4: Q4Block | None = None

    def block_bytes(self) -> npt.NDArray[np.uint8]:
        """The new bytes of the blocks, concatenated (Q4: dequantized)."""
        if self.q4 is not None:
            return q4_decode(self.q4).view(np.uint8)
        assert self.data is not None
        return np.frombuffer(self.data, dtype=np.uint8)


class BufferFold:
    """The fold of one buffer region (see the module docstring for the rules)."""

    def __init__(self, layout: Layout | None, happened_before: HappenedBefore) -> None:
        self._hb = happened_before
        self._entries: list[_BufEntry] = []
        self._keys: list[OrderKey] = []
        self._writers: dict[tuple[Layout, int], list[tuple[OrderKey, bytes]]] = {}
        self._pair_issues: list[FoldIssue] = []
        self._seen_pairs: set[tuple[bytes, bytes, int]] = set()
        self._winner: dict[int, OrderKey] = {}
        self._simple = True  # no deletion and a single layout among the entries
        self._first_layout: Layout | None = None  # of the first write added (for _simple)
        self.layout: Layout | None = None
        self.data: npt.NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)
        # Q4 buffers keep their groups too: the writer re-sends unchanged groups unchanged
        self.scales: npt.NDArray[np.float16] = np.zeros(0, dtype=np.float16)
        self.biases: npt.NDArray[np.float16] = np.zeros(0, dtype=np.float16)
        self.codes: npt.NDArray[np.uint8] = np.zeros((0, _Q4_CODE_BYTES), dtype=np.uint8)
        self._creator: bytes | None = None  # the write that set the layout
        self.deleted = False
        self._deleted_by: bytes | None = None
        # the latest deletion among the entries folded so far, kept after a re-creation: a
        # write made without seeing it is not applied, even onto the re-created region
        self._last_delete: bytes | None = None
        self._touched: list[npt.NDArray[np.int64]] | None = []  # None: every block
        # garbage collection: the state after the entries compacted away (None: nothing yet)
        self._base: _Base | None = None
        self._archived: list[FoldIssue] = []  # issues of live entries naming compacted ones
        if layout is not None:
            self._reset(layout)

    # ---- layout ----------------------------------------------------------------------------
    @property
    def decided(self) -> bool:
        """A write set the layout (the region exists, or existed before a deletion)."""
        return self._creator is not None

    @property
    def exists(self) -> bool:
        return self._creator is not None and not self.deleted

    @property
    def nbytes(self) -> int:
        return int(self.data.size)

    def propose(self, layout: Layout) -> None:
        """Shape the (still undecided) value as ``layout``: the local handle's choice. It
        changes nothing visible; the first write in the order decides."""
        assert self._creator is None
        if layout != self.layout:
            self._reset(layout)

    def _reset(self, layout: Layout) -> None:
        """Zeros in ``layout`` (reusing the arrays when the layout does not change)."""
        self._touched = None
        if layout == self.layout:
            self.data.fill(0)
            if layout.codec == "q4":
                self.scales.fill(0)
                self.biases.fill(0)
                self.codes.fill(0)
            return
        self.layout = layout
        self.data = np.zeros(layout.nbytes, dtype=np.uint8)
        groups = -(-(layout.nbytes // 2) // GROUP_SIZE) if layout.codec == "q4" else 0
        self.scales = np.zeros(groups, dtype=np.float16)
        self.biases = np.zeros(groups, dtype=np.float16)
        self.codes = np.zeros((groups, _Q4_CODE_BYTES), dtype=np.uint8)

    # ---- folding ---------------------------------------------------------------------------
    def add(self, key: OrderKey, cid: bytes, delta: BufferDelta | None) -> None:
        """Fold in a block delta (``None`` for a deletion)."""
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return
        entry = _BufEntry(key, cid, delta)
        self._entries.insert(i, entry)
        self._keys.insert(i, key)
        if delta is not None:
            self._note_writers(key, cid, delta)
        was_simple = self._simple
        if delta is None:
            self._simple = False
        elif self._first_layout is None:
            self._first_layout = delta.layout
        elif delta.layout != self._first_layout:
            self._simple = False
        if i == len(self._entries) - 1:
            self._step(entry, i)  # in order: exactly what a replay would do last
        elif was_simple and self._simple:
            assert delta is not None
            self._creator = self._entries[0].cid
            self._write(key, delta, last_wins_by_key=True)
        else:
            self._replay()

    def _note_writers(self, key: OrderKey, cid: bytes, delta: BufferDelta) -> None:
        """Record concurrent writers of one block as conflicts (the later one won)."""
        for idx in delta.indices.tolist():
            writers = self._writers.setdefault((delta.layout, idx), [])
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

    def _step(self, e: _BufEntry, index: int) -> None:
        """Apply entry ``e`` (at ``index`` in the order) to the value of the entries before."""
        e.issues = []
        if e.delta is None:
            # Writes that sort before this deletion but were made without seeing it are wiped
            # by it: say so (G2), on the deletion's entry so a replay recomputes it.
            for j in range(index - 1, -1, -1):
                prev = self._entries[j]
                if prev.delta is None:
                    break
                if not prev.issues and not self._hb(prev.cid, e.cid):
                    e.issues.append(FoldIssue(
                        "edit-of-deleted-region", prev.cid, prev.key,
                        "write made concurrently with the region's deletion; wiped by it",
                        e.cid,
                    ))
            if self.layout is not None:
                self._reset(self.layout)
            self._winner.clear()
            self.deleted, self._deleted_by = True, e.cid
            self._last_delete = e.cid
            return
        layout = e.delta.layout
        if self.deleted:
            assert self._deleted_by is not None
            if not self._hb(self._deleted_by, e.cid):
                e.issues.append(FoldIssue(
                    "edit-of-deleted-region", e.cid, e.key,
                    "write made concurrently with the region's deletion; not applied",
                    self._deleted_by,
                ))
                return
            self.deleted, self._deleted_by = False, None
            self._creator = None  # re-created by this write, with its own layout
        elif self._last_delete is not None and not self._hb(self._last_delete, e.cid):
            # Re-created since by a write that saw the deletion, but this one did not: its
            # author's later writes were made on a value without it, so applying it here
            # would let them overwrite it silently (G2). Skip it and say so, as above.
            e.issues.append(FoldIssue(
                "edit-of-deleted-region", e.cid, e.key,
                "write made concurrently with the region's deletion; not applied (the region "
                "was re-created since)",
                self._last_delete,
            ))
            return
        if self._creator is None:
            if layout != self.layout:
                self._reset(layout)
            self._creator = e.cid
        elif layout != self.layout:
            assert self.layout is not None
            e.issues.append(FoldIssue(
                "layout-mismatch", e.cid, e.key,
                f"written as {layout.describe()}, but the region was created earlier in the "
                f"order as {self.layout.describe()}; not applied",
                self._creator,
            ))
            return
        self._write(e.key, e.delta, last_wins_by_key=False)

    def _write(self, key: OrderKey, delta: BufferDelta, *, last_wins_by_key: bool) -> None:
        """Blocks of ``delta`` take its bytes (out of order: only where ``key`` is later)."""
        indices = delta.indices
        if not len(indices):
            return
        if last_wins_by_key:
            won = self._winner.get
            keep = np.array([(w := won(i)) is None or w < key for i in indices.tolist()],
                            dtype=bool)
            positions = np.flatnonzero(keep)
            if not len(positions):
                return
        else:
            positions = None
        chosen = indices if positions is None else indices[positions]
        self._winner.update(dict.fromkeys(chosen.tolist(), key))
        if self._touched is not None:
            self._touched.append(chosen)
        layout = delta.layout
        _scatter(self.data, layout.block_bytes, layout.full_blocks, indices, positions,
                 delta.block_bytes())
        if delta.q4 is not None:
            gpb = layout.groups_per_block
            q = delta.q4
            _scatter(self.scales, gpb, layout.full_blocks, indices, positions, q.scales)
            _scatter(self.biases, gpb, layout.full_blocks, indices, positions, q.biases)
            _scatter(self.codes, gpb, layout.full_blocks, indices, positions,
                     q.codes.reshape(-1, _Q4_CODE_BYTES))

    def _replay(self) -> None:
        """Recompute the value from the base (or zeros) over every entry, in order."""
        self._replay_entries(len(self._entries))

    def _replay_entries(self, upto: int) -> None:
        """Refold the first ``upto`` entries on top of the base."""
        base = self._base
        self._touched = None
        self._winner.clear()
        self._last_delete = None
        if base is None:
            if self.layout is not None:
                self._reset(self.layout)
            self._creator = None
            self.deleted, self._deleted_by = False, None
        else:
            if base.layout is not None:
                if base.layout != self.layout:
                    self._reset(base.layout)
                if base.data is not None:
                    np.copyto(self.data, base.data)
                else:
                    np.copyto(self.scales, base.scales)
                    np.copyto(self.biases, base.biases)
                    np.copyto(self.codes, base.codes)
                    _decode_groups(self.scales, self.biases, self.codes, self.data)
            self._creator = base.creator
            self.deleted, self._deleted_by = base.deleted, base.deleted_by
            self._last_delete = base.last_delete
        for idx, e in enumerate(self._entries[:upto]):
            self._step(e, idx)

    # ---- reading ---------------------------------------------------------------------------
    def array(self) -> np.ndarray:
        assert self.layout is not None
        return self.data.view(self.layout.dtype).reshape(self.layout.shape)

    def take_touched(self) -> npt.NDArray[np.int64] | None:
        """Blocks written since the last call (sorted, unique); ``None``: possibly all."""
        touched, self._touched = self._touched, []
        if touched is None:
            return None
        if not touched:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(touched)) if len(touched) > 1 else touched[0]

    def touch_all(self) -> None:
        self._touched = None

    def first_write(self) -> tuple[OrderKey, bytes] | None:
        """Order key and id of the first write in the order (the kind rule compares them)."""
        for e in self._entries:
            if e.delta is not None:
                return e.key, e.cid
        return None

    def entries(self) -> list[tuple[OrderKey, bytes]]:
        return [(e.key, e.cid) for e in self._entries]

    def issues(self) -> list[FoldIssue]:
        return [*self._pair_issues, *self._archived,
                *(i for e in self._entries for i in e.issues)]

    # ---- garbage collection (the replica calls these at the causal-stability frontier) ----
    def compact(self, upto: OrderKey) -> list[FoldIssue]:
        """Fold every entry with key ``<= upto`` into the base and drop it; the value does not
        change. Returns the issues that only name dropped entries (for the archive)."""
        m = bisect.bisect_right(self._keys, upto)
        if m == 0:
            return []
        current = self._snapshot(with_data=True)
        winner, touched = dict(self._winner), self._touched
        last_delete = self._last_delete
        self._replay_entries(m)
        self._base = self._snapshot(with_data=False)
        self._load(current)
        self._last_delete = last_delete  # (compacted or not: it still decides, see _Base)
        self._winner = {i: k for i, k in winner.items() if k > upto}
        self._touched = touched
        gone = {e.cid for e in self._entries[:m]}
        out = [i for e in self._entries[:m] for i in e.issues]
        for e in self._entries[m:]:  # a live deletion that wiped a compacted write
            self._archived += [i for i in e.issues if i.cid in gone]
            e.issues = [i for i in e.issues if i.cid not in gone]
        del self._entries[:m]
        del self._keys[:m]
        for wk in list(self._writers):
            kept = [(k, c) for k, c in self._writers[wk] if k > upto]
            if kept:
                self._writers[wk] = kept
            else:
                del self._writers[wk]
        out += [i for i in self._pair_issues if i.other in gone]
        self._pair_issues = [i for i in self._pair_issues if i.other not in gone]
        self._seen_pairs = {p for p in self._seen_pairs if p[1] not in gone}
        layouts = {e.delta.layout for e in self._entries if e.delta is not None}
        if self._base.layout is not None and self._base.creator is not None:
            layouts.add(self._base.layout)
        self._simple = (not self._base.deleted and len(layouts) <= 1
                        and all(e.delta is not None for e in self._entries))
        self._first_layout = next(iter(layouts)) if self._simple and layouts else None
        return out

    def _snapshot(self, *, with_data: bool) -> _Base:
        q4 = self.layout is not None and self.layout.codec == "q4"
        return _Base(
            self.layout, self.data.copy() if with_data or not q4 else None,
            self.scales.copy(), self.biases.copy(), self.codes.copy(),
            self._creator, self.deleted, self._deleted_by, self._last_delete,
        )

    def _load(self, b: _Base) -> None:
        if b.layout is not None and b.layout != self.layout:
            self._reset(b.layout)
        if b.data is not None:
            np.copyto(self.data, b.data)
        elif b.layout is not None:
            np.copyto(self.scales, b.scales)
            np.copyto(self.biases, b.biases)
            np.copyto(self.codes, b.codes)
            _decode_groups(self.scales, self.biases, self.codes, self.data)
        self._creator, self.deleted, self._deleted_by = b.creator, b.deleted, b.deleted_by

    def base(self) -> list[Any] | None:
        """The base as ``[layout, data, deleted, deleted_by, creator, last_delete]`` (msgpack-ready;
        layout ``[shape, dtype, block_bytes, codec]`` or None; Q4 data is the Q4 bytes of the
        whole value, 0.28x), or None before any compaction."""
        b = self._base
        if b is None:
            return None
        if b.layout is None:
            return [None, b"", b.deleted, b.deleted_by, b.creator, b.last_delete]
        lay = [list(b.layout.shape), b.layout.dtype, b.layout.block_bytes, b.layout.codec]
        if b.data is not None:
            data = b.data.tobytes()
        else:
            length = b.layout.nbytes // 2
            data = Q4Block(length, b.scales, b.biases, b.codes.reshape(-1)).to_bytes()
        return [lay, data, b.deleted, b.deleted_by, b.creator, b.last_delete]

    def restore_base(self, layout: Layout | None, data: bytes, deleted: bool,
                     deleted_by: bytes | None, creator: bytes | None,
                     last_delete: bytes | None = None) -> None:
        """Start an empty fold from a checkpoint's base (validated by the caller, except the
        Q4 bytes: :class:`PayloadError` if they are malformed)."""
        assert not self._entries, "restore_base() needs an empty fold"
        if layout is not None:
            self._reset(layout)
            if layout.codec == "q4":
                block = Q4Block.from_bytes(data)
                if block.length != layout.nbytes // 2:
                    raise PayloadError("a Q4 base holds the wrong number of values")
                self.scales[:] = block.scales
                self.biases[:] = block.biases
                self.codes[:] = block.codes.reshape(-1, _Q4_CODE_BYTES)
                q4_decode(block, out=self.data.view(np.float16))
            else:
                if len(data) != layout.nbytes:
                    raise PayloadError("buffer base size does not match its layout")
                self.data[:] = np.frombuffer(data, dtype=np.uint8)
        self._creator, self.deleted, self._deleted_by = creator, deleted, deleted_by
        self._last_delete = last_delete
        self._base = self._snapshot(with_data=False)
        self._simple = not deleted
        self._first_layout = layout if creator is not None else None
        self._touched = None

    @property
    def idle(self) -> bool:
        """Deleted with nothing left to fold: the tombstone can go."""
        return self.deleted and not self._entries

    def referenced(self) -> set[bytes]:
        out = {x for i in self.issues() for x in (i.cid, i.other) if x is not None}
        for by in (self._deleted_by, self._creator, self._last_delete):
            if by is not None:
                out.add(by)
        return out


def _decode_groups(
    scales: npt.NDArray[np.float16], biases: npt.NDArray[np.float16],
    codes: npt.NDArray[np.uint8], data: npt.NDArray[np.uint8],
) -> None:
    """``data`` (the bytes of float16 values) takes the values the Q4 groups decode to."""
    q4_decode(Q4Block(data.size // 2, scales, biases, codes.reshape(-1)),
              out=data.view(np.float16))


@dataclass(frozen=True, slots=True, eq=False)
class _Base:
    """The fold's state after its compacted entries (Q4 keeps only the groups)."""

    layout: Layout | None
    data: npt.NDArray[np.uint8] | None  # None for Q4: decode the groups
    scales: npt.NDArray[np.float16]
    biases: npt.NDArray[np.float16]
    codes: npt.NDArray[np.uint8]
    creator: bytes | None
    deleted: bool
    deleted_by: bytes | None
    # the last deletion folded into the base: a retained write concurrent with it (held when
    # the cut was made, sorting after it) is not applied, as on a replica that never compacted
    last_delete: bytes | None = None


def _scatter(
    dst: npt.NDArray[Any], per_block: int, full_blocks: int, indices: npt.NDArray[np.int64],
    positions: npt.NDArray[np.intp] | None, src: npt.NDArray[Any],
) -> None:
    """``dst`` (units of ``per_block`` items a block) takes the concatenated blocks ``src`` of
    ``indices`` at ``positions`` (``None``: all). Only the last block may be short."""
    k = len(indices)
    tail = int(indices[-1]) >= full_blocks  # the delta holds the short last block
    k_full = k - tail
    body = dst[: full_blocks * per_block].reshape((full_blocks, per_block, *dst.shape[1:]))
    blocks = src[: k_full * per_block].reshape((k_full, per_block, *src.shape[1:]))
    if positions is None:
        body[indices[:k_full]] = blocks
        if tail:
            dst[full_blocks * per_block :] = src[k_full * per_block :]
        return
    full = positions[positions < k_full]
    body[indices[full]] = blocks[full]
    if tail and positions[-1] == k - 1:
        dst[full_blocks * per_block :] = src[k_full * per_block :]


@dataclass(slots=True)
class _BufEntry:
    key: OrderKey
    cid: bytes
    delta: BufferDelta | None  # None: a deletion
    issues: list[FoldIssue] = field(default_factory=list)
