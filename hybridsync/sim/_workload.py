"""The workload: random writes on random peers, drawn from their own stream of the seed.

The workload stream (``random.Random(f"{seed}-workload")``) is consumed in a fixed pattern —
one draw per tick for the number of operations, one per operation for its private generator —
so it never depends on what the network delivered: the same seed gives the same operations
under every routing policy (G4). Each operation then reads its peer's state (is ``k3`` a map?)
through its private generator.

Operations: top-level sets of every value type (scalars, nested dicts, lists, big ints, bytes,
unicode), deletes, nested writes into maps (``mem.fields["k"]["n"] = v``), list appends, and
multi-write transactions, some of which raise and roll back; with group commit also bursts of
small sets on one peer. Keys are skewed (a few hot keys),
so concurrent writes to one key are common.

Coverage streams (each its own stream of the seed, so the operations above stay the same):
fill bursts (``f"{seed}-fill"``: one peer writes small sets until its group-commit batch
passes its limit and the replica commits the full batch by itself) and large values
(``f"{seed}-large"``: single writes sized around the frame limit).

Texts and buffers: small edits of two texts and one buffer (``region_rate``, stream
``f"{seed}-regions"``; checked for convergence), and the richer workload
(``rich_region_rate``, :class:`RichRegions`, stream ``f"{seed}-rich-regions"``): marked
inserts, word-span deletes, whole rewrites with ``set()``, texts grown past the rope's chunks,
two or three peers editing the same paragraph or buffer block in one tick, block writes and
``delete_region``, each recorded (:class:`~hybridsync.sim.RegionEdit`) with the local
contribution that committed it, and checked for G2 by
:func:`~hybridsync.sim.check_region_writes`.

Crediting: a write is recorded (:class:`WriteRecord`, checked by G2) with the contribution
that committed it. Without group commit that is the contribution its operation created. With
group commit (``Memory(group_commit=True)``) a small set outside a transaction joins the
replica's pending batch instead; it is credited only when a cycle commits that batch (the
:class:`~hybridsync.sim.PendingBatch` the recorder matched to its commit), and never if a crash
ends the incarnation first: those writes were never committed, so losing them is no G2
violation. :meth:`Workload.settle` turns committed batches into records.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridsync.errors import GuaranteeViolation, SimulationError
from hybridsync.fields import FieldList, FieldMap
from hybridsync.fields._plane import _PENDING_BYTES, _PENDING_WRITES, _SMALL_BYTES
from hybridsync.replica import Change, Memory
from hybridsync.sim._checkers import (
    MARKER,
    ROLLBACK_MARK,
    OpRecord,
    Path,
    PendingBatch,
    Recorder,
    RegionEdit,
    WriteRecord,
)

__all__ = ["BATCH_LIMIT_BYTES", "BATCH_LIMIT_WRITES", "BUFFER", "HOT_KEYS", "LIST_KEYS",
           "RICH_BUFFER", "RICH_TEXTS", "TEXTS", "RichRegions", "Workload"]

# The replica commits a pending group-commit batch by itself when the next small set would
# take it past either limit (hybridsync/fields/_plane.py): fill bursts go past them.
BATCH_LIMIT_WRITES = _PENDING_WRITES
BATCH_LIMIT_BYTES = _PENDING_BYTES

HOT_KEYS = ("k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7")
_KEY_WEIGHTS = (30, 20, 12, 8, 6, 4, 3, 2)
LIST_KEYS = ("l0", "l1")
NESTED_KEYS = ("n0", "n1", "n2", "n3")
TEXTS = ("notes", "plan")
BUFFER = "kv"
BUFFER_SHAPE = (4096,)  # float32: 16 KiB, four 4 KiB blocks
_UNICODE = ("é", "ß", "中文", "😀", "👩\u200d💻", "e\u0301", "עברית", "\u0000", "🇫🇷", "Ω")
_TEXT_CHARS = (*_UNICODE, "a", "b", " ", "\n")
# op kind -> weight
_OPS = (
    ("set", 30),
    ("nested_set", 20),
    ("delete", 8),
    ("nested_delete", 6),
    ("append", 12),
    ("transaction", 14),
    ("rollback", 6),
    ("update", 4),
)
# With group commit, also bursts of small sets on one peer (what an agent writing many small
# fields between two flushes does): they fill one pending batch.
_GROUP_OPS = (*_OPS, ("burst", 16))


class _Abort(Exception):
    """Raised inside a workload transaction to make it roll back."""


@dataclass(slots=True)
class _Txn:
    """Writes of one operation, before its contribution id is known."""

    writes: list[tuple[str, Path, Any]] = field(default_factory=list)
    touched: list[tuple[str, Path]] = field(default_factory=list)
    fresh: set[Path] = field(default_factory=set)  # created by this operation

    def add(self, action: str, path: Path, value: Any = None, *, existed: bool = True) -> None:
        self.touched.append((action, path))
        if action == "set" and not existed and not any(
            _prefix(path, p) for _, p in self.touched[:-1]
        ):
            self.fresh.add(path)
        if action == "delete" and any(path[:n] in self.fresh for n in range(1, len(path) + 1)):
            # Deleting what this same contribution created leaves no trace: Yjs sees an item
            # born deleted, so it neither overwrites nor conflicts with anything.
            self.fresh.discard(path)
            self.writes = [w for w in self.writes if not _prefix(w[1], path)]
            return
        # A later write in the same contribution hides earlier related ones (not append+append).
        self.writes = [
            w for w in self.writes
            if not (_prefix(w[1], path) and not (w[0] == action == "append" and w[1] == path))
        ]
        self.writes.append((action, path, value))


def _prefix(p: Path, q: Path) -> bool:
    n = min(len(p), len(q))
    return p[:n] == q[:n]


@dataclass(slots=True)
class _Batched:
    """The workload's writes that joined one pending batch (group commit), in write order.

    A batch holds only small sets; a later set in the same batch hides earlier related ones
    (they are never committed on their own), as in one transaction."""

    batch: PendingBatch
    ops: list[int] = field(default_factory=list)
    writes: list[tuple[int, str, Path, Any]] = field(default_factory=list)

    def add(self, op: int, writes: list[tuple[str, Path, Any]]) -> None:
        self.ops.append(op)
        for action, path, value in writes:
            self.writes = [w for w in self.writes if not _prefix(w[2], path)]
            self.writes.append((op, action, path, value))


class Workload:
    """Random operations on the replicas of a simulation, with a record of each write."""

    def __init__(
        self, seed: int, *, write_rate: float = 0.3, rollbacks: bool = True,
        region_rate: float = 0.0, group_commit: bool = False, defer_regions: bool = False,
        fill_batches: int = 0, fill_mode: str = "count", fill_steps: int = 0,
        large_value_rate: float = 0.0, large_value_bytes: int = 1024,
        rich_region_rate: float = 0.0,
    ) -> None:
        """``defer_regions`` leaves text and buffer edits to the next cycle (a poll, a sync
        round, a transaction) instead of committing each at once. ``fill_batches`` fill
        bursts (group commit) run at steps drawn among the first ``fill_steps`` calls of
        :meth:`step`; ``large_value_rate`` writes per step of values of a half to twice
        ``large_value_bytes``."""
        self._rng = random.Random(f"{seed}-workload")
        self._region_rng = random.Random(f"{seed}-regions")
        self._fill_rng = random.Random(f"{seed}-fill")
        self._large_rng = random.Random(f"{seed}-large")
        self.defer_regions = defer_regions
        if fill_batches and not group_commit:
            raise SimulationError("fill bursts need group commit (a pending batch to fill)")
        self.fill_mode = fill_mode
        self._fill_at = set(self._fill_rng.sample(range(fill_steps),
                                                  min(fill_batches, fill_steps)))
        self._steps = 0
        # the richer text and buffer workload (its own streams), when its rate is set
        self.rich = (RichRegions(seed, rich_region_rate, defer=defer_regions)
                     if rich_region_rate > 0.0 else None)
        self.large_value_rate = float(large_value_rate)
        self.large_value_bytes = large_value_bytes
        self.write_rate = float(write_rate)
        self.region_rate = float(region_rate)
        self.rollbacks = rollbacks
        self._op_table = _GROUP_OPS if group_commit else _OPS
        self._region_ops = 0
        self.ops: list[OpRecord] = []
        self.writes: list[WriteRecord] = []
        self.skipped = 0
        self.rolled_back = 0
        self._uid = 0
        # group commit: writes waiting in a batch, and what became of settled ones
        self._batched: dict[int, _Batched] = {}  # id(batch) -> its writes
        self.batched_writes = 0  # credited when a cycle committed their batch
        self.lost_writes = 0  # in a batch a crash took before any cycle committed it
        self.lost: list[WriteRecord] = []  # those writes (``contribution`` is "")
        self.batches = 0  # committed batches that carried workload writes
        # coverage: fill bursts run, batches the replica committed by itself because they
        # were full (each seen as a write that found the batch at its limit and started a
        # new one), and large-value writes
        self.fills = 0
        self.full_batches = 0
        self.fill_credited = 0  # writes of fill bursts credited to a committed batch
        self.large_writes = 0

    @property
    def region_ops(self) -> int:
        """Text and buffer operations run (the small edits and the richer workload's)."""
        return self._region_ops + (self.rich.ops if self.rich is not None else 0)

    @property
    def fill_at(self) -> tuple[int, ...]:
        """The calls of :meth:`step` (counted from 0) that run a fill burst."""
        return tuple(sorted(self._fill_at))

    # ---- the stream ----------------------------------------------------------------------
    def ops_this_tick(self) -> int:
        """How many operations run this tick (exactly one draw from the stream)."""
        rate = self.write_rate
        whole = int(rate)
        return whole + (1 if self._rng.random() < rate - whole else 0)

    def next_op(self) -> random.Random:
        """The private generator of the next operation (exactly one draw from the stream)."""
        return random.Random(self._rng.getrandbits(64))

    # ---- running -------------------------------------------------------------------------
    def step(
        self,
        peers: tuple[str, ...],
        memory_of: Callable[[str], Memory | None],
        local_changes: Callable[[str], list[Any]],
        tick: int,
        count: int | None = None,
        *,
        recorder: Recorder | None = None,
    ) -> int:
        """Run this tick's operations (``count`` overrides the drawn number). Returns how many
        committed or joined a pending batch. ``recorder`` tells which local contributions
        committed a group-commit batch and which batch is open (needed with group commit)."""
        n = self.ops_this_tick() if count is None else count
        if self._batched:
            self._check_open_batches(memory_of)
        self._region_step(peers, memory_of, count)
        if self.rich is not None:
            self.rich.step(peers, memory_of, count, tick)
        done = 0
        for _ in range(n):
            op_rng = self.next_op()
            peer = peers[op_rng.randrange(len(peers))]
            mem = memory_of(peer)
            if mem is None:
                self.skipped += 1
                continue
            if self._run_op(op_rng, peer, mem, local_changes, tick, recorder):
                done += 1
        done += self._coverage_step(peers, memory_of, local_changes, tick, count, recorder)
        self._steps += 1
        return done

    def _coverage_step(
        self,
        peers: tuple[str, ...],
        memory_of: Callable[[str], Memory | None],
        local_changes: Callable[[str], list[Any]],
        tick: int,
        count: int | None,
        recorder: Recorder | None,
    ) -> int:
        """Large-value writes and fill bursts, each from its own stream (a fixed pattern of
        draws per step whatever the replicas did)."""
        done = 0
        if self.large_value_rate > 0.0:
            rate = self.large_value_rate
            if count is None:
                n = int(rate) + (1 if self._large_rng.random() < rate - int(rate) else 0)
            else:
                n = round(count * rate)
            for _ in range(n):
                rng = random.Random(self._large_rng.getrandbits(64))
                peer = peers[rng.randrange(len(peers))]
                mem = memory_of(peer)
                if mem is None:
                    self.skipped += 1
                    continue
                self.large_writes += 1
                if self._run_op(rng, peer, mem, local_changes, tick, recorder, kind="large"):
                    done += 1
        if self._steps in self._fill_at:
            rng = random.Random(self._fill_rng.getrandbits(64))
            start = rng.randrange(len(peers))
            for i in range(len(peers)):  # the first live peer from a drawn one
                peer = peers[(start + i) % len(peers)]
                mem = memory_of(peer)
                if mem is not None:
                    if recorder is None:
                        raise SimulationError("a fill burst needs the recorder")
                    done += self._fill(rng, peer, mem, tick, recorder)
                    break
        return done

    def _run_op(
        self,
        rng: random.Random,
        peer: str,
        mem: Memory,
        local_changes: Callable[[str], list[Any]],
        tick: int,
        recorder: Recorder | None = None,
        *,
        kind: str | None = None,
    ) -> bool:
        if kind is None:
            table = self._op_table
            kind = rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]
        if kind == "rollback" and not self.rollbacks:
            kind = "transaction"  # same draws, so the rest of the stream is unchanged
        txn = _Txn()
        before = len(local_changes(peer))
        rolled_back = False
        note = f"{kind} by {peer}"
        if kind in ("transaction", "rollback"):
            rolled_back = kind == "rollback"
            try:
                with mem.transaction(note=note):
                    for _ in range(rng.randint(2, 4)):
                        self._write(rng, mem, txn, marked=rolled_back)
                    if rolled_back:
                        raise _Abort
            except _Abort:
                self.rolled_back += 1
        elif kind == "update":
            self._update(rng, mem, txn)
        elif kind == "burst":
            for _ in range(rng.randint(2, 10)):
                self._small_set(rng, mem, txn)
        elif kind == "large":
            self._large_set(rng, mem, txn)
        else:
            self._write(rng, mem, txn, kind=kind)
        new = local_changes(peer)[before:]
        if kind in ("transaction", "rollback"):
            # A transaction first commits the text and buffer edits still waiting for a
            # cycle (and a pending batch) as a contribution of their own (note ""): its own
            # carries its note.
            new = [ch for ch in new if ch.note == note]
        index = len(self.ops)
        if mem.group_commit:
            if recorder is None:
                raise SimulationError("a group-commit workload needs the recorder")
            # The batch commits this operation triggered (a transaction's start, a write that
            # is not a small set) are not its own contribution: the recorder credits them.
            own = [ch for ch in new if not recorder.is_batch_commit(ch.contribution)]
            if len(own) > 1:
                raise SimulationError(f"op {index} on {peer} made {len(own)} contributions")
            batch = recorder.open_batch(peer)
            if not own and not rolled_back and kind not in ("transaction", "rollback") and (
                batch is not None and mem.pending_writes > 0
            ):
                # A small set joined the pending batch: credited when a cycle commits it.
                self.ops.append(OpRecord(index, tick, peer, kind, None, tuple(txn.touched)))
                self._batched.setdefault(id(batch), _Batched(batch)).add(index, txn.writes)
                return True
            if not own and txn.writes and not rolled_back:
                raise SimulationError(
                    f"op {index} ({kind}) on {peer} made neither a contribution nor a "
                    f"pending write ({mem.pending_writes} pending)")
            new = own
        cid = new[0].contribution if new else None
        self.ops.append(OpRecord(index, tick, peer, kind, cid, tuple(txn.touched), rolled_back))
        if cid is not None and not rolled_back:
            for action, path, value in txn.writes:
                self.writes.append(WriteRecord(index, peer, action, path, value, cid))
        return cid is not None

    # ---- group commit --------------------------------------------------------------------
    def _fill(self, rng: random.Random, peer: str, mem: Memory, tick: int,
              recorder: Recorder) -> int:
        """A fill burst: small sets on ``peer`` until its pending batch passes the replica's
        limit (``count``: 8,192 writes of small values; ``bytes``: 2 MiB of 3-4 KiB strings),
        a few more after it. The replica commits the full batch by itself when a write finds
        it at its limit; that write opens the next batch. The writes of each batch are one
        operation, credited when its batch is committed. Returns the operations recorded."""
        self.fills += 1
        if self.fill_mode == "bytes":
            sizes = [rng.randint(_SMALL_BYTES - 1024, _SMALL_BYTES - 64)
                     for _ in range(BATCH_LIMIT_BYTES // (_SMALL_BYTES - 1024) + 1)]
            sizes += [rng.randint(1, 64) for _ in range(rng.randint(1, 16))]
        else:
            sizes = [0] * (BATCH_LIMIT_WRITES + rng.randint(1, 64))
        segment = _Txn()
        batch = recorder.open_batch(peer)
        ops = 0

        def close(b: PendingBatch | None) -> None:
            nonlocal ops, segment
            if not segment.touched:
                return
            if b is None:
                raise SimulationError(f"a fill burst on {peer} wrote outside any batch")
            index = len(self.ops)
            touched = tuple(dict.fromkeys(segment.touched))
            self.ops.append(OpRecord(index, tick, peer, "fill", None, touched))
            self._batched.setdefault(id(b), _Batched(b)).add(index, segment.writes)
            ops += 1
            segment = _Txn()

        for size in sizes:
            pending = mem.pending_writes
            path, value, existed = self._fill_set(rng, mem, size)
            now = recorder.open_batch(peer)
            if now is not batch:
                if pending and mem.pending_writes == 1 and batch is not None and (
                    batch.contribution is not None
                ):
                    self.full_batches += 1  # the batch was full: committed by the replica
                close(batch)  # this write opened ``now``: the writes before it are ``batch``'s
                batch = now
            segment.add("set", path, value, existed=existed)
        close(batch)
        return ops

    def _fill_set(self, rng: random.Random, mem: Memory, size: int) -> tuple[Path, Any, bool]:
        """One small set of a fill burst (a small value, or an ASCII string of ``size``):
        its path, value and whether the path existed."""
        key = rng.choices(HOT_KEYS, weights=_KEY_WEIGHTS)[0]
        value: Any = rng.randint(-1000, 1000) if rng.random() < 0.5 else self._tag(False)
        if size:
            tag = self._tag(False)
            value = tag + "." * max(0, size - len(tag))
        current = mem.fields.get(key)
        if isinstance(current, FieldMap) and rng.random() < 0.5:
            sub = rng.choice(NESTED_KEYS)
            existed = sub in current
            current[sub] = value
            return (key, sub), value, existed
        existed = key in mem.fields
        mem.fields[key] = value
        return (key,), value, existed

    def _large_set(self, rng: random.Random, mem: Memory, txn: _Txn) -> None:
        """One set of an ASCII string of a half to twice the frame limit (alone in its
        contribution when it is not small, or in a group-commit batch when it is)."""
        key = rng.choices(HOT_KEYS, weights=_KEY_WEIGHTS)[0]
        size = rng.randint(self.large_value_bytes // 2, 2 * self.large_value_bytes)
        tag = self._tag(False) + ":"
        value = tag + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789",
                                          k=max(0, size - len(tag))))
        existed = key in mem.fields
        mem.fields[key] = value
        txn.add("set", (key,), value, existed=existed)

    def _check_open_batches(self, memory_of: Callable[[str], Memory | None]) -> None:
        """Between two ticks every public call has returned and reported what it committed:
        a batch of ours still open on a live incarnation with nothing pending was closed
        without a contribution, and its writes vanished (G2)."""
        for entry in self._batched.values():
            batch = entry.batch
            if not batch.open:
                continue
            mem = memory_of(batch.peer)
            if mem is not None and mem.incarnation == batch.incarnation and (
                not mem.pending_writes
            ):
                ops = sorted({op for op, *_ in entry.writes})
                raise GuaranteeViolation(
                    f"G2 no silent loss: {len(entry.writes)} write(s) of op(s) {ops} joined a "
                    f"group-commit batch on {batch.peer} that was closed without a "
                    "contribution observers were told of (nothing is pending, no crash took "
                    "it)")

    def settle(self) -> int:
        """Credit the writes of every batch a cycle has committed since the last call (and
        count those a crash lost); returns how many writes still wait in an open batch.

        A credited write's path must be among the paths its contribution changed: a check
        that the recorder matched the batch to the right contribution."""
        waiting = 0
        settled = False
        for key, entry in list(self._batched.items()):
            batch = entry.batch
            if batch.lost:
                self.lost_writes += len(entry.writes)
                self.lost.extend(WriteRecord(op, batch.peer, action, path, value, "")
                                 for op, action, path, value in entry.writes)
                del self._batched[key]
                continue
            cid = batch.contribution
            if cid is None:
                waiting += len(entry.writes)
                continue
            del self._batched[key]
            self.batches += 1
            for i in entry.ops:
                self.ops[i] = dataclasses.replace(self.ops[i], contribution=cid)
            for op, action, path, value in entry.writes:
                where = "/".join(path)
                if where not in batch.paths:
                    raise SimulationError(
                        f"group-commit crediting: op {op} set {where!r} in the batch "
                        f"{batch.peer} opened at seq {batch.opened_seq}, but {cid[:12]} "
                        f"changed only {list(batch.paths)}")
                self.writes.append(WriteRecord(op, batch.peer, action, path, value, cid))
                self.batched_writes += 1
                if self.ops[op].kind == "fill":
                    self.fill_credited += 1
                settled = True
        if settled:
            self.writes.sort(key=lambda w: w.op)  # stable: a transaction's writes keep order
        return waiting

    # ---- texts and buffers (their own stream; checked for convergence, G1) ---------------
    def _region_step(
        self, peers: tuple[str, ...], memory_of: Callable[[str], Memory | None],
        count: int | None,
    ) -> None:
        if self.region_rate <= 0.0:
            return
        rate = self.region_rate
        if count is None:  # one draw per tick, one per operation, as for fields
            n = int(rate) + (1 if self._region_rng.random() < rate - int(rate) else 0)
        else:
            n = max(1, round(count * rate))
        for _ in range(n):
            rng = random.Random(self._region_rng.getrandbits(64))
            mem = memory_of(peers[rng.randrange(len(peers))])
            if mem is None:
                continue
            self._region_ops += 1
            if rng.random() < 0.6:
                text = mem.text(rng.choice(TEXTS))
                value = text.value
                at = rng.randint(0, len(value))
                if value and rng.random() < 0.3:
                    text.delete(at if at < len(value) else 0, rng.randint(1, 12))
                else:
                    chunk = "".join(rng.choices(_TEXT_CHARS, k=rng.randint(1, 9)))
                    text.insert(at, chunk)
            else:
                buf = mem.buffer(BUFFER, shape=BUFFER_SHAPE, dtype="float32")
                start = rng.randrange(BUFFER_SHAPE[0])
                values = [rng.randint(-64, 64) / 4 for _ in range(rng.randint(1, 8))]
                buf.write(start, values[: BUFFER_SHAPE[0] - start])
            # Commit now, not at the next sync round: when a contribution is made (and its
            # timestamp) must not depend on the routing policy (G4). With the poll timer on
            # (interleaved mode), the edit waits for the next cycle instead.
            if not self.defer_regions:
                mem.commit()

    # ---- single writes -------------------------------------------------------------------
    def _write(
        self, rng: random.Random, mem: Memory, txn: _Txn, *, kind: str | None = None,
        marked: bool = False,
    ) -> None:
        if kind is None:
            kind = rng.choices(("set", "nested_set", "delete", "nested_delete", "append"),
                               weights=(30, 25, 8, 6, 12))[0]
        key = rng.choices(HOT_KEYS, weights=_KEY_WEIGHTS)[0]
        sub = rng.choice(NESTED_KEYS)
        fields = mem.fields
        if kind == "append":
            lkey = rng.choice(LIST_KEYS)
            value = self._value(rng, marked, depth=1)
            current = fields.get(lkey)
            if isinstance(current, FieldList):
                current.append(value)
                txn.add("append", (lkey,), value)
            else:
                existed = lkey in fields
                fields[lkey] = [value]
                txn.add("set", (lkey,), [value], existed=existed)
        elif kind == "delete":
            if key in fields:
                del fields[key]
                txn.add("delete", (key,))
            else:
                self._write(rng, mem, txn, kind="set", marked=marked)
        elif kind == "nested_delete":
            current = fields.get(key)
            if isinstance(current, FieldMap) and sub in current:
                del current[sub]
                txn.add("delete", (key, sub))
            else:
                self._write(rng, mem, txn, kind="nested_set", marked=marked)
        elif kind == "nested_set":
            value = self._value(rng, marked, depth=1)
            current = fields.get(key)
            if isinstance(current, FieldMap):
                existed = sub in current
                current[sub] = value
                txn.add("set", (key, sub), value, existed=existed)
            else:
                fields[key] = {sub: value}
                txn.add("set", (key,), {sub: value}, existed=current is not None)
        else:
            value = self._value(rng, marked, depth=0)
            existed = key in fields
            fields[key] = value
            txn.add("set", (key,), value, existed=existed)

    def _small_set(self, rng: random.Random, mem: Memory, txn: _Txn) -> None:
        """One autocommitted set of a small value (group commit batches it), at a hot key or
        inside the map there."""
        key = rng.choices(HOT_KEYS, weights=_KEY_WEIGHTS)[0]
        current = mem.fields.get(key)
        roll = rng.random()
        value: Any = (rng.randint(-1000, 1000) if roll < 0.25
                      else rng.choice((True, False, None, 0.5, -2.25)) if roll < 0.4
                      else rng.randbytes(rng.randint(0, 16)) if roll < 0.5
                      else self._tag(False))
        if isinstance(current, FieldMap) and rng.random() < 0.5:
            sub = rng.choice(NESTED_KEYS)
            existed = sub in current
            current[sub] = value
            txn.add("set", (key, sub), value, existed=existed)
        else:
            existed = key in mem.fields
            mem.fields[key] = value
            txn.add("set", (key,), value, existed=existed)

    def _update(self, rng: random.Random, mem: Memory, txn: _Txn) -> None:
        """``fields.update({...})``: several top-level keys in one contribution."""
        keys = sorted(set(rng.choices(HOT_KEYS, weights=_KEY_WEIGHTS, k=rng.randint(1, 3))))
        values = {k: self._value(rng, False, depth=1) for k in keys}
        existed = {k: k in mem.fields for k in keys}
        mem.fields.update(values)
        for k in keys:
            txn.add("set", (k,), values[k], existed=existed[k])

    # ---- values --------------------------------------------------------------------------
    def _tag(self, marked: bool) -> str:
        self._uid += 1
        return f"{ROLLBACK_MARK if marked else 'v'}{self._uid}"

    def _value(self, rng: random.Random, marked: bool, depth: int) -> Any:
        """A random value of any storable type; strings carry a unique tag. Values written
        in a transaction that rolls back are all marked (``ROLLBACK_MARK``)."""
        if marked:
            roll = rng.random()
            tag = self._tag(True)
            if roll < 0.6 or depth >= 2:
                return tag
            if roll < 0.8:
                return {rng.choice(NESTED_KEYS): tag}
            return [tag, tag]
        choice = rng.randrange(14 if depth < 2 else 10)
        if choice == 0:
            return rng.randint(-1000, 1000)
        if choice == 1:
            return rng.choice((1, -1)) * rng.randint(1 << 53, (1 << 63) - 1)
        if choice == 2:
            return rng.choice((-(1 << 53), (1 << 53) - 1, (1 << 53) + 1, 0, -1))
        if choice == 3:
            return rng.randint(-4000, 4000) / 8
        if choice == 4:
            return rng.choice((True, False, None))
        if choice in (5, 6):
            return self._tag(False)
        if choice == 7:
            return self._tag(False) + "".join(rng.choices(_UNICODE, k=rng.randint(1, 4)))
        if choice == 8:
            return rng.randbytes(rng.randint(0, 24))
        if choice == 9:
            return ""
        if choice in (10, 11):
            return {k: self._value(rng, False, depth + 1)
                    for k in rng.sample(NESTED_KEYS, rng.randint(0, 3))}
        return [self._value(rng, False, depth + 1) for _ in range(rng.randint(0, 3))]


# ---- the richer text and buffer workload (its own streams; checked by G1-G4) ---------------
RICH_TEXTS = ("doc", "journal")
RICH_BUFFER = "weights"
RICH_BUFFER_SHAPE = (8192,)  # float32: 32 KiB, eight 4 KiB blocks
BLOCK_VALUES = 1024  # float32 values in one 4,096-byte block
# Texts grow past the rope's 2,048-character chunks, up to a few of them (diffs stay cheap).
MAX_RICH_TEXT = 24_000
_WORDS = ("alpha", "beta", "gamma", "the", "of", "and", "plan", "agent", "memory", "note",
          "tool", "call", "step", "é", "naïve", "中文", "😀", "Ω", "ß", "e\u0301", "👩\u200d💻")
_TOKEN = re.compile(r"\S+")
_RICH_OPS = (
    ("insert", 28),
    ("delete", 14),
    ("rewrite", 7),
    ("grow", 5),
    ("paragraph", 14),
    ("block", 18),
    ("same_block", 8),
    ("delete_region", 3),
)


class _LocalLog:
    """The local contributions of one replica incarnation, in order (its own observer):
    the contribution that committed a region edit is the first ``multi`` one after it."""

    def __init__(self, mem: Memory) -> None:
        self.mem = mem
        self.entries: list[tuple[str, str]] = []  # (contribution, kind)
        mem.observe(self._on_change, paths=False)

    def _on_change(self, change: Change) -> None:
        if change.local:
            self.entries.append((change.contribution, change.kind))

    def committed_after(self, index: int) -> str | None:
        for cid, kind in self.entries[index:]:
            if kind == "multi":
                return cid
        return None


class RichRegions:
    """The richer region workload: marked text edits, whole rewrites, concurrent edits of one
    paragraph or block, block writes and region deletes, each recorded (:class:`RegionEdit`)
    with the contribution that committed it."""

    def __init__(self, seed: int, rate: float, *, defer: bool) -> None:
        self._rng = random.Random(f"{seed}-rich-regions")
        self.rate = float(rate)
        self.defer = defer
        self.edits: list[RegionEdit] = []
        self.ops = 0
        self._uid = 0
        self._logs: dict[int, _LocalLog] = {}  # id(Memory) -> its log
        # edits not yet credited: (edit, the incarnation's log, its length at the edit)
        self._waiting: list[tuple[RegionEdit, _LocalLog, int]] = []

    def _log(self, mem: Memory) -> _LocalLog:
        log = self._logs.get(id(mem))
        if log is None or log.mem is not mem:
            log = self._logs[id(mem)] = _LocalLog(mem)
        return log

    # ---- running -------------------------------------------------------------------------
    def step(self, peers: tuple[str, ...], memory_of: Callable[[str], Memory | None],
             count: int | None, tick: int) -> None:
        """This tick's operations: one draw for their number (or ``count`` x the rate), one
        private generator each."""
        if count is None:
            n = int(self.rate) + (1 if self._rng.random() < self.rate - int(self.rate) else 0)
        else:
            n = max(1, round(count * self.rate))
        for _ in range(n):
            rng = random.Random(self._rng.getrandbits(64))
            kind = rng.choices([k for k, _ in _RICH_OPS], weights=[w for _, w in _RICH_OPS])[0]
            start = rng.randrange(len(peers))
            order = [peers[(start + i) % len(peers)] for i in range(len(peers))]
            live = [(p, m) for p in order if (m := memory_of(p)) is not None]
            if not live:
                continue
            self.ops += 1
            self.settle(memory_of)
            if kind in ("paragraph", "same_block"):
                # up to three peers edit the same paragraph or block before any of them syncs
                k = rng.randint(2, 3)
                shared = rng.random()
                for peer, mem in live[:k]:
                    if kind == "paragraph":
                        self._text_op(rng, peer, mem, "paragraph", tick, shared)
                    else:
                        self._buffer_op(rng, peer, mem, tick, block=int(shared * 8))
                continue
            peer, mem = live[0]
            if kind == "delete_region":
                self._delete_region(rng, peer, mem, tick)
            elif kind == "block":
                self._buffer_op(rng, peer, mem, tick, block=None)
            else:
                self._text_op(rng, peer, mem, kind, tick, rng.random())

    def _record(self, mem: Memory, edit: RegionEdit) -> None:
        """Commit now (unless deferred to the next cycle) and note what committed it."""
        log = self._log(mem)
        index = len(log.entries)
        self.edits.append(edit)
        if edit.inserted or edit.removed or edit.values or edit.deleted or edit.kept:
            self._waiting.append((edit, log, index))
        if edit.removed:
            # a marker inserted on this incarnation and not yet committed is gone before any
            # cycle saw it: it was never committed
            gone = set(edit.removed)
            for other, olog, _ in self._waiting:
                if olog is log and other is not edit and other.contribution is None and (
                    gone & set(other.inserted)
                ):
                    other.inserted = tuple(m for m in other.inserted if m not in gone)
        if not self.defer or edit.deleted:
            # (a deletion commits at once even when edits wait for a cycle: a handle taken
            # while it is pending is refused, and the next operation may want one)
            mem.commit()

    def settle(self, memory_of: Callable[[str], Memory | None]) -> int:
        """Credit every waiting edit whose incarnation has committed since; one whose
        incarnation crashed first is lost. Returns how many still wait."""
        still: list[tuple[RegionEdit, _LocalLog, int]] = []
        for edit, log, index in self._waiting:
            cid = log.committed_after(index)
            if cid is not None:
                edit.contribution = cid
            elif memory_of(edit.peer) is not log.mem:
                edit.lost = True
            else:
                still.append((edit, log, index))
        self._waiting = still
        return len(still)

    @property
    def waiting(self) -> list[RegionEdit]:
        return [e for e, _, _ in self._waiting]

    # ---- texts -----------------------------------------------------------------------------
    def _marker(self) -> str:
        self._uid += 1
        return f"⟦r{self._uid}⟧"

    def _words(self, rng: random.Random, n: int, *, markers: float) -> tuple[str, list[str]]:
        """``n`` words, each a fresh marker with probability ``markers`` (at least one)."""
        out: list[str] = []
        made: list[str] = []
        for i in range(n):
            if rng.random() < markers or (i == n - 1 and not made):
                m = self._marker()
                made.append(m)
                out.append(m)
            else:
                out.append(rng.choice(_WORDS))
        return " ".join(out), made

    def _text_op(self, rng: random.Random, peer: str, mem: Memory, kind: str, tick: int,
                 shared: float) -> None:
        name = RICH_TEXTS[int(shared * 1000) % len(RICH_TEXTS)]
        text = mem.text(name)
        value = text.value
        op = len(self.edits)
        if kind == "grow" and len(value) > MAX_RICH_TEXT:
            kind = "rewrite"
        if kind == "insert" or (kind == "delete" and not value.strip()):
            starts = [t.start() for t in _TOKEN.finditer(value)]
            at = rng.choice([*starts, len(value)])
            marker = self._marker()
            extra, more = self._words(rng, rng.randint(0, 3), markers=0.2) if (
                rng.random() < 0.4) else ("", [])
            piece = marker + (" " + extra if extra else "")
            if at < len(value):
                text.insert(at, piece + " ")
            else:
                text.insert(at, (" " if value and not value[-1].isspace() else "") + piece)
            self._record(mem, RegionEdit(op, tick, peer, "insert", "text", name,
                                         inserted=(marker, *more)))
        elif kind == "delete":
            tokens = list(_TOKEN.finditer(value))
            i = rng.randrange(len(tokens))
            j = min(len(tokens), i + rng.randint(1, 8))
            begin = tokens[i].start()
            end = tokens[j].start() if j < len(tokens) else len(value)
            removed = tuple(MARKER.findall(value, begin, end))
            text.delete(begin, end - begin)
            self._record(mem, RegionEdit(op, tick, peer, "delete", "text", name,
                                         removed=removed))
        elif kind == "grow":
            body, made = self._words(rng, rng.randint(400, 1000), markers=0.03)
            text.append(("\n\n" if value else "") + body)
            self._record(mem, RegionEdit(op, tick, peer, "grow", "text", name,
                                         inserted=tuple(made)))
        elif kind == "rewrite":
            self._rewrite(rng, peer, mem, name, value, tick, op)
        else:
            self._paragraph(rng, peer, mem, name, value, tick, op, shared)

    def _rewrite(self, rng: random.Random, peer: str, mem: Memory, name: str, value: str,
                 tick: int, op: int) -> None:
        """A whole new text with ``set()``: each paragraph kept, dropped or replaced by a
        fresh one (all of them replaced one time in ten), sometimes one more added."""
        paragraphs = value.split("\n\n") if value else []
        whole = rng.random() < 0.1
        out: list[str] = []
        made: list[str] = []
        kept: list[str] = []
        for para in paragraphs:
            roll = rng.random()
            if not whole and roll < 0.5:
                out.append(para)
                kept.extend(MARKER.findall(para))
            elif not whole and roll < 0.7:
                continue
            else:
                body, new = self._words(rng, rng.randint(3, 30), markers=0.15)
                out.append(body)
                made.extend(new)
        if not out or rng.random() < 0.3:
            body, new = self._words(rng, rng.randint(3, 30), markers=0.15)
            out.append(body)
            made.extend(new)
        new_value = "\n\n".join(out)
        removed = tuple(m for m in MARKER.findall(value) if m not in set(kept))
        mem.text(name).set(new_value)
        self._record(mem, RegionEdit(op, tick, peer, "rewrite", "text", name,
                                     inserted=tuple(made), removed=removed, kept=tuple(kept)))

    def _paragraph(self, rng: random.Random, peer: str, mem: Memory, name: str, value: str,
                   tick: int, op: int, shared: float) -> None:
        """An edit of paragraph number ``shared`` (the same on every peer of one operation):
        a marked insert, a word-span delete or a replacement of the whole paragraph."""
        spans: list[tuple[int, int]] = []
        pos = 0
        for para in value.split("\n\n"):
            spans.append((pos, pos + len(para)))
            pos += len(para) + 2
        begin, end = spans[int(shared * len(spans))]
        text = mem.text(name)
        roll = rng.random()
        tokens = list(_TOKEN.finditer(value, begin, end))
        if roll < 0.45 or not tokens:
            at = rng.choice([t.start() for t in tokens] + [end])
            marker = self._marker()
            if at < end:
                text.insert(at, marker + " ")
            else:
                text.insert(at, (" " if at > begin else "") + marker)
            self._record(mem, RegionEdit(op, tick, peer, "paragraph", "text", name,
                                         inserted=(marker,)))
        elif roll < 0.75:
            i = rng.randrange(len(tokens))
            j = min(len(tokens), i + rng.randint(1, 5))
            stop = tokens[j].start() if j < len(tokens) else end
            removed = tuple(MARKER.findall(value, tokens[i].start(), stop))
            text.delete(tokens[i].start(), stop - tokens[i].start())
            self._record(mem, RegionEdit(op, tick, peer, "paragraph", "text", name,
                                         removed=removed))
        else:
            body, made = self._words(rng, rng.randint(3, 20), markers=0.2)
            removed = tuple(MARKER.findall(value, begin, end))
            text.set(value[:begin] + body + value[end:])
            self._record(mem, RegionEdit(op, tick, peer, "paragraph", "text", name,
                                         inserted=tuple(made), removed=removed))

    # ---- buffers and deletes -----------------------------------------------------------------
    def _buffer_op(self, rng: random.Random, peer: str, mem: Memory, tick: int,
                   block: int | None) -> None:
        """A write of a whole block, of part of ``block``, or (``block`` None) of a span that
        may cross blocks; values are exact in float32."""
        size = RICH_BUFFER_SHAPE[0]
        if block is None and rng.random() < 0.5:
            block = rng.randrange(size // BLOCK_VALUES)
        if block is None:
            start = rng.randrange(size)
            length = rng.randint(1, min(2500, size - start))
        elif rng.random() < 0.5:
            start, length = block * BLOCK_VALUES, BLOCK_VALUES
        else:
            start = block * BLOCK_VALUES + rng.randrange(BLOCK_VALUES)
            length = rng.randint(1, block * BLOCK_VALUES + BLOCK_VALUES - start)
        values = np.array([rng.randint(-2048, 2048) / 8 for _ in range(length)],
                          dtype=np.float32)
        mem.buffer(RICH_BUFFER, shape=RICH_BUFFER_SHAPE, dtype="float32").write(start, values)
        self._record(mem, RegionEdit(len(self.edits), tick, peer, "block", "buffer",
                                     RICH_BUFFER, start=start, values=values.tobytes()))

    def _delete_region(self, rng: random.Random, peer: str, mem: Memory, tick: int) -> None:
        names = [n for n in (*RICH_TEXTS, RICH_BUFFER) if n in mem.regions()]
        if not names:
            return
        name = rng.choice(names)
        plane = "buffer" if name == RICH_BUFFER else "text"
        removed = tuple(MARKER.findall(mem.text(name).value)) if plane == "text" else ()
        mem.delete_region(name)
        self._record(mem, RegionEdit(len(self.edits), tick, peer, "delete_region", plane, name,
                                     removed=removed, deleted=True))
