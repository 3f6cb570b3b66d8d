"""Compaction of Yjs map tombstones at a causal cut (G5 for the fields plane).

yrs replaces the content of a deleted item by ``ContentDeleted`` but keeps the item: a map
entry's items form a chain (one per ``set`` of that key), and a later ``set`` names the
current item of its key as its *origin*, deleted or not. So every overwrite and every deleted
key stays in the document forever (``docs/gc.md`` has the numbers).

At a *cut* — a causally closed set F of contributions that every member holds — this module
replaces the deleted map items of F's state by ``GC`` ranges (so the state vector is
unchanged) and keeps every other item with its id and content. What makes that safe
(``docs/gc.md`` proves it):

* A later ``set`` of key k by a replica that holds F names as origin the item of k that is
  last in F's chain (the *tail*), or a later item. Only the tail of a **deleted** key can be
  dropped and still be named, so for each such tail we remember its (parent, key): the
  *anchors* of :class:`DroppedRanges`. :func:`rewrite_update` turns an origin that points at
  an anchor into "no origin, parent and key written" — the item then lands exactly where it
  landed in the uncompacted document, because nothing else of F remains in that chain.
* Contributions **not** causally after F (concurrent with part of it) can name any item of a
  chain. Pass their updates as ``concurrent``: every map chain they write to is kept whole,
  and so is every sequence they insert into, with the containers above them (a deleted type
  that holds kept items stays a type), so their key paths resolve as without compaction.
  Under the stability rule of DESIGN.md §1 every replica holds all of them at the cut.
* Items inside a deleted (or garbage-collected) type are invisible for ever; they are dropped
  too and any later item that points into them becomes ``GC``, as yjs itself does with an
  item whose origin or parent is garbage-collected.

With those two inputs the compacted state is a function of F (and the concurrent set) only,
written canonically (clients in descending order, adjacent mergeable items merged, deleted
content as ``ContentDeleted``), and every replica that compacts and rewrites ends in the same
document as a replica that never compacted.

Array, text and XML children are sequence items: a later insert names its neighbours (deleted
or not) as origin and right origin, and YATA orders concurrent inserts by them, so their
tombstones stay (as ``ContentDeleted`` runs, which yrs merges).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from hybridsync.errors import PayloadError
from hybridsync.fields._yencode import (
    REF_DELETED,
    REF_DOC,
    REF_GC,
    REF_MOVE,
    REF_SKIP,
    REF_TYPE,
    RawStruct,
    RawUpdate,
    decode_raw,
    deleted_content,
    encode_raw,
    merge_content,
    scan_items,
    split_content,
    with_header,
    write_uint,
)
from hybridsync.fields._yupdate import ItemId, _string, _uint

__all__ = [
    "VOID",
    "CompactedState",
    "DroppedRanges",
    "compact_state",
    "export_needed",
    "export_update",
    "rewrite_needed",
    "rewrite_update",
]

Parent = str | ItemId
"""A root type's name, or the id of the item that holds a nested type."""

VOID = -1
"""Tag of a dropped range nothing may name any more: a later item pointing into it is GC."""

_TYPE_WEAK_LINK = 7


def _gc(client: int, clock: int, length: int) -> RawStruct:
    return RawStruct(client, clock, length, REF_GC, None, None, None, None, b"")


# -- the dropped ranges -------------------------------------------------------------------


