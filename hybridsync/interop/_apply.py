"""Checks on a Yjs update from a client outside the causal log, before it reaches pycrdt.

``Memory.apply_yjs_update`` commits such an update as a local contribution. Two things must
never happen on the way (DESIGN.md §5): pycrdt buffering an update whose dependencies are
missing (silently, and ``get_update()`` then leaves it out), and the fields document taking
something the fields model cannot hold (``docs/fields.md``). :func:`check_outside_update`
reads the update with our own decoder (``fields/_yupdate.py``) and refuses, with
:class:`~hybridsync.errors.YjsDependencyError` or :class:`~hybridsync.errors.YjsUpdateError`:

* structs of a client that start beyond what this replica and the update together hold, or
  an origin, right origin, parent or deleted range naming such an item;
* items of another root type than ``fields``, or list items directly in the root map;
* ``Y.Text`` (string, embed and format content), XML types, sub-documents, yrs weak links
  and moves;
* JavaScript ``BigInt`` values beyond ±2**53 (the number model stores those as
  ``{"$bigint": "<digits>"}``);
* ``Y.Map``/``Y.Array`` nesting deeper than :data:`~hybridsync.fields._values.MAX_DEPTH`
  (pycrdt's ``to_py`` recurses in Python: a thousand levels would break every read).

Nesting depth needs the parents of items the document already holds. :class:`_TypeIndex`
keeps, per document, the parent of every run of items and the depth of every nested type,
brought up to date from ``doc.get_update(last state vector)`` only when an update creates a
nested type.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import pycrdt

from hybridsync.errors import PayloadError, YjsDependencyError, YjsMessageError, YjsUpdateError
from hybridsync.fields._plane import ROOT_NAME
from hybridsync.fields._values import MAX_DEPTH
from hybridsync.fields._yupdate import ItemId, YItem, YUpdate, decode_update
from hybridsync.interop._yproto import decode_state_vector

__all__ = ["check_outside_update", "is_noop_update"]

_U64: Final = 1 << 64
_SAFE: Final = 1 << 53
_TYPE_ARRAY: Final = 0
_TYPE_MAP: Final = 1
_TYPE_NAMES: Final = {
    2: "Y.Text",
    3: "Y.XmlElement",
    4: "Y.XmlFragment",
    5: "Y.XmlHook",
    6: "Y.XmlText",
    7: "a yrs weak link",
    9: "a sub-document",
    15: "a yrs placeholder type",
}
_REFUSED_KINDS: Final = {
    "string": "Y.Text content",
    "embed": "Y.Text embeds",
    "format": "Y.Text formatting",
    "doc": "sub-documents",
    "move": "yrs move ranges",
}

Parent = str | ItemId
"""A root type's name, or the id of the item that holds a nested type."""


def _decode(update: object) -> YUpdate:
    if not isinstance(update, bytes | bytearray | memoryview):
        raise YjsUpdateError(f"a Yjs update is bytes, not {type(update).__name__}")
    try:
        return decode_update(bytes(update))
    except PayloadError as exc:
        raise YjsUpdateError(str(exc)) from None


def _state_vector(doc: pycrdt.Doc[Any]) -> dict[int, int]:
    try:
        return decode_state_vector(doc.get_state(), limit=_U64)
    except YjsMessageError as exc:  # pragma: no cover - yrs writes well-formed vectors
        raise YjsUpdateError(f"unreadable state vector of the fields document: {exc}") from None


def check_outside_update(doc: pycrdt.Doc[Any], update: bytes) -> YUpdate:
    """Refuse ``update`` unless applying it to ``doc`` integrates all of it and stays inside
    the fields model (module docstring). Returns the decoded update. Reads ``doc`` only."""
    decoded = _decode(update)
    sv = _state_vector(doc)
    cover = _coverage(decoded, sv)
    has_types = False
    for item in decoded.items:
        if item.kind in ("gc", "skip"):
            continue
        for ref, what in ((item.origin, "origin"), (item.right_origin, "right origin")):
            if ref is not None and ref[1] >= cover.get(ref[0], 0):
                _missing(f"item {item.client}#{item.clock} has {what} {ref[0]}#{ref[1]}")
        parent = item.parent
        if isinstance(parent, tuple) and parent[1] >= cover.get(parent[0], 0):
            _missing(f"item {item.client}#{item.clock} is inside {parent[0]}#{parent[1]}")
        _check_content(item)
        if isinstance(parent, str):
            if parent != ROOT_NAME:
                raise YjsUpdateError(
                    f"root type {parent!r} is not part of the fields model: only the root "
                    f"Y.Map {ROOT_NAME!r} is synced"
                )
            if item.parent_sub is None:
                raise YjsUpdateError(
                    f"list items directly in the root {ROOT_NAME!r}: it is a Y.Map"
                )
        if item.kind == "type":
            has_types = True
    for client, clock, length in decoded.deletes:
        if clock + length > cover.get(client, 0):
            _missing(f"it deletes {client}#{clock}..{clock + length - 1}")
    if has_types:
        _index_for(doc).check_depth(decoded)
    return decoded


