"""The fields plane: one pycrdt ``Doc`` whose root ``Y.Map`` is named ``fields``.

The plane turns local writes into Yjs v1 updates (one per commit) and applies remote updates.
It never decides *when* to commit: the replica does. Yjs updates commute, so applying the
contributions' updates in any causal order yields the same document on every replica.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pycrdt

from hybridsync.errors import PayloadError, TransactionError
from hybridsync.fields._views import FieldMap

__all__ = ["ROOT_NAME", "FieldsPlane", "Path"]

ROOT_NAME = "fields"
_LOCAL = "hybridsync-local"


Path = tuple[str | int, ...]


class FieldsPlane:
    """The pycrdt document of one replica and the bookkeeping around its updates."""

    def __init__(self, client_id: int, autocommit: Callable[[bytes], None]) -> None:
        self.generation = 0
        self._autocommit = autocommit
        self._captured: list[bytes] = []
        self._remote = False
        self._txn: Any = None
        self._deep_sub: Any = None
        self._tracking = False
        self._changed: list[str] = []
        self._open(client_id)
        self.view = FieldMap(self, self.root)

    def _open(self, client_id: int) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.root: pycrdt.Map[Any] = self.doc.get(ROOT_NAME, type=pycrdt.Map)
        self._sub = self.doc.observe(self._on_transaction)
        self._deep_sub = self.root.observe_deep(self._on_deep) if self._tracking else None

    def rebuild(self, client_id: int, updates: Iterable[bytes]) -> None:
        """Replace the document by one rebuilt from committed updates only.

        Used when the document holds something no contribution carries: a rolled-back
        transaction, or an update pycrdt half-applied before refusing it. The new document
        gets a fresh Yjs client id, so no (client, clock) pair is ever reused. Views find
        their containers again by key path.
        """
        self._txn = None
        self._captured = []
        self._open(client_id)
        self._remote = True
        try:
            for update in updates:
                self.doc.apply_update(update)
        finally:
            self._remote = False
        self._changed.clear()
        self.generation += 1
        self.view = FieldMap(self, self.root)

    def resolve(self, keys: Path) -> Any:
        """The container at ``keys`` from the root, or ``None``."""
        cur: Any = self.root
        for k in keys:
            in_map = isinstance(cur, pycrdt.Map) and isinstance(k, str) and k in cur
            in_list = isinstance(cur, pycrdt.Array) and isinstance(k, int) and k < len(cur)
            if not (in_map or in_list):
                return None
            cur = cur[k]
        return cur

    # ---- capture -------------------------------------------------------------------------
    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if not self._remote:
            self._captured.append(event.update)

    def track_changes(self) -> None:
        """Start recording changed key paths (only once someone observes the replica)."""
        self._tracking = True
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
        self._txn = self.doc.transaction(origin=_LOCAL)
        self._txn.__enter__()

    def end(self) -> bytes | None:
        """Close the transaction; the Yjs update it produced, or ``None`` if nothing changed.

        To abandon a transaction, close it, discard the update and :meth:`rebuild`.
        """
        txn = self._txn
        if txn is None:
            raise TransactionError("no transaction is open")
        self._txn = None
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
    def write(self) -> Iterator[None]:
        """Context for one write from a view: joins the open transaction or autocommits."""
        if self._txn is not None:
            yield None
            return
        if self._remote:
            raise TransactionError("fields cannot be written while a remote change is applied")
        self._captured.clear()
        try:
            with self.doc.transaction(origin=_LOCAL):
                yield None
        finally:
            # Whatever reached the document is committed, even if the write then failed:
            # an uncommitted Yjs item would leave a gap in this client's clock on every peer.
            update = self._take_update()
            if update is not None:
                self._autocommit(update)

    def set_key(self, ymap: pycrdt.Map[Any], key: str, value: Any) -> None:
        """``ymap[key] = value`` as one write (the hot path of ``fields[key] = v``)."""
        if self._txn is not None:
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
