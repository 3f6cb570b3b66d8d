"""Text and buffer regions: working copies, shadows, the commit cycle and the folds.

Differential synchronization (Fraser 2009) mapped onto the causal log: the *shadow* is the
fold value as of this replica's heads; the cycle diffs the working copy against it and commits
the patch as part of one contribution; the fold of every replica applies the same patches in
the same order. See ``docs/diffsync.md`` for the point-by-point mapping.
"""

from __future__ import annotations

from typing import Any

from hybridsync.errors import ConfigError, PayloadError, RegionNotFound
from hybridsync.regions._buffer import (
    BufferRegion,
    _BufferState,
    buffer_layout,
    decode_delta,
    layout_from_wire,
)
from hybridsync.regions._bufferfold import BufferDelta, Layout
from hybridsync.regions._folds import FoldIssue, HappenedBefore, OrderKey
from hybridsync.regions._kinds import kind_issues, kind_rank, prune_loser
from hybridsync.regions._parts import Part, check_region_name, decode_parts, encode_parts
from hybridsync.regions._text import TextRegion, _TextState
from hybridsync.regions._textdiff import Hunk, decode_patch

__all__ = ["Part", "RegionsPlane", "decode_parts", "encode_parts"]


class RegionsPlane:
    """All text and buffer regions of one replica."""

    def __init__(self, happened_before: HappenedBefore) -> None:
        self._hb = happened_before
        self.texts: dict[str, _TextState] = {}
        self.buffers: dict[str, _BufferState] = {}
        self._deletes: list[Part] = []
        # the kind rule (_kinds.py): a name's state of the kind that lost, never visible
        self._losers: dict[str, _TextState | _BufferState] = {}
        # delete_region calls per name: a handle taken before one is stale (kept over reset)
        self.epochs: dict[str, int] = getattr(self, "epochs", {})

    # ---- handles -------------------------------------------------------------------------
    def text(self, name: str) -> TextRegion:
        check_region_name(name)
        self._check_no_pending_delete("text", name)
        if name in self.buffers:
            raise ConfigError(f"{name!r} is a buffer region, not a text")
        if name not in self.texts:
            self.texts[name] = _TextState(self._hb)
        return TextRegion(self, name)

    def buffer(self, name: str, shape: Any, dtype: Any, codec: str | None = None) -> BufferRegion:
        check_region_name(name)
        self._check_no_pending_delete("buffer", name)
        if name in self.texts:
            raise ConfigError(f"{name!r} is a text region, not a buffer")
        layout = buffer_layout(shape, dtype, codec)
        st = self.buffers.get(name)
        if st is None:
            self.buffers[name] = _BufferState(layout, self._hb)
        else:
            st.open(name, layout, any_codec=codec is None)
        return BufferRegion(self, name)

    def deletion_pending(self, name: str) -> bool:
        """Whether ``delete_region(name)`` waits for the next cycle."""
        return any(p.region == name for p in self._deletes)

    def _check_no_pending_delete(self, kind: str, name: str) -> None:
        """A handle taken between ``delete_region`` and the cycle that commits it would write
        into a region the cycle then deletes: its edits would vanish. Refuse it instead."""
        if any(p.region == name for p in self._deletes):
            call = f"mem.text({name!r})" if kind == "text" else f"mem.buffer({name!r}, shape=...)"
            raise ConfigError(f"region {name!r} is deleted in this transaction (delete_region): "
                              f"{call} re-creates it after the transaction commits")

    def delete(self, name: str) -> None:
        check_region_name(name)
        if name in self.texts:
            self._deletes.append(Part("delete", name, b"text"))
        elif name in self.buffers:
            self._deletes.append(Part("delete", name, b"buffer"))
        else:
            raise RegionNotFound(f"no text or buffer region named {name!r}")
        self.epochs[name] = self.epochs.get(name, 0) + 1

    def stale(self, kind: str, name: str, st: Any, epoch: int, gone: bytes | None) -> None:
        """Raise ConfigError if a handle taken at ``epoch``, when the deletion in effect was
        ``gone``, outlived a deletion of its region (a handle taken since re-creates it)."""
        call = f"mem.text({name!r})" if kind == "text" else f"mem.buffer({name!r}, shape=...)"
        if epoch != self.epochs.get(name, 0) and any(p.region == name for p in self._deletes):
            raise ConfigError(f"{kind} region {name!r} is deleted (delete_region, not yet "
                              f"committed): {call} re-creates it")
        if st.fold.deleted and st.fold._deleted_by != gone:
            raise ConfigError(f"{kind} region {name!r} was deleted (contribution "
                              f"{st.fold._deleted_by.hex()[:16]}) after this handle was "
                              f"taken: {call} gives a handle that re-creates it")

    def names(self) -> dict[str, str]:
        out = {n: "text" for n, st in self.texts.items() if st.fold.exists or st.working}
        out.update({n: "buffer" for n, st in self.buffers.items() if st.fold.exists})
        return dict(sorted(out.items()))

    # ---- the cycle -----------------------------------------------------------------------
    def cycle(self) -> list[Part]:
        """Diff every working copy against its shadow; the parts of one commit."""
        parts: list[Part] = []
        for name, st in self.texts.items():
            part = st.cycle_part(name)
            if part is not None:
                parts.append(part)
        for name, bst in self.buffers.items():
            part = bst.cycle_part(name)
            if part is not None:
                parts.append(part)
        if self._deletes:
            gone = {p.region for p in self._deletes}
            parts = [p for p in parts if p.region not in gone]  # the deletion supersedes them
        parts.extend(self._deletes)
        self._deletes = []
        return parts

    def revert(self) -> None:
        """Drop uncommitted edits: working copies return to their shadows."""
        for st in self.texts.values():
            st.revert()
        for bst in self.buffers.values():
            bst.revert()
        self._deletes = []

    @property
    def dirty(self) -> bool:
        if self._deletes or any(st.dirty for st in self.texts.values()):
            return True
        return any(b.dirty() for b in self.buffers.values())

    # ---- folding ---------------------------------------------------------------------------
    def validate(self, parts: list[Part]) -> list[tuple[Part, Any]]:
        """Decode every region part up front (so a bad one rejects the frame, not half of it)."""
        out: list[tuple[Part, Any]] = []
        for p in parts:
            if p.plane not in ("fields", "cut"):
                try:
                    check_region_name(p.region)
                except ConfigError as exc:
                    raise PayloadError(str(exc)) from None
            if p.plane == "text":
                check_region_name(p.region)
                out.append((p, decode_patch(p.data)))
            elif p.plane == "buffer":
                check_region_name(p.region)
                out.append((p, decode_delta(p.data)))
            elif p.plane == "delete":
                check_region_name(p.region)
                if p.data not in (b"text", b"buffer"):
                    raise PayloadError("a delete part names b'text' or b'buffer'")
                out.append((p, None))
        return out

    def fold(self, key: OrderKey, cid: bytes, decoded: list[tuple[Part, Any]]) -> list[str]:
        """Fold one contribution's region parts in; returns the regions whose value changed."""
        touched: list[str] = []
        for p, obj in decoded:
            if p.plane == "text":
                hunks: list[Hunk] = obj
                self._state_for("text", p.region).fold.add(key, cid, hunks)
            elif p.plane == "buffer":
                delta: BufferDelta = obj
                self._state_for("buffer", p.region, delta.layout).fold.add(key, cid, delta)
            elif p.plane == "delete":
                self._state_for(p.data.decode(), p.region).fold.add(key, cid, None)
            else:
                continue
            self._settle(p.region)
            touched.append(p.region)
        return touched

    def _state_for(self, kind: str, name: str, layout: Layout | None = None) -> Any:
        """The state that folds ``kind`` parts of ``name``, made if absent (``_settle`` then
        decides which of a text and a buffer of one name is visible)."""
        home: dict[str, Any] = self.texts if kind == "text" else self.buffers
        st = home.get(name)
        if st is not None:
            return st
        loser = self._losers.get(name)
        if loser is not None and isinstance(loser, _TextState) == (kind == "text"):
            return loser
        st = _TextState(self._hb) if kind == "text" else _BufferState(layout, self._hb)
        if name in self.texts or name in self.buffers:
            self._losers[name] = st
        else:
            home[name] = st
        return st

    def _settle(self, name: str) -> None:
        """The kind rule (``_kinds.py``): the kind whose first write sorts first is visible."""
        loser = self._losers.get(name)
        if loser is None:
            return
        shown: Any = self.texts.get(name) or self.buffers.get(name)
        if kind_rank(loser.fold) >= kind_rank(shown.fold):
            return
        if isinstance(shown, _TextState):
            del self.texts[name]
        else:
            del self.buffers[name]
        if isinstance(loser, _TextState):
            self.texts[name] = loser
        else:
            self.buffers[name] = loser
            loser.fold.touch_all()
        self._losers[name] = shown

    def refresh(self, names: list[str]) -> None:
        """After folding: working copies and shadows take the fold's value."""
        for name in dict.fromkeys(names):
            st = self.texts.get(name)
            if st is not None:
                st.refresh()
            bst = self.buffers.get(name)
            if bst is not None:
                bst.refresh()

    # ---- reporting -------------------------------------------------------------------------
    def issues(self) -> list[tuple[str, str, FoldIssue]]:
        out: list[tuple[str, str, FoldIssue]] = []
        for name, st in self.texts.items():
            out.extend(("text", name, i) for i in st.fold.issues())
        for name, bst in self.buffers.items():
            out.extend(("buffer", name, i) for i in bst.fold.issues())
        for name, lst in self._losers.items():
            kind, won = ("text", "buffer") if isinstance(lst, _TextState) else ("buffer", "text")
            out.extend((kind, name, i) for i in kind_issues(name, won, lst.fold))
        return out

    def content_bytes(self) -> int:
        n = 0
        for st in self.texts.values():
            if st.fold.exists:
                n += len(st.fold.value.encode())
        for bst in self.buffers.values():
            if bst.fold.exists:
                n += bst.fold.nbytes
        return n

    def digest_items(self) -> list[tuple[str, str, bytes]]:
        """(kind, name, value bytes) of every existing region, for convergence checks."""
        out = []
        for name, st in sorted(self.texts.items()):
            if st.fold.exists:
                out.append(("text", name, st.fold.value.encode()))
        for name, bst in sorted(self.buffers.items()):
            if bst.fold.exists:
                out.append(("buffer", name, bst.fold.data.tobytes()))
        return out

    # ---- garbage collection --------------------------------------------------------------
    def compact(self, upto: OrderKey) -> list[tuple[str, str, FoldIssue]]:
        """Fold every entry at or before ``upto`` into each region's base; drop tombstones of
        regions that are deleted with nothing left to fold. Returns the dropped issues."""
        out: list[tuple[str, str, FoldIssue]] = []
        pending = {p.region for p in self._deletes}
        for name, st in list(self.texts.items()):
            out.extend(("text", name, i) for i in st.fold.compact(upto))
            if st.fold.idle and not st.dirty and not st.working and name not in pending:
                del self.texts[name]
        for name, bst in list(self.buffers.items()):
            out.extend(("buffer", name, i) for i in bst.fold.compact(upto))
            if bst.fold.idle and name not in pending and not bst.working.any():
                del self.buffers[name]
        for name, lst in list(self._losers.items()):
            kind, won = ("text", "buffer") if isinstance(lst, _TextState) else ("buffer", "text")
            kept, gone = prune_loser(name, won, lst, upto, lambda k=kind: (
                _TextState(self._hb) if k == "text" else _BufferState(None, self._hb)))
            out.extend((kind, name, i) for i in gone)
            if kept is None:
                del self._losers[name]
            else:
                self._losers[name] = kept
        return out

    def reset(self, happened_before: HappenedBefore) -> None:
        """Forget every region (before restoring a checkpoint)."""
        RegionsPlane.__init__(self, happened_before)

    def base_bytes(self) -> int:
        """Bytes held by buffer bases (text bases share the fold's rope chunks)."""
        n = 0
        for bst in self.buffers.values():
            b = bst.fold.base()
            if b is not None:
                n += len(b[1])
        return n

    def referenced(self) -> set[bytes]:
        """Contribution ids the folds still name (their dots must stay known)."""
        out: set[bytes] = set()
        for st in self.texts.values():
            out |= st.fold.referenced()
        for bst in self.buffers.values():
            out |= bst.fold.referenced()
        for lst in self._losers.values():
            out.update(c for i in lst.fold.issues() for c in (i.cid, i.other) if c is not None)
            out.update(e.cid for e in lst.fold._entries)
        return out

    def bases(self) -> list[list[Any]]:
        """Every region's base checkpoint, in a msgpack-ready canonical form."""
        out: list[list[Any]] = []
        for name, st in sorted(self.texts.items()):
            tb = st.fold.base()
            if tb is not None:
                out.append(["text", name, tb[0], tb[1], tb[2]])
        for name, bst in sorted(self.buffers.items()):
            bb = bst.fold.base()
            if bb is not None:
                out.append(["buffer", name, *bb])
        return out

    def restore_bases(self, bases: list[list[Any]]) -> None:
        """Recreate regions from a checkpoint's bases (on an empty plane); PayloadError if
        malformed."""
        for item in bases:
            try:
                if item[0] == "text":
                    _, name, value, deleted, by = item
                    check_region_name(name)
                    if type(value) is not str or type(deleted) is not bool:
                        raise PayloadError("a text base is [text, name, str, bool, id]")
                    st = self.texts[name] = _TextState(self._hb)
                    st.fold.restore_base(value, deleted, by)
                else:
                    # (a base written before 2026-11-21 has no last deletion)
                    _, name, lay, data, deleted, by, creator, *rest = item
                    last = rest[0] if len(rest) == 1 else None
                    check_region_name(name)
                    if (type(data) is not bytes or type(deleted) is not bool or len(rest) > 1
                            or any(x is not None and type(x) is not bytes
                                   for x in (by, creator, last))):
                        raise PayloadError("a buffer base is [buffer, name, layout, data, ...]")
                    layout = None if lay is None else layout_from_wire(lay)
                    bst = self.buffers[name] = _BufferState(None, self._hb)
                    bst.fold.restore_base(layout, data, deleted, by, creator, last)
            except (ValueError, TypeError, IndexError, ConfigError) as exc:
                raise PayloadError(f"malformed region base: {exc}") from None
            self.refresh([name])