@dataclass(frozen=True)
class DroppedRanges:
    """Clock ranges a compaction turned into GC, per client, each tagged with :data:`VOID`
    or the index of its anchor ``(parent, key)`` in :attr:`anchors`.

    Size: one range per run of dropped clocks between kept items of one client, plus one
    anchor per deleted key (the tail of its chain). Ranges of one client are disjoint and
    sorted; ``starts``/``ends``/``tags`` are parallel per client.
    """

    starts: dict[int, tuple[int, ...]] = field(default_factory=dict)
    ends: dict[int, tuple[int, ...]] = field(default_factory=dict)
    tags: dict[int, tuple[int, ...]] = field(default_factory=dict)
    anchors: tuple[tuple[Parent, str], ...] = ()

    @staticmethod
    def build(
        ranges: Iterable[tuple[int, int, int, int]], anchors: Sequence[tuple[Parent, str]]
    ) -> DroppedRanges:
        """From ``(client, start, end, tag)`` ranges (any order, disjoint per client);
        adjacent ranges with the same tag are merged."""
        per: dict[int, list[tuple[int, int, int]]] = {}
        for client, start, end, tag in ranges:
            if end <= start:
                raise PayloadError(f"empty dropped range {client}:{start}..{end}")
            if tag != VOID and not 0 <= tag < len(anchors):
                raise PayloadError(f"dropped range {client}:{start} has unknown tag {tag}")
            per.setdefault(client, []).append((start, end, tag))
        starts: dict[int, tuple[int, ...]] = {}
        ends: dict[int, tuple[int, ...]] = {}
        tags: dict[int, tuple[int, ...]] = {}
        for client in sorted(per):
            merged: list[list[int]] = []
            for start, end, tag in sorted(per[client]):
                if merged and start < merged[-1][1]:
                    raise PayloadError(f"overlapping dropped ranges at {client}:{start}")
                if merged and start == merged[-1][1] and tag == merged[-1][2] == VOID:
                    merged[-1][1] = end
                else:
                    merged.append([start, end, tag])
            starts[client] = tuple(r[0] for r in merged)
            ends[client] = tuple(r[1] for r in merged)
            tags[client] = tuple(r[2] for r in merged)
        return DroppedRanges(starts, ends, tags, tuple(anchors))

    def __len__(self) -> int:
        """Number of ranges."""
        return sum(len(s) for s in self.starts.values())

    def __bool__(self) -> bool:
        return bool(self.starts)

    def ranges(self) -> Iterator[tuple[int, int, int, int]]:
        """Every range as ``(client, start, end, tag)``, clients ascending."""
        for client, starts in self.starts.items():
            for start, end, tag in zip(starts, self.ends[client], self.tags[client], strict=True):
                yield client, start, end, tag

    def clocks(self) -> int:
        """Total number of dropped clocks."""
        return sum(end - start for _, start, end, _ in self.ranges())

    def find(self, item: ItemId) -> int | None:
        """The tag of the range holding ``item``, or ``None`` when it was not dropped."""
        client, clock = item
        starts = self.starts.get(client)
        if starts is None:
            return None
        i = bisect.bisect_right(starts, clock) - 1
        if i >= 0 and clock < self.ends[client][i]:
            return self.tags[client][i]
        return None

    def overlaps(self, client: int, start: int, end: int) -> list[tuple[int, int, int]]:
        """The parts of ``[start, end)`` of ``client`` that were dropped, as
        ``(start, end, tag)`` clipped to the interval, in clock order."""
        starts = self.starts.get(client)
        if starts is None:
            return []
        ends = self.ends[client]
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        out: list[tuple[int, int, int]] = []
        while i < len(starts) and starts[i] < end:
            if ends[i] > start:
                out.append((max(starts[i], start), min(ends[i], end), self.tags[client][i]))
            i += 1
        return out

    @functools.cached_property
    def tails(self) -> dict[tuple[Parent, str], ItemId]:
        """For each anchored ``(parent, key)``, the id of its tail (the latest anchor wins)."""
        out: dict[tuple[Parent, str], tuple[int, ItemId]] = {}
        for client, start, _, tag in self.ranges():
            if tag != VOID:
                best = out.get(self.anchors[tag])
                if best is None or tag > best[0]:
                    out[self.anchors[tag]] = (tag, (client, start))
        return {chain: item for chain, (_, item) in out.items()}

    def pruned(
        self, needed: Iterable[ItemId], recent: DroppedRanges,
        forget: AbstractSet[ItemId] = frozenset(),
    ) -> DroppedRanges:
        """Only the ranges a later update can still name (G5: what the fields checkpoint
        remembers stays bounded by the live keys, not by the churn):

        * the latest anchor of every deleted key (an uncompacted writer names it as origin,
          and :func:`export_update` makes sets sent to Yjs clients name it), unless its tail
          is in ``forget``;
        * every range holding one of ``needed`` (what retained contributions name);
        * every range of ``recent`` (the latest cut's, kept whole to be safe).

        Older void ranges and superseded anchors go: under the stability rule every update
        that could name them is already held, and what it names is in ``needed``. Anchors
        whose tail is in ``forget`` go too unless ``needed`` names them (the caller knows
        that nobody writes against the uncompacted chain any more: docs/gc.md).
        """
        tails = set(self.tails.values()) - set(forget)
        want: dict[int, list[int]] = {}
        for client, clock in needed:
            want.setdefault(client, []).append(clock)
        for clocks in want.values():
            clocks.sort()
        kept: list[tuple[int, int, int, int]] = []
        for client, start, end, tag in self.ranges():
            hit = (tag != VOID and (client, start) in tails) or (
                not (tag != VOID and (client, start) in forget)
                and bool(recent.overlaps(client, start, end))
            )
            if not hit and client in want:
                clocks = want[client]
                i = bisect.bisect_left(clocks, start)
                hit = i < len(clocks) and clocks[i] < end
            if hit:
                kept.append((client, start, end, tag))
        used = sorted({t for _, _, _, t in kept if t != VOID})  # keeps the anchors' order
        renumber = {t: i for i, t in enumerate(used)}
        return DroppedRanges.build(
            [(c, s, e, t if t == VOID else renumber[t]) for c, s, e, t in kept],
            [self.anchors[t] for t in used],
        )

    def union(self, other: DroppedRanges) -> DroppedRanges:
        """The ranges of two compactions (for example two successive cuts) together."""
        shift = len(self.anchors)
        both = list(self.ranges()) + [
            (c, s, e, t if t == VOID else t + shift) for c, s, e, t in other.ranges()
        ]
        return DroppedRanges.build(both, self.anchors + other.anchors)

    def encode(self) -> bytes:
        """A compact byte form (lib0 varints), for storing next to the checkpoint."""
        out = bytearray()
        parents = sorted({parent for parent, _ in self.anchors}, key=_parent_sort_key)
        number = {parent: i for i, parent in enumerate(parents)}
        write_uint(out, len(parents))
        for parent in parents:
            if isinstance(parent, str):
                out.append(1)
                _write_str(out, parent)
            else:
                out.append(0)
                write_uint(out, parent[0])
                write_uint(out, parent[1])
        write_uint(out, len(self.anchors))
        for parent, key in self.anchors:
            write_uint(out, number[parent])
            _write_str(out, key)
        write_uint(out, len(self.starts))
        for client, starts in self.starts.items():
            write_uint(out, client)
            write_uint(out, len(starts))
            previous = 0
            for start, end, tag in zip(starts, self.ends[client], self.tags[client], strict=True):
                write_uint(out, start - previous)
                write_uint(out, end - start)
                write_uint(out, tag + 1)
                previous = end
        return bytes(out)

    @staticmethod
    def decode(data: bytes) -> DroppedRanges:
        """Inverse of :meth:`encode`; :class:`PayloadError` on malformed input."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise PayloadError(f"dropped ranges must be bytes, not {type(data).__name__}")
        buf = bytes(data)
        end = len(buf)
        try:
            n, pos = _uint(buf, 0)
            if n > end:
                raise PayloadError("dropped ranges: parent count exceeds the input")
            parents: list[Parent] = []
            for _ in range(n):
                kind = buf[pos]
                pos += 1
                if kind == 1:
                    name, pos = _string(buf, pos, end)
                    parents.append(name)
                elif kind == 0:
                    p_client, pos = _uint(buf, pos)
                    p_clock, pos = _uint(buf, pos)
                    parents.append((p_client, p_clock))
                else:
                    raise PayloadError(f"dropped ranges: bad parent kind {kind}")
            n, pos = _uint(buf, pos)
            if n > end:
                raise PayloadError("dropped ranges: anchor count exceeds the input")
            anchors: list[tuple[Parent, str]] = []
            for _ in range(n):
                which, pos = _uint(buf, pos)
                if which >= len(parents):
                    raise PayloadError(f"dropped ranges: unknown parent {which}")
                key, pos = _string(buf, pos, end)
                anchors.append((parents[which], key))
            n_clients, pos = _uint(buf, pos)
            if n_clients > end:
                raise PayloadError("dropped ranges: client count exceeds the input")
            ranges: list[tuple[int, int, int, int]] = []
            for _ in range(n_clients):
                client, pos = _uint(buf, pos)
                count, pos = _uint(buf, pos)
                if count * 3 > end - pos:
                    raise PayloadError("dropped ranges: range count exceeds the input")
                previous = 0
                for _ in range(count):
                    gap, pos = _uint(buf, pos)
                    length, pos = _uint(buf, pos)
                    tag, pos = _uint(buf, pos)
                    start = previous + gap
                    previous = start + length
                    ranges.append((client, start, previous, tag - 1))
        except IndexError:
            raise PayloadError("dropped ranges: truncated") from None
        if pos != end:
            raise PayloadError(f"dropped ranges: {end - pos} trailing bytes")
        return DroppedRanges.build(ranges, anchors)


def _write_str(out: bytearray, text: str) -> None:
    raw = text.encode()
    write_uint(out, len(raw))
    out += raw


@dataclass(frozen=True)
class CompactedState:
    """The result of :func:`compact_state`."""

    update: bytes
    """A v1 update: load it into a fresh ``pycrdt.Doc`` instead of the checkpoint state."""
    dropped: DroppedRanges
    """What later updates must be rewritten against (:func:`rewrite_update`)."""
    kept_items: int
    """Items left (GC ranges not counted)."""
    dropped_items: int
    """Items of the checkpoint state turned into GC."""


# -- an index of the structs of one or more updates ------------------------------------------


class _Index:
    """Structs by id: per client, sorted start clocks and the structs."""

    def __init__(self) -> None:
        self.starts: dict[int, list[int]] = {}
        self.structs: dict[int, list[RawStruct]] = {}

    def add_client(self, client: int, structs: Sequence[RawStruct]) -> None:
        self.starts[client] = [s.clock for s in structs]
        self.structs[client] = list(structs)

    def find(self, item: ItemId) -> RawStruct | None:
        client, clock = item
        starts = self.starts.get(client)
        if starts is None:
            return None
        i = bisect.bisect_right(starts, clock) - 1
        if i >= 0:
            s = self.structs[client][i]
            if clock < s.clock + s.length:
                return s
        return None


class _Deletes:
    """A delete set as sorted, merged intervals per client."""

    def __init__(self, ranges: Iterable[tuple[int, int, int]]) -> None:
        per: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in ranges:
            if length > 0:
                per.setdefault(client, []).append((clock, clock + length))
        self.intervals: dict[int, list[tuple[int, int]]] = {}
        for client, spans in per.items():
            merged: list[tuple[int, int]] = []
            for start, end in sorted(spans):
                if merged and start <= merged[-1][1]:
                    if end > merged[-1][1]:
                        merged[-1] = (merged[-1][0], end)
                else:
                    merged.append((start, end))
            self.intervals[client] = merged
        self._starts = {c: [s for s, _ in v] for c, v in self.intervals.items()}

    def covers(self, client: int, start: int, end: int) -> bool:
        """Whether every clock of ``[start, end)`` is deleted."""
        starts = self._starts.get(client)
        if starts is None:
            return False
        i = bisect.bisect_right(starts, start) - 1
        return i >= 0 and self.intervals[client][i][1] >= end


_DEAD = ("", "")  # sentinel location: the item can never be visible (yjs would GC it)

Location = tuple[Parent, str | None]
"""Where an item lives: its parent type and, for a map entry, its key."""


class _Resolver:
    """Finds each item's parent and key the way yjs' ``Item.getMissing`` does: written, or
    copied from the origin item (else the right origin item); an item whose origin or right
    origin is a GC range is dead."""

    def __init__(self, index: _Index) -> None:
        self.index = index
        self.memo: dict[ItemId, Location] = {}

    def location(self, s: RawStruct) -> Location | None:
        """The item's location, :data:`_DEAD`, or ``None`` if a dependency is missing."""
        path: list[RawStruct] = []
        seen: set[ItemId] = set()
        cur = s
        found: Location | None
        while True:
            key = (cur.client, cur.clock)
            if key in self.memo:
                found = self.memo[key]
                break
            if key in seen:
                raise PayloadError(f"origins of item {key[0]}:{key[1]} form a cycle")
            seen.add(key)
            path.append(cur)
            if cur.origin is None and cur.right_origin is None:
                if cur.parent is None:
                    raise PayloadError(f"item {key[0]}:{key[1]} names no parent")
                found = (cur.parent, cur.parent_sub)
                break
            left = self.index.find(cur.origin) if cur.origin is not None else None
            right = self.index.find(cur.right_origin) if cur.right_origin is not None else None
            if (cur.origin is not None and left is None) or (
                cur.right_origin is not None and right is None
            ):
                found = None
                break
            if (left is not None and not left.is_item) or (right is not None and not right.is_item):
                found = _DEAD
                break
            nxt = left if left is not None else right
            assert nxt is not None
            cur = nxt
        if found is None:
            return None
        for item in path:
            self.memo[(item.client, item.clock)] = found
        return found


