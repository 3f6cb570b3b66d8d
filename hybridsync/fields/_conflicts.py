"""Deterministic conflict detection for the fields plane.

Yjs resolves concurrent writes to one map key silently. We also *report* them: two
contributions conflict on a path when neither is in the other's causal past and they wrote
related paths: the same key (set/set, set/delete), or one replaced a map or list that the
other wrote inside (``tasks`` vs ``tasks/t1/status``). Both deleting the same key, or both
inserting into the same list, is not a conflict.

Every replica reports the same pairs: a pair is found when the later-arriving of the two is
applied, whichever that is, and the locations are resolved from items in the writers' causal
pasts. Decoding is lazy: contributions that extend every head (no concurrency possible) are
indexed only when a concurrent one arrives, so a single writer pays nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from hybridsync.causal import Contribution
from hybridsync.errors import PayloadError
from hybridsync.fields._compact import DroppedRanges
from hybridsync.fields._plane import ROOT_NAME
from hybridsync.fields._values import plain
from hybridsync.fields._yupdate import YItem, decode_update

__all__ = ["DELETED", "FieldWrite", "FieldsConflictIndex", "choose_conflicts"]

ItemId = tuple[int, int]


class _Deleted:
    """The value recorded for a deletion in a conflict."""

    _instance: _Deleted | None = None

    def __new__(cls) -> _Deleted:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DELETED"

    def __reduce__(self) -> str:
        return "DELETED"


DELETED: Any = _Deleted()


@dataclass(frozen=True, slots=True)
class FieldWrite:
    """What one contribution did at one path: ``set`` a value, ``delete`` it, ``insert``."""

    path: str
    action: str
    value: Any


@dataclass(slots=True)
class _Entry:
    parent: str | ItemId  # root name or the item holding the parent type
    key: str | None  # map key, None for a list element
    length: int  # clock span: a reference to any clock inside it finds this entry


class FieldsConflictIndex:
    """Index of map items and their paths; finds conflicting pairs of contributions."""

    def __init__(self) -> None:
        self._items: dict[ItemId, _Entry] = {}
        self._clocks: dict[int, list[int]] = {}  # client -> sorted clocks of indexed items
        self._writes: dict[bytes, tuple[FieldWrite, ...]] = {}
        self._backlog: list[Contribution] = []
        self._reps: dict[bytes, tuple[FieldWrite, ...]] = {}

    def defer(self, c: Contribution) -> None:
        """Remember an applied contribution without decoding it yet."""
        self._backlog.append(c)

    def forget(self, cid: bytes) -> None:
        """``cid`` left the log (compaction). The backlog is indexed first, in order, as a
        ``writes_of`` now would: it must not outlive the log it shadows (a single writer
        never drains it, and it held every contribution ever applied)."""
        if self._backlog:
            self._catch_up()
        self._writes.pop(cid, None)
        self._reps.pop(cid, None)

    def seed(self, state: bytes, dropped: DroppedRanges | None = None) -> None:
        """Index the items of a checkpoint's fields state (no writes are attributed to it):
        later updates name those items as origins, and their paths must stay resolvable.
        ``dropped``: what compactions of that state dropped; a later update may still name
        the tail of a deleted key (an anchor) as origin, which resolves to its (parent, key)."""
        if dropped:
            anchors = dropped.anchors
            for client, start, end, tag in dropped.ranges():
                if tag >= 0:
                    anchor_parent, anchor_key = anchors[tag]
                    self._items[(client, start)] = _Entry(anchor_parent, anchor_key, end - start)
                    bisect.insort(self._clocks.setdefault(client, []), start)
        try:
            update = decode_update(state)
        except PayloadError:
            return
        todo = [it for it in update.items if it.kind not in ("gc", "skip")]
        while todo:  # an origin may name an item of a client encoded later: repeat
            left = []
            for it in todo:
                parent, key = self._parent_of(it)
                if parent is None:
                    left.append(it)
                    continue
                self._items[(it.client, it.clock)] = _Entry(parent, key, it.length)
                clocks = self._clocks.setdefault(it.client, [])
                if not clocks or clocks[-1] < it.clock:
                    clocks.append(it.clock)
                else:
                    bisect.insort(clocks, it.clock)
            if len(left) == len(todo):
                break
            todo = left

    def _catch_up(self) -> None:
        backlog, self._backlog = self._backlog, []
        for c in backlog:
            self._index(c)

    def writes_of(self, c: Contribution) -> tuple[FieldWrite, ...]:
        self._catch_up()
        w = self._writes.get(c.id)
        if w is None:
            w = self._index(c)
        return w

    # ---- decoding ------------------------------------------------------------------------
    def _index(self, c: Contribution) -> tuple[FieldWrite, ...]:
        payload = c.payload if c.kind == "fields" else _fields_part(c.payload)
        if not payload:
            self._writes[c.id] = ()
            return ()
        try:
            update = decode_update(payload)
        except PayloadError:
            # pycrdt accepted it but we cannot read it: no conflicts can be attributed to it,
            # identically on every replica (decoding is a pure function of the payload).
            self._writes[c.id] = ()
            return ()
        local: dict[ItemId, YItem] = {}
        created: set[ItemId] = set()  # containers created by this very update
        writes: list[FieldWrite] = []
        for it in update.items:
            if it.kind in ("gc", "skip"):
                continue
            iid = (it.client, it.clock)
            local[iid] = it
            parent, key = self._parent_of(it)
            if parent is None:
                continue
            self._items[iid] = _Entry(parent, key, it.length)
            clocks = self._clocks.setdefault(it.client, [])
            if not clocks or clocks[-1] < it.clock:
                clocks.append(it.clock)
            else:
                bisect.insort(clocks, it.clock)
            if it.kind == "type":
                created.add(iid)
            if it.kind == "deleted":
                # Set and deleted within this one update: Yjs still integrates the item, and
                # when it sorts after a concurrent set of the key it hides that value. For
                # conflicts it is a deletion of the key.
                if key is not None and not (
                    not isinstance(parent, str) and self._inside(parent, created)
                ):
                    path = self.path_of(parent)
                    if path is not None:
                        writes.append(FieldWrite(_join(path, key), "delete", DELETED))
                continue
            if not isinstance(parent, str) and self._inside(parent, created):
                continue  # part of a container this update created: its value, not a write
            path = self.path_of(parent)
            if path is None:
                continue
            if key is not None:
                writes.append(FieldWrite(_join(path, key), "set", self._value(it, update.items)))
            else:
                writes.append(FieldWrite(_join(path, "[]"), "insert", None))
        deleted = {
            iid for client, clock, length in update.deletes
            for iid in self._indexed_in(client, clock, length)
        }
        spans = _Spans(update.deletes) if deleted else None
        for iid in sorted(deleted):
            entry = self._items[iid]
            if entry.key is None or iid in local:
                continue
            assert spans is not None
            if not isinstance(entry.parent, str) and self._inside(entry.parent, spans):
                continue  # deleted with its container: the container's deletion says it all
            path = self.path_of(entry.parent)
            if path is not None:
                writes.append(FieldWrite(_join(path, entry.key), "delete", DELETED))
        result = tuple(writes)
        self._writes[c.id] = result
        return result

    def _inside(self, parent: ItemId, among: set[ItemId] | _Spans) -> bool:
        """True when ``parent`` is, or lies inside, a container in ``among``: the containers
        an update created, or the clocks it deleted (an indexed container only)."""
        cur: str | ItemId = parent
        for _ in range(66):
            if isinstance(cur, str):
                return False
            entry = self._lookup(cur)
            if isinstance(among, set):
                if cur in among:
                    return True
            elif entry is not None and cur in among:
                return True
            if entry is None:
                return False
            cur = entry.parent
        return False

    def _parent_of(self, it: YItem) -> tuple[str | ItemId | None, str | None]:
        if it.parent is not None:
            return it.parent, it.parent_sub
        for ref in (it.origin, it.right_origin):
            if ref is None:
                continue
            entry = self._lookup(ref)
            if entry is not None:
                return entry.parent, entry.key
        return None, None

    def _lookup(self, ref: ItemId) -> _Entry | None:
        entry = self._items.get(ref)
        if entry is not None:
            return entry
        # ``ref`` may point inside a multi-clock item (list content); find the item start.
        clocks = self._clocks.get(ref[0])
        if not clocks:
            return None
        i = bisect.bisect_right(clocks, ref[1]) - 1
        if i < 0:
            return None
        entry = self._items.get((ref[0], clocks[i]))
        if entry is None or ref[1] >= clocks[i] + entry.length:
            return None  # a clock no indexed item covers (not the nearest item before it)
        return entry

    def _indexed_in(self, client: int, clock: int, length: int) -> list[ItemId]:
        """The indexed entries that hold a clock of ``[clock, clock + length)``: those that
        start there, and one that starts before and runs into it (a compacted state and yrs
        merge adjacent items of one chain, deleted ones included, into one entry)."""
        clocks = self._clocks.get(client)
        if not clocks:
            return []
        lo = bisect.bisect_left(clocks, clock)
        if lo and clocks[lo - 1] + self._items[(client, clocks[lo - 1])].length > clock:
            lo -= 1
        hi = bisect.bisect_left(clocks, clock + length)
        return [(client, k) for k in clocks[lo:hi]]

    def path_of(self, parent: str | ItemId, depth: int = 0) -> str | None:
        """The key path of a map or list, ``""`` for the root; ``None`` if unknown."""
        if isinstance(parent, str):
            return "" if parent == ROOT_NAME else None
        entry = self._lookup(parent)  # a merged entry holds the type's clock
        if entry is None or depth > 64:
            return None
        base = self.path_of(entry.parent, depth + 1)
        if base is None:
            return None
        return _join(base, entry.key if entry.key is not None else "[]")

    def _value(self, it: YItem, items: tuple[YItem, ...]) -> Any:
        if it.kind == "any" and it.values:
            return plain(it.values[-1])
        if it.kind == "binary" and it.values:
            raw = it.values[0]
            return bytes(raw) if isinstance(raw, bytes | bytearray) else raw
        if it.kind in ("string", "json", "embed") and it.values:
            return it.values[-1]
        if it.kind == "type":
            return _rebuild(it, items)
        return None

    # ---- conflicts -----------------------------------------------------------------------
    def conflicting(
        self, c: Contribution, others: list[Contribution]
    ) -> list[tuple[Contribution, FieldWrite, FieldWrite]]:
        """``(other, write of other, write of c)`` for each conflicting pair of writes."""
        mine = self._distinct(c)
        if not mine:
            return []
        out: list[tuple[Contribution, FieldWrite, FieldWrite]] = []
        index = _WriteIndex(mine)
        for o in others:
            out.extend((o, wo, wc) for wo, wc in index.pairs(self._distinct(o)))
        return out

    def _distinct(self, c: Contribution) -> tuple[FieldWrite, ...]:
        """``c``'s writes with one per (path, action): the first of those whose value has the
        smallest ``repr``. A batch that sets one key a thousand times holds a thousand writes
        there (each overwritten set counts as a deletion); the replica reports one conflict
        per location and pair of contributions, the smallest by (paths, actions, ``repr`` of
        the values), which these representatives still contain — so the pairs stay linear
        in the distinct writes."""
        got = self._reps.get(c.id)
        if got is None:
            best: dict[tuple[str, str], tuple[str, FieldWrite]] = {}
            for w in self.writes_of(c):
                r = repr(w.value)
                held = best.get((w.path, w.action))
                if held is None or r < held[0]:
                    best[(w.path, w.action)] = (r, w)
            got = self._reps[c.id] = tuple(w for _, w in best.values())
        return got


def choose_conflicts(
    c: Contribution, pairs: Iterable[tuple[Contribution, FieldWrite, FieldWrite]],
) -> list[tuple[str, Contribution, Contribution, FieldWrite, FieldWrite]]:
    """The conflicts to record for ``c`` from its related pairs (``conflicting``):
    ``(location, first, second, write of first, write of second)``, first/second in the
    order. One per pair of contributions and place: the outermost location wins (replacing
    ``tasks`` also deletes ``tasks/t1/status``; that is the same conflict, not a second one).
    Hits are sorted so the choice does not depend on which of the pair arrived last."""
    hits = []
    for other, w_other, w_mine in pairs:
        first, second = (other, c) if other.order_key < c.order_key else (c, other)
        wf: FieldWrite = w_other if first is other else w_mine
        ws: FieldWrite = w_mine if first is other else w_other
        location = min(wf.path, ws.path, key=len)
        # a replacement both deletes the old item and sets the new one: show the set
        rank = (wf.action == "delete", ws.action == "delete")
        hits.append((location.count("/"), location, wf.path, ws.path, rank,
                     repr(wf.value), repr(ws.value), other.id, first, second, wf, ws))
    hits.sort(key=lambda h: h[:8])
    taken: dict[bytes, list[str]] = {}
    out: list[tuple[str, Contribution, Contribution, FieldWrite, FieldWrite]] = []
    for _, location, _, _, _, _, _, oid, first, second, wf, ws in hits:
        places = taken.setdefault(oid, [])
        if any(location == p or location.startswith(p + "/") for p in places):
            continue
        places.append(location)
        out.append((location, first, second, wf, ws))
    return out


class _WriteIndex:
    """One contribution's writes by path and by every ancestor of a path, so each write of
    another contribution meets only the writes it may be related to: linear in the writes of
    both, not in their product (a full group-commit batch has 8,192). ``pairs`` yields what a
    comparison of every pair with ``_related`` would, in the same order."""

    def __init__(self, mine: tuple[FieldWrite, ...]) -> None:
        self.mine = mine
        self.at: dict[str, list[int]] = {}
        self.under: dict[str, list[int]] = {}
        for i, w in enumerate(mine):
            self.at.setdefault(w.path, []).append(i)
            for prefix in _ancestors(w.path):
                self.under.setdefault(prefix, []).append(i)

    def pairs(self, theirs: Iterable[FieldWrite]) -> Iterator[tuple[FieldWrite, FieldWrite]]:
        at, under, mine = self.at, self.under, self.mine
        for wo in theirs:
            found = [*at.get(wo.path, ()), *under.get(wo.path, ())]
            for prefix in _ancestors(wo.path):
                found.extend(at.get(prefix, ()))
            if len(found) > 1:
                found.sort()
            for i in found:
                if _related(wo, mine[i]):
                    yield wo, mine[i]


class _Spans:
    """An update's delete set, to ask whether it deletes one clock."""

    def __init__(self, deletes: Iterable[tuple[int, int, int]]) -> None:
        per: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in deletes:
            per.setdefault(client, []).append((clock, clock + length))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for client, spans in per.items():
            spans.sort()
            self._starts[client] = [a for a, _ in spans]
            ends: list[int] = []
            for _, b in spans:  # running maximum: a span may hold the next one
                ends.append(max(b, ends[-1]) if ends else b)
            self._ends[client] = ends

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple):
            return False
        client, clock = item
        starts = self._starts.get(client)
        if starts is None:
            return False
        i = bisect.bisect_right(starts, clock) - 1
        return i >= 0 and clock < self._ends[client][i]


