"""SQLite store: the embedded durable default (WAL, ``synchronous=FULL``).

One file holds one replica of one space. ``append`` commits before it returns, so a commit
that returned survives ``kill -9`` (G6). Opening a file of another space or peer, or a file
that is not ours, raises :class:`StoreError`; an existing database is never silently
replaced by an empty one.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hybridsync.causal import Contribution
from hybridsync.errors import IntegrityError, StoreError

__all__ = ["SQLiteStore", "stored_identity"]

_SCHEMA_VERSION = b"1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contributions (
    pos INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    author TEXT NOT NULL,
    seq INTEGER NOT NULL,
    parents BLOB NOT NULL,
    lamport INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    kind TEXT NOT NULL,
    note TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


def stored_identity(path: str | Path) -> tuple[str, str]:
    """``(space, peer)`` of an existing store, read without creating or changing anything.

    Raises :class:`StoreError` if the file is missing, not SQLite, or not a hybridsync store.
    """
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"{p}: no such store")
    try:
        db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{p}: not a usable hybridsync database ({exc})") from None
    if rows.get("schema") != _SCHEMA_VERSION or "space" not in rows or "peer" not in rows:
        raise StoreError(f"{p}: not a hybridsync store of schema {_SCHEMA_VERSION.decode()}")
    return bytes(rows["space"]).decode(errors="replace"), bytes(rows["peer"]).decode(
        errors="replace")


def _lock(path: str) -> int:
    """An exclusive advisory lock (flock) on the database file, held until closed."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{path} is already open by another replica (one writer per store; "
                         "readers use hybridsync inspect)") from None
    return fd


class SQLiteStore:
    """Contributions and metadata of one replica in one SQLite file."""

    def __init__(self, path: str | Path, *, space: str, peer: str,
                 exclusive: bool = True) -> None:
        """Open (or create) the store. ``exclusive`` (the default, for a replica that writes)
        holds an advisory lock on the file, so a second process opening it as a writer gets
        a :class:`StoreError` instead of two writers committing under one peer name;
        ``exclusive=False`` is for readers (``hybridsync inspect``)."""
        self.path = str(path)
        self._space = space
        self._lock_fd: int | None = None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open ({exc})") from None
        try:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                if exclusive:
                    self._lock_fd = _lock(self.path)
                check = self._db.execute("PRAGMA quick_check").fetchone()
            except sqlite3.DatabaseError as exc:
                raise StoreError(
                    f"{self.path}: not a usable hybridsync database ({exc})") from None
            if not check or check[0] != "ok":
                raise StoreError(f"{self.path}: database is corrupted ({check})")
            for key, expected in (("schema", _SCHEMA_VERSION), ("space", space.encode()),
                                  ("peer", peer.encode())):
                held = self.get_meta(key)
                if held is None:
                    self.set_meta(key, expected)
                elif held != expected:
                    raise StoreError(
                        f"{self.path} belongs to {key} {held.decode(errors='replace')!r}, "
                        f"not {expected.decode(errors='replace')!r}"
                    )
        except BaseException:
            self.close()
            raise

    _INSERT = (
        "INSERT OR IGNORE INTO contributions "
        "(id, author, seq, parents, lamport, hlc, kind, note, payload) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    @staticmethod
    def _rows(contributions: Iterable[Contribution]) -> list[tuple[Any, ...]]:
        return [
            (c.id, c.author, c.seq, b"".join(c.parents), c.lamport, c.hlc, c.kind, c.note,
             c.payload)
            for c in contributions
        ]

    def append(self, contributions: Iterable[Contribution]) -> None:
        rows = self._rows(contributions)
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(self._INSERT, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: append failed ({exc})") from None

    def compact(self, drop: Iterable[bytes], checkpoint: bytes,
                add: Iterable[Contribution] = ()) -> None:
        """Delete compacted contributions, store the checkpoint and append ``add``, in one
        transaction."""
        ids = [(bytes(cid),) for cid in drop]
        rows = self._rows(add)
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM contributions WHERE id = ?", ids)
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('checkpoint', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (bytes(checkpoint),),
                )
                self._db.executemany(self._INSERT, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: compaction failed ({exc})") from None

    def contributions(self) -> Iterator[Contribution]:
        try:
            cur = self._db.execute(
                "SELECT id, author, seq, parents, lamport, hlc, kind, note, payload "
                "FROM contributions ORDER BY pos"
            )
            rows = cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: read failed ({exc})") from None
        for cid, author, seq, parents, lamport, hlc, kind, note, payload in rows:
            if len(parents) % 32:
                raise StoreError(f"{self.path}: corrupted parents of {author}#{seq}")
            ps = tuple(parents[i : i + 32] for i in range(0, len(parents), 32))
            c = Contribution(bytes(cid), author, seq, ps, lamport, hlc, kind, note,
                             bytes(payload))
            try:  # damaged bytes inside a valid page: the content hash no longer matches
                c.verify(self._space)
            except IntegrityError as exc:
                raise StoreError(f"{self.path}: corrupted contribution ({exc})") from None
            yield c

    def get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, key: str, value: bytes) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, bytes(value)),
            )

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