def _check_supported(s: RawStruct) -> None:
    ref = s.ref
    if ref == REF_DOC:
        raise PayloadError(f"item {s.client}:{s.clock} is a sub-document: cannot compact")
    if ref == REF_MOVE:
        raise PayloadError(f"item {s.client}:{s.clock} is a yrs move: cannot compact")
    if ref == REF_TYPE and _uint(s.content, 0)[0] == _TYPE_WEAK_LINK:
        raise PayloadError(f"item {s.client}:{s.clock} is a yrs weak link: cannot compact")


# -- compaction -------------------------------------------------------------------------------


def compact_state(state_update: bytes, *, concurrent: Iterable[bytes] = ()) -> CompactedState:
    """Drop the deleted map entries of a checkpoint state.

    ``state_update`` is the full v1 state (``Doc.get_update()``) of a document holding exactly
    the contributions of the cut F. ``concurrent`` are the updates of every contribution that
    is not causally after all of F (empty when the cut has none); the map chains they write to
    are kept whole. Every later update must go through :func:`rewrite_update` with the
    returned :attr:`CompactedState.dropped` before it is applied to the compacted document.

    The result depends only on the items and deletions of ``state_update`` and on
    ``concurrent``, not on how yrs happened to split or merge them. Raises
    :class:`PayloadError` on malformed input, on a state with gaps (skip structs, a client not
    starting at clock 0), on sub-documents, yrs moves and weak links, and on an item whose
    dependencies are not in the state.
    """
    raw = decode_raw(state_update)
    index = _Index()
    for client, written in raw.clients:
        if client in index.starts:
            raise PayloadError(f"client {client} appears twice in the state")
        if not written or written[0].clock != 0:
            raise PayloadError(f"client {client} does not start at clock 0: not a full state")
        for s in written:
            if s.ref == REF_SKIP:
                raise PayloadError(f"skip struct at {client}:{s.clock}: not a full state")
            if s.is_item:
                _check_supported(s)
        # Empty items (yrs writes them after a split inside a UTF-8 character) hold no clock
        # and no content: they are left out.
        index.add_client(client, [s for s in written if s.length])
    deletes = _Deletes((c, k, n) for c, spans in raw.deletes for k, n in spans)
    resolver = _Resolver(index)

    # 1. Where every item lives; which items are map entries; which types are alive.
    location: dict[ItemId, Location] = {}
    for structs in index.structs.values():
        for s in structs:
            if s.is_item:
                loc = resolver.location(s)
                if loc is None:
                    raise PayloadError(
                        f"item {s.client}:{s.clock} depends on an item the state lacks"
                    )
                location[(s.client, s.clock)] = loc

    alive_memo: dict[ItemId, bool] = {}

    def parent_alive(parent: Parent) -> bool:
        """Whether a parent type exists and neither it nor an ancestor is deleted."""
        chain: list[ItemId] = []
        result = True
        cur: Parent = parent
        while not isinstance(cur, str):
            if cur in alive_memo:
                result = alive_memo[cur]
                break
            chain.append(cur)
            t = index.find(cur)
            if (
                t is None
                or not t.is_item
                or t.ref != REF_TYPE
                or t.clock != cur[1]
                or deletes.covers(t.client, t.clock, t.clock + 1)
            ):
                result = False
                break
            loc = location[(t.client, t.clock)]
            if loc is _DEAD or len(chain) > len(location):
                result = False
                break
            cur = loc[0]
        for item in chain:
            alive_memo[item] = result
        return result

    chains: dict[tuple[Parent, str], list[RawStruct]] = {}
    dead: dict[ItemId, Location] = {}
    for structs in index.structs.values():
        for s in structs:
            if not s.is_item:
                continue
            loc = location[(s.client, s.clock)]
            if loc is _DEAD or not parent_alive(loc[0]):
                dead[(s.client, s.clock)] = loc
            elif loc[1] is not None:
                chains.setdefault((loc[0], loc[1]), []).append(s)

    touched = _touched_chains(index, concurrent)

    # 2. Which clock ranges are dropped, and with which tag.
    anchors: list[tuple[Parent, str]] = []
    dropped_spans: list[tuple[int, int, int, int]] = []
    for structs in index.structs.values():
        for s in structs:
            loc = dead.get((s.client, s.clock))
            if loc is not None and not (loc is not _DEAD and (loc[0], loc[1]) in touched):
                dropped_spans.append((s.client, s.clock, s.clock + s.length, VOID))
    for chain_key in sorted(chains, key=_chain_sort_key):
        items = chains[chain_key]
        if chain_key in touched:
            continue
        gone = [s for s in items if deletes.covers(s.client, s.clock, s.clock + s.length)]
        if not gone:
            continue
        tail = _chain_tail(items)
        for s in gone:
            end = s.clock + s.length
            if tail[0] == s.client and s.clock <= tail[1] < end:
                anchors.append(chain_key)
                tag = len(anchors) - 1
                if s.clock < tail[1]:
                    dropped_spans.append((s.client, s.clock, tail[1], VOID))
                dropped_spans.append((s.client, tail[1], tail[1] + 1, tag))
                if tail[1] + 1 < end:
                    dropped_spans.append((s.client, tail[1] + 1, end, VOID))
            else:
                dropped_spans.append((s.client, s.clock, end, VOID))
    dropped = DroppedRanges.build(dropped_spans, anchors)

    # 3. The compacted structs: kept items (headers rewritten, deleted content emptied),
    # everything else as GC, adjacent GC ranges and mergeable items merged.
    clients_out: list[tuple[int, tuple[RawStruct, ...]]] = []
    gc_ranges: list[tuple[int, int, int]] = []
    kept_items = dropped_items = 0
    # A deleted type that still holds kept items (a chain a concurrent update writes to,
    # inside a map F deleted) stays a type: yjs turns an item whose parent is not a type into
    # GC when it loads it, and the chain would be lost after all (its key paths with it).
    holders = {
        loc[0] for iid, loc in location.items()
        if loc is not _DEAD and not isinstance(loc[0], str) and dropped.find(iid) is None
    }
    for client in sorted(index.structs, reverse=True):
        out: list[RawStruct] = []
        for s in index.structs[client]:
            end = s.clock + s.length
            if not s.is_item or dropped.find((s.client, s.clock)) is not None:
                if s.is_item:
                    dropped_items += 1
                _append_gc(out, client, s.clock, s.length)
                continue
            kept_items += 1
            fully_deleted = deletes.covers(client, s.clock, end)
            if (
                fully_deleted
                and s.ref != REF_DELETED
                and not (s.ref == REF_TYPE and (s.client, s.clock) in holders)
            ):
                s = RawStruct(
                    s.client,
                    s.clock,
                    s.length,
                    REF_DELETED | (s.info & 0xE0),
                    s.origin,
                    s.right_origin,
                    s.parent,
                    s.parent_sub,
                    deleted_content(s.length),
                )
            origin = s.origin if s.origin is not None and dropped.find(s.origin) is None else None
            right = (
                s.right_origin
                if s.right_origin is not None and dropped.find(s.right_origin) is None
                else None
            )
            if origin != s.origin or right != s.right_origin:
                parent, sub = location[(s.client, s.clock)]
                s = with_header(s, origin=origin, right_origin=right, parent=parent, parent_sub=sub)
            _append_item(out, s, deletes)
        for s in out:
            if not s.is_item:
                gc_ranges.append((client, s.clock, s.length))
        if out:
            clients_out.append((client, tuple(out)))

    all_deletes = _Deletes(
        [(c, k, n) for c, spans in raw.deletes for k, n in spans] + gc_ranges
    ).intervals
    delete_set = tuple(
        (client, tuple((start, end - start) for start, end in all_deletes[client]))
        for client in sorted(all_deletes)
    )
    update = encode_raw(RawUpdate(tuple(clients_out), delete_set))
    return CompactedState(update, dropped, kept_items, dropped_items)


