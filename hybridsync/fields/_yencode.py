"""Yjs v1 updates as editable structs: a lossless decoder and its encoder.

:func:`hybridsync.fields._yupdate.decode_update` tells *what* an update carries; this module
keeps *how* it is written, so an update can be taken apart, its headers changed, and written
again. Every struct keeps its info byte and the raw bytes of its content, so::

    encode_raw(decode_raw(data)) == data

for every update yjs or yrs writes (lib0 varints are written minimally, as lib0 does).
Contents are validated while decoding with the same readers ``decode_update`` uses, so
anything :func:`decode_raw` accepts is also accepted by ``decode_update``.

The layout is the one drawn in ``_yupdate``'s docstring. The info byte of an item is
``content_ref | 0x80 (origin) | 0x40 (right origin) | 0x20 (parent_sub)``; yjs sets 0x20 for
every map entry, but the key is written only when neither origin is (the parent is then
written too).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from hybridsync.errors import PayloadError
from hybridsync.fields._yupdate import (
    _TYPE_REFS_PLAIN,
    ItemId,
    _any,
    _bytes,
    _count,
    _fail,
    _json,
    _sint,
    _string,
    _type_ref,
    _uint,
)

__all__ = [
    "REF_ANY",
    "REF_BINARY",
    "REF_DELETED",
    "REF_DOC",
    "REF_EMBED",
    "REF_FORMAT",
    "REF_GC",
    "REF_JSON",
    "REF_MOVE",
    "REF_SKIP",
    "REF_STRING",
    "REF_TYPE",
    "RawStruct",
    "RawUpdate",
    "decode_raw",
    "deleted_content",
    "encode_raw",
    "merge_content",
    "scan_items",
    "split_content",
    "with_header",
    "write_uint",
]

REF_GC: Final = 0
REF_DELETED: Final = 1
REF_JSON: Final = 2
REF_BINARY: Final = 3
REF_STRING: Final = 4
REF_EMBED: Final = 5
REF_FORMAT: Final = 6
REF_TYPE: Final = 7
REF_ANY: Final = 8
REF_DOC: Final = 9
REF_SKIP: Final = 10
REF_MOVE: Final = 11  # yrs only

BIT_ORIGIN: Final = 0x80
BIT_RIGHT_ORIGIN: Final = 0x40
BIT_PARENT_SUB: Final = 0x20


@dataclass(frozen=True, slots=True)
class RawStruct:
    """One struct as written: an item, or a ``gc``/``skip`` range (``info`` 0 or 10)."""

    client: int
    clock: int
    length: int
    info: int
    origin: ItemId | None
    right_origin: ItemId | None
    parent: str | ItemId | None
    """Root name or parent type item id when written (neither origin is), else None."""
    parent_sub: str | None
    """Map key when written, else None (it is then copied from the origin item)."""
    content: bytes
    """The content exactly as written after the header (empty for gc/skip)."""

    @property
    def ref(self) -> int:
        """Content ref: the low five bits of the info byte."""
        return self.info & 0x1F

    @property
    def is_item(self) -> bool:
        """Whether this is an item (not a gc or skip range)."""
        return self.info & 0x1F not in (REF_GC, REF_SKIP)


@dataclass(frozen=True, slots=True)
class RawUpdate:
    """A v1 update as written: clients in encoding order, each with its structs in clock
    order, then the delete set as ``(client, ((clock, length), ...))`` in encoding order."""

    clients: tuple[tuple[int, tuple[RawStruct, ...]], ...]
    deletes: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]


# -- encoding -------------------------------------------------------------------------------


def write_uint(out: bytearray, value: int) -> None:
    """Append a lib0 unsigned varint (7-bit groups, little-endian, high bit = continue)."""
    if value < 0 or value >= 1 << 64:
        raise PayloadError(f"cannot encode {value} as an unsigned 64-bit varint")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _write_string(out: bytearray, text: str) -> None:
    raw = text.encode()
    write_uint(out, len(raw))
    out += raw


def _write_struct(out: bytearray, s: RawStruct) -> None:
    info = s.info
    out.append(info)
    ref = info & 0x1F
    if ref in (REF_GC, REF_SKIP):
        write_uint(out, s.length)
        return
    if info & BIT_ORIGIN:
        if s.origin is None:
            raise PayloadError("info byte announces an origin the struct lacks")
        write_uint(out, s.origin[0])
        write_uint(out, s.origin[1])
    if info & BIT_RIGHT_ORIGIN:
        if s.right_origin is None:
            raise PayloadError("info byte announces a right origin the struct lacks")
        write_uint(out, s.right_origin[0])
        write_uint(out, s.right_origin[1])
    if not info & (BIT_ORIGIN | BIT_RIGHT_ORIGIN):
        parent = s.parent
        if isinstance(parent, str):
            out.append(1)
            _write_string(out, parent)
        elif parent is not None:
            out.append(0)
            write_uint(out, parent[0])
            write_uint(out, parent[1])
        else:
            raise PayloadError("an item without origins must name its parent")
        if info & BIT_PARENT_SUB:
            if s.parent_sub is None:
                raise PayloadError("info byte announces a parent_sub the struct lacks")
            _write_string(out, s.parent_sub)
    out += s.content


def encode_raw(update: RawUpdate) -> bytes:
    """Write a :class:`RawUpdate` as Yjs v1 bytes. Each client's structs must be contiguous
    in clock order (the first struct's clock is written, the rest follow from lengths)."""
    out = bytearray()
    write_uint(out, len(update.clients))
    for client, structs in update.clients:
        if not structs:
            raise PayloadError(f"client {client} has no structs")
        write_uint(out, len(structs))
        write_uint(out, client)
        clock = structs[0].clock
        write_uint(out, clock)
        for s in structs:
            if s.client != client or s.clock != clock:
                raise PayloadError(
                    f"struct {s.client}:{s.clock} out of place (expected {client}:{clock})"
                )
            if s.length < 0 or (s.length == 0 and not s.is_item):
                raise PayloadError(f"struct {s.client}:{s.clock} has length {s.length}")
            _write_struct(out, s)
            clock += s.length
    write_uint(out, len(update.deletes))
    for client, ranges in update.deletes:
        write_uint(out, client)
        write_uint(out, len(ranges))
        for clock, length in ranges:
            write_uint(out, clock)
            write_uint(out, length)
    return bytes(out)


# -- content helpers --------------------------------------------------------------------------


def deleted_content(length: int) -> bytes:
    """The content bytes of ``ContentDeleted(length)``."""
    out = bytearray()
    write_uint(out, length)
    return bytes(out)


def _split_count(content: bytes) -> tuple[int, bytes]:
    """A content that starts with a varuint count: the count and the rest."""
    count, pos = _uint(content, 0)
    return count, content[pos:]


def merge_content(ref: int, left: bytes, right: bytes) -> bytes | None:
    """The content of two adjacent items of kind ``ref`` written as one item, or ``None`` when
    yjs does not merge that kind (binary, embed, format, type, doc, move)."""
    if ref == REF_DELETED:
        return deleted_content(_uint(left, 0)[0] + _uint(right, 0)[0])
    if ref in (REF_ANY, REF_JSON):
        n_left, body_left = _split_count(left)
        n_right, body_right = _split_count(right)
        out = bytearray()
        write_uint(out, n_left + n_right)
        return bytes(out + body_left + body_right)
    if ref == REF_STRING:
        len_left, body_left = _split_count(left)
        len_right, body_right = _split_count(right)
        out = bytearray()
        write_uint(out, len_left + len_right)
        return bytes(out + body_left + body_right)
    return None


def split_content(ref: int, content: bytes, offset: int) -> tuple[bytes, bytes]:
    """Split a content of clock length > ``offset`` > 0 into its first ``offset`` clocks and
    the rest, as yjs' ``splitItem`` does (a string split inside a surrogate pair gets U+FFFD
    on both sides). Only deleted, any, json and string contents span several clocks."""
    if ref == REF_DELETED:
        total = _uint(content, 0)[0]
        return deleted_content(offset), deleted_content(total - offset)
    if ref in (REF_ANY, REF_JSON):
        n, pos = _uint(content, 0)
        end = len(content)
        cut = pos
        for _ in range(offset):
            cut = _any(content, cut, end, 0)[1] if ref == REF_ANY else _string(content, cut, end)[1]
        left = bytearray()
        write_uint(left, offset)
        right = bytearray()
        write_uint(right, n - offset)
        return bytes(left + content[pos:cut]), bytes(right + content[cut:])
    if ref == REF_STRING:
        text, _ = _string(content, 0, len(content))
        units = text.encode("utf-16-le", "surrogatepass")
        head = units[: 2 * offset].decode("utf-16-le", "replace")
        tail = units[2 * offset :].decode("utf-16-le", "replace")
        left = bytearray()
        _write_string(left, head)
        right = bytearray()
        _write_string(right, tail)
        return bytes(left), bytes(right)
    raise PayloadError(f"content ref {ref} spans one clock and cannot be split")


# -- decoding ---------------------------------------------------------------------------------


def _utf16_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) >> 1