def _missing(what: str) -> None:
    raise YjsDependencyError(
        f"the update depends on items this replica does not hold: {what} (send sync step 1 "
        "and apply the full answer)"
    )


def _coverage(decoded: YUpdate, sv: dict[int, int]) -> dict[int, int]:
    """Per client, the clock up to which the replica plus the update hold every item; raises
    when the update's structs of a client leave a gap (yrs would keep them pending)."""
    cover = dict(sv)
    for item in decoded.items:
        if item.kind == "skip":
            continue  # a hole by definition: what follows must already be ours
        have = cover.get(item.client, 0)
        if item.clock > have:
            _missing(
                f"client {item.client} from clock {item.clock}, while this replica holds "
                f"its clocks below {have}"
            )
        end = item.clock + item.length
        if end > have:
            cover[item.client] = end
    return cover


def _check_content(item: YItem) -> None:
    refused = _REFUSED_KINDS.get(item.kind)
    if refused is not None:
        raise YjsUpdateError(
            f"{refused} cannot be stored in fields (item {item.client}#{item.clock}): use "
            "plain values, Y.Map and Y.Array (and a text region for long text)"
        )
    if item.kind == "type" and item.type_ref not in (_TYPE_ARRAY, _TYPE_MAP):
        name = _TYPE_NAMES.get(item.type_ref or 0, f"type ref {item.type_ref}")
        raise YjsUpdateError(
            f"{name} cannot be stored in fields (item {item.client}#{item.clock}): use "
            "Y.Map and Y.Array"
        )
    if item.kind in ("any", "json"):
        for value in item.values:
            _check_value(value, item)


def _check_value(value: object, item: YItem) -> None:
    stack = [value]
    while stack:  # bounded: the decoder limits nesting and the input's size limits the rest
        v = stack.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            if not -_SAFE <= v <= _SAFE:
                raise YjsUpdateError(
                    f"integer {v} in item {item.client}#{item.clock} is beyond ±2**53: write "
                    'big ints as {"$bigint": "<decimal digits>"} (docs/fields.md)'
                )
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def is_noop_update(doc: pycrdt.Doc[Any], update: bytes) -> bool:
    """True when ``doc`` already holds every struct and every deletion of ``update`` (what
    a client with nothing new sends as its sync step 2). Raises :class:`YjsUpdateError` if
    the update is malformed."""
    decoded = _decode(update)
    sv = _state_vector(doc)
    for item in decoded.items:
        if item.kind != "skip" and item.clock + item.length > sv.get(item.client, 0):
            return False
    if not decoded.deletes:
        return True
    ours = _decode(doc.get_update(doc.get_state()))  # no structs: our whole delete set
    ranges: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in ours.deletes:
        ranges.setdefault(client, []).append((clock, clock + length))
    merged = {c: _merge(r) for c, r in ranges.items()}
    for client, clock, length in decoded.deletes:
        if length and not _covered(merged.get(client, []), clock, clock + length):
            return False
    return True


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ranges.sort()
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _covered(ranges: list[tuple[int, int]], a: int, b: int) -> bool:
    i = bisect.bisect_right(ranges, (a, _U64)) - 1
    return i >= 0 and ranges[i][0] <= a and b <= ranges[i][1]


# ---- nesting depth -------------------------------------------------------------------------
@dataclass(slots=True)
class _Runs:
    """The runs of one client's items: starts (sorted), ends and parents (None: unknown)."""

    starts: list[int]
    ends: list[int]
    parents: list[Parent | None]

    def find(self, clock: int) -> int | None:
        i = bisect.bisect_right(self.starts, clock) - 1
        if i >= 0 and clock < self.ends[i]:
            return i
        return None