def _parent_sort_key(parent: Parent) -> tuple[int, str, int, int]:
    if isinstance(parent, str):
        return (0, parent, 0, 0)
    return (1, "", parent[0], parent[1])


def _chain_sort_key(chain: tuple[Parent, str]) -> tuple[tuple[int, str, int, int], str]:
    return (_parent_sort_key(chain[0]), chain[1])


def _append_gc(out: list[RawStruct], client: int, clock: int, length: int) -> None:
    if out and not out[-1].is_item:
        last = out[-1]
        out[-1] = _gc(client, last.clock, last.length + length)
    else:
        out.append(_gc(client, clock, length))


def _append_item(out: list[RawStruct], s: RawStruct, deletes: _Deletes) -> None:
    """Append ``s``, merged into the previous item when yjs would merge the two: same client
    and kind, consecutive clocks, ``s`` continues right after it (origin = its last id, same
    right origin) and both are deleted or both are not. yjs splits such an item again exactly
    where another item needs it, so merging never changes what the document means."""
    if out and out[-1].is_item:
        left = out[-1]
        if (
            left.ref == s.ref
            and s.origin == (left.client, left.clock + left.length - 1)
            and s.right_origin == left.right_origin
            and deletes.covers(left.client, left.clock, left.clock + left.length)
            == deletes.covers(s.client, s.clock, s.clock + s.length)
        ):
            merged = merge_content(s.ref, left.content, s.content)
            if merged is not None:
                out[-1] = RawStruct(
                    left.client,
                    left.clock,
                    left.length + s.length,
                    left.info,
                    left.origin,
                    left.right_origin,
                    left.parent,
                    left.parent_sub,
                    merged,
                )
                return
    out.append(s)


