"""The fields plane: one pycrdt ``Doc`` whose root ``Y.Map`` is named ``fields``.

The plane turns local writes into Yjs v1 updates (one per commit) and applies remote updates.
It never decides *when* to commit: the replica does. Yjs updates commute, so applying the
contributions' updates in any causal order yields the same document on every replica.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pycrdt

from hybridsync.errors import PayloadError, TransactionError
from hybridsync.fields._values import from_crdt, to_crdt
from hybridsync.fields._views import FieldMap

__all__ = ["ROOT_NAME", "FieldsPlane", "Journal"]

ROOT_NAME = "fields"
_LOCAL = "hybridsync-local"


Path = tuple[str | int, ...]


class Journal:
    """What a transaction overwrote, as it was before its first write there, so an exception
    can roll the transaction back.

    Snapshots are per (container path, key) and per list path. Restoring goes from the
    shortest path to the longest, navigating from the root each time, so it stays right when
    the transaction also replaced or deleted the containers it wrote into, and it leaves alone
    whatever it did not touch (a concurrent nested write of another replica survives).
    """

    __slots__ = ("_root", "_snap")

    def __init__(self, root: pycrdt.Map[Any] | None) -> None:
        self._root = root
        self._snap: dict[tuple[Path, str | None], tuple[bool, Any]] = {}

    def touch_map(self, ymap: pycrdt.Map[Any], path: Path, key: str) -> None:
        if self._root is None or (path, key) in self._snap:
            return
        had = key in ymap
        self._snap[(path, key)] = (had, from_crdt(ymap[key]) if had else None)

    def touch_list(self, arr: pycrdt.Array[Any], path: Path) -> None:
        if self._root is None or (path, None) in self._snap:
            return
        self._snap[(path, None)] = (True, from_crdt(arr))

    def _navigate(self, path: Path) -> Any:
        cur: Any = self._root
        for k in path:
            in_map = isinstance(cur, pycrdt.Map) and isinstance(k, str) and k in cur
            in_list = isinstance(cur, pycrdt.Array) and isinstance(k, int) and k < len(cur)
            if not (in_map or in_list):
                return None
            cur = cur[k]
        return cur

    def restore(self) -> None:
        for (path, key), (had, old) in sorted(
            self._snap.items(), key=lambda kv: len(kv[0][0])
        ):
            target = self._navigate(path)
            if key is None:
                if isinstance(target, pycrdt.Array):
                    target.clear()
                    target.extend([to_crdt(v) for v in old])
            elif isinstance(target, pycrdt.Map):
                if had:
                    target[key] = to_crdt(old)
                elif key in target:
                    del target[key]


_NO_JOURNAL = Journal(None)  # autocommitted single writes: a failing write changes nothing


class FieldsPlane:
    """The pycrdt document of one replica and the bookkeeping around its updates."""

    def __init__(self, client_id: int, autocommit: Callable[[bytes], None]) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.root: pycrdt.Map[Any] = self.doc.get(ROOT_NAME, type=pycrdt.Map)
        self.view = FieldMap(self, self.root)
        self._autocommit = autocommit
        self._captured: list[bytes] = []
        self._remote = False
        self._txn: Any = None
        self._journal: Journal | None = None
        self._sub = self.doc.observe(self._on_transaction)
        self._deep_sub: Any = None
        self._changed: list[str] = []

    # ---- capture -------------------------------------------------------------------------
    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if not self._remote:
            self._captured.append(event.update)

    def track_changes(self) -> None:
        """Start recording changed key paths (only once someone observes the replica)."""
        if self._deep_sub is None:
            self._deep_sub = self.root.observe_deep(self._on_deep)

    def _on_deep(self, events: list[Any]) -> None:
        for ev in events:
            base = "/".join(str(p) for p in ev.path)
            keys = getattr(ev, "keys", None)
            if isinstance(keys, dict) and keys:
                for k in keys:
                    self._changed.append(f"{base}/{k}" if base else str(k))
            else:
                self._changed.append(base)

    def take_changed(self) -> tuple[str, ...]:
        out = tuple(dict.fromkeys(self._changed))
        self._changed.clear()
        return out

    # ---- local writes --------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def begin(self) -> None:
        """Open the pycrdt transaction of a replica-level transaction."""
        if self._txn is not None:
            raise TransactionError("a transaction is already open on this replica")
        self._captured.clear()
        self._journal = Journal(self.root)
        self._txn = self.doc.transaction(origin=_LOCAL)
        self._txn.__enter__()

    def end(self, *, rollback: bool = False) -> bytes | None:
        """Close the transaction; the Yjs update it produced, or ``None`` if nothing changed."""
        txn, journal = self._txn, self._journal
        if txn is None:
            raise TransactionError("no transaction is open")
        try:
            if rollback and journal is not None:
                journal.restore()
        finally:
            self._txn = None
            self._journal = None
            txn.__exit__(None, None, None)
        return self._take_update()

    def _take_update(self) -> bytes | None:
        captured, self._captured = self._captured, []
        if not captured:
            return None
        if len(captured) == 1:
            return captured[0]
        return bytes(pycrdt.merge_updates(*captured))

    @contextmanager
    def write(self) -> Iterator[Journal]:
        """Context for one write from a view: joins the open transaction or autocommits."""
        if self._txn is not None:
            assert self._journal is not None
            yield self._journal
            return
        if self._remote:
            raise TransactionError("fields cannot be written while a remote change is applied")
        self._captured.clear()
        try:
            with self.doc.transaction(origin=_LOCAL):
                yield _NO_JOURNAL
        finally:
            # Whatever reached the document is committed, even if the write then failed:
            # an uncommitted Yjs item would leave a gap in this client's clock on every peer.
            update = self._take_update()
            if update is not None:
                self._autocommit(update)

    def set_key(self, ymap: pycrdt.Map[Any], key: str, value: Any, path: Path) -> None:
        """``ymap[key] = value`` as one write (the hot path of ``fields[key] = v``)."""
        if self._txn is not None:
            assert self._journal is not None
            self._journal.touch_map(ymap, path, key)
            ymap[key] = value
            return
        if self._remote:
            raise TransactionError("fields cannot be written while a remote change is applied")
        captured = self._captured
        captured.clear()
        try:
            with self.doc.transaction(origin=_LOCAL):
                ymap[key] = value
        finally:
            if captured:
                self._autocommit(self._take_update())  # type: ignore[arg-type]

    # ---- remote updates ------------------------------------------------------------------
    def apply(self, update: bytes) -> None:
        """Apply one contribution's Yjs update; :class:`PayloadError` if pycrdt refuses it."""
        self._remote = True
        try:
            self.doc.apply_update(update)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # pycrdt's PanicException derives from BaseException
            raise PayloadError(f"Yjs update rejected by pycrdt: {exc!r}") from None
        finally:
            self._remote = False

    def to_py(self) -> dict[str, Any]:
        return self.view.to_py()
