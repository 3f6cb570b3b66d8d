"""Contributions: the content-addressed nodes of the causal DAG (DCS, arXiv 2510.05621 §3).

A contribution is ``(id, author, seq, parents, lamport, hlc, kind, note, payload)``; ``id`` is
blake2b-256 over a canonical msgpack encoding of everything else and the space name (so a
contribution of one space can never be taken for one of another), so the log is a Merkle DAG:
changing any byte of a contribution, or of any ancestor, changes its id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack

from hybridsync.errors import IntegrityError

__all__ = ["ID_BYTES", "KINDS", "Contribution", "ContributionId", "compute_id"]

ContributionId = bytes
ID_BYTES = 32
# Payload kinds. ``fields`` carries one Yjs v1 update; ``multi`` (texts and buffers, later
# planes) carries a msgpack list of ``[plane, region, data]`` parts. Unknown kinds are rejected.
KINDS = ("fields", "multi")
_HASH_VERSION = 1
_packb = msgpack.Packer(use_bin_type=True).pack


def compute_id(
    space: str,
    author: str,
    seq: int,
    parents: tuple[bytes, ...],
    lamport: int,
    hlc: int,
    kind: str,
    note: str,
    payload: bytes,
) -> bytes:
    """The content address of a contribution (blake2b-256 over its canonical encoding).

    The encoding is the msgpack array ``[version, space, author, seq, parents, lamport, hlc,
    kind, note, payload]``; the payload, its last element, is fed to the hash as it is rather
    than packed into a buffer with the rest when it is large: a multi-megabyte payload is
    neither copied nor left behind in the packer's reusable buffer (which keeps the size it
    grew to). A small one is packed with the rest: one buffer, one hash call, the same bytes.
    """
    if len(payload) <= _SMALL_PAYLOAD:  # one buffer, one hash call: the same bytes
        return _blake2b(
            _packb([_HASH_VERSION, space, author, seq, [*parents], lamport, hlc, kind, note,
                    payload]),
            digest_size=ID_BYTES,
        ).digest()
    head = _packb([_HASH_VERSION, space, author, seq, list(parents), lamport, hlc, kind, note])
    h = hashlib.blake2b(_ARRAY10, digest_size=ID_BYTES)
    h.update(memoryview(head)[1:])  # the 9 elements without their array header
    h.update(_bin_header(len(payload)))
    h.update(payload)
    return h.digest()


_ARRAY10 = b"\x9a"  # msgpack fixarray header, 10 elements
_SMALL_PAYLOAD = 64 << 10  # up to this, the payload is packed with the rest (a small copy)
_blake2b = hashlib.blake2b


def _bin_header(n: int) -> bytes:
    """msgpack's bin 8/16/32 header for ``n`` bytes (what ``use_bin_type=True`` writes)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    if n < 1 << 32:
        return b"\xc6" + n.to_bytes(4, "big")
    raise ValueError("a contribution payload must be smaller than 4 GiB")


@dataclass(frozen=True, slots=True)
class Contribution:
    """One atomic commit of one author: a node of the causal DAG.

    ``parents`` are the DAG heads the author had applied, sorted; ``(author, seq)`` is its dot;
    ``lamport`` is one more than the largest parent's, so ``(lamport, id)`` is a topological order.

    >>> c = Contribution.create("space", "a", 1, (), 1, 0, "fields", b"\\x00\\x00")
    >>> c.verify("space") is None and len(c.id) == 32
    True
    """

    id: bytes
    author: str
    seq: int
    parents: tuple[bytes, ...]
    lamport: int
    hlc: int
    kind: str
    note: str
    payload: bytes

    @classmethod
    def create(
        cls,
        space: str,
        author: str,
        seq: int,
        parents: tuple[bytes, ...],
        lamport: int,
        hlc: int,
        kind: str,
        payload: bytes,
        note: str = "",
    ) -> Contribution:
        parents = tuple(sorted(parents)) if len(parents) > 1 else tuple(parents)
        cid = compute_id(space, author, seq, parents, lamport, hlc, kind, note, payload)
        if cls is not Contribution:
            return cls(cid, author, seq, parents, lamport, hlc, kind, note, payload)
        # The frozen dataclass's __init__ sets each field through object.__setattr__ looked
        # up anew (about 1 µs); the slots' own descriptors do the same in half the time.
        c: Contribution = _new(Contribution)
        _set_id(c, cid)
        _set_author(c, author)
        _set_seq(c, seq)
        _set_parents(c, parents)
        _set_lamport(c, lamport)
        _set_hlc(c, hlc)
        _set_kind(c, kind)
        _set_note(c, note)
        _set_payload(c, payload)
        return c

    @property
    def hex_id(self) -> str:
        return self.id.hex()

    @property
    def order_key(self) -> tuple[int, bytes]:
        """Position in the deterministic total order every replica computes."""
        return (self.lamport, self.id)

    def verify(self, space: str) -> None:
        """Raise :class:`IntegrityError` unless ``id`` is the hash of the content in ``space``."""
        expected = compute_id(
            space,
            self.author, self.seq, self.parents, self.lamport, self.hlc, self.kind,
            self.note, self.payload,
        )
        if expected != self.id:
            raise IntegrityError(
                f"contribution {self.author}#{self.seq}: id {self.id.hex()[:16]} does not match "
                f"its content (expected {expected.hex()[:16]})"
            )

    def __repr__(self) -> str:
        return (
            f"Contribution({self.id.hex()[:12]}, {self.author}#{self.seq}, "
            f"lamport={self.lamport}, kind={self.kind}, {len(self.payload)} B)"
        )


_new = object.__new__
(_set_id, _set_author, _set_seq, _set_parents, _set_lamport, _set_hlc, _set_kind, _set_note,
 _set_payload) = (
    Contribution.__dict__[f].__set__
    for f in ("id", "author", "seq", "parents", "lamport", "hlc", "kind", "note", "payload")
)
assert tuple(Contribution.__dataclass_fields__) == (
    "id", "author", "seq", "parents", "lamport", "hlc", "kind", "note", "payload"
), "Contribution.create sets every field"