def _content(buf: bytes, pos: int, end: int, ref: int, at: int) -> tuple[int, int]:
    """Validate one content of kind ``ref`` at ``pos``; its clock length and end position."""
    length = 1
    if ref == REF_ANY:
        n, pos = _count(buf, pos, end, 1, "Any content")
        length = n
        for _ in range(n):
            _, pos = _any(buf, pos, end, 0)
    elif ref == REF_STRING:
        text, pos = _string(buf, pos, end)
        length = _utf16_length(text)
    elif ref == REF_DELETED:
        length, pos = _uint(buf, pos)
    elif ref == REF_TYPE:
        _, pos = _type_ref(buf, pos, end)
    elif ref == REF_BINARY:
        _, pos = _bytes(buf, pos, end)
    elif ref == REF_JSON:
        n, pos = _count(buf, pos, end, 1, "JSON content")
        length = n
        for _ in range(n):
            _, pos = _json(buf, pos, end)
    elif ref == REF_EMBED:
        _, pos = _json(buf, pos, end)
    elif ref == REF_FORMAT:
        _, pos = _string(buf, pos, end)
        _, pos = _json(buf, pos, end)
    elif ref == REF_DOC:
        _, pos = _string(buf, pos, end)
        _, pos = _any(buf, pos, end, 0)
    elif ref == REF_MOVE:
        flags, pos = _sint(buf, pos)
        _, pos = _uint(buf, pos)
        _, pos = _uint(buf, pos)
        if not flags & 1:
            _, pos = _uint(buf, pos)
            _, pos = _uint(buf, pos)
    else:
        _fail(f"unknown content ref {ref}", at, end)
    return length, pos