class _TypeIndex:
    """Parents of a document's items and depths of its nested types (root type = 0)."""

    def __init__(self) -> None:
        self.sv = b"\x00"
        self.runs: dict[int, _Runs] = {}
        self.depths: dict[ItemId, int] = {}  # nested type item -> depth (a root's child: 1)

    def sync(self, doc: pycrdt.Doc[Any]) -> None:
        """Take in what ``doc`` gained since the last call."""
        sv = doc.get_state()
        if sv == self.sv:
            return
        parents, depths = self._resolve(_decode(doc.get_update(self.sv)).items)
        for item, parent in parents:
            runs = self.runs.get(item.client)
            if runs is None:
                runs = self.runs[item.client] = _Runs([], [], [])
            i = bisect.bisect_left(runs.starts, item.clock)
            if i < len(runs.starts) and runs.starts[i] == item.clock:
                continue  # already known (a diff re-sends a sliced first item)
            runs.starts.insert(i, item.clock)
            runs.ends.insert(i, item.clock + item.length)
            runs.parents.insert(i, parent)
        self.depths.update(depths)
        self.sv = sv

    def parent_of(self, ref: ItemId) -> Parent | None:
        runs = self.runs.get(ref[0])
        if runs is None:
            return None
        i = runs.find(ref[1])
        return None if i is None else runs.parents[i]

    def _resolve(
        self, items: Iterable[YItem]
    ) -> tuple[list[tuple[YItem, Parent | None]], dict[ItemId, int]]:
        """Parents of ``items`` (explicit, or those of their origins, in the index or among
        ``items``) and the depth of each nested type among them."""
        todo = [it for it in items if it.kind != "skip"]
        local: dict[int, _Runs] = {}
        for it in todo:
            runs = local.setdefault(it.client, _Runs([], [], []))
            i = bisect.bisect_left(runs.starts, it.clock)
            runs.starts.insert(i, it.clock)
            runs.ends.insert(i, it.clock + it.length)
            runs.parents.insert(i, it.parent)

        def lookup(ref: ItemId) -> tuple[bool, Parent | None]:
            runs = local.get(ref[0])
            if runs is not None:
                i = runs.find(ref[1])
                if i is not None:
                    return runs.parents[i] is not None, runs.parents[i]
            return True, self.parent_of(ref)

        # Origins point anywhere in the update: settle parents in passes, each settling at
        # least one item or stopping (an origin inside a GC range has no known parent).
        pending = [it for it in todo if it.parent is None and it.kind != "gc"]
        for _ in range(len(pending) + 1):
            if not pending:
                break
            left = []
            for it in pending:
                ref = it.origin or it.right_origin
                found, parent = lookup(ref) if ref is not None else (True, None)
                if found:
                    runs = local[it.client]
                    runs.parents[runs.find(it.clock)] = parent  # type: ignore[index]
                else:
                    left.append(it)
            if len(left) == len(pending):
                break
            pending = left
        out: list[tuple[YItem, Parent | None]] = []
        for it in todo:
            runs = local[it.client]
            out.append((it, runs.parents[runs.find(it.clock)]))  # type: ignore[index]
        parent_of_type = {(it.client, it.clock): p for it, p in out if it.kind == "type"}
        depths: dict[ItemId, int] = {}
        for tid in parent_of_type:
            chain: list[ItemId] = []
            cur: ItemId | None = tid
            base = 0
            while cur is not None and cur not in depths:
                if cur in self.depths:
                    base = self.depths[cur]
                    break
                if len(chain) > len(parent_of_type):
                    break  # a cycle in forged input: leave the depth unknown (large)
                chain.append(cur)
                p = parent_of_type.get(cur)
                if isinstance(p, tuple):
                    cur = p
                else:
                    cur = None
                    base = 0
            else:
                if cur is not None:
                    base = depths[cur]
            for t in reversed(chain):
                base += 1
                depths[t] = base
        return out, depths

    def check_depth(self, decoded: YUpdate) -> None:
        _, depths = self._resolve(decoded.items)
        for (client, clock), depth in depths.items():
            if depth > MAX_DEPTH:
                raise YjsUpdateError(
                    f"Y.Map/Y.Array item {client}#{clock} would nest {depth} levels deep; "
                    f"fields nest at most {MAX_DEPTH}"
                )


_INDEXES: weakref.WeakKeyDictionary[pycrdt.Doc[Any], _TypeIndex] = weakref.WeakKeyDictionary()


def _index_for(doc: pycrdt.Doc[Any]) -> _TypeIndex:
    index = _INDEXES.get(doc)
    if index is None:
        index = _INDEXES[doc] = _TypeIndex()
    index.sync(doc)
    return index
