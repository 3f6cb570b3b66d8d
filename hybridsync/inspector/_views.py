"""What the inspector shows, as JSON-ready dicts: pure reads of a :class:`Memory` (and of a
:class:`Peer`'s sessions), no I/O.

Everything here is bounded: the fields tree stops after ``MAX_TREE_NODES`` nodes and clips
long strings, a history page holds at most ``MAX_HISTORY_PAGE`` entries, the scan for a
region's last change looks at most ``REGION_SCAN_LIMIT`` contributions back. Numbers that
JavaScript cannot hold exactly (ints beyond 2**53, HLC timestamps, non-finite floats) travel
as strings, so the page never shows a rounded value.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hybridsync.causal import Contribution
from hybridsync.causal._hlc import hlc_split
from hybridsync.errors import ConfigError, PayloadError
from hybridsync.fields._conflicts import DELETED, FieldsConflictIndex, FieldWrite
from hybridsync.regions._parts import decode_parts
from hybridsync.replica import Change, Conflict, Memory

if TYPE_CHECKING:
    from hybridsync.peer import Peer

__all__ = [
    "MAX_HISTORY_PAGE",
    "MAX_TREE_NODES",
    "MemoryViews",
    "change_json",
    "parse_cursor",
    "plain_json",
]

MAX_TREE_NODES = 2_000  # nodes of the fields tree sent to the page (the rest is counted)
MAX_STRING_CHARS = 400  # a longer string value is clipped in the tree (its length is given)
MAX_BYTES_PREVIEW = 32  # bytes shown as hex in the tree
MAX_HISTORY_PAGE = 500
DEFAULT_HISTORY_PAGE = 100
MAX_CONFLICTS_PAGE = 1_000
REGION_SCAN_LIMIT = 10_000  # contributions looked at (newest first) for regions' last change
MAX_DECODE_BYTES = 256 << 10  # a larger fields update is summarised by its size only
MAX_INDEX_STATE_BYTES = 16 << 20  # a larger fields document is not indexed for the history
_PREVIEW_CHARS = 60
_CACHE_ENTRIES = 8_192
_SAFE_INT = 1 << 53
_CURSOR = re.compile(r"^([0-9]{1,20})-([0-9a-f]{64})$")


# ---- values -------------------------------------------------------------------------------
def plain_json(value: Any) -> Any:
    """``value`` as strict JSON (no NaN): bytes as ``{"$bytes": hex}``, big ints and
    non-finite floats tagged as strings (``{"$bigint": ...}``, ``{"$float": "nan"}``)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else {"$bigint": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    if value is DELETED:
        return {"$deleted": True}
    return {"$repr": repr(value)[:MAX_STRING_CHARS]}


def _preview(value: Any) -> str:
    """A one-line preview of a written value (clipped)."""
    if isinstance(value, Mapping):
        return "{…}" if value else "{}"
    if isinstance(value, list | tuple):
        return "[…]" if value else "[]"
    if value is DELETED:
        return "deleted"
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)  # exact, however large
    elif isinstance(value, bytes | bytearray | memoryview):
        text = f"0x{bytes(value)[:MAX_BYTES_PREVIEW].hex()} ({len(value)} bytes)"
    else:
        text = json.dumps(plain_json(value), ensure_ascii=False)
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS - 1] + "…"


def _leaf(value: Any) -> dict[str, Any]:
    """A tree leaf: ``type`` and the exact ``text`` to show (clipped strings say so)."""
    if value is None:
        return {"type": "null", "text": "null"}
    if isinstance(value, bool):
        return {"type": "bool", "text": "true" if value else "false"}
    if isinstance(value, int):
        return {"type": "int", "text": str(value)}
    if isinstance(value, float):
        return {"type": "float", "text": repr(value)}
    if isinstance(value, str):
        node: dict[str, Any] = {"type": "str", "text": value[:MAX_STRING_CHARS]}
        if len(value) > MAX_STRING_CHARS:
            node["clipped"] = len(value)
        return node
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        node = {"type": "bytes", "text": data[:MAX_BYTES_PREVIEW].hex(), "size": len(data)}
        if len(data) > MAX_BYTES_PREVIEW:
            node["clipped"] = len(data)
        return node
    return {"type": "other", "text": repr(value)[:MAX_STRING_CHARS]}


