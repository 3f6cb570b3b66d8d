"""The fields plane: one pycrdt ``Doc`` whose root ``Y.Map`` is named ``fields``.

The plane turns local writes into Yjs v1 updates (one per commit) and applies remote updates.
It never decides *when* to commit: the replica does. Yjs updates commute, so applying the
contributions' updates in any causal order yields the same document on every replica.

Group commit (``Memory(group_commit=True)``): autocommitted writes outside a transaction join
one open pycrdt transaction, the *pending batch*, which the replica closes and commits as one
contribution at its next cycle (:meth:`FieldsPlane.take_pending`). Reads see pending writes at
once (they read the open transaction). A batch stays far below the payload limit: setting a
key to a small scalar adds to it (bounded in bytes and count); any other write
commits the batch first and is then committed alone, as without group commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pycrdt

from hybridsync.errors import PayloadError, TransactionError
from hybridsync.fields._views import FieldMap

__all__ = ["ROOT_NAME", "FieldsPlane", "Path"]

log = logging.getLogger("hybridsync")

ROOT_NAME = "fields"
_LOCAL = "hybridsync-local"
# A pending batch holds at most this many bytes of keys and small values, and this many
# writes (a small value: None, a bool, a number, or a str or bytes of at most _SMALL_BYTES
# under a key of at most _SMALL_BYTES): one batch's update stays far below the 15 MiB
# payload limit, so committing it never fails for its size.
_PENDING_BYTES = 2 << 20
_PENDING_WRITES = 8192
_SMALL_BYTES = 4096
# values pycrdt's Map.__setitem__ hands to yrs as they are (no shared type, no document)
_PRIMITIVE = frozenset({type(None), bool, int, float, str, bytes})


Path = tuple[str | int, ...]


class FieldsPlane:
    """The pycrdt document of one replica and the bookkeeping around its updates."""

    def __init__(
        self,
        client_id: int,
        autocommit: Callable[[bytes], None],
        *,
        group_commit: bool = False,
        on_pending: Callable[[], None] | None = None,
    ) -> None:
        self.generation = 0
        self._autocommit = autocommit
        self._captured: list[bytes] = []
        self._remote = False
        self._txn: Any = None
        # group commit: the open transaction of pending writes, how many, how many bytes
        self._group = group_commit
        self._on_pending = on_pending
        self._pending_txn: Any = None
        self.pending_writes = 0
        self._pending_bytes = 0
        self._deep_sub: Any = None
        self._tracking = False
        self._changed: list[str] = []
        self._open(client_id)
        self.view = FieldMap(self, self.root)

    def _open(self, client_id: int) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.root: pycrdt.Map[Any] = self.doc.get(ROOT_NAME, type=pycrdt.Map)
        self._sub = self.doc.observe(self._on_transaction)
        if self._deep_sub is not None:
            self._deep_sub.drop()  # it observed the replaced document
        self._deep_sub = self._observe_deep() if self._tracking else None

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

    def track_changes(self, on: bool = True) -> None:
        """Start (or stop) recording changed key paths: only while an observer reads them
        (a deep observer makes pycrdt build an event per changed container)."""
        self._tracking = on
        if on and self._deep_sub is None:
            self._deep_sub = self._observe_deep()
        elif not on and self._deep_sub is not None:
            self._deep_sub.drop()
            self._deep_sub = None
            self._changed.clear()

    def _observe_deep(self) -> Any:
        # The subscription of the integrated (yrs) map: its events are read in the callback
        # and never wrapped, about 1 µs per event against about 9 µs for pycrdt's
        # ``Map.observe_deep``, which converts every attribute of every event to Python
        # objects. Dropped explicitly (``track_changes(False)``, a rebuild).
        return self.root.integrated.observe_deep(self._on_deep)

    def _on_deep(self, events: list[Any]) -> None:
        changed = self._changed
        try:
            for ev in events:
                path = ev.path
                keys = getattr(ev, "keys", None)
                if not path:  # the root map: its keys are the paths
                    if isinstance(keys, dict) and keys:
                        changed.extend(map(str, keys))
                    else:
                        changed.append("")
                    continue
                base = "/".join(map(str, path))
                if isinstance(keys, dict) and keys:
                    for k in keys:
                        changed.append(f"{base}/{k}")
                else:
                    changed.append(base)
        except Exception:  # never into yrs: the paths are a report, the change stands
            log.exception("reading a fields change event failed")

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
        self._end_pending()  # earlier autocommitted writes are a commit of their own
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
        """Context for one write from a view: joins the open transaction or autocommits
        (with group commit: after committing the pending batch)."""
        if self._txn is not None:
            yield None
            return
        if self._remote:
            raise TransactionError("fields cannot be written while a remote change is applied")
        if self._group:
            # Its size is unknown here: the batch is committed first, this write alone.
            self._end_pending()
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
        if self._group:
            if self._set_pending(ymap, key, value):
                return
            self._end_pending()
        captured = self._captured
        captured.clear()
        try:
            with self.doc.transaction(origin=_LOCAL) as txn:
                if type(value) in _PRIMITIVE:  # (as Map.__setitem__ does, without its wrapper)
                    ymap.integrated.insert(txn._txn, key, value)
                else:
                    ymap[key] = value
        finally:
            if captured:
                self._autocommit(self._take_update())  # type: ignore[arg-type]

    # ---- group commit --------------------------------------------------------------------
    @property
    def has_pending(self) -> bool:
        """True while autocommitted writes wait for the next cycle (group commit)."""
        return self._pending_txn is not None

    def _set_pending(self, ymap: pycrdt.Map[Any], key: str, value: Any) -> bool:
        """Add ``ymap[key] = value`` to the pending batch; False (nothing done) when the
        value is not small: the caller commits the batch and then this write alone."""
        cost = _small_cost(key, value)
        if cost is None:
            return False
        if self._pending_txn is not None and (
            self._pending_bytes + cost > _PENDING_BYTES
            or self.pending_writes >= _PENDING_WRITES
        ):
            self._end_pending()  # full: commit it, this write starts the next batch
        if self._pending_txn is None:
            self._open_pending()
        try:
            # a small value is a primitive (``_small_cost``): yrs inserts it as pycrdt's
            # ``Map.__setitem__`` would, without its wrapper and nested transaction
            ymap.integrated.insert(self._pending_txn._txn, key, value)
        finally:
            self.pending_writes += 1
            self._pending_bytes += cost
        return True

    def _open_pending(self) -> None:
        self._captured.clear()
        txn = self.doc.transaction(origin=_LOCAL)
        txn.__enter__()
        self._pending_txn = txn
        if self._on_pending is not None:
            self._on_pending()

    def take_pending(self) -> bytes | None:
        """Close the pending batch; its Yjs update (``None`` if it changed nothing). The
        caller commits it. If a pycrdt observer of the document raises while the batch
        closes, the batch is committed through ``autocommit`` and the error propagates."""
        txn = self._pending_txn
        if txn is None:
            return None
        self._pending_txn = None
        self.pending_writes = self._pending_bytes = 0
        self._captured.clear()
        try:
            txn.__exit__(None, None, None)
        except BaseException:
            update = self._take_update()
            if update is not None:
                self._autocommit(update)
            raise
        return self._take_update()

    def _end_pending(self) -> None:
        """Commit the pending batch now (``autocommit`` also runs the replica's observers;
        one that writes opens a new batch, committed here too, a bounded number of times)."""
        for _ in range(64):
            update = self.take_pending()
            if update is not None:
                self._autocommit(update)
            if self._pending_txn is None:
                return

    # ---- remote updates ------------------------------------------------------------------
    def apply(self, update: bytes) -> None:
        """Apply one contribution's Yjs update; :class:`PayloadError` if pycrdt refuses it.
        Pending writes must be committed first (they happened before this update arrived)."""
        if self._pending_txn is not None:
            raise TransactionError("internal: a remote update is applied with writes pending")
        self._remote = True
        try:
            doc = self.doc
            if _RAW_APPLY and doc._txn is None and doc._Model is None and (
                not doc._allow_multithreading
            ):
                _apply_raw(doc, update)
            else:
                doc.apply_update(update)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # pycrdt's PanicException derives from BaseException
            raise PayloadError(f"Yjs update rejected by pycrdt: {exc!r}") from None
        finally:
            self._remote = False

    def to_py(self) -> dict[str, Any]:
        return self.view.to_py()


def _apply_raw(doc: pycrdt.Doc[Any], update: bytes) -> None:
    """``doc.apply_update(update)`` for a document without a model, not shared between
    threads and outside any transaction, as pycrdt does it (observers find the transaction
    as the document's current one; their errors are raised after the commit) without its
    wrappers: about 1.5 µs less per remote update."""
    raw = doc._doc
    txn = raw.create_transaction()
    wrapper = pycrdt.Transaction(doc, txn)
    wrapper._leases = 1  # (entered: nested ``doc.transaction()`` reuse it)
    doc._txn = wrapper
    try:
        raw.apply_update(txn, update)
    finally:  # (committed also after a refusal, as pycrdt's Transaction.__exit__ does)
        try:
            txn.commit()
            if doc._exceptions:
                exceptions = tuple(doc._exceptions)
                doc._exceptions.clear()
                raise ExceptionGroup("Observer callback error", exceptions)
        finally:
            doc._txn = None
            wrapper._txn = None
            txn.drop()


def _raw_apply_ok() -> bool:
    """Whether this pycrdt has what :func:`_apply_raw` relies on (else ``apply_update``)."""
    try:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        raw = doc._doc
        return (doc._txn is None and doc._Model is None and doc._allow_multithreading is False
                and isinstance(doc._exceptions, list) and callable(raw.create_transaction)
                and callable(raw.apply_update) and hasattr(pycrdt, "Transaction"))
    except Exception:  # pragma: no cover - another pycrdt
        return False


_RAW_APPLY = _raw_apply_ok()


def _small_cost(key: str, value: Any) -> int | None:
    """Bytes a pending batch counts for ``key = value``; ``None`` for a large or nested value."""
    if len(key) > _SMALL_BYTES // 4:
        return None
    if value is None or isinstance(value, bool | int | float):
        return 4 * len(key) + 16
    if isinstance(value, str | bytes):
        n = len(value)
        if n <= _SMALL_BYTES // 4 or (n <= _SMALL_BYTES and (
            isinstance(value, bytes) or value.isascii()
        )):
            return 4 * len(key) + n + 16  # a key counts at its worst UTF-8 width
    return None
