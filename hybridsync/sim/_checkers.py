"""Checkers for the guarantees G1–G4 (DESIGN.md §4), separate from the code under test.

They read replicas only through the public API (``fields_json``, ``heads``, ``history``,
``conflicts``, ``fields.to_dict``, ``observe``) and their own records: the :class:`Recorder`
notes every applied change per replica incarnation, the workload notes every committed write
(:class:`WriteRecord`) and every operation (:class:`OpRecord`). Causality is recomputed here
from ``history()`` parents, never asked of the replica.

Every failure raises :class:`~hybridsync.errors.GuaranteeViolation` carrying the command
that replays the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridsync.causal import Contribution
from hybridsync.errors import GuaranteeViolation
from hybridsync.replica import Change, Conflict, Memory

__all__ = [
    "MARKER",
    "ROLLBACK_MARK",
    "OpRecord",
    "PendingBatch",
    "Recorder",
    "RegionEdit",
    "RegionStats",
    "RunFingerprint",
    "WriteRecord",
    "check_causal_order",
    "check_convergence",
    "check_policy_independence",
    "check_region_writes",
    "check_writes",
    "fingerprint",
]

Path = tuple[str, ...]
# Every value written inside a transaction that is then rolled back contains this mark.
ROLLBACK_MARK = "~rolled-back~"
_MAX_REPORTED = 5


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One committed write as the workload made it: ``action`` is set, delete or append."""

    op: int
    peer: str
    action: str
    path: Path
    value: Any
    contribution: str  # hex id of the contribution that carried it

    def describe(self) -> str:
        where = "/".join(self.path)
        if self.action == "delete":
            return f"op {self.op}: {self.peer} deleted {where!r} in {self.contribution[:12]}"
        return (f"op {self.op}: {self.peer} {self.action} {where!r} = {_short(self.value)} "
                f"in {self.contribution[:12]}")


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One workload operation and the contribution it produced (``None``: nothing committed).

    ``touched`` lists every ``(action, path)`` the operation wrote, rolled-back ones included
    (a rollback commits the restored values, which overwrite like any write).
    """

    index: int
    tick: int
    peer: str
    kind: str
    contribution: str | None
    touched: tuple[tuple[str, Path], ...]
    rolled_back: bool = False


@dataclass(slots=True)
class RegionEdit:
    """One operation of the richer text and buffer workload, on one replica incarnation.

    Texts carry unique marker tokens (``⟦r12⟧``): ``inserted`` are the markers the edit added,
    ``removed`` those it took out of the text it saw (a word-span delete, a paragraph or whole
    rewrite, a ``delete_region``), ``kept`` those a rewrite handed over again with the rest of
    the text. A buffer edit wrote the float32 ``values`` at element ``start``. ``contribution``
    is the local contribution that committed it (set once a cycle did); ``lost`` means its
    incarnation crashed first (never committed, so losing it is no G2 violation).
    """

    op: int
    tick: int
    peer: str
    kind: str  # insert | delete | rewrite | grow | paragraph | block | delete_region
    plane: str  # "text" | "buffer"
    region: str
    inserted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    start: int = 0
    values: bytes = b""
    deleted: bool = False
    contribution: str | None = None
    lost: bool = False

    def describe(self) -> str:
        where = f"{self.plane} {self.region!r}"
        what = (f"wrote {len(self.values) // 4} values at {self.start}" if self.values
                else "deleted the region" if self.deleted
                else f"inserted {list(self.inserted[:3])}" if self.inserted
                else f"removed {len(self.removed)} markers")
        cid = self.contribution[:12] if self.contribution else "uncommitted"
        return (f"op {self.op} ({self.kind}) by {self.peer} at tick {self.tick}: {where} "
                f"{what} in {cid}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- group commit: which contribution committed each batch ------------------------------------
@dataclass(slots=True, eq=False)
class PendingBatch:
    """One group-commit batch of one replica incarnation (``Memory(group_commit=True)``).

    Opened when a small autocommitted write finds no batch (``Memory.on_pending``), while the
    peer's own sequence number was ``opened_seq``. Every local commit path of the replica
    (``_cycle``, ``_commit_pending``, the batch's own ``_end_pending``, a transaction's start)
    takes an open batch first, and the own sequence number only moves by local commits while
    a batch is open, so the batch is committed by the next contribution the incarnation
    creates: the local one numbered ``opened_seq + 1``. ``contribution`` and ``paths`` are
    that contribution's id and changed paths; ``lost`` means the incarnation ended (a crash)
    before a cycle committed the batch: its writes were never committed.
    """

    peer: str
    incarnation: int
    opened_seq: int
    contribution: str | None = None
    paths: tuple[str, ...] = ()
    lost: bool = False
    rebase: bool = False  # opened inside receive(): writes the replica re-based itself

    @property
    def open(self) -> bool:
        return self.contribution is None and not self.lost


# ---- the recorder: what every replica applied, in order ----------------------------------------
@dataclass(slots=True)
class _Segment:
    """One incarnation of one replica: what it replayed from its store, then applied."""

    peer: str
    incarnation: int
    replayed: list[Contribution]
    base: tuple[int, bytes] | None = None  # the checkpoint it restarted from (order key)
    final_base: tuple[int, bytes] | None = None  # its checkpoint when it ended
    # the newest checkpoint it held at any moment: a roll-back returns to an older one and
    # re-applies what the newer held without reporting it (held before, docs/gc.md)
    newest_base: tuple[int, bytes] | None = None
    memory: Memory | None = None
    applied: list[tuple[str, bool]] = field(default_factory=list)
    history: list[Contribution] | None = None  # captured when the incarnation ends
    unsubscribe: Callable[[], None] | None = None
    batches: list[PendingBatch] = field(default_factory=list)  # group commit, in open order
    unsubscribe_pending: Callable[[], None] | None = None

    def note_base(self, base: tuple[int, bytes] | None) -> None:
        if base is not None and (self.newest_base is None or base > self.newest_base):
            self.newest_base = base


class Recorder:
    """Subscribes to every replica the simulator creates and records each applied change,
    and (group commit) which local contribution committed each pending batch."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._current: dict[str, _Segment] = {}
        self._local: dict[str, list[Change]] = {}
        self._batch_commits: set[str] = set()
        self._receiving: set[str] = set()
        # contributions the replica made on its own: re-based writes (checkpoint adoption)
        self._rebased: dict[str, tuple[str, tuple[str, ...]]] = {}  # id -> (peer, paths)
        # G4: the id of every dot any replica applied (the latest wins: a re-base reuses its
        # dot), so runs that compacted at different points still compare every contribution
        self._dots: dict[tuple[str, int], str] = {}

    def attach(self, peer: str, mem: Memory, replayed: Iterable[Contribution]) -> None:
        """Start recording a fresh incarnation; ``replayed`` is its store, in store order."""
        seg = _Segment(peer, mem.incarnation, list(replayed), mem.compacted_upto,
                       newest_base=mem.compacted_upto, memory=mem)
        local = self._local.setdefault(peer, [])
        dots = self._dots
        for c in seg.replayed:
            dots.setdefault((c.author, c.seq), c.hex_id)

        def on_change(change: Change) -> None:
            seg.applied.append((change.contribution, change.local))
            dots[(change.author, change.seq)] = change.contribution
            if change.local:
                local.append(change)
                batch = self._credit(seg, change) if seg.batches else None
                if (batch.rebase if batch is not None else peer in self._receiving):
                    # receive() writes only to re-base late contributions of ours
                    self._rebased[change.contribution] = (peer, change.paths)

        def on_pending() -> None:
            seg.batches.append(PendingBatch(peer, mem.incarnation,
                                            mem.version_vector.get(peer, 0),
                                            rebase=peer in self._receiving))

        seg.unsubscribe = mem.observe(on_change)
        if mem.group_commit:
            seg.unsubscribe_pending = mem.on_pending(on_pending)
        self._segments.append(seg)
        self._current[peer] = seg

    def _credit(self, seg: _Segment, change: Change) -> PendingBatch | None:
        """A local contribution commits the oldest open batch opened just before its number.

        Observers run after the public call that committed, so a batch may open (a checkpoint
        adoption re-bases late writes as new small writes) before the change that committed
        the previous batch is reported; that change still goes to the previous, older batch.
        """
        for batch in seg.batches:
            if batch.open and batch.opened_seq + 1 == change.seq:
                batch.contribution = change.contribution
                batch.paths = change.paths
                self._batch_commits.add(change.contribution)
                return batch
        return None

    def receiving(self, peer: str, on: bool) -> None:
        """The simulator feeds ``peer`` a frame (``on``) or is done with it: local changes
        and batches made meanwhile are the replica's own re-based writes."""
        seg = self._current.get(peer)
        if seg is not None and seg.memory is not None:
            seg.note_base(seg.memory.compacted_upto)  # compactions happen between frames
        if on:
            self._receiving.add(peer)
        else:
            self._receiving.discard(peer)

    def rebased(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """``contribution -> (peer, changed paths)`` of the local contributions a replica
        made on its own inside ``receive()``: adopting a checkpoint that its late
        contributions sort inside, it writes their effects again (docs/gc.md)."""
        return dict(self._rebased)

    def lost_rebased(self) -> list[PendingBatch]:
        """Re-based writes (of contributions that had been committed) still pending when
        their incarnation crashed."""
        return [b for seg in self._segments for b in seg.batches if b.rebase and b.lost]

    def is_batch_commit(self, contribution: str) -> bool:
        """True when ``contribution`` is a local commit of a group-commit batch."""
        return contribution in self._batch_commits

    def open_batch(self, peer: str) -> PendingBatch | None:
        """The batch ``peer``'s live incarnation has open (the newest not yet committed)."""
        seg = self._current.get(peer)
        if seg is None or not seg.batches or not seg.batches[-1].open:
            return None
        return seg.batches[-1]

    def detach(self, peer: str, mem: Memory) -> None:
        """The incarnation ends (crash): keep what it held for the causal-order check."""
        seg = self._current.pop(peer, None)
        if seg is None:
            return
        seg.history = mem.history()
        seg.final_base = mem.compacted_upto
        seg.note_base(seg.final_base)
        seg.memory = None
        for batch in seg.batches:
            if batch.open:
                batch.lost = True  # the crash took the writes no cycle had committed
        if seg.unsubscribe is not None:
            seg.unsubscribe()
            seg.unsubscribe = None
        if seg.unsubscribe_pending is not None:
            seg.unsubscribe_pending()
            seg.unsubscribe_pending = None

    def local_changes(self, peer: str) -> list[Change]:
        """Local commits of ``peer`` across its incarnations, in commit order."""
        return self._local.setdefault(peer, [])

    def applied_dots(self) -> dict[tuple[str, int], str]:
        """``(author, seq) -> hex id`` of every contribution any replica reported applying
        (or replayed from its store), the latest report of a dot winning."""
        return dict(self._dots)

    def applied_count(self) -> int:
        return sum(len(s.applied) for s in self._segments)

    @property
    def segments(self) -> list[_Segment]:
        return list(self._segments)


# ---- G1 convergence ------------------------------------------------------------------------
def check_convergence(
    memories: Mapping[str, Memory], *, replay: str = "", conflicts: bool = True
) -> None:
    """G1: identical fields JSON, every region's bytes, heads, ``history()`` ids and (with
    ``conflicts``) identical ``conflicts()`` on every replica: conflicts are recorded
    deterministically (DESIGN §1)."""
    if not memories:
        return
    names = sorted(memories)
    ref_name = names[0]
    ref = memories[ref_name]
    ref_json = ref.fields_json()
    ref_heads = ref.heads
    # Replicas compact at different moments: compare the history after the furthest
    # checkpoint any of them holds (what is before it is folded identically, or G1 fails on
    # the state itself).
    bases = [k for m in memories.values() if (k := m.compacted_upto) is not None]
    cut = max(bases) if bases else None

    def suffix(m: Memory) -> list[str]:
        return [c.hex_id for c in m.history() if cut is None or c.order_key > cut]

    ref_ids = suffix(ref)
    ref_conflicts = ref.conflicts()
    ref_regions = ref.region_bytes()
    for name in names[1:]:
        mem = memories[name]
        problems: list[str] = []
        if mem.heads != ref_heads:
            problems.append(f"heads differ: {_ids(ref_heads)} vs {_ids(mem.heads)}")
        ids = suffix(mem)
        if ids != ref_ids:
            missing = sorted(set(ref_ids) - set(ids))
            extra = sorted(set(ids) - set(ref_ids))
            what = (f"{len(missing)} missing, {len(extra)} extra" if missing or extra
                    else "same ids in a different order")
            problems.append(f"history() differs ({len(ref_ids)} vs {len(ids)}: {what})")
        js = mem.fields_json()
        if js != ref_json:
            problems.append(f"fields_json differs:\n  {ref_name}: {_short(ref_json, 300)}\n"
                            f"  {name}: {_short(js, 300)}")
        regions = mem.region_bytes()
        if regions != ref_regions:
            a = {(k, n): v for k, n, v in ref_regions}
            b = {(k, n): v for k, n, v in regions}
            differ = sorted(f"{k} {n!r}" for k, n in set(a) | set(b)
                            if a.get((k, n)) != b.get((k, n)))
            problems.append(f"region bytes differ: {', '.join(differ)}")
        if not problems and conflicts and mem.conflicts() != ref_conflicts:
            problems.append("conflicts() differ on replicas holding the same history"
                            + _conflict_diff(ref_conflicts, mem.conflicts(), ref_name, name))
        if problems:
            raise GuaranteeViolation(
                f"G1 convergence: {name} differs from {ref_name}: " + "; ".join(problems),
                replay=replay,
            )


def _conflict_diff(a: list[Conflict], b: list[Conflict], name_a: str, name_b: str) -> str:
    def key(c: Conflict) -> str:
        return (f"{c.kind} {c.location!r} {c.authors} {_ids(c.contributions)} "
                f"paths={c.paths} values={_short(c.values, 80)}")

    ka, kb = [key(c) for c in a], [key(c) for c in b]
    only_a = [k for k in ka if k not in kb]
    only_b = [k for k in kb if k not in ka]
    lines = [f"\n    only {name_a}: {k}" for k in only_a[:3]]
    lines += [f"\n    only {name_b}: {k}" for k in only_b[:3]]
    if not lines:
        lines.append(f"\n    same entries, different order or multiplicity ({len(a)} vs {len(b)})")
    return "".join(lines)


def _ids(ids: Sequence[str]) -> str:
    return "[" + ", ".join(i[:8] for i in ids) + "]"


# ---- causality recomputed from history() parents ---------------------------------------------
class _Causality:
    """Ancestor sets (as int bitsets) over a history in topological order."""

    def __init__(self, history: Sequence[Contribution], compacted: bool = False) -> None:
        self.pos: dict[str, int] = {}
        self._anc: list[int] = []
        by_bytes: dict[bytes, int] = {}
        for i, c in enumerate(history):
            anc = 0
            for p in c.parents:
                j = by_bytes.get(p)
                if j is None and compacted:
                    continue  # folded into the checkpoint: before everything listed here
                if j is None:
                    raise GuaranteeViolation(
                        f"history() lists {c.hex_id[:12]} ({c.author}#{c.seq}) before its "
                        f"parent {p.hex()[:12]}"
                    )
                anc |= self._anc[j] | (1 << j)
            self._anc.append(anc)
            by_bytes[c.id] = i
            self.pos[c.hex_id] = i

    def before(self, a: str, b: str) -> bool:
        """True when ``a`` is in the causal past of ``b``."""
        if a not in self.pos or b not in self.pos:
            return a not in self.pos and b in self.pos  # compacted is before retained
        return a != b and bool(self._anc[self.pos[b]] >> self.pos[a] & 1)


# ---- G2 no silent loss -----------------------------------------------------------------------
def _related(p: Path, p_action: str, q: Path, q_action: str) -> bool:
    """Writes at ``p`` and ``q`` touch the same value (same path, or one inside the other)."""
    if p == q:
        return not (p_action == "append" and q_action == "append")
    n = min(len(p), len(q))
    return p[:n] == q[:n]


def _lookup(state: Any, path: Path) -> tuple[bool, Any]:
    cur = state
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return False, None
        cur = cur[key]
    return True, cur


def normalize(value: Any) -> Any:
    """A written value as the fields plane reads it back (tuples as lists, bytes as bytes)."""
    if isinstance(value, tuple | list):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def _visible(state: Any, w: WriteRecord) -> bool:
    found, current = _lookup(state, w.path)
    if w.action == "delete":
        return not found
    if not found:
        return False
    expected = normalize(w.value)
    if w.action == "append":
        return isinstance(current, list) and any(x == expected for x in current)
    return bool(current == expected)


def _conflict_path(path: str) -> Path:
    return tuple(path.split("/")) if path else ()


def _contains_mark(value: Any) -> bool:
    if isinstance(value, str):
        return ROLLBACK_MARK in value
    if isinstance(value, dict):
        return any(_contains_mark(k) or _contains_mark(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_mark(v) for v in value)
    return False


def _story(
    w: WriteRecord, ops: Sequence[OpRecord], causality: _Causality,
    by_contribution: Mapping[str, list[Conflict]],
) -> str:
    """The operations that touched the same value as ``w``, and how they relate to it."""
    lines: list[str] = []
    for op in ops:
        if op.contribution is None or op.contribution not in causality.pos:
            continue
        paths = [(a, p) for a, p in op.touched if _related(w.path, w.action, p, a)]
        if not paths or (op.contribution == w.contribution and op.index == w.op):
            continue
        if causality.before(op.contribution, w.contribution):
            rel = "before"
        elif causality.before(w.contribution, op.contribution):
            rel = "after"
        elif op.contribution == w.contribution:
            rel = "same contribution"
        else:
            rel = "concurrent"
        n_conf = len(by_contribution.get(op.contribution, ()))
        what = ", ".join(f"{a} {'/'.join(p)}" for a, p in paths)
        lines.append(f"\n    op {op.index} ({op.kind}{', rolled back' if op.rolled_back else ''})"
                     f" by {op.peer} at tick {op.tick}, {rel}: {what} in "
                     f"{op.contribution[:12]} ({n_conf} conflicts)")
    return "".join(lines[-8:])


def _beyond_cap(mem: Memory, listed: Sequence[Conflict], causality: _Causality,
                n: int) -> int:
    """``conflicts()`` reports the newest ``max_conflicts``: once the list is full, a
    conflict older than its oldest entry is no longer reported. Such a conflict's
    contributions all sort at or before the oldest entry's later contribution, so a write
    there that is not otherwise explained may have lost in one: its history position, or
    -1 while nothing is beyond the cap (``n``: the history's length)."""
    if len(listed) < mem.max_conflicts:
        return -1
    return n if not listed else max(
        (causality.pos.get(cid, -1) for cid in listed[0].contributions), default=-1)


def check_writes(
    mem: Memory,
    writes: Sequence[WriteRecord],
    ops: Sequence[OpRecord],
    *,
    replay: str = "",
) -> int:
    """G2: every committed write is in ``mem`` (a converged replica) or is explained.

    A write is explained when its value is visible at its path; or a later write (one whose
    contribution causally follows it) touched the same value; or its contribution appears in
    a conflict whose location is the write's path, inside it or one of its ancestors (a
    concurrent replacement of ``k`` loses every write under ``k``). Rolled-back writes must
    never be visible. Returns the number of writes explained by a conflict.
    """
    history = mem.history()
    causality = _Causality(history, compacted=mem.compacted_upto is not None)
    state = mem.fields.to_dict()
    touched: dict[str, list[tuple[str, str, Path]]] = {}  # top key -> (contribution, action, path)
    for op in ops:
        if op.contribution is None:
            continue
        for action, path in op.touched:
            touched.setdefault(path[0] if path else "", []).append((op.contribution, action, path))
    by_contribution: dict[str, list[Conflict]] = {}
    listed = mem.conflicts()
    for conflict in listed:
        for cid in conflict.contributions:
            by_contribution.setdefault(cid, []).append(conflict)
    beyond_cap = _beyond_cap(mem, listed, causality, len(history))

    failures: list[str] = []
    by_conflict = 0
    compacted = mem.compacted_upto is not None
    for w in writes:
        if w.contribution not in causality.pos:
            if compacted and (_visible(state, w) or any(
                _related(w.path, w.action, path, action)
                for _, action, path in touched.get(w.path[0] if w.path else "", ())
            )):
                # Folded into the checkpoint (stable, so before every retained write): its
                # value is visible or a later write touched it. The compaction itself is
                # proved value-preserving separately (tests/sim/test_gc_sim.py).
                continue
            failures.append(f"{w.describe()}: its contribution is not in history()")
            continue
        if _visible(state, w):
            continue
        top = w.path[0] if w.path else ""
        if any(
            _related(w.path, w.action, path, action) and causality.before(w.contribution, cid)
            for cid, action, path in touched.get(top, ())
        ):
            continue
        if any(
            _related(w.path, w.action, _conflict_path(c.location), "set")
            for c in by_contribution.get(w.contribution, ())
        ):
            by_conflict += 1
            continue
        if causality.pos[w.contribution] <= beyond_cap:
            by_conflict += 1  # explained by a conflict older than the reported ones
            continue
        found, current = _lookup(state, w.path)
        now = _short(current) if found else "absent"
        failures.append(f"{w.describe()}: lost silently (now {now}; no later write to it, "
                        "no conflict)" + _story(w, ops, causality, by_contribution))
    if _contains_mark(state):
        failures.append("a value written in a rolled-back transaction is visible")
    if failures:
        extra = len(failures) - _MAX_REPORTED
        more = f" (and {extra} more)" if extra > 0 else ""
        exc = GuaranteeViolation(
            f"G2 no silent loss on {mem.peer}: " + "; ".join(failures[:_MAX_REPORTED]) + more,
            replay=replay,
        )
        exc.details = failures  # type: ignore[attr-defined]
        raise exc
    return by_conflict


# ---- G2 for texts and buffers -----------------------------------------------------------------
# The richer region workload's text markers: unique tokens, delimited by spaces.
MARKER = re.compile("⟦r[0-9]+⟧")


def _conflicted(listed: Sequence[Conflict]) -> dict[tuple[str, str], set[str]]:
    """``(plane, region) -> contributions`` named by a text or buffer conflict."""
    out: dict[tuple[str, str], set[str]] = {}
    for c in listed:
        if c.plane in ("text", "buffer"):
            out.setdefault((c.plane, c.location), set()).update(c.contributions)
    return out


@dataclass(slots=True)
class RegionStats:
    """What :func:`check_region_writes` saw: markers checked, those with a concurrent edit of
    their text (*contended*), and the contended ones damaged without a conflict."""

    markers: int = 0
    contended: int = 0
    damaged: list[str] = field(default_factory=list)
    buffer_writes: int = 0


def check_region_writes(
    mem: Memory, edits: Sequence[RegionEdit], *, replay: str = "",
    stats: RegionStats | None = None,
) -> int:
    """G2 for texts and buffers on ``mem`` (a converged replica): every committed region edit
    is in the value or was reported. Returns the number of edits explained by a conflict.

    Texts: every marker a committed edit inserted is in the final text exactly once, unless a
    committed edit removed it (its author saw it: a word-span delete, a paragraph or whole
    rewrite, a ``delete_region``) or a text conflict of that region (``hunk-failed``,
    ``edit-of-deleted-region``) names a contribution that wrote it (its insert, or a rewrite
    that handed it over again). Absent markers explained that way are fine; a marker twice
    needs the conflict. Markers of edits that were never committed (their incarnation crashed
    before a cycle) must be absent.

    What merging diffs cannot promise (docs/diffsync.md, "Damage of concurrent edits"): when
    an edit of the same text was concurrent with one of the marker's writers or removers, a
    diff trimmed into the marker or a short context that matched text its author never saw
    can damage it without a conflict. Such markers are *contended*: their damage is counted
    in ``stats.damaged``, not raised. A marker whose writers and removers had no concurrent
    edit of their text must be exact.

    Buffers: the values a committed write put at its elements are still there, except at
    elements a later write overwrote (its contribution causally after, or the same
    contribution and a later operation; a ``delete_region`` overwrites every element), unless
    a buffer conflict of that region (``block-overwritten``, ``edit-of-deleted-region``)
    names the write's contribution.

    Conflicts older than the newest ``max_conflicts`` are no longer listed: an edit whose
    contribution sorts at or before the oldest listed one is excused, as in
    :func:`check_writes`. Contributions folded into a checkpoint are not in ``history()``;
    two of them are taken in operation order.
    """
    history = mem.history()
    causality = _Causality(history, compacted=mem.compacted_upto is not None)
    listed = mem.conflicts()
    named = _conflicted(listed)
    beyond_cap = _beyond_cap(mem, listed, causality, len(history))

    def capped(cids: Iterable[str]) -> bool:
        return any(causality.pos.get(c, len(history)) <= beyond_cap for c in cids)

    values = {(k, n): v for k, n, v in mem.region_bytes()}
    failures: list[str] = []
    by_conflict = 0
    if stats is None:
        stats = RegionStats()
    committed = [e for e in edits if e.contribution is not None]
    for name in sorted({e.region for e in edits if e.plane == "text"}):
        data = values.get(("text", name))
        counts: dict[str, int] = {}
        for m in MARKER.findall(data.decode() if data is not None else ""):
            counts[m] = counts.get(m, 0) + 1
        writers: dict[str, set[str]] = {}
        inserted: dict[str, RegionEdit] = {}
        removed: set[str] = set()
        removers: dict[str, set[str]] = {}
        for e in committed:
            if e.plane != "text" or e.region != name:
                continue
            assert e.contribution is not None
            for m in e.inserted:
                inserted[m] = e
                writers.setdefault(m, set()).add(e.contribution)
            for m in e.kept:
                writers.setdefault(m, set()).add(e.contribution)
            removed.update(e.removed)
            for m in e.removed:
                removers.setdefault(m, set()).add(e.contribution)
        conflicted = named.get(("text", name), set())
        # contributions of this text's edits that have a concurrent edit of the same text
        cids = sorted({e.contribution for e in committed
                       if e.plane == "text" and e.region == name and e.contribution})
        contended = {a for a in cids if any(
            a != b and not causality.before(a, b) and not causality.before(b, a) for b in cids)}
        for m, e in inserted.items():
            n = counts.get(m, 0)
            if n == 1 or (n == 0 and m in removed):
                continue
            if writers[m] & conflicted or capped(writers[m]):
                by_conflict += 1
                continue
            witnesses = writers[m] | removers.get(m, set())
            if witnesses & contended:
                # merging concurrent diffs: the documented residual damage (docs/diffsync.md)
                stats.damaged.append(f"{m} {'missing' if n == 0 else f'x{n}'} in {name!r}")
                continue
            what = "missing" if n == 0 else f"there {n} times"
            failures.append(f"{e.describe()}: marker {m} is {what} in text {name!r} (no "
                            "edit that saw it removed it, no conflict names its writers, no "
                            "edit of the text was concurrent with its writers)")
        stats.markers += len(inserted)
        stats.contended += sum(1 for m in inserted
                               if (writers[m] | removers.get(m, set())) & contended)
        known = set(inserted)
        for e in edits:
            if e.lost and e.plane == "text" and e.region == name:
                known.update(e.inserted)
                failures.extend(f"{e.describe()}: marker {m} of an edit its crash took before "
                                f"any cycle committed it is in text {name!r}"
                                for m in e.inserted if counts.get(m))
        strays = sorted(m for m in counts if m not in known)
        if strays and contended:
            # pieces of two markers joined by a concurrent diff (``⟦r6`` + ``3⟧``): damage of
            # the same kind, counted with it
            stats.damaged.extend(f"{m} made of pieces in {name!r}" for m in strays)
        elif strays:
            failures.append(f"text {name!r} holds markers no edit inserted: {strays[:3]}")
    for name in sorted({e.region for e in committed if e.plane == "buffer"}):
        data = values.get(("buffer", name))
        final = None if data is None else np.frombuffer(data, dtype=np.uint32)
        writes = [e for e in committed if e.plane == "buffer" and e.region == name]
        conflicted = named.get(("buffer", name), set())
        for i, w in enumerate(writes):
            if w.deleted:
                continue
            stats.buffer_writes += 1
            assert w.contribution is not None
            mine = np.frombuffer(w.values, dtype=np.uint32)
            keep = np.ones(mine.size, dtype=bool)  # elements no later write overwrote
            for y in writes[i + 1:]:
                assert y.contribution is not None
                later = (y.contribution == w.contribution
                         or causality.before(w.contribution, y.contribution)
                         or (w.contribution not in causality.pos
                             and y.contribution not in causality.pos))
                if not later:
                    continue
                if y.deleted:
                    keep[:] = False
                    break
                lo, hi = max(w.start, y.start), min(w.start + mine.size,
                                                    y.start + len(y.values) // 4)
                if lo < hi:
                    keep[lo - w.start:hi - w.start] = False
            if not keep.any():
                continue
            if final is not None and np.array_equal(
                final[w.start:w.start + mine.size][keep], mine[keep]
            ):
                continue
            if w.contribution in conflicted or capped((w.contribution,)):
                by_conflict += 1
                continue
            where = "the region is gone" if final is None else (
                f"{int((final[w.start:w.start + mine.size][keep] != mine[keep]).sum())} of "
                f"{int(keep.sum())} elements differ")
            failures.append(f"{w.describe()}: lost silently ({where}; no later write "
                            "overwrote them, no conflict names it)")
    if failures:
        extra = len(failures) - _MAX_REPORTED
        more = f" (and {extra} more)" if extra > 0 else ""
        exc = GuaranteeViolation(
            f"G2 no silent loss (texts and buffers) on {mem.peer}: "
            + "; ".join(failures[:_MAX_REPORTED]) + more, replay=replay)
        exc.details = failures  # type: ignore[attr-defined]
        raise exc
    return by_conflict


# ---- G3 causal order of application ----------------------------------------------------------
def check_causal_order(
    recorder: Recorder, memories: Mapping[str, Memory], *, replay: str = ""
) -> int:
    """G3: every replica incarnation applied each contribution after all its parents.

    Checks the store replay of each restart and each observed change, that nothing was
    applied twice, and that what each incarnation holds is exactly what it reported applying.
    Returns the number of applications checked.
    """
    parents: dict[str, tuple[str, ...]] = {}
    keys: dict[str, tuple[int, bytes]] = {}
    histories: dict[int, list[Contribution]] = {}
    for k, seg in enumerate(recorder.segments):
        hist = seg.history
        if hist is None:
            mem = memories.get(seg.peer)
            live = mem is not None and mem.incarnation == seg.incarnation
            hist = mem.history() if mem is not None and live else []
            if mem is not None and live:
                seg.note_base(mem.compacted_upto)
        histories[k] = hist
        for c in (*seg.replayed, *hist):
            parents.setdefault(c.hex_id, tuple(p.hex() for p in c.parents))
            keys.setdefault(c.hex_id, c.order_key)
    checked = 0
    for k, seg in enumerate(recorder.segments):
        who = f"{seg.peer} (incarnation {seg.incarnation})"
        seen: set[str] = set()
        # Garbage collection folds a causal prefix into a checkpoint: what it compacted is
        # neither in history() nor replayed, and parents inside it are held as stubs (any
        # incarnation may have compacted; the checks below then allow for it).
        # (this incarnation's checkpoints count even if every replica rolled back since)
        compacted = seg.newest_base is not None or any(
            m.compacted_upto is not None for m in memories.values())
        def in_checkpoint(pid: str, base: tuple[int, bytes] | None = seg.base) -> bool:
            key = keys.get(pid)
            return base is not None and (key is None or key <= base)

        for c in seg.replayed:
            missing = [p.hex() for p in c.parents
                       if p.hex() not in seen and not in_checkpoint(p.hex())]
            if missing:
                raise GuaranteeViolation(
                    f"G3 causal order: {who} replayed {c.hex_id[:12]} from its store before "
                    f"its parent {missing[0][:12]}", replay=replay)
            seen.add(c.hex_id)
        for cid, local in seg.applied:
            if cid in seen:
                raise GuaranteeViolation(
                    f"G3 causal order: {who} applied {cid[:12]} twice", replay=replay)
            ps = parents.get(cid)
            if ps is None and compacted:
                seen.add(cid)  # compacted everywhere since: its order was checked when held
                continue
            if ps is None:
                raise GuaranteeViolation(
                    f"G3 causal order: {who} reported applying {cid[:12]}, which no replica "
                    f"holds", replay=replay)
            # (a parent folded into a checkpoint this incarnation restarted from, adopted
            # or compacted at any moment counts as held: its own order was checked where it
            # was applied; a roll-back to an older checkpoint re-applies it unreported)
            missing = [p for p in ps if p not in seen
                       and not in_checkpoint(p, seg.newest_base)]
            if missing:
                raise GuaranteeViolation(
                    f"G3 causal order: {who} applied {'local' if local else 'remote'} "
                    f"{cid[:12]} before its parent {missing[0][:12]}", replay=replay)
            seen.add(cid)
            checked += 1
        # what a roll-back re-applied from a newer checkpoint it held before is not news
        held = {c.hex_id for c in histories[k] if c.hex_id in seen
                or not in_checkpoint(c.hex_id, seg.newest_base)}
        if compacted and held <= seen:
            continue
        if held != seen:
            unreported = sorted(held - seen)
            unheld = sorted(seen - held)
            raise GuaranteeViolation(
                f"G3 causal order: {who} holds {len(unreported)} contribution(s) it never "
                f"reported applying {_ids(unreported[:3])} and reported {len(unheld)} it does "
                f"not hold {_ids(unheld[:3])}", replay=replay)
    return checked


# ---- G4 policy independence ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunFingerprint:
    """What must not depend on routing, batching or delivery order: the fields, the bytes of
    every text and buffer region, the conflicts, the version vector, the heads, every
    contribution the run applied, and the retained history.

    Garbage collection compacts when the stable prefix is long or heavy enough, and what is
    stable when depends on frame sizes and delivery: two policies may hold different
    checkpoints, so ``history()`` legitimately differs before the later checkpoint of the two
    (``base``). :func:`check_policy_independence` compares the retained history after it, in
    order, and ``applied``: the id of every dot the run's replicas applied (recorded while
    they applied it, compacted or not). A contribution's id covers its lamport time, author
    and payload, so equal ``applied`` maps mean the same contributions, hence the same total
    order ``(lamport, id)`` over all of them."""

    label: str
    fields_json: str
    fields: dict[str, Any]
    history: tuple[str, ...]  # retained history() ids, in order
    conflicts: tuple[Conflict, ...]
    described: tuple[str, ...] = ()  # "author#seq 'note'" per history entry, for messages
    # (kind, name, value bytes) of every existing text and buffer region
    regions: tuple[tuple[str, str, bytes], ...] = ()
    heads: tuple[str, ...] = ()
    version_vector: tuple[tuple[str, int], ...] = ()
    base: tuple[int, bytes] | None = None  # compacted_upto: history() is what sorts after it
    order_keys: tuple[tuple[int, bytes], ...] = ()  # per history entry
    # (author, seq, hex id) of every contribution within the version vector that the run
    # applied; empty when no recorder was given
    applied: tuple[tuple[str, int, str], ...] = ()


def fingerprint(label: str, mem: Memory, recorder: Recorder | None = None) -> RunFingerprint:
    """``mem``'s fingerprint; with the run's ``recorder``, every contribution applied in the
    run (compacted or not) within ``mem``'s version vector."""
    history = mem.history()
    vv = mem.version_vector
    applied: tuple[tuple[str, int, str], ...] = ()
    if recorder is not None:
        dots = recorder.applied_dots()
        applied = tuple(sorted((a, s, h) for (a, s), h in dots.items() if s <= vv.get(a, 0)))
    return RunFingerprint(
        label, mem.fields_json(), mem.fields.to_dict(),
        tuple(c.hex_id for c in history), tuple(mem.conflicts()),
        tuple(f"{c.author}#{c.seq} {c.note!r}" for c in history),
        tuple(mem.region_bytes()),
        heads=tuple(sorted(mem.heads)),
        version_vector=tuple(sorted(vv.items())),
        base=mem.compacted_upto,
        order_keys=tuple(c.order_key for c in history),
        applied=applied,
    )


def _suffix(run: RunFingerprint, cut: tuple[int, bytes] | None) -> list[int]:
    """Positions of ``run``'s history entries that sort after ``cut``."""
    return [i for i, k in enumerate(run.order_keys or [None] * len(run.history))
            if cut is None or k is None or k > cut]


def _describe_at(run: RunFingerprint, positions: Sequence[int], i: int) -> str:
    if i >= len(positions):
        return "nothing"
    j = positions[i]
    return f"{run.history[j][:12]} ({run.described[j] if j < len(run.described) else '?'})"


def _history_problem(ref: RunFingerprint, run: RunFingerprint) -> str | None:
    """The retained histories after the later checkpoint of the two, compared in order."""
    bases = [b for b in (ref.base, run.base) if b is not None]
    cut = max(bases) if bases else None
    pa, pb = _suffix(ref, cut), _suffix(run, cut)
    a, b = [ref.history[i] for i in pa], [run.history[i] for i in pb]
    if a == b:
        return None
    common = sum(1 for x, y in zip(a, b, strict=False) if x == y)
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                 min(len(a), len(b)))
    after = "" if cut is None else " after the later checkpoint"
    return (f"history(){after} differs ({len(a)} vs {len(b)} contributions, {common} equal "
            f"positions); first difference at position {first}: "
            f"{_describe_at(ref, pa, first)} vs {_describe_at(run, pb, first)}")


def _applied_problem(ref: RunFingerprint, run: RunFingerprint) -> str | None:
    if not ref.applied or not run.applied or ref.applied == run.applied:
        return None
    a = {(x, s): h for x, s, h in ref.applied}
    b = {(x, s): h for x, s, h in run.applied}
    differ = sorted(d for d in set(a) | set(b) if a.get(d) != b.get(d))
    shown = ", ".join(f"{x}#{s} ({a.get((x, s), 'none')[:12]} vs {b.get((x, s), 'none')[:12]})"
                      for x, s in differ[:_MAX_REPORTED])
    return f"the contributions applied differ at {len(differ)} dot(s): {shown}"


def check_policy_independence(runs: Sequence[RunFingerprint], *, replay: str = "") -> None:
    """G4: the same workload under every policy gives the same state, conflicts, version
    vector, heads and contributions, and the same ``history()`` after the later of two
    runs' checkpoints (compaction points may differ between policies; what they fold is
    compared through the state and ``applied``)."""
    if not runs:
        return
    ref = runs[0]
    for run in runs[1:]:
        problems: list[str] = []
        history = _history_problem(ref, run)
        if history is not None:
            problems.append(history)
        applied = _applied_problem(ref, run)
        if applied is not None:
            problems.append(applied)
        if run.version_vector != ref.version_vector:
            problems.append(f"version vectors differ: {dict(ref.version_vector)} vs "
                            f"{dict(run.version_vector)}")
        if run.heads != ref.heads:
            problems.append(f"heads differ: {_ids(ref.heads)} vs {_ids(run.heads)}")
        if run.fields_json != ref.fields_json or run.fields != ref.fields:
            problems.append(f"fields differ: {_short(ref.fields_json, 200)} vs "
                            f"{_short(run.fields_json, 200)}")
        if run.regions != ref.regions:
            a = {(k, n): v for k, n, v in ref.regions}
            b = {(k, n): v for k, n, v in run.regions}
            differ = sorted(f"{k} {n!r}" for k, n in set(a) | set(b)
                            if a.get((k, n)) != b.get((k, n)))
            problems.append(f"region bytes differ: {', '.join(differ)}")
        if run.conflicts != ref.conflicts:
            problems.append("conflicts() differ")
        if problems:
            raise GuaranteeViolation(
                f"G4 policy independence: {run.label} differs from {ref.label}: "
                + "; ".join(problems), replay=replay)
