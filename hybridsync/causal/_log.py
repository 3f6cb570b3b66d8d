"""The causal log: the DAG of contributions, its version vector, heads and total order.

Causal delivery (DCS paper, §4): a contribution enters the log only after all its parents;
early arrivals wait in a bounded buffer keyed by their dot; duplicates are idempotent.
Correctness lives here; routing, batching and delivery order are policy and cannot change
what the log holds or the order :meth:`CausalLog.ordered` returns.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hybridsync.causal._contribution import ID_BYTES, Contribution
from hybridsync.causal._vv import VersionVector
from hybridsync.errors import IntegrityError

__all__ = ["CausalLog", "Dot", "Draft"]

Dot = tuple[str, int]
ID_PREFIX_BYTES = 8


@dataclass(frozen=True, slots=True)
class Draft:
    """A contribution as it travels: parents named by dot, id checked by an 8-byte prefix.

    The receiver resolves the parent dots against its own log, recomputes the full id and
    compares the prefix; a mismatch (corruption, or an author that equivocated) is rejected.
    """

    author: str
    seq: int
    parent_dots: tuple[Dot, ...]
    lamport: int
    hlc: int
    kind: str
    note: str
    payload: bytes
    id_prefix: bytes

    @property
    def dot(self) -> Dot:
        return (self.author, self.seq)

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.note) + 64 + 16 * len(self.parent_dots)


class CausalLog:
    """Contributions in causal order, with version vector, heads and the total order."""

    def __init__(
        self, space: str, *, max_pending: int = 20_000, max_pending_bytes: int = 256 << 20
    ) -> None:
        self.space = space
        self._by_id: dict[bytes, Contribution] = {}
        # author -> ids of its contributions from seq ``_off[author] + 1`` on (contiguous);
        # after compaction the first one is a *stub* (payload dropped) unless it is retained
        self._dots: dict[str, list[bytes]] = {}
        self._off: dict[str, int] = {}  # author -> seqs compacted away before ``_dots[author]``
        self._vv: dict[str, int] = {}  # author -> off + len(self._dots[author]), kept in step
        self._stubs: set[bytes] = set()  # compacted contributions kept as parents-to-be
        # compacted() until the next compaction or restore (adding a contribution to a
        # chain never changes it: a new id is never a stub)
        self._compacted: dict[str, int] | None = None
        self._gone: dict[bytes, Dot] = {}  # compacted ids still referenced by folds/conflicts
        self._max_lamport = 0  # the largest lamport held (always that of some head)
        self._heads: set[bytes] = set()
        self._order: list[tuple[int, bytes]] = []  # sorted (lamport, id)
        self._causal: dict[bytes, dict[str, int]] = {}  # id -> version vector of its past+self
        self._pending: dict[Dot, Draft] = {}
        self._pending_bytes = 0
        self._waiting: dict[Dot, list[Dot]] = {}  # missing dot -> parked dots waiting on it
        self._ready: list[Draft] = []
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes

    # ---- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Retained contributions (compacted ones are not counted)."""
        return len(self._order)

    def __contains__(self, cid: object) -> bool:
        return cid in self._by_id

    def get(self, cid: bytes) -> Contribution | None:
        """The contribution ``cid`` (a stub without payload if it was compacted), or None."""
        return self._by_id.get(cid)

    def id_of(self, author: str, seq: int) -> bytes | None:
        """The id of dot ``author#seq``; None if unknown or compacted away (stubs excepted)."""
        chain = self._dots.get(author)
        if chain is None:
            return None
        i = seq - 1 - self._off.get(author, 0)
        if not 0 <= i < len(chain):
            return self._stub_before_chain(author, seq) if i < 0 < seq else None
        return chain[i]

    def _stub_before_chain(self, author: str, seq: int) -> bytes | None:
        """A compacted dot before its author's chain stub is known only if it stayed a stub
        (the parent of a retained contribution); rare, so a scan of the stubs."""
        by_id = self._by_id
        for cid in self._stubs:
            c = by_id[cid]
            if c.seq == seq and c.author == author:
                return cid
        return None

    def seq_of(self, author: str) -> int:
        return self._vv.get(author, 0)

    def compacted_seq(self, author: str) -> int:
        """How many of ``author``'s contributions are folded into the checkpoint."""
        off = self._off.get(author, 0)
        chain = self._dots.get(author)
        return off + 1 if chain and chain[0] in self._stubs else off

    def compacted(self) -> dict[str, int]:
        """The checkpoint's version vector: per author, the contributions compacted away
        (a copy; kept between compactions, ``sync_to`` asks for it on every call)."""
        got = self._compacted
        if got is None:
            got = self._compacted = {a: n for a in self._dots if (n := self.compacted_seq(a))}
        return dict(got)

    def is_compacted(self, dot: Dot) -> bool:
        """True when ``dot`` was held and is now folded into the checkpoint."""
        return 0 < dot[1] <= self.compacted_seq(dot[0])

    def version_vector(self) -> VersionVector:
        return VersionVector(dict(self._vv))

    def vv_items(self) -> Iterator[tuple[str, int]]:
        yield from self._vv.items()

    @property
    def vv(self) -> dict[str, int]:
        """The live version vector (read-only by convention; copy before keeping it)."""
        return self._vv

    def chain(self, author: str, start: int, stop: int) -> list[Contribution]:
        """The author's contributions with ``start < seq <= stop``."""
        by_id = self._by_id
        off = self._off.get(author, 0)
        assert start >= self.compacted_seq(author), "compacted contributions cannot be sent"
        return [by_id[cid] for cid in self._dots[author][start - off : stop - off]]

    @property
    def heads(self) -> frozenset[bytes]:
        return frozenset(self._heads)

    def lamport_of_heads(self) -> int:
        return self._max_lamport

    def head_ids(self) -> tuple[bytes, ...]:
        return tuple(self._heads)

    def ordered(self) -> list[Contribution]:
        """Every contribution in the deterministic total order ``(lamport, id)``."""
        return [self._by_id[cid] for _, cid in self._order]

    def causal_vv(self, cid: bytes) -> dict[str, int]:
        """Version vector of the causal past of ``cid``, including ``cid`` itself."""
        return self._causal[cid]

    def extends_heads(self, c: Contribution) -> bool:
        """True when ``c`` has seen everything this log holds (no concurrency possible)."""
        return len(c.parents) == len(self._heads) and self._heads.issuperset(c.parents)

    def concurrent_with(self, c: Contribution) -> list[Contribution]:
        """Held contributions that are not in the causal past of ``c`` (and are not ``c``)."""
        past = self._causal.get(c.id) or self._past_vv(c.parents)
        out: list[Contribution] = []
        for author, chain in self._dots.items():
            start = max(past.get(author, 0), self.compacted_seq(author)) - self._off.get(author, 0)
            for i in range(start, len(chain)):
                cid = chain[i]
                if cid != c.id:
                    out.append(self._by_id[cid])
        return out

    def happened_before(self, a: bytes, b: bytes) -> bool:
        """True when contribution ``a`` is in the causal past of ``b`` (``b`` held; ``a`` held
        or compacted and still referenced)."""
        ca = self._by_id.get(a)
        if ca is not None:
            dot: Dot = (ca.author, ca.seq)
        else:
            got = self._gone.get(a)
            if got is None:
                # Compacted and not retained: it is stable, so in the past of everything
                # that arrives from now on (the folds name the ids they still need).
                return a != b
            dot = got
        return self._causal[b].get(dot[0], 0) >= dot[1] and a != b

    # ---- admission -----------------------------------------------------------------------
    def resolve(self, d: Draft) -> Contribution | None:
        """The full contribution for a draft whose parents are all held, else ``None``.

        Raises :class:`IntegrityError` when the recomputed id does not match the prefix,
        when the dot is already held with other content, or when the causal metadata lies.
        """
        parents: list[bytes] = []
        for author, seq in d.parent_dots:
            pid = self.id_of(author, seq)
            if pid is None:
                return None
            parents.append(pid)
        c = Contribution.create(
            self.space,
            d.author, d.seq, tuple(parents), d.lamport, d.hlc, d.kind, d.payload, d.note
        )
        if c.id[: len(d.id_prefix)] != d.id_prefix or len(d.id_prefix) < ID_PREFIX_BYTES:
            raise IntegrityError(
                f"contribution {d.author}#{d.seq}: id prefix {d.id_prefix.hex()} does not match "
                f"its content and parents (computed {c.id[:ID_PREFIX_BYTES].hex()})"
            )
        return c

    def check(self, c: Contribution) -> None:
        """Validate a contribution whose parents are held, before it is added."""
        held = self.id_of(c.author, c.seq)
        if held is not None and held != c.id:
            raise IntegrityError(
                f"{c.author}#{c.seq} is already held with a different id (equivocation)"
            )
        if len(c.id) != ID_BYTES:
            raise IntegrityError("contribution id has the wrong length")
        if c.seq != self.seq_of(c.author) + 1 and held is None:
            raise IntegrityError(
                f"{c.author}#{c.seq} arrived before {c.author}#{self.seq_of(c.author) + 1}"
            )
        lamport = 0
        own_past = 0
        for p in c.parents:
            pc = self._by_id.get(p)
            if pc is None:
                raise IntegrityError(f"{c.author}#{c.seq}: parent {p.hex()[:12]} is not held")
            lamport = max(lamport, pc.lamport)
            own_past = max(own_past, self._causal[p].get(c.author, 0))
        if c.lamport != lamport + 1:
            raise IntegrityError(
                f"{c.author}#{c.seq}: lamport {c.lamport} is not one more than its parents' "
                f"({lamport})"
            )
        if own_past != c.seq - 1:
            raise IntegrityError(
                f"{c.author}#{c.seq}: its causal past holds {c.author}#{own_past}, "
                f"not exactly {c.author}#{c.seq - 1}"
            )
        if len(set(c.parents)) != len(c.parents):
            raise IntegrityError(f"{c.author}#{c.seq} names a parent twice")

    def add(self, c: Contribution, *, extends: bool | None = None) -> bool:
        """Insert a checked contribution; ``False`` when it was already held. ``extends``:
        :meth:`extends_heads` of ``c``, if the caller just computed it."""
        cid = c.id
        if cid in self._by_id:
            return False
        if extends is None:
            extends = self.extends_heads(c)
        author = c.author
        past = dict(self._vv) if extends else self._past_vv(c.parents)
        past[author] = c.seq
        self._causal[cid] = past
        self._by_id[cid] = c
        chain = self._dots.get(author)
        if chain is None:
            chain = self._dots[author] = []
        chain.append(cid)
        self._vv[author] = self._off.get(author, 0) + len(chain)
        lamport = c.lamport
        if lamport > self._max_lamport:
            self._max_lamport = lamport
        heads = self._heads
        heads.difference_update(c.parents)
        heads.add(cid)
        key = (lamport, cid)
        order = self._order
        if not order or key > order[-1]:
            order.append(key)
        else:
            bisect.insort(order, key)
        if self._waiting:
            self._release((author, c.seq))
        return True

    def _past_vv(self, parents: Iterable[bytes]) -> dict[str, int]:
        past: dict[str, int] = {}
        for p in parents:
            for a, s in self._causal[p].items():
                if s > past.get(a, 0):
                    past[a] = s
        return past

    # ---- the pending buffer --------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def has_dot(self, dot: Dot) -> bool:
        """True when ``dot`` is held or was compacted away."""
        return 0 < dot[1] <= self._vv.get(dot[0], 0)

    def _missing_parent(self, d: Draft) -> Dot | None:
        if d.seq > 1 and not self.has_dot((d.author, d.seq - 1)):
            return (d.author, d.seq - 1)
        for p in d.parent_dots:
            if not self.has_dot(p):
                return p
        return None

    def park(self, d: Draft) -> bool:
        """Keep an early arrival until its parents come; ``False`` when it was dropped.

        The buffer is bounded; when full, the draft farthest from being applicable (highest
        lamport) is dropped. Anti-entropy resends whatever a replica still lacks.
        """
        if d.dot in self._pending or self.has_dot(d.dot):
            return True
        missing = self._missing_parent(d)
        if missing is None:
            self._ready.append(d)
            return True
        if len(self._pending) >= self._max_pending or (
            self._pending_bytes + d.size > self._max_pending_bytes
        ):
            worst = max(self._pending.values(), key=lambda x: (x.lamport, x.dot), default=None)
            if worst is None or (worst.lamport, worst.dot) <= (d.lamport, d.dot):
                return False
            self._unpark(worst)
        self._pending[d.dot] = d
        self._pending_bytes += d.size
        self._waiting.setdefault(missing, []).append(d.dot)
        return True

    def _unpark(self, d: Draft) -> None:
        del self._pending[d.dot]
        self._pending_bytes -= d.size

    def _release(self, dot: Dot) -> None:
        """A dot became held: re-examine the drafts that waited for it."""
        waiters = self._waiting.pop(dot, None)
        if not waiters:
            return
        for wdot in waiters:
            d = self._pending.get(wdot)
            if d is None:
                continue
            missing = self._missing_parent(d)
            if missing is None:
                self._unpark(d)
                if not self.has_dot(d.dot):
                    self._ready.append(d)
            else:
                self._waiting.setdefault(missing, []).append(wdot)

    def take_ready(self) -> list[Draft]:
        """Remove and return parked drafts whose parents are now all held."""
        out, self._ready = self._ready, []
        return out

    def pending_drafts(self) -> list[Draft]:
        return list(self._pending.values())

    # ---- compaction (GC at the causal-stability frontier) ---------------------------------
    def stable_prefix(self, frontier: dict[str, int]) -> int:
        """Length of the longest prefix of the total order whose contributions are all at or
        below ``frontier`` (DESIGN.md §1: a shorter rule than this breaks determinism)."""
        n = 0
        by_id = self._by_id
        for _, cid in self._order:
            c = by_id[cid]
            if c.seq > frontier.get(c.author, 0):
                break
            n += 1
        return n

    def compact(self, n: int, keep: set[bytes]) -> list[Contribution]:
        """Fold the first ``n`` contributions of the total order away; return them.

        Compacted contributions that may still be named as parents stay as *stubs* (no
        payload, causal past kept): each author's last one (a member's future heads are
        maximal in what it acknowledged, so a compacted parent of a future contribution is
        the last of its author's chain) and the parents of every retained contribution.
        ``keep`` lists compacted ids whose dot must stay known for :meth:`happened_before`.
        """
        if n <= 0:
            return []
        self._compacted = None
        dropped_keys = self._order[:n]
        del self._order[:n]
        dropped = [self._by_id[cid] for _, cid in dropped_keys]
        last: dict[str, int] = {}
        for c in dropped:
            if c.seq > last.get(c.author, 0):
                last[c.author] = c.seq
        needed = {p for _, cid in self._order for p in self._by_id[cid].parents}
        candidates = set(self._stubs)
        for author, upto in last.items():
            chain = self._dots[author]
            i = upto - 1 - self._off.get(author, 0)  # index of the author's new chain stub
            candidates.update(chain[: i + 1])
            needed.add(chain[i])
            self._dots[author] = chain[i:]
            self._off[author] = upto - 1
        for chain in self._dots.values():
            if chain and chain[0] in candidates:
                needed.add(chain[0])  # every author's chain stub stays
        for cid in candidates:
            if cid in needed:
                c = self._by_id[cid]
                if c.payload or c.note:
                    self._by_id[cid] = Contribution(
                        c.id, c.author, c.seq, c.parents, c.lamport, c.hlc, c.kind, "", b""
                    )
                self._stubs.add(cid)
            else:
                self._forget(cid, keep)
        for cid in [x for x in self._gone if x not in keep]:
            del self._gone[cid]
        return dropped

    def _forget(self, cid: bytes, keep: set[bytes]) -> None:
        self._compacted = None
        c = self._by_id.pop(cid)
        self._causal.pop(cid, None)
        self._stubs.discard(cid)
        if cid in keep:
            self._gone[cid] = (c.author, c.seq)

    def keep_dots(self, ids: set[bytes]) -> None:
        """Retain the dots of these compacted ids (and forget those no longer needed)."""
        for cid in [x for x in self._gone if x not in ids]:
            del self._gone[cid]

    def stubs(self) -> list[tuple[Contribution, dict[str, int]]]:
        """The stubs with their causal version vectors (for a checkpoint)."""
        return [(self._by_id[s], self._causal[s]) for s in sorted(self._stubs)]

    def stub_bytes(self) -> int:
        """Approximate bytes held for stubs and retained compacted dots."""
        return sum(64 + len(self._by_id[s].author) + 8 * len(self._causal[s])
                   for s in self._stubs) + 48 * len(self._gone)

    def gone_dots(self) -> dict[bytes, Dot]:
        return dict(self._gone)

    def restore(self, stubs: list[tuple[Contribution, dict[str, int]]],
                compacted: dict[str, int], gone: dict[bytes, Dot]) -> None:
        """Start an empty log from a checkpoint: its stubs, per-author compacted counts and
        the compacted dots still referenced. Heads are the stubs that no other stub follows."""
        assert not self._by_id, "restore() needs an empty log"
        self._compacted = None
        for author, n in compacted.items():
            self._off[author] = n
            self._dots[author] = []
            self._vv[author] = n
        for c, causal in sorted(stubs, key=lambda sc: (sc[0].author, sc[0].seq)):
            if c.seq == compacted.get(c.author):  # the author's chain stub (its last)
                self._off[c.author] = c.seq - 1
                self._dots[c.author] = [c.id]
            self._by_id[c.id] = c
            self._causal[c.id] = dict(causal)
            self._stubs.add(c.id)
            if c.lamport > self._max_lamport:
                self._max_lamport = c.lamport
        self._heads = {
            c.id for c, _ in stubs
            if c.seq == compacted.get(c.author)
            and not any(o is not c and oc.get(c.author, 0) >= c.seq for o, oc in stubs)
        }
        self._gone = dict(gone)