def decode_raw(data: bytes) -> RawUpdate:
    """Decode a Yjs v1 update losslessly. Raises :class:`PayloadError` on malformed input
    (the same inputs :func:`~hybridsync.fields._yupdate.decode_update` rejects)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PayloadError(f"Yjs update must be bytes-like, not {type(data).__name__}")
    buf = bytes(data)
    try:
        return _decode_raw(buf)
    except IndexError:
        raise PayloadError(f"malformed Yjs update: truncated ({len(buf)} bytes)") from None


def _id(buf: bytes, pos: int) -> tuple[ItemId, int]:
    client, pos = _uint(buf, pos)
    clock, pos = _uint(buf, pos)
    return (client, clock), pos


def _decode_raw(buf: bytes) -> RawUpdate:
    end = len(buf)
    n_clients, pos = _count(buf, 0, end, 3, "client")
    clients: list[tuple[int, tuple[RawStruct, ...]]] = []
    for _ in range(n_clients):
        n_structs, pos = _count(buf, pos, end, 2, "struct")
        client, pos = _uint(buf, pos)
        clock, pos = _uint(buf, pos)
        structs: list[RawStruct] = []
        for _ in range(n_structs):
            at = pos
            info = buf[pos]
            pos += 1
            ref = info & 0x1F
            if ref in (REF_GC, REF_SKIP):
                length, pos = _uint(buf, pos)
                if info != ref:
                    _fail(f"gc/skip struct with flags {info:#x}", at, end)
                structs.append(RawStruct(client, clock, length, info, None, None, None, None, b""))
                clock += length
                continue
            origin: ItemId | None = None
            right_origin: ItemId | None = None
            parent: str | ItemId | None = None
            parent_sub: str | None = None
            if info & BIT_ORIGIN:
                origin, pos = _id(buf, pos)
            if info & BIT_RIGHT_ORIGIN:
                right_origin, pos = _id(buf, pos)
            if not info & (BIT_ORIGIN | BIT_RIGHT_ORIGIN):
                has_name = buf[pos]
                pos += 1
                if has_name == 1:
                    parent, pos = _string(buf, pos, end)
                elif has_name == 0:
                    parent, pos = _id(buf, pos)
                else:
                    _fail(f"parent info must be 0 or 1, got {has_name}", pos - 1, end)
                if info & BIT_PARENT_SUB:
                    parent_sub, pos = _string(buf, pos, end)
            start = pos
            length, pos = _content(buf, pos, end, ref, at)
            if clock + length > 1 << 64:
                _fail(f"item {client}:{clock} runs past clock 2^64", at, end)
            # yrs writes empty string items (length 0) after a text edit split a UTF-8
            # character; they are kept so that such updates still round-trip.
            structs.append(
                RawStruct(
                    client,
                    clock,
                    length,
                    info,
                    origin,
                    right_origin,
                    parent,
                    parent_sub,
                    buf[start:pos],
                )
            )
            clock += length
        clients.append((client, tuple(structs)))
    n_ds, pos = _count(buf, pos, end, 2, "delete-set client")
    deletes: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    for _ in range(n_ds):
        client, pos = _uint(buf, pos)
        n_ranges, pos = _count(buf, pos, end, 2, "delete range")
        ranges: list[tuple[int, int]] = []
        for _ in range(n_ranges):
            d_clock, pos = _uint(buf, pos)
            d_len, pos = _uint(buf, pos)
            ranges.append((d_clock, d_len))
        deletes.append((client, tuple(ranges)))
    if pos != end:
        _fail(f"{end - pos} trailing bytes after the delete set", pos, end)
    return RawUpdate(tuple(clients), tuple(deletes))


def with_header(
    s: RawStruct,
    *,
    origin: ItemId | None,
    right_origin: ItemId | None,
    parent: str | ItemId | None,
    parent_sub: str | None,
) -> RawStruct:
    """``s`` with new header fields and the info byte that matches them (content kept).
    ``parent``/``parent_sub`` are written only when neither origin is given."""
    info = s.info & (0x1F | BIT_PARENT_SUB)
    if origin is not None:
        info |= BIT_ORIGIN
    if right_origin is not None:
        info |= BIT_RIGHT_ORIGIN
    if origin is None and right_origin is None:
        if parent is None:
            raise PayloadError(f"item {s.client}:{s.clock} would have neither origin nor parent")
        info = (info & ~BIT_PARENT_SUB) | (BIT_PARENT_SUB if parent_sub is not None else 0)
    else:
        parent = None
        parent_sub = None
    return replace(
        s,
        info=info,
        origin=origin,
        right_origin=right_origin,
        parent=parent,
        parent_sub=parent_sub,
    )


# -- header scan ------------------------------------------------------------------------------

ItemHead = tuple[int, int, int, "ItemId | None", "ItemId | None", "str | ItemId | None",
                 "str | None"]
"""``(client, clock, length, origin, right_origin, parent, parent_sub)`` of one item."""


def _skip_any(buf: bytes, pos: int, depth: int) -> int:
    """Step over one lib0 Any value without building it (no validation beyond structure)."""
    tag = buf[pos]
    pos += 1
    if tag == 125:  # signed varint
        while buf[pos] & 0x80:
            pos += 1
        return pos + 1
    if tag in (119, 116):  # string, Uint8Array: varuint length + bytes
        n, pos = _uint(buf, pos)
        return pos + n
    if tag in (120, 121, 126, 127):
        return pos
    if tag in (123, 122):
        return pos + 8
    if tag == 124:
        return pos + 4
    if depth >= 32:
        raise IndexError("Any nested too deep for the header scan")
    if tag == 118:
        n, pos = _uint(buf, pos)
        for _ in range(n):
            k, pos = _uint(buf, pos)
            pos = _skip_any(buf, pos + k, depth + 1)
        return pos
    if tag == 117:
        n, pos = _uint(buf, pos)
        for _ in range(n):
            pos = _skip_any(buf, pos, depth + 1)
        return pos
    raise IndexError(f"unknown Any tag {tag}")


def scan_items(data: bytes) -> list[ItemHead] | None:
    """The header of every item of a v1 update, reading only what locates them: much
    cheaper than :func:`decode_raw` (contents are stepped over, not built or validated).

    Returns ``None`` when the update holds something the scan does not step over (content
    kinds other than Any, string, deleted and type, or anything malformed): callers then take
    the full, validating path. It never raises.
    """
    try:
        return _scan(data)
    except (IndexError, PayloadError, UnicodeDecodeError):
        return None


def _scan(buf: bytes) -> list[ItemHead] | None:
    end = len(buf)
    heads: list[ItemHead] = []
    n_clients, pos = _uint(buf, 0)
    for _ in range(n_clients):
        n_structs, pos = _uint(buf, pos)
        client, pos = _uint(buf, pos)
        clock, pos = _uint(buf, pos)
        for _ in range(n_structs):
            info = buf[pos]
            pos += 1
            ref = info & 0x1F
            if ref in (REF_GC, REF_SKIP):
                length, pos = _uint(buf, pos)
                clock += length
                continue
            origin: ItemId | None = None
            right: ItemId | None = None
            parent: str | ItemId | None = None
            sub: str | None = None
            if info & BIT_ORIGIN:
                c, pos = _uint(buf, pos)
                k, pos = _uint(buf, pos)
                origin = (c, k)
            if info & BIT_RIGHT_ORIGIN:
                c, pos = _uint(buf, pos)
                k, pos = _uint(buf, pos)
                right = (c, k)
            if not info & (BIT_ORIGIN | BIT_RIGHT_ORIGIN):
                has_name = buf[pos]
                pos += 1
                if has_name == 1:
                    n, pos = _uint(buf, pos)
                    parent = buf[pos : pos + n].decode()
                    pos += n
                elif has_name == 0:
                    c, pos = _uint(buf, pos)
                    k, pos = _uint(buf, pos)
                    parent = (c, k)
                else:
                    return None
                if info & BIT_PARENT_SUB:
                    n, pos = _uint(buf, pos)
                    sub = buf[pos : pos + n].decode()
                    pos += n
            if ref == REF_ANY:
                length, pos = _uint(buf, pos)
                for _ in range(length):
                    pos = _skip_any(buf, pos, 0)
            elif ref == REF_STRING:
                n, pos = _uint(buf, pos)
                text = buf[pos : pos + n]
                pos += n
                length = n if text.isascii() else _utf16_length(text.decode())
            elif ref == REF_DELETED:
                length, pos = _uint(buf, pos)
            elif ref == REF_TYPE:
                kind, pos = _uint(buf, pos)
                if kind not in _TYPE_REFS_PLAIN:  # the kinds with nothing after the ref
                    return None
                length = 1
            else:
                return None
            if pos > end:
                return None
            heads.append((client, clock, length, origin, right, parent, sub))
            clock += length
    return heads