def _fields_part(payload: bytes) -> bytes:
    """The Yjs update inside a ``multi`` payload, or ``b""``."""
    from hybridsync.regions._parts import decode_parts

    try:
        parts = decode_parts(payload)
    except PayloadError:
        return b""
    return next((p.data for p in parts if p.plane == "fields"), b"")


def _join(base: str, key: str) -> str:
    return f"{base}/{key}" if base else key


def _ancestors(path: str) -> list[str]:
    """Every ``p`` with ``path.startswith(p + "/")`` (what ``_related`` nests by)."""
    return [path[:i] for i, ch in enumerate(path) if ch == "/"]


def _related(a: FieldWrite, b: FieldWrite) -> bool:
    if a.path == b.path:
        if a.action == "delete" and b.action == "delete":
            return False
        return not (a.action == "insert" or b.action == "insert")
    if b.path.startswith(a.path + "/"):
        return a.action in ("set", "delete")
    if a.path.startswith(b.path + "/"):
        return b.action in ("set", "delete")
    return False


def _rebuild(holder: YItem, items: tuple[YItem, ...]) -> Any:
    """Plain value of a map or list created in the same update (its children follow it)."""
    hid = (holder.client, holder.clock)
    if holder.type_ref == 1:  # Map
        out: dict[str, Any] = {}
        for it in items:
            if it.parent == hid and it.parent_sub is not None and it.kind != "deleted":
                out[it.parent_sub] = _rebuild(it, items) if it.kind == "type" else (
                    plain(it.values[-1]) if it.values else None
                )
        return dict(sorted(out.items()))
    if holder.type_ref == 0:  # Array
        seq: list[Any] = []
        for it in items:
            if it.parent == hid or (it.parent is None and _chain_from(it, hid, items)):
                if it.kind == "type":
                    seq.append(_rebuild(it, items))
                elif it.kind == "any":
                    seq.extend(plain(v) for v in it.values)
        return seq
    return None


def _chain_from(it: YItem, hid: ItemId, items: tuple[YItem, ...]) -> bool:
    """True when a list element without written parent follows, by origins, one of ``hid``."""
    seen = 0
    cur: YItem | None = it
    by_id = {(x.client, x.clock + k): x for x in items for k in range(max(x.length, 1))}
    while cur is not None and cur.parent is None and cur.origin is not None and seen < 10_000:
        cur = by_id.get(cur.origin)
        seen += 1
    return cur is not None and cur.parent == hid
