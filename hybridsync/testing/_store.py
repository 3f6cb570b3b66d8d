"""A conformance suite that any :class:`~hybridsync.Store` implementation can run.

Subclass :class:`StoreConformance` in a pytest module (the subclass name must start with
``Test``) and say how to make, and for durable stores reopen, a store::

    class TestMyStore(StoreConformance):
        def make_store(self, directory):
            return MyStore(directory / "replica.db", space=self.space, peer=self.peer)

        def reopen(self, store, directory):
            store.close()
            return MyStore(directory / "replica.db", space=self.space, peer=self.peer)

Each check takes pytest's ``tmp_path`` fixture by argument name (this module never imports
pytest). Outside pytest, :meth:`StoreConformance.run_all` runs every check.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from hybridsync.causal import Contribution
from hybridsync.replica import Memory
from hybridsync.store import Store

__all__ = ["StoreConformance"]


def _clock() -> int:
    return 1_700_000_000_000


def _sample_history(space: str) -> list[Contribution]:
    """A small real DAG: two authors, a merge, nested values, a note, a deletion."""
    a = Memory(space, "conf-a", clock=_clock, incarnation=1)
    b = Memory(space, "conf-b", clock=_clock, incarnation=2)
    a.fields["goal"] = "ship v1 \N{ROCKET}"
    b.fields["tasks"] = {"t1": {"status": "open"}, "blob": b"\x00\xff"}
    for frame in a.sync_to("conf-b"):
        b.receive("conf-a", frame)
    with b.transaction(note="claim t1 \N{WHITE HEAVY CHECK MARK}"):
        b.fields["tasks"]["t1"]["status"] = "done"
        b.fields["n"] = 2**60
    del b.fields["goal"]
    return b.history()


class StoreConformance(ABC):
    """The behaviour every store must have; subclass and define :meth:`make_store`."""

    space = "store-conformance"
    peer = "conf-b"

    # ---- what an implementation provides -------------------------------------------------
    @abstractmethod
    def make_store(self, directory: Path) -> Store:
        """A new, empty store that may keep its files under ``directory``."""

    def reopen(self, store: Store, directory: Path) -> Store:
        """The same store after a restart. In-process stores return themselves."""
        return store

    # ---- helpers -------------------------------------------------------------------------
    def _restart(self, store: Store, directory: Path) -> Store:
        again = self.reopen(store, directory)
        assert isinstance(again, Store), f"reopen() returned {type(again).__name__}"
        return again

    # ---- the checks ----------------------------------------------------------------------
    def test_implements_the_store_protocol(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        try:
            assert isinstance(store, Store)
        finally:
            store.close()

    def test_new_store_is_empty(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        try:
            assert list(store.contributions()) == []
            assert store.get_meta("hybridsync.conformance.absent") is None
        finally:
            store.close()

    def test_append_keeps_application_order_and_every_field(self, tmp_path: Path) -> None:
        history = _sample_history(self.space)
        store = self.make_store(tmp_path)
        try:
            store.append(history[:2])
            store.append(iter(history[2:]))  # any iterable, a generator included
            store.append([])
            got = list(store.contributions())
            assert got == history
            for held, original in zip(got, history, strict=True):
                assert type(held.payload) is bytes and type(held.id) is bytes
                assert all(type(p) is bytes for p in held.parents)
                assert held.parents == original.parents
                held.verify(self.space)
        finally:
            store.close()

    def test_contributions_can_be_read_twice(self, tmp_path: Path) -> None:
        history = _sample_history(self.space)
        store = self.make_store(tmp_path)
        try:
            store.append(history)
            assert list(store.contributions()) == list(store.contributions()) == history
        finally:
            store.close()

    def test_large_payload_round_trips(self, tmp_path: Path) -> None:
        payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
        c = Contribution.create(self.space, "big", 1, (), 1, 0, "multi", payload, "n" * 4096)
        store = self.make_store(tmp_path)
        try:
            store.append([c])
            (held,) = list(store.contributions())
            assert held == c
        finally:
            store.close()

    def test_meta_set_get_overwrite(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        try:
            store.set_meta("hybridsync.conformance.k", b"\x00one\xff")
            store.set_meta("hybridsync.conformance.empty", b"")
            store.set_meta("hybridsync.conformance.k", b"two")
            got = store.get_meta("hybridsync.conformance.k")
            assert got == b"two" and type(got) is bytes
            assert store.get_meta("hybridsync.conformance.empty") == b""
            assert store.get_meta("hybridsync.conformance.other") is None
        finally:
            store.close()

    def test_everything_survives_reopen(self, tmp_path: Path) -> None:
        history = _sample_history(self.space)
        store = self.make_store(tmp_path)
        store.append(history)
        store.set_meta("hybridsync.conformance.k", b"v")
        store = self._restart(store, tmp_path)
        try:
            assert list(store.contributions()) == history
            assert store.get_meta("hybridsync.conformance.k") == b"v"
        finally:
            store.close()

    def test_replica_restarts_from_the_store(self, tmp_path: Path) -> None:
        """A replica rebuilt from the store (new incarnation) keeps every commit and
        continues its own sequence; a peer then converges with it."""
        store = self.make_store(tmp_path)
        mem = Memory(self.space, self.peer, store=store, clock=_clock, incarnation=1)
        other = Memory(self.space, "conf-other", clock=_clock, incarnation=9)
        other.fields["from_other"] = [1, 2.5, None]
        for frame in other.sync_to(self.peer):
            mem.receive("conf-other", frame)
        mem.fields["goal"] = {"deep": ["x", {"y": True}]}
        with mem.transaction(note="two at once"):
            mem.fields["a"] = 1
            mem.fields["b"] = b"\x01"
        before = (mem.fields_json(), mem.heads, [c.id for c in mem.history()])
        store = self._restart(store, tmp_path)
        again = Memory(self.space, self.peer, store=store, clock=_clock, incarnation=2)
        try:
            assert (again.fields_json(), again.heads, [c.id for c in again.history()]) == before
            again.fields["after"] = "restart"
            mine = [c for c in again.history() if c.author == self.peer]
            assert [c.seq for c in mine] == list(range(1, len(mine) + 1))
            for _ in range(16):
                frames = again.sync_to("conf-other")
                back = []
                for frame in frames:
                    other.receive(self.peer, frame)
                back = other.sync_to(self.peer)
                for frame in back:
                    again.receive("conf-other", frame)
                if not frames and not back:
                    break
            assert other.fields_json() == again.fields_json()
            assert other.heads == again.heads
        finally:
            again.close()

    # ---- outside pytest --------------------------------------------------------------------
    def checks(self) -> Iterator[str]:
        """The names of the checks, in a stable order."""
        return iter(sorted(n for n in dir(self) if n.startswith("test_")))

    def run_all(self) -> None:
        """Run every check, each in a fresh temporary directory; the first failure raises."""
        for name in self.checks():
            with tempfile.TemporaryDirectory(prefix="hybridsync-store-") as d:
                getattr(self, name)(Path(d))