def fields_tree(value: Mapping[str, Any], *, max_nodes: int = MAX_TREE_NODES) -> dict[str, Any]:
    """The fields as a typed tree: maps ``{"type": "map", "entries": [[key, node], ...]}``
    (keys sorted), lists ``{"type": "list", "items": [...]}``, leaves from :func:`_leaf`.
    After ``max_nodes`` nodes the remaining children of a container are only counted
    (``"more": n``). Breadth first (top-level keys come first) and iterative."""
    budget = [max_nodes]

    def container(v: Any) -> dict[str, Any] | None:
        if isinstance(v, Mapping):
            return {"type": "map", "size": len(v), "entries": []}
        if isinstance(v, list | tuple):
            return {"type": "list", "size": len(v), "items": []}
        return None

    root = container(value)
    assert root is not None
    queue: deque[tuple[Any, dict[str, Any]]] = deque([(value, root)])  # breadth first
    while queue:
        src, node = queue.popleft()
        if node["type"] == "map":
            children: list[tuple[Any, Any]] = sorted(
                ((str(k), v) for k, v in src.items()), key=lambda kv: kv[0])
        else:
            children = list(enumerate(src))
        for i, (key, child) in enumerate(children):
            if budget[0] <= 0:
                node["more"] = len(children) - i
                break
            budget[0] -= 1
            sub = container(child)
            out = sub if sub is not None else _leaf(child)
            if sub is not None:
                queue.append((child, sub))
            if node["type"] == "map":
                node["entries"].append([key, out])
            else:
                node["items"].append(out)
    root["nodes"] = max_nodes - budget[0]
    root["truncated"] = budget[0] <= 0
    return root


# ---- time ---------------------------------------------------------------------------------
def hlc_json(hlc: int) -> dict[str, Any]:
    """An HLC timestamp: wall milliseconds, logical counter, ISO text, and the raw value as a
    string (it does not fit a JavaScript number)."""
    ms, logical = hlc_split(hlc)
    try:
        iso = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        iso = f"{ms} ms"
    return {"ms": ms, "logical": logical, "iso": iso.replace("+00:00", "Z"), "raw": str(hlc)}


# ---- cursors ------------------------------------------------------------------------------
def cursor_of(c: Contribution) -> str:
    """The history cursor of ``c``: its place ``(lamport, id)`` in the deterministic order."""
    return f"{c.lamport}-{c.id.hex()}"


def parse_cursor(text: str) -> tuple[int, bytes]:
    """``"lamport-idhex"`` → the order key; :class:`ConfigError` if malformed."""
    m = _CURSOR.match(text)
    if m is None:
        raise ConfigError("a history cursor looks like LAMPORT-ID (64 hex digits)")
    return int(m.group(1)), bytes.fromhex(m.group(2))


def change_json(ch: Change) -> dict[str, Any]:
    """One ``Memory.observe`` change, as pushed on the event stream."""
    return {
        "id": ch.contribution,
        "author": ch.author,
        "seq": ch.seq,
        "local": ch.local,
        "kind": ch.kind,
        "note": ch.note,
        "paths": list(ch.paths[:50]),
        "more_paths": max(0, len(ch.paths) - 50),
    }


def conflict_json(c: Conflict) -> dict[str, Any]:
    return {
        "plane": c.plane,
        "kind": c.kind,
        "location": c.location,
        "authors": list(c.authors),
        "contributions": list(c.contributions),
        "paths": list(c.paths),
        "values": [plain_json(v) for v in c.values],
        "detail": c.detail[:2_000],
    }


