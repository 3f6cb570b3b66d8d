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


class Journal:
    """Old values of everything a transaction touched, so an exception can roll it back."""

    __slots__ = ("_arrays", "_maps")

    def __init__(self) -> None:
        self._maps: list[tuple[pycrdt.Map[Any], str, bool, Any]] = []
        self._arrays: list[tuple[pycrdt.Array[Any], list[Any]]] = []

    def touch_map(self, ymap: pycrdt.Map[Any], key: str) -> None:
        had = key in ymap
        self._maps.append((ymap, key, had, from_crdt(ymap[key]) if had else None))

    def touch_array(self, arr: pycrdt.Array[Any]) -> None:
        self._arrays.append((arr, from_crdt(arr)))

    def restore(self) -> None:
        """Undo in reverse order (the oldest snapshot of a key is written last)."""
        for ymap, key, had, old in reversed(self._maps):
            if had:
                ymap[key] = to_crdt(old)
            elif key in ymap:
                del ymap[key]
        for arr, values in reversed(self._arrays):
            arr.clear()
            arr.extend([to_crdt(v) for v in values])


class _NoJournal(Journal):
    """Single autocommitted writes need no rollback: a failing write changes nothing."""

    def touch_map(self, ymap: pycrdt.Map[Any], key: str) -> None:
        return None

    def touch_array(self, arr: pycrdt.Array[Any]) -> None:
        return None


_NO_JOURNAL = _NoJournal()


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
        self._journal = Journal()
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

    def set_key(self, ymap: pycrdt.Map[Any], key: str, value: Any) -> None:
        """``ymap[key] = value`` as one write (the hot path of ``fields[key] = v``)."""
        if self._txn is not None:
            assert self._journal is not None
            self._journal.touch_map(ymap, key)
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
