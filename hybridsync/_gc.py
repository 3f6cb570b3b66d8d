"""Garbage collection at the causal-stability frontier: who acknowledged what, and checkpoints.

``Stability`` keeps, for every member of the space, the latest version vector it is known to
have acknowledged (learned directly or gossiped through relays) and derives the stable
frontier exactly as DESIGN.md §1 defines it: a member's *effective* ack is its latest
acknowledged vector ``v`` for which this replica already holds the member's own
contributions up to ``v[member]``; the frontier is the pointwise minimum of the members'
effective acks and this replica's own version vector. A member silent for longer than
``retire_after_ms`` is retired (left out of the minimum) so it cannot block collection
forever; it becomes a member again as soon as it acknowledges anything new.

A ``Checkpoint`` is the compacted state: the stubs of the causal log, the fields document as
of the compacted prefix, every region's base, and the conflicts that name compacted
contributions. The same bytes are stored (SQLite ``meta``) and sent to a peer that lacks what
was compacted. Decoding is total: anything malformed raises :class:`PayloadError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from hybridsync.causal import Contribution
from hybridsync.errors import PayloadError
from hybridsync.fields import DELETED

__all__ = ["Checkpoint", "Stability", "decode_checkpoint", "encode_checkpoint"]

CHECKPOINT_VERSION = 3  # 2 is still read (no fields cut, no anchor generations)
_EXT_DELETED = 1
OrderKey = tuple[int, bytes]


class Stability:
    """Acknowledgements of the space's members and the stable frontier derived from them."""

    def __init__(self, me: str, retire_after_ms: int | None) -> None:
        self.me = me
        self.retire_after_ms = retire_after_ms
        self.acks: dict[str, dict[str, int]] = {}  # member -> max acknowledged vv
        self._effective: dict[str, dict[str, int]] = {}
        self._advanced_ms: dict[str, int] = {}  # member -> when its ack last grew
        self.retired: set[str] = set()

    def note(self, member: str, vv: dict[str, int], now_ms: int) -> bool:
        """Merge an acknowledgement of ``member`` (pointwise maximum); True when it grew."""
        if member == self.me:
            return False
        held = self.acks.get(member)
        if held is None:
            held = self.acks[member] = {}
            self._advanced_ms[member] = now_ms
        grew = False
        for a, s in vv.items():
            if s > held.get(a, 0):
                held[a] = s
                grew = True
        if grew:
            self._advanced_ms[member] = now_ms
            self.retired.discard(member)
        return grew

    def notice(self, member: str, now_ms: int) -> None:
        """A member we know of (an author, a link) that may not have acknowledged yet."""
        if member != self.me and member not in self.acks:
            self.acks[member] = {}
            self._advanced_ms[member] = now_ms

    def table(self, to: str) -> list[tuple[str, list[tuple[str, int]]]]:
        """What to gossip to ``to``: every other member's known ack (ours is the frame's vv;
        the receiver's own is of no use to it)."""
        return [(m, sorted(v.items())) for m, v in sorted(self.acks.items()) if v and m != to]

    def frontier(self, own_vv: dict[str, int], now_ms: int) -> dict[str, int] | None:
        """The stable frontier, or None while garbage collection must wait: some live member
        has acknowledged a contribution this replica does not hold yet (its key is unknown,
        so no prefix of the order can be declared complete)."""
        out = dict(own_vv)
        for member, ack in self.acks.items():
            if self.retire_after_ms is not None and (
                now_ms - self._advanced_ms.get(member, now_ms) > self.retire_after_ms
            ):
                self.retired.add(member)
                continue
            if any(s > own_vv.get(a, 0) for a, s in ack.items()):
                return None
            if ack.get(member, 0) <= own_vv.get(member, 0):
                self._effective[member] = ack.copy()
            eff = self._effective.get(member, {})
            for a in list(out):
                s = eff.get(a, 0)
                if s < out[a]:
                    if s:
                        out[a] = s
                    else:
                        del out[a]
        return out


@dataclass(slots=True)
class Checkpoint:
    """The compacted state of a replica (see the module docstring)."""

    base: OrderKey  # the last compacted contribution's (lamport, id)
    compacted: dict[str, int]  # per author, contributions folded into the checkpoint
    stubs: list[tuple[Contribution, dict[str, int]]]
    gone: dict[bytes, tuple[str, int, int]]  # referenced compacted id -> (author, seq, lamport)
    fields: bytes  # Yjs v1 state of the fields document as of the compacted prefix
    regions: list[list[Any]]
    archive: list[tuple[tuple[Any, ...], Any]] = field(default_factory=list)  # conflicts
    dropped: bytes = b""  # DroppedRanges.encode() of the fields compactions (b"": none)
    # the order key at which the fields checkpoint was last compacted (None: never)
    fields_cut: OrderKey | None = None
    # the largest fields cut declared by a stable contribution (docs/gc.md, anchors)
    stable2: OrderKey | None = None
    # per fields compaction whose anchors may still be named: its cut and the anchors' tails
    gens: list[tuple[OrderKey, list[tuple[int, int]]]] = field(default_factory=list)