class _Lru(OrderedDict[bytes, Any]):
    def remember(self, key: bytes, value: Any) -> Any:
        self[key] = value
        if len(self) > _CACHE_ENTRIES:
            self.popitem(last=False)
        return value

    def recall(self, key: bytes) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value


class MemoryViews:
    """JSON views of one replica (and optionally its :class:`Peer`), with small caches keyed
    by contribution id (content-addressed, so a cached entry never goes stale)."""

    def __init__(self, mem: Memory, peer: Peer | None = None) -> None:
        self.mem = mem
        self.peer = peer
        self._targets = _Lru()  # id -> what the contribution touched
        self._index: FieldsConflictIndex | None = None
        self._indexed: set[bytes] = set()  # contributions whose items the index holds

    # ---- parts of the state ------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        mem = self.mem
        return {
            "space": mem.space,
            "peer": mem.peer,
            "incarnation": str(mem.incarnation),
            "url": self.peer.url if self.peer is not None else None,
            "digest": mem.state_digest(),
            "heads": list(mem.heads),
        }

    def stats(self) -> dict[str, Any]:
        st = self.mem.stats()
        out = {k: v for k, v in st.as_dict().items() if k != "retired"}
        out["retired"] = list(st.retired)
        return out

    def fields(self) -> dict[str, Any]:
        value = self.mem.fields.to_dict()
        return {"fields": plain_json(value), "tree": fields_tree(value)}

    def regions(self) -> list[dict[str, Any]]:
        """Every region: name, kind, size, a text preview, and its last change (the newest
        contribution in the deterministic order that touched it, looking back at most
        ``REGION_SCAN_LIMIT`` contributions)."""
        items = self.mem.region_bytes()
        want = {name for _, name, _ in items}
        last: dict[str, Contribution] = {}
        history = self.mem.history()
        for c in reversed(history[-REGION_SCAN_LIMIT:]):
            if len(last) == len(want):
                break
            if c.kind == "fields":
                continue
            for plane, name in self._region_parts(c):
                if plane != "fields" and name in want and name not in last:
                    last[name] = c
        out = []
        for kind, name, data in sorted(items, key=lambda t: t[1]):
            entry: dict[str, Any] = {"name": name, "kind": kind, "bytes": len(data)}
            if kind == "text":
                text = data[:4096].decode("utf-8", errors="replace")
                entry["lines"] = data.count(b"\n") + (1 if data and not data.endswith(b"\n")
                                                      else 0)
                entry["preview"] = text[:200]
            lc = last.get(name)
            entry["last_change"] = None if lc is None else {
                "id": lc.id.hex(), "author": lc.author, "seq": lc.seq, "note": lc.note,
                "hlc": hlc_json(lc.hlc),
            }
            out.append(entry)
        return out

    def _region_parts(self, c: Contribution) -> tuple[tuple[str, str], ...]:
        cached = self._targets.recall(b"p" + c.id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            parts = tuple((p.plane, p.region) for p in decode_parts(c.payload)
                          if p.plane != "cut")
        except PayloadError:
            parts = ()
        return self._targets.remember(b"p" + c.id, parts)  # type: ignore[no-any-return]

    def _sync_index(self, history: list[Contribution]) -> None:
        """Keep our index of the fields document's items (key paths by item id) current: it
        resolves what an update writes when its items name their key only through an origin
        (every overwrite of a key). Seeded once from the current state (which also covers
        compacted history), then fed each new contribution once, in the causal order. Our
        own instance: the replica's conflict index is never touched."""
        if self._index is None:
            try:
                state = self.mem.doc.get_update()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # pycrdt's PanicException derives from BaseException
                return
            if len(state) > MAX_INDEX_STATE_BYTES:
                return
            self._index = FieldsConflictIndex()
            self._index.seed(state)
            self._indexed = {c.id for c in history}  # their items are in the state
            return
        for c in history:
            if c.id not in self._indexed:
                self._indexed.add(c.id)
                self._targets.remember(c.id, self._describe(c))
        if len(self._indexed) > 2 * len(history) + 1024:  # compaction dropped some
            self._indexed &= {c.id for c in history}

    def _field_targets(self, c: Contribution, update: bytes) -> list[str]:
        """What a Yjs update did to the fields, by path: ``set`` (with a short preview of the
        value), ``deleted``, ``insert`` into a list. Falls back to a summary when the update
        is too large or cannot be resolved."""
        if len(update) > MAX_DECODE_BYTES:
            return [f"fields ({len(update):,} B update)"]
        index = self._index
        writes: tuple[FieldWrite, ...] = ()
        if index is not None:
            writes = index.writes_of(c)  # reads the fields part of a multi payload itself
            index.forget(c.id)
        out: list[str] = []
        seen: set[str] = set()
        overwritten = {w.path for w in writes if w.action == "set"}
        for w in writes:
            if w.action == "delete" and w.path in overwritten:
                continue  # the old value an overwrite replaced: the set says it all
            if w.action == "set":
                text = f"fields: {w.path} = {_preview(w.value)}"
            elif w.action == "delete":
                text = f"fields: {w.path} deleted"
            else:
                text = f"fields: {w.path} insert"
            if text not in seen:
                seen.add(text)
                out.append(text)
        if len(out) > 20:
            out[20:] = [f"fields: … {len(out) - 20} more"]
        return out or ["fields (no resolvable write)"]

    def targets(self, c: Contribution) -> list[str]:
        """What a contribution changed, in words: ``fields: path = value`` (or ``deleted``,
        ``insert``), ``text: name``, ``buffer: name``, ``deleted region: name``."""
        cached = self._targets.recall(c.id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        return self._targets.remember(c.id, self._describe(c))  # type: ignore[no-any-return]

    def _describe(self, c: Contribution) -> list[str]:
        if c.kind == "fields":
            return self._field_targets(c, c.payload)
        out: list[str] = []
        try:
            parts = decode_parts(c.payload)
        except PayloadError:
            parts = []
        for p in parts:
            if p.plane == "fields":
                out.extend(self._field_targets(c, p.data))
            elif p.plane == "cut":
                continue  # GC bookkeeping (docs/gc.md), no content
            elif p.plane == "delete":
                out.append(f"deleted region: {p.region}")
            else:
                out.append(f"{p.plane}: {p.region}")
        return out

    def entry(self, c: Contribution, dots: Callable[[bytes], str | None]) -> dict[str, Any]:
        return {
            "id": c.id.hex(),
            "cursor": cursor_of(c),
            "author": c.author,
            "seq": c.seq,
            "lamport": c.lamport,
            "hlc": hlc_json(c.hlc),
            "kind": c.kind,
            "note": c.note,
            "payload_bytes": len(c.payload),
            "parents": [{"id": p.hex(), "dot": dots(p)} for p in c.parents],
            "changes": self.targets(c),
        }

    def history(self, *, after: str | None = None, limit: int = DEFAULT_HISTORY_PAGE,
                tail: bool = False) -> dict[str, Any]:
        """A page of the causal history in the deterministic order ``(lamport, id)``: the
        entries after the cursor ``after`` (from the start when None), or with ``tail`` the
        last ``limit`` entries. ``next`` is the cursor to ask for the following page (None at
        the end). A contribution that arrives later may sort before a cursor already read:
        the order is causal, not arrival."""
        if isinstance(limit, bool) or not isinstance(limit, int) or \
                not 1 <= limit <= MAX_HISTORY_PAGE:
            raise ConfigError(f"limit must be an int in [1, {MAX_HISTORY_PAGE}]")
        if after is not None and tail:
            raise ConfigError("give either after= or tail=, not both")
        hist = self.mem.history()
        self._sync_index(hist)
        if tail:
            start = max(0, len(hist) - limit)
        elif after is None:
            start = 0
        else:
            start = bisect.bisect_right(hist, parse_cursor(after), key=lambda c: c.order_key)
        page = hist[start:start + limit]
        dot_of = {c.id: f"{c.author}#{c.seq}" for c in page}
        need = {p for c in page for p in c.parents if p not in dot_of}
        if need:
            for c in hist:
                if c.id in need:
                    dot_of[c.id] = f"{c.author}#{c.seq}"
        end = start + len(page)
        return {
            "total": len(hist),
            "compacted": self.mem.compacted_upto is not None,
            "start": start,
            "entries": [self.entry(c, dot_of.get) for c in page],
            "next": cursor_of(page[-1]) if page and end < len(hist) else None,
            "last": cursor_of(hist[-1]) if hist else None,
        }

    def conflicts(self, *, limit: int = 100) -> dict[str, Any]:
        """The newest ``limit`` conflicts (oldest first) and how many there are."""
        if isinstance(limit, bool) or not isinstance(limit, int) or \
                not 1 <= limit <= MAX_CONFLICTS_PAGE:
            raise ConfigError(f"limit must be an int in [1, {MAX_CONFLICTS_PAGE}]")
        all_ = self.mem.conflicts()
        return {"total": len(all_), "conflicts": [conflict_json(c) for c in all_[-limit:]]}

    def sessions(self) -> dict[str, Any]:
        """Live sessions of the peer with their sync lag, and the replicas this one has sync
        state with but no session now. ``lacks``: contributions we hold that the remote is
        not known to hold (from what it acknowledged or sent); ``ahead``: the reverse."""
        ours = self.mem.version_vector.to_dict()
        links = _link_knowledge(self.mem)
        rows: list[dict[str, Any]] = []
        live = dict(self.peer.sessions) if self.peer is not None else {}
        for name in sorted(live.keys() | links.keys()):
            known = links.get(name)
            row: dict[str, Any] = {"peer": name, "connected": name in live}
            if known is not None:
                row["lacks"] = sum(max(0, n - known.get(a, 0)) for a, n in ours.items())
                row["ahead"] = sum(max(0, n - ours.get(a, 0)) for a, n in known.items())
                row["known"] = dict(sorted(known.items()))
            else:
                row["lacks"] = row["ahead"] = None
                row["known"] = None
            s = live.get(name)
            if s is not None:
                row.update(
                    url=s.url, listen_url=s.listen_url, initiator=s.initiator, state=s.state,
                    bytes_in=s.bytes_in, bytes_out=s.bytes_out, frames_in=s.frames_in,
                    frames_out=s.frames_out, queued=s.queued,
                    last_frame_age_s=round(s.idle_s, 3), age_s=round(s.age_s, 3),
                )
            rows.append(row)
        return {
            "network": self.peer is not None,
            "version_vector": dict(sorted(ours.items())),
            "sessions": rows,
            "counters": self.peer.stats() if self.peer is not None else {},
        }

    def state(self, *, history: int = 50, conflicts: int = 100) -> dict[str, Any]:
        """Everything the page shows, in one document."""
        return {
            "identity": self.identity(),
            "stats": self.stats(),
            **self.fields(),
            "regions": self.regions(),
            "history": self.history(limit=history, tail=True),
            "conflicts": self.conflicts(limit=conflicts),
            "network": self.sessions(),
        }


def _link_knowledge(mem: Memory) -> dict[str, dict[str, int]]:
    """Per remote replica, the version vector it is known to hold (what it acknowledged or
    sent us). The one read of a private attribute of ``Memory`` in the inspector: the
    replica's link state (``Memory._links``, read only, copied) has no public accessor."""
    links = getattr(mem, "_links", None)
    if not isinstance(links, dict):
        return {}
    out: dict[str, dict[str, int]] = {}
    for name, link in links.items():
        known = getattr(link, "known", None)
        if isinstance(name, str) and isinstance(known, dict):
            out[name] = dict(known)
    return out