def _chain_tail(items: Sequence[RawStruct]) -> ItemId:
    """The last element of one map key's chain: the key's current item in a document that
    holds exactly these items.

    yjs integrates a map entry right after its origin; concurrent entries with the same origin
    are ordered by client id (ascending), and an entry's later overwrites follow it. The chain
    is therefore a pre-order walk of the origin forest with children in ascending client order
    (among equal clients the earlier clock ends up last), and its last element is found by
    following the last child from the last root.
    """
    by_origin: dict[ItemId, list[RawStruct]] = {}
    roots: list[RawStruct] = []
    own = {(s.client, s.clock): s for s in items}
    starts: dict[int, list[int]] = {}
    for s in items:
        starts.setdefault(s.client, []).append(s.clock)
    for clocks in starts.values():
        clocks.sort()

    def holder(item: ItemId) -> RawStruct | None:
        clocks = starts.get(item[0])
        if clocks is None:
            return None
        i = bisect.bisect_right(clocks, item[1]) - 1
        if i < 0:
            return None
        s = own[(item[0], clocks[i])]
        return s if item[1] < s.clock + s.length else None

    for s in items:
        if s.origin is not None and holder(s.origin) is not None:
            by_origin.setdefault(s.origin, []).append(s)
        else:
            roots.append(s)

    def last(candidates: Iterable[tuple[int, int]]) -> tuple[int, int]:
        return max(candidates, key=lambda e: (e[0], -e[1]))

    current = last((s.client, s.clock) for s in roots)
    for _ in range(sum(s.length for s in items) + 1):
        at = holder(current)
        assert at is not None
        children = [(c.client, c.clock) for c in by_origin.get(current, ())]
        if current[1] + 1 < at.clock + at.length:
            children.append((current[0], current[1] + 1))
        if not children:
            return current
        current = last(children)
    raise PayloadError("map chain does not end")  # unreachable: each step visits a new element