def _default(obj: object) -> Any:
    if obj is DELETED:
        return msgpack.ExtType(_EXT_DELETED, b"")
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a checkpoint")


def _ext(code: int, data: bytes) -> Any:
    if code == _EXT_DELETED:
        return DELETED
    raise PayloadError(f"unknown checkpoint extension {code}")


def encode_checkpoint(space: str, cp: Checkpoint) -> bytes:
    from hybridsync.replica import Conflict

    archive = []
    for key, c in cp.archive:
        assert isinstance(c, Conflict)
        archive.append([list(key), c.plane, c.location, list(c.contributions), list(c.values),
                        list(c.paths), list(c.authors), c.kind])
    body = [
        CHECKPOINT_VERSION, space, [cp.base[0], cp.base[1]],
        sorted(cp.compacted.items()),
        [[c.author, c.seq, c.id, list(c.parents), c.lamport, c.hlc, c.kind,
          sorted(causal.items())] for c, causal in cp.stubs],
        sorted([cid, a, s, lam] for cid, (a, s, lam) in cp.gone.items()),
        cp.fields, cp.regions, archive, cp.dropped,
        _key_out(cp.fields_cut), _key_out(cp.stable2),
        [[_key_out(k), sorted([c, k2] for c, k2 in tails)] for k, tails in cp.gens],
    ]
    out: bytes = msgpack.packb(body, use_bin_type=True, default=_default)
    return out


def decode_checkpoint(space: str, data: bytes) -> Checkpoint:
    """Decode and check a checkpoint of ``space``; :class:`PayloadError` if malformed."""
    from hybridsync.replica import Conflict

    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True,
                              ext_hook=_ext, max_map_len=1 << 20)
        fields_cut = stable2 = None
        gens: list[tuple[OrderKey, list[tuple[int, int]]]] = []
        if type(obj) is list and obj and obj[0] == 2:  # before anchor generations
            (version, sp, base, compacted, stubs, gone, fields_state, regions, archive,
             dropped) = obj
        else:
            (version, sp, base, compacted, stubs, gone, fields_state, regions, archive,
             dropped, cut_raw, stable2_raw, gens_raw) = obj
            fields_cut, stable2 = _key_in(cut_raw), _key_in(stable2_raw)
            for k, tails in gens_raw:
                key = _key_in(k)
                if key is None:
                    raise PayloadError("an anchor generation without a cut")
                gens.append((key, [(int(c), int(k2)) for c, k2 in tails]))
        if version not in (2, CHECKPOINT_VERSION) or sp != space:
            raise PayloadError("checkpoint of another version or space")
        if (type(fields_state) is not bytes or type(regions) is not list
                or type(dropped) is not bytes):
            raise PayloadError("checkpoint fields/regions have the wrong types")
        comp = {str(a): int(n) for a, n in compacted}
        st = []
        for author, seq, cid, parents, lamport, hlc, kind, causal in stubs:
            if type(cid) is not bytes or len(cid) != 32 or type(author) is not str:
                raise PayloadError("malformed checkpoint stub")
            ps = tuple(bytes(p) for p in parents)
            if any(len(p) != 32 for p in ps):
                raise PayloadError("malformed checkpoint stub parents")
            st.append((Contribution(cid, author, int(seq), ps, int(lamport), int(hlc),
                                    str(kind), "", b""),
                       {str(a): int(s) for a, s in causal}))
        for c, _ in st:
            if not 0 < c.seq <= comp.get(c.author, 0):
                raise PayloadError("a checkpoint stub lies outside the compacted prefix")
        for a, n in comp.items():
            if n and not any(c.author == a and c.seq == n for c, _ in st):
                raise PayloadError(f"checkpoint lacks the stub of {a}#{n}")
        gn = {bytes(cid): (str(a), int(s), int(lam)) for cid, a, s, lam in gone}
        arch: list[tuple[tuple[Any, ...], Any]] = []
        for key, plane, location, contribs, values, paths, authors, kind in archive:
            arch.append((tuple(tuple(k) if isinstance(k, list) else k for k in key),
                         Conflict(plane, location, tuple(contribs), tuple(values),
                                  tuple(paths), tuple(authors), kind)))
        base_key = (int(base[0]), bytes(base[1]))
    except PayloadError:
        raise
    except Exception as exc:  # msgpack errors, unpacking, wrong types
        raise PayloadError(f"malformed checkpoint: {type(exc).__name__}: {exc}") from None
    if dropped:
        from hybridsync.fields._compact import DroppedRanges

        DroppedRanges.decode(dropped)  # PayloadError if malformed
    return Checkpoint(base_key, comp, st, gn, fields_state, regions, arch, dropped,
                      fields_cut, stable2, gens)


def _key_out(key: OrderKey | None) -> list[Any] | None:
    return None if key is None else [key[0], key[1]]


def _key_in(raw: Any) -> OrderKey | None:
    if raw is None:
        return None
    lamport, cid = raw
    if type(lamport) is not int or type(cid) is not bytes or len(cid) != 32:
        raise PayloadError("malformed order key in a checkpoint")
    return (lamport, cid)
