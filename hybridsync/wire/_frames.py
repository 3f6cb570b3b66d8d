"""Sync frames: the bytes that ``Memory.sync_to`` returns and ``Memory.receive`` accepts.

A frame is one msgpack array (see ``docs/wire.md``)::

    [VERSION=1, TYPE_SYNC=1, incarnation, authors, vv | nil, contributions
     (, acks | nil (, rollback))]
    [VERSION=1, TYPE_CHECKPOINT=2, incarnation, checkpoint (, offer=1)]

``authors`` is the frame's author table; ``vv`` (when present) lists the sender's version
vector as seqs aligned with ``authors``; each contribution is
``[author_index, seq, parents, lamport, hlc, kind, note, payload, id_prefix]`` where
``parents`` is a flat list ``[author_index, seq, ...]`` of dots. Ids never travel whole: the
receiver recomputes them (blake2b-256) and checks the 8-byte prefix. ``acks`` (optional)
gossips what the sender knows of every member's acknowledged version vector:
``[[member_index, [author_index, seq, ...]], ...]`` (the stability frontier of garbage
collection needs every member's, also through relays). A checkpoint frame carries the
sender's compacted state to a peer that lacks what was compacted (``docs/gc.md``).
``rollback`` (optional, a lamport time) asks the receiver for a *roll-back*: its checkpoint
and everything after it, if its checkpoint sorts before that time; the answer is a checkpoint
frame marked ``offer`` (its checkpoint bytes are empty when the sender never compacted),
then the contributions (``docs/gc.md``, "Late work: roll-back").

Decoding is total: any input either yields a :class:`SyncFrame` whose every field has been
type- and range-checked, or raises :class:`FrameError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from hybridsync.causal import ID_PREFIX_BYTES, KINDS, Contribution, Draft
from hybridsync.causal._contribution import _packb as _pack_small
from hybridsync.errors import FrameError

__all__ = [
    "MAX_AUTHOR_BYTES",
    "MAX_CONTRIBUTIONS_PER_FRAME",
    "MAX_FRAME_BYTES",
    "MAX_NOTE_BYTES",
    "MAX_PARENTS",
    "MAX_PAYLOAD_BYTES",
    "VERSION",
    "SyncFrame",
    "decode_frame",
    "encode_checkpoint_frame",
    "encode_frame",
]

VERSION = 1
TYPE_SYNC = 1
TYPE_CHECKPOINT = 2
MAX_MEMBERS = 1_024
MAX_FRAME_BYTES = 16 << 20  # hard limit: larger input is rejected before decoding
MAX_PAYLOAD_BYTES = 15 << 20  # one contribution's payload must fit in one frame
MAX_CONTRIBUTIONS_PER_FRAME = 65_536
MAX_AUTHORS = 4_096
MAX_AUTHOR_BYTES = 256
MAX_NOTE_BYTES = 4_096
MAX_PARENTS = 1_024
_MAX_SAFE = (1 << 53) - 1
_MAX_U64 = (1 << 64) - 1
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class SyncFrame:
    """A decoded, validated sync frame."""

    incarnation: int
    vv: dict[str, int] | None
    drafts: tuple[Draft, ...]
    acks: dict[str, dict[str, int]] | None = None
    checkpoint: bytes | None = None
    rollback: int | None = None  # a roll-back request: the lamport time to roll back before
    offer: bool = False  # the checkpoint answers a roll-back request


def encode_frame(
    incarnation: int,
    vv: Sequence[tuple[str, int]] | None,
    contributions: Iterable[Contribution],
    dot_of: Any,
    acks: Sequence[tuple[str, Sequence[tuple[str, int]]]] | None = None,
    rollback: int | None = None,
) -> bytes:
    """Encode one frame. ``dot_of(id) -> (author, seq)`` names parents by their dots;
    ``acks`` lists ``(member, [(author, seq), ...])`` known acknowledgements; ``rollback``
    asks for a roll-back to before that lamport time."""
    authors: list[str] = []
    index: dict[str, int] = {}

    def aidx(name: str) -> int:
        i = index.get(name)
        if i is None:
            i = index[name] = len(authors)
            authors.append(name)
        return i

    vv_seqs: list[int] | None = None
    if vv is not None:
        vv_seqs = []
        for author, seq in vv:
            aidx(author)
            vv_seqs.append(seq)
    body = []
    get = index.get
    size = 0
    for c in contributions:
        size += len(c.payload) + 4 * len(c.note) + 12 * len(c.parents)
        parents: list[int] = []
        for p in c.parents:
            pa, ps = dot_of(p)
            pi = get(pa)
            parents.append(aidx(pa) if pi is None else pi)
            parents.append(ps)
        ai = get(c.author)
        body.append([
            aidx(c.author) if ai is None else ai, c.seq, parents, c.lamport, c.hlc,
            _KIND_CODE[c.kind], c.note, c.payload, c.id[:ID_PREFIX_BYTES],
        ])
    # The sender holds whatever it sends, so its vv already names every author above.
    assert vv_seqs is None or len(vv_seqs) == len(authors), "vv must cover the frame's authors"
    frame: list[Any] = [VERSION, TYPE_SYNC, incarnation, authors, vv_seqs, body]
    if acks:
        table = []
        for member, pairs in acks:
            flat: list[int] = []
            for a, s in pairs:
                flat.append(aidx(a))
                flat.append(s)
            table.append([aidx(member), flat])
        if vv_seqs is not None:
            vv_seqs.extend([0] * (len(authors) - len(vv_seqs)))
        frame.append(table)
    if rollback is not None:
        if len(frame) == 6:
            frame.append(None)
        frame.append(rollback)
    if size <= _SMALL_FRAME and len(authors) <= 64 and len(body) <= 64:
        small: bytes = _pack_small(frame)  # (a kept packer: packb makes one per call)
        return small
    out: bytes = msgpack.packb(frame, use_bin_type=True)
    return out


# Frames whose payloads, notes and parents total at most about this are packed by a kept
# packer (its buffer starts at 1 MiB and would keep whatever a larger frame grew it to)
_SMALL_FRAME = 64 << 10


def encode_checkpoint_frame(incarnation: int, checkpoint: bytes, *, offer: bool = False) -> bytes:
    """A frame carrying a checkpoint (the compacted state) to a peer that lacks it, or
    (``offer``) answering its roll-back request; an offer's checkpoint may be empty (the
    sender never compacted)."""
    frame: list[Any] = [VERSION, TYPE_CHECKPOINT, incarnation, checkpoint]
    if offer:
        frame.append(1)
    out: bytes = msgpack.packb(frame, use_bin_type=True)
    return out


def _fail(msg: str) -> FrameError:
    return FrameError(f"rejected frame: {msg}")


def _int(v: object, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(f"{what} must be an int in [{lo}, {hi}], got {type(v).__name__}")
    return v


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True,
            max_str_len=MAX_FRAME_BYTES, max_bin_len=MAX_PAYLOAD_BYTES,
            max_array_len=4 * MAX_CONTRIBUTIONS_PER_FRAME, max_map_len=0, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types: ExtraData, FormatError, ValueError...
        raise _fail(f"not a msgpack frame ({type(exc).__name__}: {exc})") from None


def decode_frame(data: object) -> SyncFrame:
    """Decode and validate one frame; raise :class:`FrameError` on anything unexpected."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _fail(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > MAX_FRAME_BYTES:
        raise _fail(f"{len(data)} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    if not data:
        raise _fail("empty")
    obj = _unpack(data)
    if type(obj) is not list or len(obj) < 3:
        raise _fail("not a frame array")
    if type(obj[0]) is not int or obj[0] != VERSION:
        raise _fail(f"unsupported version {obj[0]!r}")
    if type(obj[1]) is not int or obj[1] not in (TYPE_SYNC, TYPE_CHECKPOINT):
        raise _fail(f"unknown frame type {obj[1]!r}")
    n_obj = len(obj)
    if obj[1] == TYPE_CHECKPOINT:
        if n_obj not in (4, 5) or type(obj[3]) is not bytes or (
            n_obj == 5 and (type(obj[4]) is not int or obj[4] != 1)
        ):
            raise _fail("a checkpoint frame is [version, 2, incarnation, bytes (, 1)]")
        offer = n_obj == 5
        return SyncFrame(_int(obj[2], 0, _MAX_U64, "incarnation"), None, (),
                         checkpoint=obj[3], offer=offer)
    if n_obj not in (6, 7, 8):
        raise _fail("a sync frame has 6, 7 or 8 elements")
    incarnation, authors, vv_seqs, body = obj[2:6]
    if type(incarnation) is not int or not 0 <= incarnation <= _MAX_U64:
        _int(incarnation, 0, _MAX_U64, "incarnation")
    if type(authors) is not list or len(authors) > MAX_AUTHORS:
        raise _fail("author table must be a list of at most 4096 names")
    n_authors = len(authors)
    for a in authors:
        if not (type(a) is str and a and (len(a) <= 64 or len(a.encode()) <= MAX_AUTHOR_BYTES)):
            raise _fail("author names are non-empty strings of at most 256 bytes")
    if n_authors > 1 and len(set(authors)) != n_authors:
        raise _fail("author table names an author twice")
    vv: dict[str, int] | None = None
    if vv_seqs is not None:
        if type(vv_seqs) is not list or len(vv_seqs) != n_authors:
            raise _fail("vv must be a list aligned with the author table")
        vv = {}
        for a, s in zip(authors, vv_seqs, strict=True):
            if _int(s, 0, _MAX_SAFE, "vv entry"):
                vv[a] = s
    acks: dict[str, dict[str, int]] | None = None
    if n_obj >= 7 and (n_obj == 7 or obj[6] is not None):
        acks = _decode_acks(obj[6], authors)
    rollback = _int(obj[7], 1, _MAX_SAFE, "rollback") if n_obj == 8 else None
    if type(body) is not list or len(body) > MAX_CONTRIBUTIONS_PER_FRAME:
        raise _fail("contributions must be a list")
    n_kinds = len(KINDS)
    drafts: list[Draft] = []
    seen: set[tuple[str, int]] = set()
    for item in body:
        if type(item) is not list or len(item) != 9:
            raise _fail("a contribution is a 9-element array")
        ai, seq, parents, lamport, hlc, kind, note, payload, prefix = item
        if not (
            type(ai) is int and type(seq) is int and type(lamport) is int
            and type(hlc) is int and type(kind) is int and type(parents) is list
            and type(note) is str and type(payload) is bytes and type(prefix) is bytes
            and 0 <= ai < n_authors and 0 < seq <= _MAX_SAFE and 0 < lamport <= _MAX_SAFE
            and 0 <= hlc <= _MAX_U64 and 0 <= kind < n_kinds
            and len(prefix) == ID_PREFIX_BYTES
        ):
            raise _fail(_explain(item, n_authors))
        if len(note) > MAX_NOTE_BYTES // 4 and len(note.encode()) > MAX_NOTE_BYTES:
            raise _fail("note must be a string of at most 4096 bytes")
        author = authors[ai]
        np2 = len(parents)
        if np2 == 2:  # the common case: one parent (the author's own previous, or a head)
            dots: tuple[tuple[str, int], ...] = (
                _parent_dot(authors, author, seq, parents[0], parents[1]),)
        else:
            if np2 % 2 or np2 > 2 * MAX_PARENTS:
                raise _fail("parents must be a flat list of (author index, seq) pairs")
            dot_list = [_parent_dot(authors, author, seq, parents[i], parents[i + 1])
                        for i in range(0, np2, 2)]
            if seq > 1 and not dot_list:
                raise _fail(
                    f"{author}#{seq} has no parents, so {author}#{seq - 1} is not in its past"
                )
            if np2 > 2 and len(set(dot_list)) != len(dot_list):
                raise _fail(f"{author}#{seq} names a parent twice")
            dots = tuple(dot_list)
        dot = (author, seq)
        if dot in seen:
            raise _fail(f"{author}#{seq} appears twice")
        seen.add(dot)
        d: Draft = _new(Draft)
        _d_author(d, author)
        _d_seq(d, seq)
        _d_parent_dots(d, dots)
        _d_lamport(d, lamport)
        _d_hlc(d, hlc)
        _d_kind(d, KINDS[kind])
        _d_note(d, note)
        _d_payload(d, payload)
        _d_id_prefix(d, prefix)
        drafts.append(d)
    # (frozen dataclasses' __init__ look object.__setattr__ up for every field: the slots'
    # own descriptors set the same fields in half the time; the Drafts above too)
    frame: SyncFrame = _new(SyncFrame)
    _set_incarnation(frame, incarnation)
    _set_vv(frame, vv)
    _set_drafts(frame, tuple(drafts))
    _set_acks(frame, acks)
    _set_checkpoint(frame, None)
    _set_rollback(frame, rollback)
    _set_offer(frame, False)
    return frame


_new = object.__new__
(_d_author, _d_seq, _d_parent_dots, _d_lamport, _d_hlc, _d_kind, _d_note, _d_payload,
 _d_id_prefix) = (Draft.__dict__[f].__set__ for f in (
    "author", "seq", "parent_dots", "lamport", "hlc", "kind", "note", "payload", "id_prefix"))
assert tuple(Draft.__dataclass_fields__) == (
    "author", "seq", "parent_dots", "lamport", "hlc", "kind", "note", "payload", "id_prefix"
), "decode_frame sets every field of a Draft"
(_set_incarnation, _set_vv, _set_drafts, _set_acks, _set_checkpoint, _set_rollback,
 _set_offer) = (SyncFrame.__dict__[f].__set__ for f in (
    "incarnation", "vv", "drafts", "acks", "checkpoint", "rollback", "offer"))
assert tuple(SyncFrame.__dataclass_fields__) == (
    "incarnation", "vv", "drafts", "acks", "checkpoint", "rollback", "offer"
), "decode_frame sets every field of a SyncFrame"


def _decode_acks(table: object, authors: list[str]) -> dict[str, dict[str, int]]:
    n = len(authors)
    if type(table) is not list or len(table) > MAX_MEMBERS:
        raise _fail("acks must be a list of at most 1024 members")
    out: dict[str, dict[str, int]] = {}
    for row in table:
        if type(row) is not list or len(row) != 2 or type(row[1]) is not list:
            raise _fail("an ack is [member index, [author index, seq, ...]]")
        mi = _int(row[0], 0, n - 1, "ack member index")
        flat = row[1]
        if len(flat) % 2 or len(flat) > 2 * MAX_AUTHORS:
            raise _fail("an ack's version vector is a flat list of pairs")
        vv: dict[str, int] = {}
        for i in range(0, len(flat), 2):
            a = authors[_int(flat[i], 0, n - 1, "ack author index")]
            if a in vv:
                raise _fail("an ack names an author twice")
            vv[a] = _int(flat[i + 1], 0, _MAX_SAFE, "ack seq")
        member = authors[mi]
        if member in out:
            raise _fail("acks name a member twice")
        out[member] = vv
    return out


def _parent_dot(authors: list[str], author: str, seq: int, pi: object,
                ps: object) -> tuple[str, int]:
    """One parent of ``author#seq`` as a dot, from its (author index, seq) pair."""
    if not (type(pi) is int and type(ps) is int and 0 <= pi < len(authors)
            and 0 < ps <= _MAX_SAFE):
        raise _fail("a parent is an (author index, seq) pair of ints in range")
    pa = authors[pi]
    if pa == author and ps >= seq:
        raise _fail(f"{author}#{seq} names itself or a later own contribution")
    return pa, ps


def _explain(item: list[Any], n_authors: int) -> str:
    """A precise message for a contribution that failed the fast shape check."""
    ai, seq, parents, lamport, hlc, kind, note, payload, _prefix = item
    try:
        _int(ai, 0, n_authors - 1, "author index")
        _int(seq, 1, _MAX_SAFE, "seq")
        _int(lamport, 1, _MAX_SAFE, "lamport")
        _int(hlc, 0, _MAX_U64, "hlc")
        _int(kind, 0, len(KINDS) - 1, "kind")
    except FrameError as exc:
        return str(exc).removeprefix("rejected frame: ")
    if type(parents) is not list:
        return "parents must be a list"
    if type(note) is not str:
        return "note must be a string"
    if type(payload) is not bytes:
        return "payload must be bytes"
    return "id prefix must be 8 bytes"