def _touched_chains(
    index: _Index, concurrent: Iterable[bytes]
) -> set[tuple[Parent, str | None]]:
    """The map chains (parent, key) that the concurrent updates write to or delete from
    (a deletion of a dropped item would leave no trace for the conflict index to find), and
    as (parent, None) the sequences (lists, texts) they insert into or delete from: inside a
    deleted container those are dead, and the insert names one of their items."""
    extra = _Index()
    new_items: list[RawStruct] = []
    deleted: list[RawStruct] = []
    for update in concurrent:
        raw = decode_raw(update)
        for _, written in raw.clients:
            new_items.extend(s for s in written if s.is_item)
        for client, spans in raw.deletes:
            starts, structs = index.starts.get(client), index.structs.get(client)
            if not starts or structs is None:
                continue
            for clock, length in spans:
                i = max(0, bisect.bisect_right(starts, clock) - 1)
                while i < len(structs) and structs[i].clock < clock + length:
                    if structs[i].is_item and structs[i].clock + structs[i].length > clock:
                        deleted.append(structs[i])
                    i += 1
    per: dict[int, list[RawStruct]] = {}
    for s in sorted(new_items, key=lambda s: (s.client, s.clock)):
        known = per.setdefault(s.client, [])
        if known and s.clock < known[-1].clock + known[-1].length:
            continue  # a duplicate
        known.append(s)
    for client, known in per.items():
        extra.add_client(client, known)

    class _Both(_Index):
        def find(self, item: ItemId) -> RawStruct | None:
            return index.find(item) or extra.find(item)

    resolver = _Resolver(_Both())
    touched: set[tuple[Parent, str | None]] = set()
    parents: list[Parent] = []
    for s in (*new_items, *deleted):
        loc = resolver.location(s)
        if loc is not None and loc is not _DEAD:
            touched.add((loc[0], loc[1]))
            parents.append(loc[0])
    # ... and the chains of every container above them, deleted or not: a replica that never
    # compacted finds the key path of such a write (the conflict index does), so must we
    seen: set[Parent] = set()
    while parents:
        parent = parents.pop()
        if isinstance(parent, str) or parent in seen:
            continue
        seen.add(parent)
        holder = index.find(parent)
        if holder is None or not holder.is_item:
            continue
        loc = resolver.location(holder)
        if loc is None or loc is _DEAD:
            continue
        touched.add((loc[0], loc[1]))
        parents.append(loc[0])
    return touched


