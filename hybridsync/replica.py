"""``Memory``: one replica of one space, the I/O-free core that ties the planes to the log.

Every local commit becomes one :class:`~hybridsync.causal.Contribution`; remote ones are
applied only after their parents (causal delivery); ``sync_to``/``receive`` run anti-entropy
over version vectors on any lossy, duplicating, reordering channel. No clock is read and no
random number drawn here: both are passed in (``clock``, ``incarnation``).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import numpy as np
import pycrdt

from hybridsync._gc import Checkpoint, Stability, decode_checkpoint, encode_checkpoint
from hybridsync.causal import (
    CausalLog,
    Contribution,
    Draft,
    HybridLogicalClock,
    VersionVector,
)
from hybridsync.errors import (
    ConfigError,
    FieldValueError,
    HybridSyncError,
    IntegrityError,
    PayloadError,
    StoreError,
    TransactionError,
)
from hybridsync.fields import FieldMap, FieldsConflictIndex, FieldsPlane, choose_conflicts
from hybridsync.fields._compact import (
    DroppedRanges,
    compact_state,
    rewrite_needed,
    rewrite_update,
)
from hybridsync.fields._values import canonical_json_default
from hybridsync.fields._yupdate import decode_update
from hybridsync.regions import BufferRegion, RegionsPlane, TextRegion
from hybridsync.regions._parts import Part, decode_parts, encode_parts
from hybridsync.store import MemoryStore, Store
from hybridsync.wire import (
    MAX_PAYLOAD_BYTES,
    decode_frame,
    encode_checkpoint_frame,
    encode_frame,
)

__all__ = ["Change", "Conflict", "Memory", "ReplicaStats"]

log = logging.getLogger("hybridsync")
_MAX_NAME_BYTES = 256
_MISSING = object()
_FIELDS_COMPACT_MIN_BYTES = 4096
GC_MIN_ENTRIES = 256  # gc_min_entries="auto" with declared members
GC_MIN_BYTES = 16 << 10  # and its bytes trigger (Memory.gc_min_bytes)


@dataclass(frozen=True, slots=True)
class Change:
    """One applied contribution, as reported to ``Memory.observe`` callbacks."""

    contribution: str  # hex id
    author: str
    seq: int
    local: bool
    kind: str
    note: str
    paths: tuple[str, ...]  # field paths whose visible value changed


@dataclass(frozen=True, slots=True)
class Conflict:
    """Something concurrent could not be merged faithfully; reported identically everywhere.

    ``kind`` is ``concurrent-write`` (two contributions wrote the same field key or buffer
    block), ``hunk-failed`` (a text patch hunk found no place to apply; ``values[0]`` is the
    hunk), ``edit-of-deleted-region`` (an edit concurrent with the region's deletion) or
    ``block-overwritten``. ``contributions``, ``values`` and ``paths`` are ordered by the
    deterministic total order (earlier first). For fields, Yjs chose the surviving value;
    ``values`` shows what each side wrote (``hybridsync.DELETED`` for a deletion).
    """

    plane: str
    location: str
    contributions: tuple[str, ...]
    values: tuple[Any, ...]
    paths: tuple[str, ...]
    authors: tuple[str, ...]
    kind: str = "concurrent-write"

    @property
    def detail(self) -> str:
        if self.kind != "concurrent-write" or len(self.authors) != 2:
            who = " and ".join(self.authors)
            return f"{self.plane} {self.location!r} ({self.kind}, {who}): {self.values[0]}"
        a, b = self.authors
        return (
            f"{self.plane} {self.location!r}: {a} wrote {self.values[0]!r} at {self.paths[0]!r} "
            f"concurrently with {b} writing {self.values[1]!r} at {self.paths[1]!r}"
        )


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """What a replica holds, in bytes and counts (``Memory.stats()``)."""

    content_bytes: int
    metadata_bytes: int
    log_length: int
    compacted: int  # contributions folded into the checkpoint so far
    heads: int
    version_vector: dict[str, int]
    stable_frontier: dict[str, int]
    conflicts: int
    pending: int
    rejected: int
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    late: int = 0  # contributions refused because they sort inside the checkpoint
    rollbacks: int = 0  # roll-backs to a peer's older checkpoint that applied late work
    retired: tuple[str, ...] = ()  # members left out of the stable frontier (silent too long)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class _Link:
    """What this replica knows about one peer it syncs with."""

    incarnation: int | None = None
    known: dict[str, int] = field(default_factory=dict)  # the peer holds at least this
    sent: dict[str, int] = field(default_factory=dict)  # we sent up to this (maybe lost)
    advertised: dict[str, int] | None = None  # our vv as the peer last learned it
    need_state: bool = True
    acked: dict[str, int] = field(default_factory=dict)  # max of every vv it stated (monotone)
    stall: int = 0  # sync_to calls since the peer last acknowledged progress
    rto: int = 0  # retransmit after this many stalled calls; doubles while nothing arrives
    needs_checkpoint: bool = False  # it sent contributions that sort inside our checkpoint
    # our roll-back request went to it: sync_to calls left before asking again unanswered
    asked: int = 0
    offer_for: int = 0  # it asked for a roll-back to before this lamport time: answer it
    refused: int = 0  # our contributions up to this seq sort inside its checkpoint: not resent
    # what it had stated when we last sent our checkpoint: the same statement again means it
    # declined it (docs/gc.md, "Late work"), so it is sent again only after a retransmission
    checkpoint_for: frozenset[tuple[str, int]] | None = None


@dataclass(slots=True)
class _RollBack:
    """A roll-back in progress: a peer's older checkpoint (None: it never compacted) and the
    contributions of our compacted range it sends, kept aside until they cover all of it."""

    peer: str
    incarnation: int | None
    checkpoint: Checkpoint | None
    need: set[tuple[str, int]]  # dots of our compacted range not yet received in full
    pool: dict[tuple[str, int], Draft] = field(default_factory=dict)


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty str, got {value!r}")
    if len(value.encode()) > _MAX_NAME_BYTES:
        raise ConfigError(f"{what} must be at most {_MAX_NAME_BYTES} bytes")
    return value


def _check_int(value: object, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{what} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def _check_yjs_update(payload: bytes) -> None:
    """:class:`PayloadError` unless yrs can decode ``payload`` as a Yjs v1 update. Checked
    while staging, so an undecodable contribution rejects its whole frame before anything
    is applied (``pycrdt.get_state`` runs the same decoder as ``apply_update``)."""
    try:
        pycrdt.get_state(payload)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pycrdt's PanicException derives from BaseException
        raise PayloadError(f"not a Yjs v1 update: {exc!r}") from None


def yjs_client_id(peer: str, incarnation: int, generation: int = 0) -> int:
    """A 32-bit Yjs client id, fresh for every incarnation of a peer and every rebuild of its
    document (never reused)."""
    h = hashlib.blake2b(f"{peer}\x00{incarnation}\x00{generation}".encode(),
                        digest_size=4).digest()
    return int.from_bytes(h, "big") or 1


def _ids_in(cp: Checkpoint) -> dict[tuple[str, int], bytes]:
    """The dots of compacted contributions a checkpoint still knows by id: its stubs and
    the dots it keeps for folds and conflicts."""
    known = {(c.author, c.seq): c.id for c, _ in cp.stubs}
    known.update({(a, s): cid for cid, (a, s, _) in cp.gone.items()})
    return known


class Memory:
    """One replica of one space: fields, the causal log, and sans-I/O sync.

    >>> a = Memory("demo", "a", clock=lambda: 0, incarnation=1)
    >>> b = Memory("demo", "b", clock=lambda: 0, incarnation=2)
    >>> a.fields["goal"] = "ship v1"
    >>> for frame in a.sync_to("b"): b.receive("a", frame)
    >>> b.fields["goal"]
    'ship v1'
    """

    def __init__(
        self,
        space: str,
        peer: str,
        *,
        store: Store | None = None,
        path: str | None = None,
        clock: Callable[[], int] | None = None,
        incarnation: int | None = None,
        batch_size: int = 512,
        max_frame_bytes: int = 1 << 20,
        retransmit_rounds: int = 8,
        max_pending: int = 20_000,
        commit_interval_ms: int | None = 1_000,
        gc_min_entries: int | Literal["auto"] | None = "auto",
        retire_after_ms: int | None = None,
        members: Iterable[str] = (),
        max_conflicts: int = 10_000,
        group_commit: bool = False,
    ) -> None:
        self.space = _check_name(space, "space")
        self.peer = _check_name(peer, "peer")
        self._batch_size = _check_int(batch_size, "batch_size", 1, 65_536)
        self._max_frame_bytes = _check_int(max_frame_bytes, "max_frame_bytes", 1024, 16 << 20)
        self._retransmit_rounds = _check_int(retransmit_rounds, "retransmit_rounds", 1, 1 << 20)
        self._commit_interval_ms = (
            None if commit_interval_ms is None
            else _check_int(commit_interval_ms, "commit_interval_ms", 1, 1 << 40)
        )
        self._max_conflicts = _check_int(max_conflicts, "max_conflicts", 0, 1 << 40)
        if retire_after_ms is not None:
            _check_int(retire_after_ms, "retire_after_ms", 1, 1 << 50)
        self._max_pending = _check_int(max_pending, "max_pending", 1, 1 << 30)
        if isinstance(members, str | bytes):
            raise ConfigError("members must be an iterable of peer names, not one string")
        try:
            declared = [_check_name(m, "a member") for m in members]
        except TypeError:
            raise ConfigError(f"members must be an iterable of peer names, got {members!r}") \
                from None
        # "auto": compaction by itself only when the members are declared. With members
        # learned as they are heard of, a replica that compacts before it has heard of a
        # peer that wrote concurrently cannot always take that peer's work any more
        # (docs/gc.md, "Declared members"): an explicit gc_min_entries opts in anyway.
        auto = gc_min_entries == "auto"
        if auto:
            gc_min_entries = GC_MIN_ENTRIES if declared else None
        self._gc_min = (
            None if gc_min_entries is None
            else _check_int(gc_min_entries, "gc_min_entries", 1, 1 << 40)
        )
        if not isinstance(group_commit, bool):
            raise ConfigError(f"group_commit must be a bool, got {group_commit!r}")
        self.group_commit = group_commit
        if clock is None or incarnation is None:
            from hybridsync import _system

            clock = clock or _system.wall_clock_ms
            incarnation = incarnation if incarnation is not None else _system.random_incarnation()
        if not callable(clock):
            raise ConfigError("clock must be a callable returning milliseconds")
        self.incarnation = _check_int(incarnation, "incarnation", 0, (1 << 64) - 1)
        if store is not None and path is not None:
            raise ConfigError("give either store= or path=, not both")
        if path is not None:
            from hybridsync.store.sqlite import SQLiteStore

            store = SQLiteStore(path, space=self.space, peer=self.peer)
        self._store: Store = store if store is not None else MemoryStore()
        self._now_ms = clock
        self._last_cycle_ms = int(clock())
        self._clock = HybridLogicalClock(clock)
        self._log = CausalLog(self.space, max_pending=max_pending)
        self._pending_listeners: list[Callable[[], None]] = []
        self._path_observers = 0
        self._fields = FieldsPlane(
            yjs_client_id(self.peer, self.incarnation), self._autocommit,
            group_commit=group_commit, on_pending=self._pending_started,
        )
        self._conflict_index = FieldsConflictIndex()
        self._regions = RegionsPlane(self._log.happened_before)
        self._decoded: dict[bytes, list[tuple[Part, Any]]] = {}
        self._conflicts: list[tuple[tuple[Any, ...], Conflict]] = []
        self._observers: list[Callable[[Change], None]] = []
        self._events: list[Change] = []
        self._dispatching = False
        self._links: dict[str, _Link] = {}
        self._txn_note: str | None = None
        self._doc_generation = 0
        self._decoded_local: list[tuple[Part, Any]] = []
        self._rejected = 0
        self._frames_sent = self._frames_received = 0
        self._bytes_sent = self._bytes_received = 0
        # garbage collection (``docs/gc.md``)
        self._stability = Stability(self.peer, retire_after_ms)
        # members declared up front count before they are heard of: no compaction leaves
        # them behind (docs/gc.md, "Declared members")
        for m in declared:
            self._stability.notice(m, self._last_cycle_ms)
        # the fields document as of the compacted prefix (``_stable_doc``): not kept while
        # the live document holds exactly that state (``_release_stable``); then only its
        # size and digest are (the store's checkpoint holds it too)
        self._stable: pycrdt.Doc[Any] | None = pycrdt.Doc(skip_gc=True)
        self._stable_len = 0
        self._stable_digest = b""
        # what compactions of the fields checkpoint dropped (deleted map entries): every
        # update applied here that names a dropped range is rewritten against it
        self._dropped = DroppedRanges()
        self._fields_compacted_bytes = 0
        # Anchors of deleted keys go once every member writes at a later cut (docs/gc.md,
        # "Anchors: the second stability level"): the cut the fields checkpoint was last
        # compacted at; whether the next contribution of ours must declare it; declarations
        # seen and not yet stable; the largest cut declared by a stable contribution; per
        # fields compaction, its cut and its anchors' tails; clients that pin every anchor.
        self._fields_cut: tuple[int, bytes] | None = None
        self._declare = False
        self._declared: list[tuple[tuple[int, bytes], str, int]] = []
        self._stable2: tuple[int, bytes] | None = None
        self._gens: list[tuple[tuple[int, bytes], frozenset[tuple[int, int]]]] = []
        self._anchor_pins = 0
        self._base_key: tuple[int, bytes] | None = None
        self._archive: list[tuple[tuple[Any, ...], Conflict]] = []
        self._gone_meta: dict[bytes, tuple[tuple[int, bytes], str]] = {}
        self._compacted = 0
        self._late = 0
        # late work (docs/gc.md, "Late work: roll-back"): the drafts refused as late, kept
        # (bounded) so a roll-back can apply them; the roll-back in progress; the peers that
        # could not serve one for the lamport time asked
        self._late_pool: dict[tuple[str, int], Draft] = {}
        self._rollback: _RollBack | None = None
        self._rollback_failed: set[tuple[str, int]] = set()
        self._rollbacks = 0
        self._auto_collect = True
        # the bytes trigger (G5, docs/gc.md; off unless gc_min_bytes is set): compact once
        # the stable prefix weighs max(gc_min_bytes, content / 2); the retained bytes are
        # counted incrementally (_retained_bytes), the limit once per compaction
        # ("auto" with declared members: on, so G5 holds between compactions too)
        self._gc_min_bytes: int | None = GC_MIN_BYTES if auto and declared else None
        self._gc_limit = 0
        self._gc_limit_key: tuple[Any, ...] | None = None
        self._gc_counted: tuple[Any, ...] | None = None
        self._gc_counted_vv: dict[str, int] = {}
        self._gc_retained = 0
        self._gc_retained_len = 0
        self._replay_store()

    # ---- restart -------------------------------------------------------------------------
    def _replay_store(self) -> None:
        """Rebuild the replica from its store (a restart keeps every returned commit)."""
        raw = self._store.get_meta("checkpoint")
        if raw:  # (b"": a roll-back to a peer that never compacted)
            try:
                self._load_checkpoint(decode_checkpoint(self.space, raw))
            except PayloadError as exc:
                raise StoreError(f"the stored checkpoint is unreadable: {exc}") from None
        stored = list(self._store.contributions())
        for c in stored:
            c.verify(self.space)
            self._log.check(c)
            self._apply(c, local=False, store=False)
        self._events.clear()
        for c in stored:
            self._clock.observe(c.hlc)

    # ---- the public surface --------------------------------------------------------------
    @property
    def fields(self) -> FieldMap:
        """The structured memory: a live dict-like view of the root ``Y.Map`` ``fields``."""
        return self._fields.view

    def text(self, name: str) -> TextRegion:
        """The text region ``name`` (created if absent): hand over whole new texts with
        ``set``; the next cycle (``commit``, ``sync_to``, a transaction's end) commits the diff.
        After ``delete_region(name)`` it commits the deletion first, then re-creates the
        region (inside a transaction: ``ConfigError``, re-create it after the transaction)."""
        self._commit_deletion_of(name)
        return self._regions.text(name)

    def buffer(
        self, name: str, *, shape: Any, dtype: Any = "float32", codec: str | None = None
    ) -> BufferRegion:
        """The numpy-backed buffer region ``name`` (created if absent); write in place.
        ``codec="q4"`` (float16 only) stores and ships it 4-bit quantized (docs/q4.md).
        After ``delete_region(name)`` it commits the deletion first, as :meth:`text` does."""
        self._commit_deletion_of(name)
        return self._regions.buffer(name, shape, dtype, codec)

    def _commit_deletion_of(self, name: str) -> None:
        """A deletion of ``name`` still waiting for the cycle is committed now (outside a
        transaction), so a handle taken now writes into the re-created region."""
        if not self._fields.in_transaction and isinstance(name, str) \
                and self._regions.deletion_pending(name):
            self.commit()

    def delete_region(self, name: str) -> None:
        """Delete a text or buffer region, leaving a tombstone: an edit concurrent with the
        deletion cannot resurrect it (it is reported as a conflict). Committed by the next
        cycle. An unknown name raises :class:`~hybridsync.errors.RegionNotFound`; a handle
        taken before the deletion raises ``ConfigError`` when used, one taken after it
        (``mem.text(name)`` again) re-creates the region."""
        self._regions.delete(name)

    def regions(self) -> dict[str, str]:
        """Existing regions, ``name -> "text" | "buffer"``."""
        return self._regions.names()

    def region_bytes(self) -> list[tuple[str, str, bytes]]:
        """``(kind, name, value bytes)`` of every existing region as folded (for checkers)."""
        return self._regions.digest_items()

    def state_digest(self) -> str:
        """blake2b over the canonical fields JSON and every region's bytes: equal on converged
        replicas."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.fields_json().encode())
        for kind, name, data in self._regions.digest_items():
            h.update(f"\x00{kind}\x00{name}\x00{len(data)}\x00".encode())
            h.update(data)
        return h.hexdigest()

    @property
    def doc(self) -> Any:
        """The underlying ``pycrdt.Doc`` (read it; write through ``fields``)."""
        return self._fields.doc

    @contextmanager
    def transaction(self, note: str = "") -> Iterator[Memory]:
        """Group writes into one atomic commit (one contribution).

        If the block raises, nothing of it is committed: the fields document is rebuilt from
        the committed log (with a fresh Yjs client id, so the abandoned items never exist
        anywhere), region edits made inside the block are reverted, and the exception
        propagates. Region edits made before the block are committed when it starts.
        """
        if not isinstance(note, str) or len(note.encode()) > 4096:
            raise ConfigError("note must be a str of at most 4096 bytes")
        if self._fields.in_transaction:
            raise TransactionError("transactions do not nest; one is already open")
        if self._has_local_edits():
            # so an abort reverts exactly this block's region edits, and pending writes
            # (group commit) are committed before it: an abort never loses them
            self._cycle()
        self._fields.begin()
        self._txn_note = note
        ok = False
        try:
            yield self
            ok = True
        finally:
            update = self._fields.end()
            self._txn_note = None
            if ok:
                self._commit_parts(update, self._regions.cycle(), note)
            else:
                if update is not None:
                    self._rebuild_fields()
                self._regions.revert()
            self._dispatch()

    def commit(self) -> None:
        """Run the commit cycle now. Fields commit as they are written (with
        ``group_commit``, pending field writes commit here); texts and buffers (the
        diff/patch planes) commit their pending edits here."""
        if self._fields.in_transaction:
            raise TransactionError("commit() inside a transaction: it commits when it ends")
        self._cycle()
        self._dispatch()

    def poll(self) -> bool:
        """Run the periodic cycle if ``commit_interval_ms`` has passed on the injected clock
        since the last one; drivers call this on their timer. True when it ran."""
        if self._commit_interval_ms is None or self._fields.in_transaction:
            return False
        if int(self._now_ms()) - self._last_cycle_ms < self._commit_interval_ms:
            return False
        self._cycle()
        self._dispatch()
        return True

    def _rebuild_fields(self, *, same_client: bool = False) -> None:
        """Rebuild the fields document from the committed log only.

        A new Yjs client id unless ``same_client``: only allowed when the document holds
        nothing uncommitted (after a compaction), so no (client, clock) pair is ever reused
        for different content — and concurrent writes keep the ids that order them."""
        if same_client:
            client_id = self._fields.doc.client_id
        else:
            self._doc_generation += 1
            client_id = yjs_client_id(self.peer, self.incarnation, self._doc_generation)
        updates: list[bytes] = [self._stable_doc.get_update()]
        for c in self._log.ordered():
            updates.extend(self._fields_in(u) for u in self._fields_updates(c))
        self._fields.rebuild(client_id, updates)

    def _cycle(self) -> None:
        """The commit cycle: what changed in texts and buffers, and the pending field writes
        of group commit, as one contribution."""
        self._last_cycle_ms = int(self._now_ms())
        parts = self._regions.cycle()
        update = self._fields.take_pending() if self._fields.has_pending else None
        if parts or update is not None:
            self._commit_parts(update, parts, "")

    def _has_local_edits(self) -> bool:
        """Whether a cycle may have something to commit (regions exist, or writes pend)."""
        return bool(self._regions.texts or self._regions.buffers) or self._fields.has_pending

    def _commit_pending(self) -> None:
        """Group commit: the pending field writes become one contribution now."""
        if self._fields.has_pending:
            self._commit_parts(self._fields.take_pending(), [], "")

    def _pending_started(self) -> None:
        for fn in list(self._pending_listeners):
            try:
                fn()
            except Exception:
                log.exception("on_pending callback %r raised", fn)

    @property
    def pending_writes(self) -> int:
        """Autocommitted field writes waiting for the next cycle (``group_commit`` only;
        always 0 without it). They are visible to reads but not durable, not in
        ``history()`` and not sent until a cycle commits them."""
        return self._fields.pending_writes

    def on_pending(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn()`` when an autocommitted write starts a pending batch (``group_commit``:
        the first write after a cycle), so a driver can run a cycle soon. ``fn`` must not
        write to the replica; it may schedule work. Returns a function that unsubscribes."""
        if not callable(fn):
            raise ConfigError("on_pending() needs a callable")
        self._pending_listeners.append(fn)

        def unsubscribe() -> None:
            if fn in self._pending_listeners:
                self._pending_listeners.remove(fn)

        return unsubscribe

    def _commit_parts(self, update: bytes | None, parts: list[Part], note: str) -> None:
        if not parts:
            if update is not None:
                self._commit_local("fields", update, note)
            return
        all_parts = ([Part("fields", "", update)] if update is not None else []) + parts
        payload = encode_parts(all_parts)
        self._decoded_local = self._regions.validate(parts)
        self._commit_local("multi", payload, note)

    def history(self) -> list[Contribution]:
        """Every contribution in the deterministic causal order ``(lamport, id)``."""
        return self._log.ordered()

    @property
    def heads(self) -> tuple[str, ...]:
        """The current DAG heads, as sorted hex ids."""
        return tuple(sorted(h.hex() for h in self._log.heads))

    @property
    def version_vector(self) -> VersionVector:
        return self._log.version_vector()

    def conflicts(self) -> list[Conflict]:
        """Recorded conflicts, oldest first (by the later contribution's place in the order):
        the newest ``max_conflicts`` of them.

        The cap applies to the whole list, not only to the archive of conflicts that name
        contributions folded into the checkpoint: replicas that hold the same history report
        the same list whether or not, and when, they compacted."""
        entries = self._conflict_entries()
        if len(entries) > self._max_conflicts:
            entries = entries[len(entries) - self._max_conflicts:]
        return [c for _, c in entries]

    @property
    def max_conflicts(self) -> int:
        """How many conflicts :meth:`conflicts` reports at most (the newest)."""
        return self._max_conflicts

    def _meta_of(self, cid: bytes) -> tuple[tuple[int, bytes], str]:
        c = self._log.get(cid)
        if c is not None:
            return c.order_key, c.author
        return self._gone_meta[cid]

    def _region_conflict(self, plane: str, region: str,
                         issue: Any) -> tuple[tuple[Any, ...], Conflict]:
        """A fold's issue as a :class:`Conflict`, with its place in the conflict order."""
        ids = [issue.cid] if issue.other is None else sorted(
            [issue.cid, issue.other], key=lambda x: self._meta_of(x)[0]
        )
        conflict = Conflict(
            plane=plane,
            location=region,
            contributions=tuple(x.hex() for x in ids),
            values=(issue.detail,),
            paths=(region,),
            authors=tuple(self._meta_of(x)[1] for x in ids),
            kind=issue.kind,
        )
        keys = sorted(self._meta_of(x)[0] for x in ids)
        return (keys[-1], keys[0], region), conflict

    def _conflict_entries(self) -> list[tuple[tuple[Any, ...], Conflict]]:
        merged: list[tuple[Any, Conflict]] = [*self._archive, *self._conflicts]
        for plane, region, issue in self._regions.issues():
            merged.append(self._region_conflict(plane, region, issue))
        merged.sort(key=lambda kc: kc[0])
        out: list[tuple[tuple[Any, ...], Conflict]] = []
        seen: set[tuple[str, str, tuple[str, ...], str]] = set()
        for key, c in merged:
            ident = (c.plane, c.location, c.contributions, c.kind)
            if ident not in seen:
                seen.add(ident)
                out.append((key, c))
        return out

    def observe(self, fn: Callable[[Change], None], *, paths: bool = True) -> Callable[[], None]:
        """Call ``fn(change)`` after each applied contribution, local or remote.

        Returns a function that unsubscribes. Callbacks run after the change is fully applied
        and may write to the replica; an exception in a callback is logged, never propagated
        into the sync path. ``paths=False``: this callback does not read ``Change.paths``
        (they are ``()`` unless another observer wants them), which spares the fields plane
        the cost of tracking changed key paths.
        """
        if not callable(fn):
            raise ConfigError("observe() needs a callable")
        if paths:
            self._path_observers += 1
            self._fields.track_changes()
        self._observers.append(fn)
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if fn in self._observers and not done:
                done = True
                self._observers.remove(fn)
                if paths:
                    self._path_observers -= 1
                    if not self._path_observers:
                        self._fields.track_changes(False)

        return unsubscribe

    def fields_json(self) -> str:
        """Canonical JSON of the fields (sorted keys): byte-identical on converged replicas."""
        return json.dumps(
            self._fields.to_py(), sort_keys=True, separators=(",", ":"),
            default=canonical_json_default,
        )

    def stats(self) -> ReplicaStats:
        """Content bytes (fields JSON and region values) and metadata bytes: everything else
        the replica keeps — retained contributions (payloads and headers), stubs, the Yjs
        document's overhead, the fields checkpoint unless the live document holds exactly
        it, dropped ranges, buffer bases, the conflict archive. What is kept both in memory
        and in the store counts once."""
        fields_bytes = len(self.fields_json().encode())
        content = fields_bytes + self._regions.content_bytes()
        entry = self._entry_bytes
        log_bytes = sum(entry(c) for c in self._log.ordered()) + self._log.stub_bytes()
        live = self._fields.doc.get_update()
        metadata = log_bytes + max(0, len(live) - fields_bytes)
        if self._base_key is not None:
            metadata += self._stable_bytes(live) + self._regions.base_bytes()
            metadata += len(self._dropped.encode()) if self._dropped else 0
            metadata += sum(64 + sum(len(repr(v)) for v in c.values) for _, c in self._archive)
        return ReplicaStats(
            content_bytes=content,
            metadata_bytes=metadata,
            log_length=len(self._log),
            compacted=self._compacted,
            heads=len(self._log.heads),
            version_vector=self._log.version_vector().to_dict(),
            stable_frontier=self.stable_frontier().to_dict(),
            conflicts=len(self.conflicts()),
            pending=self._log.pending_count,
            rejected=self._rejected,
            frames_sent=self._frames_sent,
            frames_received=self._frames_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            late=self._late,
            rollbacks=self._rollbacks,
            retired=tuple(sorted(self._stability.retired)),
        )

    @property
    def compacted_upto(self) -> tuple[int, bytes] | None:
        """The order key ``(lamport, id)`` of the last contribution folded into the
        checkpoint; ``history()`` holds what sorts after it. None before any compaction."""
        return self._base_key

    def stable_frontier(self) -> VersionVector:
        """The causal-stability frontier (DESIGN.md §1): the pointwise minimum of this
        replica's version vector and every member's effective acknowledgement, learned
        directly or gossiped. Empty while some member has acknowledged a contribution this
        replica does not hold yet."""
        frontier = self._frontier()
        return VersionVector(frontier or {})

    def _frontier(self) -> dict[str, int] | None:
        now = int(self._now_ms())
        for author in self._log.vv:
            self._stability.notice(author, now)
        for name in self._links:
            self._stability.notice(name, now)
        return self._stability.frontier(self._log.vv, now)

    # ---- garbage collection --------------------------------------------------------------
    def collect(self, *, min_entries: int = 1) -> int:
        """Fold the stable prefix of the log into the checkpoint now (it also runs by itself
        after ``receive`` once ``gc_min_entries`` contributions are stable, unless
        :attr:`auto_collect` is off). Returns how many
        contributions were compacted. Observers hear of a pending batch it commits
        (``group_commit``) before it returns."""
        _check_int(min_entries, "min_entries", 0, 1 << 40)
        if self._fields.in_transaction:
            raise TransactionError("collect() inside a transaction")
        n = self._collect(max(1, min_entries))
        self._dispatch()
        return n

    def _collect(self, min_entries: int, min_bytes: int | None = None) -> int:
        """Compact the stable prefix if it holds at least ``min_entries`` contributions or
        (``min_bytes``) weighs at least that many bytes."""
        frontier = self._frontier()
        if frontier is None:
            return 0
        n = self._log.stable_prefix(frontier)
        if n < min_entries and not (
            n and min_bytes is not None and self._prefix_bytes(n) >= min_bytes
        ):
            return 0
        # group commit: the compaction rebuilds the fields document; pending writes commit
        # first (after the stable prefix: nobody has acknowledged them yet)
        self._commit_pending()
        # When the retained suffix writes no field, the fields checkpoint is compacted now
        # (if the prefix wrote fields and it is past _FIELDS_COMPACT_MIN_BYTES) and then
        # equals the live document: it is kept once, not twice (G5, docs/gc.md)
        ordered = self._log.ordered()
        whole = not any(self._fields_updates(c) for c in ordered[n:])
        force = False
        if whole:
            absorbed = sum(len(u) for c in ordered[:n] for u in self._fields_updates(c))
            held = self._stable_len if self._stable is None else len(self._stable.get_update())
            force = absorbed > 0 and held + absorbed > _FIELDS_COMPACT_MIN_BYTES
        self._compact(n, fields=force)
        if whole:
            self._release_stable()
        return n

    @property
    def auto_collect(self) -> bool:
        """Whether ``receive`` compacts by itself once ``gc_min_entries`` contributions are
        stable (the default). A driver with idle time of its own (``hs.Peer``) turns it off and
        calls :meth:`collect` when :attr:`collect_due` says so, so a compaction never delays
        the frame that made it due."""
        return self._auto_collect

    @auto_collect.setter
    def auto_collect(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ConfigError(f"auto_collect must be a bool, got {value!r}")
        self._auto_collect = value

    @property
    def collect_due(self) -> bool:
        """True when :meth:`collect` would compact: at least ``gc_min_entries``
        contributions at the head of the order are stable, or (:attr:`gc_min_bytes` set) the
        stable prefix weighs at least half the content and that many bytes. Cheap while the log is
        shorter than that and lighter than that (a length check and the bytes of what
        arrived since the last call); otherwise it computes the stable frontier. Always
        False with ``gc_min_entries=None``."""
        if self._gc_min is None:
            return False
        limit = self._gc_bytes_limit()
        if len(self._log) < self._gc_min and (limit is None or self._retained_bytes() < limit):
            return False
        frontier = self._frontier()
        if frontier is None:
            return False
        n = self._log.stable_prefix(frontier)
        return n >= self._gc_min or (
            n > 0 and limit is not None and self._prefix_bytes(n) >= limit)

    def _maybe_collect(self) -> None:
        if not self._auto_collect or self._gc_min is None or self._rollback is not None:
            return
        limit = self._gc_bytes_limit()
        if len(self._log) >= self._gc_min or (
                limit is not None and self._retained_bytes() >= limit):
            self._collect(max(1, self._gc_min), limit)

    @staticmethod
    def _entry_bytes(c: Contribution) -> int:
        """What a retained contribution adds to ``stats().metadata_bytes``."""
        return len(c.payload) + 32 * (1 + len(c.parents)) + len(c.author) + 24 + len(c.note)

    def _prefix_bytes(self, n: int) -> int:
        """The bytes of the first ``n`` contributions of the total order."""
        return sum(self._entry_bytes(c) for c in self._log.ordered()[:n])

    def _retained_bytes(self) -> int:
        """The bytes of every retained contribution. Counted incrementally: only what the
        version vector gained since the last call is measured, unless the log changed
        otherwise (a compaction, a checkpoint adopted, a roll-back), then all of it."""
        log_ = self._log
        vv = log_.vv
        key = (self._base_key, self._compacted, self._rollbacks)
        if key == self._gc_counted:
            before = self._gc_counted_vv
            grown = [(a, before.get(a, 0), s) for a, s in vv.items() if s != before.get(a, 0)]
            if all(s > old >= log_.compacted_seq(a) for a, old, s in grown):
                added = [c for a, old, s in grown for c in log_.chain(a, old, s)]
                if self._gc_retained_len + len(added) == len(log_):
                    self._gc_retained += sum(self._entry_bytes(c) for c in added)
                    self._gc_retained_len = len(log_)
                    if grown:
                        self._gc_counted_vv = dict(vv)
                    return self._gc_retained
        self._gc_retained = sum(self._entry_bytes(c) for c in log_.ordered())
        self._gc_retained_len = len(log_)
        self._gc_counted = key
        self._gc_counted_vv = dict(vv)
        return self._gc_retained

    def _gc_bytes_limit(self) -> int | None:
        """The bytes trigger's limit: half the content as of the last compaction, at least
        :attr:`gc_min_bytes`; None while the trigger is off. Recomputed once per compaction
        (it measures the content)."""
        if self._gc_min_bytes is None:
            return None
        key = (self._base_key, self._compacted, self._rollbacks, self._gc_min_bytes)
        if key != self._gc_limit_key:
            content = len(self.fields_json().encode()) + self._regions.content_bytes()
            self._gc_limit = max(self._gc_min_bytes, content // 2)
            self._gc_limit_key = key
        return self._gc_limit

    @property
    def gc_min_bytes(self) -> int | None:
        """The bytes trigger (``None``: off; by default 16 KiB when the members are declared
        and ``gc_min_entries`` is left "auto", else off): with an int, ``receive`` (and
        :attr:`collect_due`) also compact once the stable prefix weighs at least half the
        content as of the last compaction, and at least this many bytes, so metadata stays
        within a constant factor of the content between compactions too (G5, docs/gc.md).
        Compaction points then follow frame sizes and delivery, and so do the contributions
        a replica writes after compacting its fields checkpoint (docs/gc.md, G5)."""
        return self._gc_min_bytes

    @gc_min_bytes.setter
    def gc_min_bytes(self, value: int | None) -> None:
        if value is not None:
            _check_int(value, "gc_min_bytes", 1024, 1 << 40)
        self._gc_min_bytes = value

    def _compact(self, n: int, *, fields: bool = False) -> None:
        dropped = self._log.ordered()[:n]
        gone_hex = {c.hex_id for c in dropped}
        upto = dropped[-1].order_key
        # 1. conflicts that name compacted contributions move to the archive (while every id
        #    can still be resolved): fields conflicts, and region issues about a compacted
        #    edit. A region issue about a retained edit (one naming only a compacted deletion)
        #    stays with its fold: a late contribution that rewinds the fold recomputes it, so
        #    an archived copy could outlive it (coverage soak seed 821101); the base keeps
        #    what recomputing it needs.
        archived = {(c.plane, c.location, c.contributions, c.kind) for _, c in self._archive}

        def archive(key: tuple[Any, ...], conflict: Conflict) -> None:
            ident = (conflict.plane, conflict.location, conflict.contributions, conflict.kind)
            if ident not in archived:
                archived.add(ident)
                self._archive.append((key, conflict))

        for key, conflict in self._conflicts:
            if any(h in gone_hex for h in conflict.contributions):
                archive(key, conflict)
        gone_ids = {c.id for c in dropped}
        for plane, region, issue in self._regions.issues():
            if issue.cid in gone_ids:
                archive(*self._region_conflict(plane, region, issue))
        self._conflicts = [
            kc for kc in self._conflicts
            if not any(h in gone_hex for h in kc[1].contributions)
        ]
        # 2. the fields checkpoint absorbs the compacted Yjs updates (a causal prefix, so
        #    nothing waits for a missing dependency)
        for c in dropped:
            for update in self._fields_updates(c):
                self._stable_doc.apply_update(self._fields_in(update))
            self._conflict_index.forget(c.id)
            self._decoded.pop(c.id, None)
        # 3. regions fold the prefix into their bases; 4. the log keeps stubs and the dots
        #    that the folds still name
        for plane, region, issue in self._regions.compact(upto):
            archive(*self._region_conflict(plane, region, issue))
        self._archive.sort(key=lambda kc: kc[0])
        if len(self._archive) > self._max_conflicts:
            del self._archive[: len(self._archive) - self._max_conflicts]
        # (a fold may name a contribution that stays a stub now and goes with a later
        # compaction: its order key and author are kept whenever it leaves the log)
        referenced = self._regions.referenced()
        meta: dict[bytes, tuple[tuple[int, bytes], str]] = {}
        for cid in referenced:
            held = self._log.get(cid)
            if held is not None:
                meta[cid] = (held.order_key, held.author)
            elif cid in self._gone_meta:
                meta[cid] = self._gone_meta[cid]
        self._log.compact(n, referenced)
        self._gone_meta = {k: v for k, v in meta.items() if k not in self._log}
        self._base_key = upto
        self._compacted += n
        # The fields checkpoint is compacted (a full pass over its state) only once it has
        # doubled since the last time: amortised O(1) per byte, and metadata stays within
        # 2x of the compacted state. Only then does the conflict index need reseeding (it
        # already indexes everything else it will be asked about).
        state_bytes = len(self._stable_doc.get_update())
        if fields or state_bytes > 2 * self._fields_compacted_bytes + _FIELDS_COMPACT_MIN_BYTES:
            self._compact_fields_now()
        # 5. the store drops them and keeps the checkpoint, atomically
        self._store.compact([c.id for c in dropped], self._checkpoint_bytes())

    def _compact_fields_now(self) -> None:
        self._compact_fields()
        state = self._stable_state()
        self._fields_compacted_bytes = len(state)
        self._conflict_index = FieldsConflictIndex()
        self._conflict_index.seed(state, self._dropped)
        for c in self._log.ordered():
            self._conflict_index.defer(c)

    def _catch_up(self, cut: tuple[int, bytes]) -> None:
        """A contribution declares that its author's fields checkpoint was compacted at
        ``cut``: its Yjs update is written for that document (a set of a key whose chain
        was dropped has no origin). Compact at least as far before applying it. ``cut`` is
        in the contribution's causal past and was stable where it was declared, so every
        contribution sorting up to it is held here and none can still arrive."""
        if self._fields_cut is not None and cut <= self._fields_cut:
            return
        if self._base_key is None or self._base_key < cut:
            ordered = self._log.ordered()
            n = 0
            while n < len(ordered) and ordered[n].order_key <= cut:
                n += 1
            if not n:
                log.error("a declared fields cut %s lies beyond what this replica holds", cut)
                return
            self._commit_pending()
            self._compact(n, fields=True)
            return
        self._compact_fields_now()
        self._store.compact([], self._checkpoint_bytes())

    def _pin_anchors(self) -> Callable[[], None]:
        """Keep every anchor of deleted keys while the returned function has not been
        called: an outside Yjs client (``interop``) holds the chains as they were when it
        synced and may name their dropped tails at any time. Returns the release."""
        self._anchor_pins += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._anchor_pins -= 1

        return release

    def _note_stable_declarations(self) -> None:
        """Declarations inside the stable frontier: every member applied them, so every
        member writes at that cut or a later one from now on (its earlier contributions
        are held here)."""
        if not self._declared:
            return
        frontier = self._frontier()
        if frontier is None:
            return
        left = []
        for cut, author, seq in self._declared:
            if frontier.get(author, 0) >= seq:
                if self._stable2 is None or cut > self._stable2:
                    self._stable2 = cut
            else:
                left.append((cut, author, seq))
        self._declared = left

    def _fields_in(self, update: bytes) -> bytes:
        """A contribution's Yjs update as this replica's (compacted) document takes it."""
        if rewrite_needed(update, self._dropped):  # a header scan: most updates name nothing
            return rewrite_update(update, self._dropped)
        return update

    def _compact_fields(self) -> None:
        """Drop the deleted map entries of the fields checkpoint (``fields/_compact.py``)
        and rebuild the live document on it: overwritten and deleted keys stop costing
        metadata (G5). Map chains written by retained contributions that are concurrent with
        part of the checkpoint stay whole (they may name any item of them)."""
        folded = self._log.compacted()
        concurrent = [
            u
            for c in self._log.ordered()
            if any(self._log.causal_vv(c.id).get(a, 0) < n for a, n in folded.items())
            for u in self._fields_updates(c)
        ]
        state = compact_state(self._stable_state(), concurrent=concurrent)
        stable: pycrdt.Doc[Any] = pycrdt.Doc(skip_gc=True)
        stable.apply_update(state.update)  # deleted content written as ContentDeleted
        self._stable_doc = stable
        self._fields_cut = self._base_key
        # Only a compaction that dropped the chain of a deleted key (it left anchors) changes
        # what we write next: a set of that key now has no origin. Any other one (dropped
        # overwritten items, void ranges) leaves every later write byte for byte as it was,
        # so it declares nothing and our next contribution keeps its id (G4, docs/gc.md).
        self._declare = self._declare or bool(state.dropped.tails)
        self._note_stable_declarations()
        if state.dropped.tails:
            assert self._base_key is not None
            self._gens.append((self._base_key, frozenset(state.dropped.tails.values())))
        # Anchors of a compaction at or before a cut that a stable contribution declared
        # can no longer be named by anyone (unless a Yjs client holds the old chains).
        gone: set[tuple[int, int]] = set()
        if self._stable2 is not None and not self._anchor_pins:
            for key, tails in self._gens:
                if key <= self._stable2:
                    gone |= tails
            self._gens = [g for g in self._gens if g[0] > self._stable2]
        if not state.dropped_items and not gone:
            return
        needed: list[tuple[int, int]] = []
        for c in self._log.ordered():
            for u in self._fields_updates(c):
                for it in decode_update(u).items:
                    needed.extend(r for r in (it.origin, it.right_origin) if r is not None)
                    if isinstance(it.parent, tuple):
                        needed.append(it.parent)
        self._dropped = self._dropped.union(state.dropped).pruned(
            needed, state.dropped, forget=gone
        )
        if state.dropped_items:
            self._rebuild_fields(same_client=True)

    def _fields_updates(self, c: Contribution) -> list[bytes]:
        if not c.payload:
            return []
        if c.kind == "fields":
            return [c.payload]
        return [p.data for p in decode_parts(c.payload) if p.plane == "fields"]

    @property
    def _stable_doc(self) -> pycrdt.Doc[Any]:
        """The fields document as of the compacted prefix; rebuilt if it was released."""
        if self._stable is None:
            doc: pycrdt.Doc[Any] = pycrdt.Doc(skip_gc=True)
            doc.apply_update(self._stable_state())
            self._stable = doc
        return self._stable

    @_stable_doc.setter
    def _stable_doc(self, doc: pycrdt.Doc[Any]) -> None:
        self._stable = doc

    def _stable_state(self, live: bytes | None = None) -> bytes:
        """The fields checkpoint as a Yjs update. Once released (``_release_stable``) it is
        the live document's state as long as that has not changed (``live``: its update, if
        the caller has it), else the store's checkpoint: both are checked against the size
        and digest kept."""
        if self._stable is not None:
            return self._stable.get_update()
        if live is None and not self._fields.in_transaction:
            live = self._fields.doc.get_update()
        if live is not None and self._is_stable_state(live):
            return live
        raw = self._store.get_meta("checkpoint")
        fields = decode_checkpoint(self.space, raw).fields if raw else b""
        if not self._is_stable_state(fields):
            raise StoreError("the store no longer holds the fields checkpoint this replica "
                             "wrote (its meta key 'checkpoint' was replaced)")
        return fields

    def _is_stable_state(self, update: bytes) -> bool:
        return len(update) == self._stable_len and \
            hashlib.blake2b(update, digest_size=16).digest() == self._stable_digest

    def _release_stable(self) -> None:
        """Stop keeping the fields checkpoint as a document of its own when the live document
        holds exactly its state (G5: the state is kept once in memory, not twice). Only right
        after the store took the checkpoint: until ``_stable_doc`` is rebuilt, the live
        document (while unchanged) or the store's checkpoint is the copy read."""
        if self._stable is None or self._fields.in_transaction or self._fields.has_pending:
            return
        state = self._stable.get_update()
        if state != self._fields.doc.get_update():
            return
        self._stable_len = len(state)
        self._stable_digest = hashlib.blake2b(state, digest_size=16).digest()
        self._stable = None

    def _stable_bytes(self, live: bytes) -> int:
        """What the fields checkpoint adds to the metadata: nothing while the live document
        (``live``: its update) holds exactly it, else its size (in memory, or in the store
        only once released)."""
        if self._stable is not None:
            return len(self._stable.get_update())
        return 0 if self._is_stable_state(live) else self._stable_len

    def _checkpoint(self) -> Checkpoint:
        assert self._base_key is not None
        gone = {}
        for cid, (author, seq) in self._log.gone_dots().items():
            meta = self._gone_meta.get(cid)
            gone[cid] = (author, seq, meta[0][0] if meta else 0)
        return Checkpoint(
            base=self._base_key,
            compacted=self._log.compacted(),
            stubs=self._log.stubs(),
            gone=gone,
            fields=self._stable_state(),
            dropped=self._dropped.encode() if self._dropped else b"",
            regions=self._regions.bases(),
            archive=list(self._archive),
            fields_cut=self._fields_cut,
            stable2=self._stable2,
            gens=[(k, sorted(t)) for k, t in self._gens],
        )

    def _checkpoint_bytes(self) -> bytes:
        return encode_checkpoint(self.space, self._checkpoint())

    def _load_checkpoint(self, cp: Checkpoint | None) -> None:
        """Replace the whole state by a checkpoint (restart, or adopting a peer's), or by
        the empty state (``None``: a roll-back to a peer that never compacted)."""
        stable: pycrdt.Doc[Any] = pycrdt.Doc(skip_gc=True)
        if cp is not None:
            try:
                stable.apply_update(cp.fields)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # pycrdt's PanicException derives from BaseException
                raise PayloadError(
                    f"checkpoint fields state is not a Yjs update: {exc!r}") from None
        dropped = DroppedRanges.decode(cp.dropped) if cp and cp.dropped else DroppedRanges()
        self._log = CausalLog(self.space, max_pending=self._max_pending)
        self._dropped = dropped
        self._fields_compacted_bytes = len(cp.fields) if cp else 0
        self._fields_cut = cp.fields_cut if cp else None
        self._declare = self._fields_cut is not None  # say it again after a restart
        self._declared = []
        self._stable2 = cp.stable2 if cp else None
        self._gens = [(k, frozenset(t)) for k, t in cp.gens] if cp else []
        if cp is not None:
            self._log.restore(cp.stubs, cp.compacted,
                              {cid: (a, s) for cid, (a, s, _) in cp.gone.items()})
        self._regions.reset(self._log.happened_before)
        self._regions.restore_bases(cp.regions if cp else [])
        self._stable_doc = stable
        self._doc_generation += 1
        self._fields.rebuild(
            yjs_client_id(self.peer, self.incarnation, self._doc_generation),
            [cp.fields] if cp else [],
        )
        self._conflict_index = FieldsConflictIndex()
        if cp is not None:
            self._conflict_index.seed(cp.fields, self._dropped)
        self._conflicts = []
        self._archive = list(cp.archive) if cp else []
        self._gone_meta = {cid: ((lam, cid), a) for cid, (a, _, lam) in cp.gone.items()} \
            if cp else {}
        self._base_key = cp.base if cp else None
        self._decoded.clear()

    def _adopt_checkpoint(self, data: bytes, sender: str) -> None:
        """A peer sent its checkpoint because we lack what it compacted. Adopt it unless we
        are as far; contributions of ours that sort inside it are re-based: their effects
        are re-applied to the new state and committed anew (nothing of ours is lost) —
        unless another peer holds them already: then it can serve the sender a roll-back
        (docs/gc.md, "Late work"), and re-basing them would reuse their dots."""
        cp = decode_checkpoint(self.space, data)
        if self._base_key is not None and cp.base <= self._base_key:
            return
        vv = self._log.vv
        if all(vv.get(a, 0) >= n for a, n in cp.compacted.items()):
            return  # we hold all it folded (a stale statement made the peer send it)
        if any(n > cp.compacted.get(a, 0) for a, n in self._log.compacted().items()):
            raise IntegrityError("a checkpoint that lacks part of our own compacted state")
        if self._regions.texts or self._regions.buffers:
            self._cycle()
        keep: list[Contribution] = []
        rebase: list[Contribution] = []
        dropped: set[bytes] = set()
        for c in self._log.ordered():
            if c.seq <= cp.compacted.get(c.author, 0):
                continue  # in the checkpoint already
            if c.order_key <= cp.base or any(p in dropped for p in c.parents):
                dropped.add(c.id)
                if c.author == self.peer:
                    rebase.append(c)
                continue
            keep.append(c)
        if rebase:
            first = min(c.seq for c in rebase)
            # a peer that acknowledged them, or may still receive them (sent, not yet
            # acknowledged): it can accept them, so they must not be re-based under their dots
            holders = [n for n, link in self._links.items() if n != sender and max(
                link.known.get(self.peer, 0), link.sent.get(self.peer, 0)) >= first]
            if holders:
                log.info("not adopting %s's checkpoint: %s hold(s) or may hold our late work",
                         sender, ", ".join(sorted(holders)))
                link = self._links.get(sender)
                if link is not None:  # it refuses them until it rolls back: do not resend
                    link.refused = max(link.refused, max(c.seq for c in rebase))
                return
        old_json = self._fields.to_py()
        old_ids = [c.id for c in self._log.ordered()]
        region_parts = [self._decode_multi(c) for c in rebase if c.kind == "multi"]
        touched = sorted({w.path for c in rebase for w in self._conflict_index.writes_of(c)})
        self._late += len(dropped)
        events = len(self._events)
        self._load_checkpoint(cp)
        for c in keep:
            self._log.check(c)
            self._apply(c, local=False, store=False)
        del self._events[events:]  # (re-applied: observers heard of them when they came)
        self._fields.take_changed()
        self._store.compact(old_ids, self._checkpoint_bytes(), keep)
        self._rebase(region_parts, touched, old_json)

    def _rebase(self, region_parts: list[list[tuple[Part, Any]]], touched: list[str],
                old_json: dict[str, Any]) -> None:
        """Re-apply the effects of our own contributions that a checkpoint made late."""
        from hybridsync.regions._textdiff import apply_patch

        for decoded in region_parts:
            for p, obj in decoded:
                if p.plane == "text" and p.region not in self._regions.buffers:
                    region = self.text(p.region)
                    value, _failed = apply_patch(region.value, obj)
                    region.set(str(value))
                elif p.plane == "buffer" and p.region not in self._regions.texts:
                    lay = obj.layout
                    try:
                        buf = self.buffer(p.region, shape=lay.shape, dtype=lay.dtype,
                                          codec=None if lay.codec == "raw" else lay.codec)
                    except ConfigError:
                        # the region took another layout meanwhile: the late write cannot be
                        # re-based into it (a known limit, docs/gc.md) — say so loudly
                        log.error("a late write to buffer %r is lost: the region's layout "
                                  "changed before it could be re-based", p.region)
                        continue
                    raw = buf.array.reshape(-1).view(np.uint8)
                    new, bb, off = obj.block_bytes(), lay.block_bytes, 0
                    for idx in obj.indices.tolist():
                        n = min(bb, lay.nbytes - idx * bb)
                        raw[idx * bb : idx * bb + n] = new[off : off + n]
                        off += n
                elif p.plane == "delete" and p.region in self.regions():
                    self.delete_region(p.region)
        if region_parts:
            self._cycle()
        # Fields: re-assert, for every top-level key our late writes touched, its value then.
        new_json = self._fields.to_py()
        keys = set(old_json) | set(new_json)
        tops = {k for k in keys for path in touched if path == k or path.startswith(k + "/")}
        for k in sorted(tops):
            if k in old_json:
                if new_json.get(k, _MISSING) != old_json[k]:
                    self._fields.view[k] = old_json[k]
            elif k in new_json:
                del self._fields.view[k]

    # ---- late work: roll-back to a peer's older checkpoint (docs/gc.md) -------------------
    def _note_late(self, d: Draft) -> None:
        """A draft that sorts inside our checkpoint: refused, and kept (bounded) so that a
        roll-back to an older checkpoint can apply it."""
        self._late += 1
        if d.dot not in self._late_pool and len(self._late_pool) < self._max_pending:
            self._late_pool[d.dot] = d

    def _late_lamport(self) -> int | None:
        """The lamport time a roll-back must go back before (None: no late work held)."""
        if not self._late_pool:
            return None
        has = self._log.has_dot
        for dot in [dot for dot in self._late_pool if has(dot)]:
            del self._late_pool[dot]  # held now (its author re-based it, or a roll-back)
        return min((d.lamport for d in self._late_pool.values()), default=None)

    def _rollback_request(self, peer: str, link: _Link) -> int | None:
        """The roll-back request to send ``peer`` now, if any: once per peer while we hold
        late work and no roll-back runs, never again to a peer that could not serve it; to
        the peer serving a roll-back, again while part of our compacted range is missing."""
        if link.asked > 0:
            link.asked -= 1  # (an unanswered request, or its answer, was lost: ask again)
            return None
        rb = self._rollback
        if not self._late_pool or (rb is not None and (rb.peer != peer or not rb.need)):
            return None
        need = self._late_lamport()
        if need is None or (rb is None and (peer, need) in self._rollback_failed):
            return None
        # (during a roll-back: part of our compacted range it sent was lost, and what we
        # state does not make it send again, as the dots we send it say we hold more)
        link.asked = 4 * self._retransmit_rounds
        return need

    def _stated(self, peer: str, ours: dict[str, int]) -> dict[str, int]:
        """The version vector we state to ``peer``: ours, except to the peer serving our
        roll-back, which learns what we hold in full for it (so it sends our compacted range
        again, also after a loss)."""
        rb = self._rollback
        if rb is None or rb.peer != peer:
            return ours
        base = rb.checkpoint.compacted if rb.checkpoint is not None else {}
        compacted = self._log.compacted()
        out = {}
        for a, have in ours.items():
            n = base.get(a, 0)
            while n < compacted.get(a, 0) and (a, n + 1) in rb.pool:
                n += 1
            out[a] = have if n >= compacted.get(a, 0) else n
        return out

    def _take_offer(self, peer: str, incarnation: int, data: bytes) -> None:
        """``peer`` answers our roll-back request with its checkpoint (``b""``: it never
        compacted); its contributions follow. Start the roll-back if the offer is older
        than our late work; they are kept aside until they cover our compacted range."""
        need = self._late_lamport()
        cp = decode_checkpoint(self.space, data) if data else None
        link = self._links.get(peer)
        if link is not None:
            link.asked = 0  # answered
        if need is None or self._rollback is not None or self._base_key is None:
            return
        known = _ids_in(cp) if cp is not None else {}
        if cp is not None and not any(self._sorts_after(cp, d, known)
                                      for d in self._late_pool.values()):
            self._rollback_failed.add((peer, need))  # its checkpoint holds none of them either
            return
        base = cp.compacted if cp is not None else {}
        missing = {(a, s) for a, n in self._log.compacted().items()
                   for s in range(base.get(a, 0) + 1, n + 1)}
        if len(missing) > self._max_pending:
            log.warning("roll-back from %s not started: %d contributions to take again is "
                        "over max_pending", peer, len(missing))
            self._rollback_failed.add((peer, need))
            return
        self._rollback = _RollBack(peer, incarnation, cp, missing)
        if link is not None:
            link.asked = 4 * self._retransmit_rounds  # until it re-serves what was lost

    def _sorts_after(self, cp: Checkpoint, d: Draft, known: dict[tuple[str, int], bytes]) -> bool:
        """Whether late draft ``d`` would be held after adopting ``cp``: inside it, or
        placed after its base. Every parent of ``d`` that ``cp`` folded must still be known
        there by id (``known``: its stubs and the dots it keeps), or ``d`` could never be
        verified; a tie in lamport time is settled by the id, computed from those."""
        if cp.compacted.get(d.author, 0) >= d.seq:
            return True
        parents: list[bytes] = []
        for dot in d.parent_dots:
            if 0 < dot[1] <= cp.compacted.get(dot[0], 0):
                pid = known.get(dot)
                if pid is None:
                    return False  # folded there too, and its id is gone
                parents.append(pid)
        if d.lamport != cp.base[0]:
            return d.lamport > cp.base[0]
        if len(parents) != len(d.parent_dots):
            return False  # (a parent after the base gives d a later lamport time)
        c = Contribution.create(self.space, d.author, d.seq, tuple(parents), d.lamport, d.hlc,
                                d.kind, d.payload, d.note)
        return c.id[: len(d.id_prefix)] == d.id_prefix and c.order_key > cp.base

    def _abandon_rollback(self, why: str, *, changed: bool = False) -> None:
        """Give the roll-back up; not ask that peer again for the same late work, unless it
        ``changed`` (restarted or compacted since its offer: its new state may serve)."""
        rb = self._rollback
        assert rb is not None
        need = self._late_lamport()
        log.info("roll-back from %s abandoned: %s", rb.peer, why)
        if need is not None and not changed:
            self._rollback_failed.add((rb.peer, need))
        self._rollback = None
        for link in self._links.values():
            link.asked = 0  # ask the others again

    def _finish_rollback(self) -> None:
        """Replace our state by the peer's older checkpoint plus every contribution we held
        and the late ones: what sorted inside our checkpoint is applied at its place in the
        order. All or nothing: on a bad contribution the state is restored as it was."""
        rb = self._rollback
        assert rb is not None and not rb.need
        self._rollback = None
        self._commit_pending()
        if self._regions.texts or self._regions.buffers:
            self._cycle()
        self._dispatch()
        old_log = self._log
        old_cp = self._checkpoint() if self._base_key is not None else None
        old = old_log.ordered()
        old_ids = [c.id for c in old]
        old_json = self._fields.to_py()
        events = len(self._events)
        drafts = sorted([*rb.pool.values(), *self._late_pool.values()],
                        key=lambda d: (d.lamport, d.author, d.seq))
        late_before = self._late
        need = self._late_lamport()
        # one pass in lamport order: every parent comes before its children
        items: list[tuple[int, int, Draft | Contribution]] = sorted(
            [(d.lamport, i, d) for i, d in enumerate(drafts)]
            + [(c.lamport, len(drafts) + i, c) for i, c in enumerate(old)],
            key=lambda t: (t[0], t[1]))
        late: list[Draft] = []
        try:
            self._load_checkpoint(rb.checkpoint)
            for _, _, item in items:
                if isinstance(item, Contribution):
                    if item.id not in self._log:
                        self._log.check(item)
                        self._apply(item, local=False, store=False)
                    continue
                staged, parked, _, refused = self._stage((item,))
                for c in staged:
                    self._apply(c, local=False, store=False)
                for d in parked:
                    self._log.park(d)
                late.extend(refused)
            self._drain_ready(store=False)
            lost = [a for a, n in old_log.vv.items() if self._log.seq_of(a) < n]
            if lost:
                raise IntegrityError(f"the roll-back lacks contributions of {lost}")
        except HybridSyncError as exc:
            log.warning("roll-back from %s failed, state restored: %s", rb.peer, exc)
            self._rejected += 1
            self._late = late_before
            self._load_checkpoint(old_cp)
            for c in old:
                self._log.check(c)
                self._apply(c, local=False, store=False)
            del self._events[events:]
            self._rollback = rb  # (for _abandon_rollback)
            self._abandon_rollback(str(exc))
            return
        self._late = late_before + len(late)
        self._store.compact(old_ids, self._checkpoint_bytes() if self._base_key else b"",
                            self._log.ordered())
        self._rollbacks += 1
        # Observers hear of what became visible, not of what was re-applied.
        new = [c for c in self._log.ordered() if not old_log.has_dot((c.author, c.seq))]
        self._fields.take_changed()
        del self._events[events:]
        if self._observers and new:
            new_json = self._fields.to_py()
            paths = tuple(sorted(k for k in set(old_json) | set(new_json)
                                 if old_json.get(k, _MISSING) != new_json.get(k, _MISSING)))
            for c in new:
                self._events.append(Change(c.hex_id, c.author, c.seq, False, c.kind, c.note,
                                           paths))
        for link in self._links.values():
            link.need_state = True
            link.asked = 0
        if need is None or any((c.author, c.seq) in self._late_pool for c in new):
            self._rollback_failed.clear()
        else:  # none of the late work came in: do not roll back to it again for the same
            self._rollback_failed.add((rb.peer, need))
        log.info("rolled back to %s's checkpoint: %d late contribution(s) applied",
                 rb.peer, len(new))

    # ---- outside Yjs clients -------------------------------------------------------------
    def apply_yjs_update(self, update: bytes, *, origin: str) -> Contribution | None:
        """Commit a Yjs v1 update from a client outside the log (a y-protocols endpoint,
        ``docs/interop.md``) as one local contribution whose note is ``origin``.

        Returns it, or None when the update holds nothing new. Raises
        :class:`~hybridsync.errors.YjsUpdateError`, the replica unchanged, for a malformed
        update, one the fields model cannot hold, or one that needs items this replica
        lacks (:class:`~hybridsync.errors.YjsDependencyError`; checks in
        ``hybridsync/interop/_apply.py``)."""
        from hybridsync.errors import YjsUpdateError
        from hybridsync.interop._apply import check_outside_update

        if not isinstance(origin, str) or not origin or len(origin.encode()) > 4096:
            raise ConfigError("origin must be a non-empty str of at most 4096 bytes")
        if self._fields.in_transaction:
            raise TransactionError("apply_yjs_update() inside a transaction")
        check_outside_update(self._fields.doc, update)
        if self._regions.texts or self._regions.buffers:
            self._cycle()  # pending region edits are a commit of their own
        self._fields.begin()
        try:
            # (rewritten: the client's document may still hold items our compactions
            # dropped, and its sets of a deleted key name the dropped tail, docs/gc.md)
            self._fields.doc.apply_update(self._fields_in(bytes(update)))
        except BaseException as exc:  # pycrdt's PanicException derives from BaseException
            if self._fields.end() is not None:
                self._rebuild_fields()  # it integrated part of the update: undo that
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise YjsUpdateError(f"Yjs update rejected by pycrdt: {exc!r}") from None
        captured = self._fields.end()
        if captured is None:
            return None
        c = self._commit_local("fields", captured, origin)
        self._dispatch()
        return c

    def close(self) -> None:
        """Commit pending field writes (``group_commit``) and close the store."""
        if not self._fields.in_transaction:
            self._commit_pending()
            self._dispatch()
        self._store.close()

    # ---- local commits -------------------------------------------------------------------
    def _autocommit(self, update: bytes) -> None:
        self._commit_local("fields", update, "")
        self._dispatch()

    def _commit_local(self, kind: str, payload: bytes, note: str) -> Contribution:
        declared = self._fields_cut if self._declare else None
        if declared is not None:
            # our first contribution since the fields checkpoint was compacted says at which
            # cut: a receiver compacts as far before applying it (docs/gc.md)
            parts = [Part("fields", "", payload)] if kind == "fields" else decode_parts(payload)
            if kind == "fields":
                self._decoded_local = []
            payload = encode_parts([*parts, Part("cut", "", _encode_cut(declared))])
            kind = "multi"
        if len(payload) > MAX_PAYLOAD_BYTES:
            if kind == "fields":
                # No frame could carry it, and every later frame of ours to every peer would
                # be refused: discard it (rebuild the document from the log) and refuse.
                self._rebuild_fields()
                raise FieldValueError(
                    f"one commit carries at most {MAX_PAYLOAD_BYTES} bytes, this one "
                    f"{len(payload)}: split the writes, or use a text or buffer region"
                )
            # The change is already in the local document; it must still be committed so the
            # Yjs history has no gap. Only frames would fail to carry it, so refuse loudly.
            log.error("commit of %d bytes exceeds the %d-byte payload limit",
                      len(payload), MAX_PAYLOAD_BYTES)
        seq = self._log.seq_of(self.peer) + 1
        parents = self._log.head_ids()
        # Name our previous contribution even when it is no longer a head (a remote one built
        # on it): receivers then check the own chain from the parent dots alone, without
        # computing the causal past.
        own_prev = self._log.id_of(self.peer, seq - 1) if seq > 1 else None
        extends = True  # c names exactly the heads (CausalLog.extends_heads)
        if own_prev is not None and own_prev not in parents:
            parents = (*parents, own_prev)
            extends = False
        c = Contribution.create(
            self.space,
            self.peer,
            seq,
            parents,
            self._log.lamport_of_heads() + 1,
            self._clock.tick(),
            kind,
            payload,
            note,
        )
        self._store.append((c,))
        self._log.add(c, extends=extends)
        self._conflict_index.defer(c)
        if declared is not None:
            self._declare = False
            self._declared.append((declared, self.peer, seq))
        if kind == "multi":
            decoded, self._decoded_local = self._decoded_local, []
            self._regions.refresh(self._regions.fold(c.order_key, c.id, decoded))
        if self._observers:
            self._events.append(
                Change(c.id.hex(), c.author, c.seq, True, c.kind, c.note,
                       self._fields.take_changed())
            )
        return c

    # ---- applying remote contributions ---------------------------------------------------
    def _apply(self, c: Contribution, *, local: bool, store: bool = True,
               now: int | None = None) -> None:
        """Apply a checked contribution whose parents are all held (``now``: the clock's
        milliseconds, if the caller read it)."""
        if c.kind == "multi":
            self._decoded[c.id] = decoded_parts = (
                self._decoded.get(c.id) or self._decode_multi(c)
            )
            for p, cut in decoded_parts:
                if p.plane == "cut":
                    self._catch_up(cut)
                    self._declared.append((cut, c.author, c.seq))
        log_ = self._log
        extends = log_.extends_heads(c)
        concurrent = None if extends else log_.concurrent_with(c)
        decoded: list[tuple[Part, Any]] = []
        try:
            if c.kind == "fields":
                self._fields.apply(self._fields_in(c.payload))
            else:
                decoded = self._decoded.pop(c.id, []) or self._decode_multi(c)
                for p, _ in decoded:
                    if p.plane == "fields":
                        self._fields.apply(self._fields_in(p.data))
        except PayloadError:
            # pycrdt may have integrated part of the update before refusing it: rebuild the
            # document from the log, which does not hold this contribution.
            self._rebuild_fields()
            raise
        if store:
            self._store.append((c,))
        if concurrent:
            self._record_conflicts(c, concurrent)
        else:
            self._conflict_index.defer(c)
        log_.add(c, extends=extends)
        if not local:
            # A contribution is its author's acknowledgement of its causal past: a writer
            # whose frames no longer carry its version vector still moves the frontier.
            self._stability.note(c.author, log_.causal_vv(c.id),
                                 int(self._now_ms()) if now is None else now)
        if decoded:
            self._regions.refresh(self._regions.fold(c.order_key, c.id, decoded))
        self._clock.observe(c.hlc)
        if self._observers:
            self._events.append(
                Change(c.id.hex(), c.author, c.seq, local, c.kind, c.note,
                       self._fields.take_changed())
            )

    def _decode_multi(self, c: Contribution) -> list[tuple[Part, Any]]:
        """Decode and validate a ``multi`` payload; fields parts are kept as they are."""
        parts = decode_parts(c.payload)
        regional = self._regions.validate(parts)
        cuts = [(p, _decode_cut(p.data)) for p in parts if p.plane == "cut"]
        if len(cuts) > 1:
            raise PayloadError("a contribution declares at most one fields cut")
        return [(p, None) for p in parts if p.plane == "fields"] + cuts + regional

    def _record_conflicts(self, c: Contribution, concurrent: list[Contribution]) -> None:
        for location, first, second, wf, ws in choose_conflicts(
            c, self._conflict_index.conflicting(c, concurrent)
        ):
            conflict = Conflict(
                plane="fields",
                location=location,
                contributions=(first.hex_id, second.hex_id),
                values=(wf.value, ws.value),
                paths=(wf.path, ws.path),
                authors=(first.author, second.author),
            )
            key = (second.order_key, first.order_key, location)
            bisect.insort(self._conflicts, (key, conflict), key=lambda kc: kc[0])

    # ---- sans-I/O sync -------------------------------------------------------------------
    def _link(self, peer: object) -> _Link:
        name = _check_name(peer, "peer")
        if name == self.peer:
            raise ConfigError("a replica does not sync with itself")
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = _Link()
        return link

    def sync_to(self, peer: str, *, reliable: bool = False) -> list[bytes]:
        """Frames to send to ``peer`` now: what it lacks, and our version vector when it
        needs it (acknowledgement). May be empty. Lost frames are resent after
        ``retransmit_rounds`` calls without an acknowledgement.

        ``reliable=True`` says the caller's transport delivers every frame it is handed, in
        order, or ends the session (a TCP session): the call does not count towards
        retransmission, so a peer that is slow to acknowledge is not sent everything again.
        When a new session to ``peer`` opens, call :meth:`resend` (frames in flight on the old
        one may be lost)."""
        if self._fields.in_transaction:
            raise TransactionError("sync_to() inside a transaction")
        if not isinstance(reliable, bool):
            raise ConfigError(f"reliable must be a bool, got {reliable!r}")
        # (a name never seen is checked by _link; an unhashable one must not reach .get)
        link = (self._links.get(peer) if isinstance(peer, str) else None) or self._link(peer)
        if self._has_local_edits():
            self._cycle()
            self._dispatch()
        ours = dict(self._log.vv)
        known = link.known
        sent = link.sent
        frames: list[bytes] = []
        if link.offer_for:
            # It asked for a roll-back: our checkpoint (or none), then everything after it.
            # A checkpoint that sorts too late still goes (it is the answer "cannot").
            serve = self._base_key is None or self._base_key[0] <= link.offer_for
            link.offer_for = 0
            frames.append(encode_checkpoint_frame(
                self.incarnation,
                self._checkpoint_bytes() if self._base_key is not None else b"", offer=True))
            if serve:
                compacted = self._log.compacted() if self._base_key is not None else {}
                link.known = known = dict(compacted)
                link.sent = sent = dict(compacted)
                link.need_state = True
        if self._base_key is not None and link.incarnation is not None:
            compacted = self._log.compacted()
            if link.needs_checkpoint or (any(
                known.get(a, 0) < n for a, n in compacted.items()
            ) and link.checkpoint_for != frozenset((a, n) for a, n in known.items() if n)):
                # It lacks what we folded away (a joiner, a retired member, or one whose
                # contributions sort inside our checkpoint): the checkpoint, then the suffix.
                frames.append(encode_checkpoint_frame(self.incarnation, self._checkpoint_bytes()))
                link.needs_checkpoint = False
                link.checkpoint_for = frozenset((a, n) for a, n in known.items() if n)
                for a, n in compacted.items():
                    if known.get(a, 0) < n:
                        known[a] = n
                    if sent.get(a, 0) < known[a]:
                        sent[a] = known[a]
        if reliable:
            link.stall = 0
        elif any(s > known.get(a, 0) for a, s in sent.items()):
            link.stall += 1
            if link.stall >= (link.rto or self._retransmit_rounds):
                # Nothing acknowledged for a while: assume the frames were lost, resend, and
                # back off exponentially (bounded) so a slow acknowledger is not flooded.
                link.sent = sent = dict(known)
                link.stall = 0
                link.checkpoint_for = None
                link.rto = min(2 * (link.rto or self._retransmit_rounds),
                               8 * self._retransmit_rounds)
        else:
            link.stall = 0
        todo: list[Contribution] = []
        advertised = link.advertised or {}
        need_vv = link.need_state or link.advertised is None
        ask = self._rollback_request(peer, link)
        if ask is not None:
            need_vv = True
        for author, have in ours.items():
            start = sent.get(author, 0)
            k = known.get(author, 0)
            if k > start:
                start = k
            if author == self.peer and link.refused > start:
                start = link.refused
            if have > start:
                if self._base_key is not None and start < self._log.compacted_seq(author):
                    need_vv = True  # first hear what it holds: it may need the checkpoint
                    continue
                todo.extend(self._log.chain(author, start, have))
            elif not need_vv and have != advertised.get(author, 0):
                # The peer learns our vv from frames that carry it and from the dots it
                # receives; this entry changed without a dot to show it: say it (an ack).
                need_vv = True
        if not todo and not need_vv and not frames:
            return []
        if len(todo) > 1:
            todo.sort(key=lambda c: c.order_key)
        vv_pairs = sorted(self._stated(peer, ours).items()) if need_vv else None
        batch: list[Contribution] = []
        size = 0
        for c in todo:
            csize = len(c.payload) + len(c.note) + 48 + 12 * len(c.parents)
            if batch and (len(batch) >= self._batch_size or size + csize > self._max_frame_bytes):
                frames.append(self._encode(vv_pairs, batch, peer, ask))
                vv_pairs, batch, size, ask = None, [], 0, None
            batch.append(c)
            size += csize
        if batch or vv_pairs is not None:
            frames.append(self._encode(vv_pairs, batch, peer, ask))
        for a, s in ours.items():
            if sent.get(a, 0) < s:
                sent[a] = s
        link.advertised = ours
        link.need_state = False
        self._frames_sent += len(frames)
        self._bytes_sent += sum(map(len, frames))
        return frames

    def resend(self, peer: str) -> None:
        """Assume that everything sent to ``peer`` and not acknowledged was lost: the next
        :meth:`sync_to` sends it again, with our version vector. A driver calls this when a
        new session to ``peer`` opens. Nothing happens for a peer never synced with."""
        name = _check_name(peer, "peer")
        link = self._links.get(name)
        if link is None:
            return
        link.sent = dict(link.known)
        link.stall = 0
        link.rto = 0
        link.need_state = True
        link.checkpoint_for = None
        link.asked = 0

    def _encode(self, vv: list[tuple[str, int]] | None, batch: list[Contribution],
                to: str = "", rollback: int | None = None) -> bytes:
        acks = None
        if vv is not None and self._gc_min is not None:
            acks = self._stability.table(to)  # gossip: stability is known through relays
        return encode_frame(self.incarnation, vv, batch, self._dot_of, acks, rollback)

    def _dot_of(self, cid: bytes) -> tuple[str, int]:
        c = self._log.get(cid)
        assert c is not None
        return (c.author, c.seq)

    def receive(self, peer: str, frame: bytes) -> None:
        """Feed one frame that came from ``peer``.

        A malformed, truncated, oversized or mistyped frame raises
        :class:`~hybridsync.errors.FrameError`; one whose contributions do not match their
        ids raises :class:`~hybridsync.errors.IntegrityError`. Either way the replica is
        exactly as it was before the call.
        """
        if self._fields.in_transaction:
            raise TransactionError("receive() inside a transaction")
        if type(peer) is str and peer in self._links:
            name = peer  # (checked when its link was made)
        else:
            name = _check_name(peer, "peer")
            if name == self.peer:
                raise ConfigError("a replica does not sync with itself")
        try:
            decoded = decode_frame(frame)
            if decoded.checkpoint is not None:  # a roll-back offer, or a checkpoint
                if decoded.offer:
                    self._take_offer(name, decoded.incarnation, decoded.checkpoint)
                else:
                    self._commit_pending()  # adoption rebuilds the fields document
                    if self._rollback is not None and self._rollback.peer == name:
                        self._abandon_rollback("it sent a newer checkpoint", changed=True)
                    self._adopt_checkpoint(decoded.checkpoint, name)
                link = self._links.get(name) or self._link(name)
                self._frames_received += 1
                self._bytes_received += len(frame)
                # tell it what we hold now (in full, for a roll-back it serves us)
                link.need_state = True
                # (adopted or not: observers hear of the pending batch committed above)
                self._dispatch()
                return
            claims = [decoded.vv] if decoded.vv is not None else []
            if decoded.acks:
                claims.extend(decoded.acks.values())
            mine = self._log.seq_of(self.peer) if claims else 0
            for claim in claims:
                if claim.get(self.peer, 0) > mine:
                    raise IntegrityError(
                        f"{peer} claims that {self.peer}#{claim[self.peer]} exists, which this "
                        f"replica never made"
                    )
            staged, parked, duplicates, late = self._stage(decoded.drafts)
        except HybridSyncError:
            self._rejected += 1
            self._decoded.clear()
            raise
        # ---- from here on the frame is accepted; only now is the sender a member ------------
        link = self._links.get(name) or self._link(name)
        self._frames_received += 1
        self._bytes_received += len(frame)
        if link.incarnation != decoded.incarnation:
            if link.incarnation is not None:  # the peer restarted: forget what we assumed
                link.known, link.sent, link.advertised = {}, {}, None
                link.refused = 0
                link.checkpoint_for = None
            link.incarnation = decoded.incarnation
        known = link.known
        progress = False
        if decoded.vv is not None:
            # The latest statement wins for what we send (a stale or false claim is corrected
            # by the next one); ``acked`` keeps the monotone maximum for the stable frontier.
            stated = decoded.vv
            ours = self._log.vv
            for a in list(known):
                s = stated.get(a, 0)
                if s < known[a]:
                    known[a] = s
                    if link.sent.get(a, 0) > s:
                        link.sent[a] = s
            for a, s in stated.items():
                if known.get(a, 0) < s:
                    known[a] = s
                    progress = True
                if link.acked.get(a, 0) < s:
                    link.acked[a] = s
                if s > ours.get(a, 0) and not link.refused and not all(
                    (a, k) in self._late_pool for k in range(ours.get(a, 0) + 1, s + 1)
                ):
                    # it has what we lack: say our vv (a pull) — not for late work we refused
                    # (a roll-back brings it), nor from a peer whose checkpoint we declined
                    link.need_state = True
        for d in decoded.drafts:
            if known.get(d.author, 0) < d.seq:
                known[d.author] = d.seq
                progress = True
        if progress:
            link.stall = 0
            link.rto = 0
        if duplicates:
            link.need_state = True
        if late:
            fresh = [d for d in late if d.dot not in self._late_pool]
            for d in late:
                self._note_late(d)
            if fresh:  # (told once: the same late work again gets no second checkpoint)
                link.needs_checkpoint = True
        if decoded.rollback is not None:
            link.offer_for = decoded.rollback  # answered by the next sync_to
        now = int(self._now_ms())
        if decoded.vv is not None:
            self._stability.note(name, decoded.vv, now)
        if decoded.acks:
            for member, vv in decoded.acks.items():
                self._stability.note(member, vv, now)
        if staged and self._has_local_edits():
            # commit local edits first: the fold then replaces working copies, and pending
            # field writes (made before these arrived) stay concurrent with them
            self._cycle()
        try:
            for c in staged:
                self._apply(c, local=False, now=now)
            for d in parked:
                self._log.park(d)
            self._drain_ready()
            rb = self._rollback
            if rb is not None and rb.peer == name:
                if rb.incarnation != decoded.incarnation:
                    self._abandon_rollback("it restarted", changed=True)
                elif decoded.vv is not None and any(
                    decoded.vv.get(a, 0) < n for a, n in self._log.compacted().items()
                ):
                    self._abandon_rollback("it does not hold all we compacted")
                elif not rb.need:
                    self._finish_rollback()
        finally:
            self._dispatch()
        # observers hear of what arrived before a compaction runs: it is not on the
        # latency of the write that triggered it (a batch it commits is dispatched after)
        self._maybe_collect()
        self._dispatch()

    def _stage(
        self, drafts: tuple[Draft, ...]
    ) -> tuple[list[Contribution], list[Draft], int, list[Draft]]:
        """Resolve and verify a frame's drafts without changing anything.

        Returns the contributions ready to apply (in frame order), the drafts that must wait
        for parents, the number of duplicates and the *late* ones (they sort inside our
        checkpoint, or name a compacted parent: a roll-back applies them, or their author
        adopts the checkpoint and re-bases them). Raises on the first bad contribution.
        During a roll-back, drafts of our compacted range go to its pool.
        """
        overlay: dict[tuple[str, int], Contribution] = {}
        overlay_ids: dict[bytes, Contribution] = {}
        memo: dict[bytes, dict[str, int]] = {}

        def past_of(pid: bytes) -> dict[str, int]:
            if pid in self._log:
                return self._log.causal_vv(pid)
            got = memo.get(pid)
            if got is None:
                pc = overlay_ids[pid]
                got = {}
                for q in pc.parents:
                    for a, s in past_of(q).items():
                        if s > got.get(a, 0):
                            got[a] = s
                got[pc.author] = pc.seq
                memo[pid] = got
            return got

        staged: list[Contribution] = []
        parked: list[Draft] = []
        late: list[Draft] = []
        duplicates = 0
        log_ = self._log
        vv = log_.vv  # (live: nothing is added to the log while staging)
        base = self._base_key
        rb = self._rollback
        for d in drafts:
            author, seq = d.author, d.seq
            held_upto = vv.get(author, 0)
            # (a dot past our version vector is neither held nor compacted: a new one)
            if seq <= held_upto:  # held, or compacted into the checkpoint (id kept or not)
                held = log_.id_of(author, seq)
                if held is not None and held[: len(d.id_prefix)] != d.id_prefix:
                    raise IntegrityError(
                        f"{d.author}#{d.seq} is already held with a different id"
                    )
                duplicates += 1
                if rb is not None and d.dot in rb.need:  # our compacted range, for the roll-back
                    rb.pool[d.dot] = d
                    rb.need.discard(d.dot)
                continue
            if base is not None and (
                d.lamport <= base[0] and any(log_.is_compacted(p) and log_.id_of(*p) is None
                                             for p in d.parent_dots)
            ):
                late.append(d)
                continue
            parents: list[bytes] = []
            lamport = 0
            missing = False
            for dot in d.parent_dots:
                pid = log_.id_of(*dot)
                if pid is not None:
                    pc = log_.get(pid)
                    assert pc is not None
                else:
                    pc = overlay.get(dot)
                    if pc is None:
                        missing = True
                        break
                    pid = pc.id
                parents.append(pid)
                lamport = max(lamport, pc.lamport)
            # (the own previous is held or compacted when its seq is within our vv)
            if not missing and seq > 1 and seq - 1 > held_upto and (
                (author, seq - 1) not in overlay
            ):
                missing = True
            if missing:
                if base is not None and d.lamport <= base[0]:
                    late.append(d)  # its parents were never ours to send: it predates our base
                    continue
                parked.append(d)
                continue
            if d.seq > 1 and (d.author, d.seq - 1) not in d.parent_dots:
                own_past = max((past_of(p).get(d.author, 0) for p in parents), default=0)
                if own_past != d.seq - 1:
                    raise IntegrityError(
                        f"{d.author}#{d.seq}: its causal past holds {d.author}#{own_past}, "
                        f"not exactly {d.author}#{d.seq - 1}"
                    )
            elif d.seq == 1 and any(
                past_of(p).get(d.author, 0) for p in parents
            ):
                raise IntegrityError(f"{d.author}#1 has an own contribution in its past")
            if d.lamport != lamport + 1:
                raise IntegrityError(
                    f"{d.author}#{d.seq}: lamport {d.lamport} is not one more than its "
                    f"parents' ({lamport})"
                )
            c = Contribution.create(
                self.space, d.author, d.seq, tuple(parents), d.lamport, d.hlc, d.kind,
                d.payload, d.note,
            )
            if c.id[: len(d.id_prefix)] != d.id_prefix:
                raise IntegrityError(
                    f"contribution {d.author}#{d.seq}: id prefix {d.id_prefix.hex()} does not "
                    f"match its content (computed {c.id[:8].hex()})"
                )
            if base is not None and c.order_key <= base:
                late.append(d)  # it sorts inside our checkpoint: folding it would break G1
                continue
            if d.kind == "multi":
                self._decoded[c.id] = self._decode_multi(c)
            else:
                _check_yjs_update(d.payload)
            overlay[(d.author, d.seq)] = c
            overlay_ids[c.id] = c
            staged.append(c)
        return staged, parked, duplicates, late

    def _drain_ready(self, *, store: bool = True) -> None:
        """Apply parked drafts whose parents have arrived, until none is left ready."""
        for _ in range(1_000_000):
            ready = self._log.take_ready()
            if not ready:
                return
            for d in ready:
                try:
                    c = self._log.resolve(d)
                    if c is None:
                        if any(self._log.has_dot(p) for p in d.parent_dots):
                            self._note_late(d)  # a parent was compacted: it predates our base
                            continue
                        self._log.park(d)
                        continue
                    if self._base_key is not None and c.order_key <= self._base_key:
                        self._note_late(d)
                        continue
                    if c.id in self._log:
                        # Already applied from a later frame (a retransmission) that also
                        # carried the parents that released this parked copy.
                        continue
                    self._log.check(c)
                    self._apply(c, local=False, store=store)
                except (IntegrityError, PayloadError) as exc:
                    # It came in an earlier, accepted frame; drop it, anti-entropy resends
                    # the honest version if there is one.
                    self._rejected += 1
                    log.warning("dropped a parked contribution: %s", exc)

    # ---- observers -----------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self._dispatching or not self._events:
            return
        if not self._observers:
            self._events.clear()
            return
        self._dispatching = True
        try:
            while self._events:
                event = self._events.pop(0)
                for fn in list(self._observers):
                    try:
                        fn(event)
                    except (HybridSyncError, FieldValueError) as exc:
                        log.error("observer %r raised %r", fn, exc)
                    except Exception:
                        log.exception("observer %r raised", fn)
        finally:
            self._dispatching = False

    def __repr__(self) -> str:
        return (
            f"Memory(space={self.space!r}, peer={self.peer!r}, log={len(self._log)}, "
            f"heads={len(self._log.heads)})"
        )


def _encode_cut(cut: tuple[int, bytes]) -> bytes:
    out: bytes = msgpack.packb([cut[0], cut[1]], use_bin_type=True)
    return out


def _decode_cut(data: bytes) -> tuple[int, bytes]:
    """A ``cut`` part: the order key ``[lamport, id]`` of the author's fields cut."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception:
        raise PayloadError("a cut part is not msgpack") from None
    if (type(obj) is not list or len(obj) != 2 or type(obj[0]) is not int
            or not 0 <= obj[0] < 1 << 63 or type(obj[1]) is not bytes or len(obj[1]) != 32):
        raise PayloadError("a cut part is [lamport, 32-byte id]")
    return (obj[0], obj[1])