# -- rewriting later updates ------------------------------------------------------------------


def rewrite_needed(update: bytes, dropped: DroppedRanges) -> bool:
    """Whether :func:`rewrite_update` could change ``update``: some item of it lies in a
    dropped range, or names one as origin, right origin or parent. From the items' headers
    only (:func:`~hybridsync.fields._yencode.scan_items`), so an update that names nothing
    dropped — almost every one — costs a few microseconds instead of a full decode. True
    when the scan cannot tell (the full, validating path decides)."""
    if not dropped:
        return False
    heads = scan_items(update)
    if heads is None:
        return True
    find = dropped.find
    for client, clock, length, origin, right, parent, _ in heads:
        if length and dropped.overlaps(client, clock, clock + length):
            return True
        if origin is not None and find(origin) is not None:
            return True
        if right is not None and find(right) is not None:
            return True
        if isinstance(parent, tuple) and find(parent) is not None:
            return True
    return False


def export_needed(update: bytes, dropped: DroppedRanges) -> bool:
    """Whether :func:`export_update` could change ``update``: some item of it sets a key
    that has an anchor. Header scan only; True when the scan cannot tell."""
    tails = dropped.tails
    if not tails:
        return False
    heads = scan_items(update)
    if heads is None:
        return True
    return any(
        origin is None and right is None and parent is not None and sub is not None
        and (parent, sub) in tails
        for _, _, _, origin, right, parent, sub in heads
    )


def rewrite_update(update: bytes, dropped: DroppedRanges) -> bytes:
    """An update made for the uncompacted document, made fit for the compacted one.

    * An item whose origin is an anchor (the tail of a deleted key) gets no origin and its
      parent and key written: it lands where it landed before the compaction.
    * An item whose origin, right origin or parent lies in any other dropped range becomes a
      GC range of the same length (yjs would garbage-collect it: it is invisible).
    * The parts of a struct that lie inside dropped ranges (a peer re-sending old items)
      become GC ranges; the compacted document already holds those clocks.

    Returns ``update`` itself when nothing in it points into a dropped range. Deterministic:
    the result depends only on ``update`` and ``dropped``. :class:`PayloadError` on malformed
    input.
    """
    raw = decode_raw(update)
    if not dropped:
        return update
    changed = False
    clients_out: list[tuple[int, tuple[RawStruct, ...]]] = []
    for client, structs in raw.clients:
        out: list[RawStruct] = []
        for s in structs:
            pieces = _rewrite_struct(s, dropped)
            if pieces is None:
                out.append(s)
            else:
                changed = True
                out.extend(pieces)
        clients_out.append((client, tuple(out)))
    if not changed:
        return update
    return encode_raw(RawUpdate(tuple(clients_out), raw.deletes))


def _rewrite_struct(s: RawStruct, dropped: DroppedRanges) -> list[RawStruct] | None:
    """``None`` when ``s`` needs no change, else its replacement structs."""
    if not s.is_item:
        return None
    if not s.length:
        fixed = _rewrite_header(s, dropped)
        return None if fixed is s else ([fixed] if fixed.is_item else [])
    end = s.clock + s.length
    inside = dropped.overlaps(s.client, s.clock, end)
    if not inside:
        fixed = _rewrite_header(s, dropped)
        return None if fixed is s else [fixed]
    pieces: list[RawStruct] = []
    rest = s
    for start, stop, _ in inside:
        if start > rest.clock:
            head, rest = _split(rest, start - rest.clock)
            pieces.append(_rewrite_header(head, dropped))
        pieces.append(_gc(s.client, start, stop - start))
        if stop >= end:
            return pieces
        _, rest = _split(rest, stop - rest.clock)
    pieces.append(_rewrite_header(rest, dropped))
    return pieces


def _split(s: RawStruct, offset: int) -> tuple[RawStruct, RawStruct]:
    """yjs' ``splitItem``: the right part continues after the left (origin = its last id)."""
    if s.ref == REF_GC:
        return _gc(s.client, s.clock, offset), _gc(s.client, s.clock + offset, s.length - offset)
    left_content, right_content = split_content(s.ref, s.content, offset)
    left = RawStruct(
        s.client,
        s.clock,
        offset,
        s.info,
        s.origin,
        s.right_origin,
        s.parent,
        s.parent_sub,
        left_content,
    )
    right = RawStruct(
        s.client,
        s.clock + offset,
        s.length - offset,
        (s.info & (0x1F | 0x20 | 0x40)) | 0x80,
        (s.client, s.clock + offset - 1),
        s.right_origin,
        None,
        None,
        right_content,
    )
    return left, right


def _rewrite_header(s: RawStruct, dropped: DroppedRanges) -> RawStruct:
    if s.ref == REF_GC:
        return s
    o_tag = dropped.find(s.origin) if s.origin is not None else None
    r_tag = dropped.find(s.right_origin) if s.right_origin is not None else None
    p_tag = dropped.find(s.parent) if isinstance(s.parent, tuple) else None
    if o_tag is None and r_tag is None and p_tag is None:
        return s
    if VOID in (o_tag, r_tag) or p_tag is not None:
        return _gc(s.client, s.clock, s.length)
    tag = o_tag if o_tag is not None else r_tag
    assert tag is not None
    parent, key = dropped.anchors[tag]
    origin = s.origin if o_tag is None else None
    right = s.right_origin if r_tag is None else None
    return with_header(s, origin=origin, right_origin=right, parent=parent, parent_sub=key)


def export_update(update: bytes, dropped: DroppedRanges) -> bytes:
    """An update made on the compacted document, made fit for replicas that have not compacted
    yet (the inverse of :func:`rewrite_update` on anchors).

    A compacted document has no item for a deleted key, so a ``set`` of it is written with no
    origin; a replica holding the uncompacted chain would place such an item by client id
    among the chain's old items (possibly *before* them, losing the write). Here the origin
    becomes the key's anchor — the tail an uncompacted writer would have named — so the item
    lands where it lands on every replica, compacted (after :func:`rewrite_update`, which
    restores this very item) or not. When several anchors name one key (successive cuts), the
    latest wins. Returns ``update`` itself when nothing changes; :class:`PayloadError` on
    malformed input.
    """
    raw = decode_raw(update)
    tails = dropped.tails
    if not tails:
        return update
    changed = False
    clients_out: list[tuple[int, tuple[RawStruct, ...]]] = []
    for client, structs in raw.clients:
        out: list[RawStruct] = []
        for s in structs:
            if (
                s.is_item
                and s.origin is None
                and s.right_origin is None
                and s.parent is not None
                and s.parent_sub is not None
            ):
                tail = tails.get((s.parent, s.parent_sub))
                if tail is not None:
                    s = with_header(s, origin=tail, right_origin=None, parent=None, parent_sub=None)
                    changed = True
            out.append(s)
        clients_out.append((client, tuple(out)))
    if not changed:
        return update
    return encode_raw(RawUpdate(tuple(clients_out), raw.deletes))
