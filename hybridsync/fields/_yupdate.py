"""A pure-Python decoder for the Yjs **v1 update** binary format.

This is the format written by ``Y.encodeStateAsUpdate`` (yjs 13), by yrs'
``encode_v1`` and therefore by :meth:`pycrdt.Doc.get_update` and the ``update``
attribute of the transaction events pycrdt emits. The decoder only *parses*:
it does not integrate anything, resolve parents copied from origins, or check
that ids refer to existing items. Its job is to tell us, cheaply and safely,
which structs and deletions a peer's payload carries.

Layout (every integer is a lib0 unsigned varint unless said otherwise)::

    update      := structs delete_set
    structs     := n_clients { n_structs client clock { struct } }
    struct      := info:u8 ( len                               if info&31 in (0 GC, 10 Skip)
                           | [origin:id]       if info&0x80
                             [right_origin:id] if info&0x40
                             [parent parent_sub?]   if info&0xC0 == 0
                             content(info&31) )
    parent      := 1 name:varstring | 0 id
    parent_sub  := varstring                        if info&0x20
    id          := client clock
    delete_set  := n_clients { client n_ranges { clock len } }

Malformed input of any kind (truncated, trailing bytes, unknown tags, counts that
cannot fit the remaining bytes, nesting deeper than :data:`MAX_NESTING`, invalid
UTF-8 or JSON) raises :class:`~hybridsync.errors.PayloadError`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Final, NoReturn

from hybridsync.errors import PayloadError

__all__ = ["MAX_NESTING", "ItemId", "YItem", "YUpdate", "decode_update"]

ItemId = tuple[int, int]
"""An item id: ``(client, clock)``."""

MAX_NESTING: Final = 64
"""Deepest nesting of lib0 ``Any`` arrays/objects (and of JSON content) we accept."""

_MAX_VARINT_BYTES: Final = 10  # enough for 64 bits (7 * 10 = 70)
_U64_LIMIT: Final = 1 << 64

_F32 = struct.Struct(">f").unpack_from
_F64 = struct.Struct(">d").unpack_from
_I64 = struct.Struct(">q").unpack_from

# Content refs (low five bits of the info byte).
_REF_GC: Final = 0
_REF_DELETED: Final = 1
_REF_JSON: Final = 2
_REF_BINARY: Final = 3
_REF_STRING: Final = 4
_REF_EMBED: Final = 5
_REF_FORMAT: Final = 6
_REF_TYPE: Final = 7
_REF_ANY: Final = 8
_REF_DOC: Final = 9
_REF_SKIP: Final = 10
_REF_MOVE: Final = 11  # yrs only

_KINDS: Final[tuple[str, ...]] = (
    "gc",
    "deleted",
    "json",
    "binary",
    "string",
    "embed",
    "format",
    "type",
    "any",
    "doc",
    "skip",
    "move",
)

# Type refs of ContentType. 0-6 are yjs'; 7 (weak link), 9 (sub-document) and
# 15 (undefined placeholder) are written by yrs.
_TYPE_XML_ELEMENT: Final = 3
_TYPE_XML_HOOK: Final = 5
_TYPE_WEAK: Final = 7
_TYPE_REFS_PLAIN: Final = frozenset({0, 1, 2, 4, 6, 9, 15})

_EMPTY: Final[tuple[object, ...]] = ()


@dataclass(frozen=True, slots=True)
class YItem:
    """One struct of an update: an item, or a ``gc``/``skip`` range."""

    client: int
    clock: int
    length: int
    """Clock span: UTF-16 units for strings, element count for any/json, the range for
    deleted/gc/skip, 1 otherwise."""
    origin: ItemId | None
    right_origin: ItemId | None
    parent: str | ItemId | None
    """Root type name, id of the item holding the parent type, or None when not written."""
    parent_sub: str | None
    kind: str
    """'any' | 'json' | 'binary' | 'string' | 'embed' | 'format' | 'type' | 'deleted' |
    'doc' | 'move' | 'gc' | 'skip'."""
    values: tuple[object, ...]
    type_ref: int | None


@dataclass(frozen=True, slots=True)
class YUpdate:
    """A decoded v1 update."""

    items: tuple[YItem, ...]
    """Structs in encoding order (clients as written, clocks ascending within a client)."""
    deletes: tuple[tuple[int, int, int], ...]
    """Delete-set ranges ``(client, clock, length)``."""


def decode_update(data: bytes) -> YUpdate:
    """Decode a Yjs v1 update. Raises :class:`PayloadError` on any malformed input."""
    if type(data) is not bytes:
        if isinstance(data, bytes | bytearray | memoryview):
            data = bytes(data)
        else:
            raise PayloadError(f"Yjs update must be bytes-like, not {type(data).__name__}")
    try:
        return _decode(data)
    except IndexError:
        # Every read indexes the exact input, so running off its end is truncation.
        raise PayloadError(f"malformed Yjs update: truncated ({len(data)} bytes)") from None


# The readers below take the input and a position and return ``(value, next_position)``.
# They index ``buf`` directly: an ``IndexError`` means the input ended early and is turned
# into PayloadError by decode_update. Hot single-byte varuints are read inline.


def _fail(what: str, at: int, end: int) -> NoReturn:
    raise PayloadError(f"malformed Yjs update: {what} (at byte {at} of {end})")


def _uint_tail(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """Finish a lib0 unsigned varint (7-bit groups, little-endian, high bit = continue)
    whose first byte ``first`` (>= 0x80) sat at ``pos - 1``."""
    value = first & 0x7F
    shift = 7
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= 7 * _MAX_VARINT_BYTES:
            _fail("unsigned varint longer than 10 bytes", pos - 10, len(buf))
    if value >= _U64_LIMIT:
        _fail("unsigned varint exceeds 64 bits", pos - shift // 7 - 1, len(buf))
    return value, pos


def _uint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    return _uint_tail(buf, pos + 1, b)


def _sint(buf: bytes, pos: int) -> tuple[int, int]:
    """lib0 signed varint: first byte 0x80 continue, 0x40 sign, 6 value bits; then 7-bit
    groups."""
    start = pos
    b = buf[pos]
    pos += 1
    value = b & 0x3F
    negative = b & 0x40
    shift = 6
    while b & 0x80:
        if pos - start >= _MAX_VARINT_BYTES:
            _fail("signed varint longer than 10 bytes", start, len(buf))
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
    if value >= _U64_LIMIT:
        _fail("signed varint exceeds 64 bits", start, len(buf))
    return (-value if negative else value), pos


def _bytes(buf: bytes, pos: int, end: int, what: str = "byte array") -> tuple[bytes, int]:
    """lib0 varUint8Array: varuint length + raw bytes."""
    start = pos
    n = buf[pos]
    pos += 1
    if n >= 0x80:
        n, pos = _uint_tail(buf, pos, n)
    stop = pos + n
    if stop > end:
        _fail(f"{what} length {n} runs past the end of the input", start, end)
    return buf[pos:stop], stop


def _string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    """lib0 varstring: varuint byte length + UTF-8."""
    start = pos
    raw, stop = _bytes(buf, pos, end, "string")
    try:
        return raw.decode(), stop
    except UnicodeDecodeError:
        _fail("string is not valid UTF-8", start, end)


def _count(buf: bytes, pos: int, end: int, min_bytes_each: int, what: str) -> tuple[int, int]:
    """A varuint element count, rejected when the rest of the input cannot hold that many
    elements of at least ``min_bytes_each`` bytes (so nothing huge is ever allocated)."""
    n, after = _uint(buf, pos)
    if n * min_bytes_each > end - after:
        _fail(f"{what} count {n} exceeds the remaining input", pos, end)
    return n, after


def _any(buf: bytes, pos: int, end: int, depth: int) -> tuple[object, int]:
    """lib0 ``readAny``; containers may nest at most :data:`MAX_NESTING` deep."""
    tag = buf[pos]
    pos += 1
    if tag == 119:  # string
        return _string(buf, pos, end)
    if tag == 123:  # float64, big-endian
        if pos + 8 > end:
            _fail("truncated float64", pos - 1, end)
        return _F64(buf, pos)[0], pos + 8
    if tag == 124:  # float32, big-endian
        if pos + 4 > end:
            _fail("truncated float32", pos - 1, end)
        return _F32(buf, pos)[0], pos + 4
    if tag == 125:  # signed varint
        return _sint(buf, pos)
    if tag == 120:
        return True, pos
    if tag == 121:
        return False, pos
    if tag in (126, 127):  # null, undefined
        return None, pos
    if tag == 118:  # object: count, then (varstring key, any) pairs
        if depth >= MAX_NESTING:
            _fail(f"Any nested deeper than {MAX_NESTING}", pos - 1, end)
        n, pos = _count(buf, pos, end, 2, "object entry")
        obj: dict[str, object] = {}
        for _ in range(n):
            key, pos = _string(buf, pos, end)
            obj[key], pos = _any(buf, pos, end, depth + 1)
        return obj, pos
    if tag == 117:  # array: count, then anys
        if depth >= MAX_NESTING:
            _fail(f"Any nested deeper than {MAX_NESTING}", pos - 1, end)
        n, pos = _count(buf, pos, end, 1, "array element")
        arr: list[object] = []
        for _ in range(n):
            value, pos = _any(buf, pos, end, depth + 1)
            arr.append(value)
        return arr, pos
    if tag == 116:  # Uint8Array
        return _bytes(buf, pos, end)
    if tag == 122:  # bigint64, big-endian two's complement
        if pos + 8 > end:
            _fail("truncated bigint64", pos - 1, end)
        return _I64(buf, pos)[0], pos + 8
    _fail(f"unknown Any tag {tag}", pos - 1, end)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _json_too_deep(text: str) -> bool:
    """Whether a JSON text nests brackets deeper than :data:`MAX_NESTING` (brackets inside
    strings ignored). Only called when the text holds more brackets than that at all."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _json(buf: bytes, pos: int, end: int) -> tuple[object, int]:
    """A varstring holding JSON; the string ``undefined`` stands for JS undefined."""
    start = pos
    text, pos = _string(buf, pos, end)
    if text == "undefined":
        return None, pos
    if text.count("[") + text.count("{") > MAX_NESTING and _json_too_deep(text):
        _fail(f"JSON nested deeper than {MAX_NESTING}", start, end)
    try:
        return json.loads(text, parse_constant=_reject_constant), pos
    except (ValueError, RecursionError) as exc:
        _fail(f"invalid JSON content ({exc})", start, end)


def _type_ref(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """ContentType: a varuint type ref, plus the payload some refs carry."""
    start = pos
    ref, pos = _uint(buf, pos)
    if ref in _TYPE_REFS_PLAIN:
        return ref, pos
    if ref in (_TYPE_XML_ELEMENT, _TYPE_XML_HOOK):
        _, pos = _string(buf, pos, end)  # node name / hook name, dropped
        return ref, pos
    if ref == _TYPE_WEAK:  # yrs weak link: u8 flags, quote start id, [quote end id]
        flags = buf[pos]
        _, pos = _uint(buf, pos + 1)
        _, pos = _uint(buf, pos)
        if flags & 1:
            _, pos = _uint(buf, pos)
            _, pos = _uint(buf, pos)
        return ref, pos
    _fail(f"unknown type ref {ref}", start, end)


def _decode(buf: bytes) -> YUpdate:
    end = len(buf)
    items: list[YItem] = []
    append = items.append
    # Counts are checked against the bytes left before looping, so a forged count can
    # neither allocate much nor spin: each client block takes at least 3 bytes
    # (n_structs, client, clock), each struct at least 2 (info + one more).
    n_clients = buf[0]
    pos = 1
    if n_clients >= 0x80:
        n_clients, pos = _uint_tail(buf, pos, n_clients)
    if n_clients * 3 > end - pos:
        _fail(f"client count {n_clients} exceeds the remaining input", 0, end)
    for _ in range(n_clients):
        at = pos
        n_structs = buf[pos]
        pos += 1
        if n_structs >= 0x80:
            n_structs, pos = _uint_tail(buf, pos, n_structs)
        if n_structs * 2 > end - pos:
            _fail(f"struct count {n_structs} exceeds the remaining input", at, end)
        client = buf[pos]
        pos += 1
        if client >= 0x80:
            client, pos = _uint_tail(buf, pos, client)
        clock = buf[pos]
        pos += 1
        if clock >= 0x80:
            clock, pos = _uint_tail(buf, pos, clock)
        for _ in range(n_structs):
            at = pos
            info = buf[pos]
            pos += 1
            ref = info & 0x1F
            if ref in (_REF_GC, _REF_SKIP):
                length, pos = _uint(buf, pos)
                append(
                    YItem(client, clock, length, None, None, None, None, _KINDS[ref], _EMPTY, None)
                )
                clock += length
                continue
            origin: ItemId | None = None
            right_origin: ItemId | None = None
            parent: str | ItemId | None = None
            parent_sub: str | None = None
            if info & 0x80:
                o_client = buf[pos]
                pos += 1
                if o_client >= 0x80:
                    o_client, pos = _uint_tail(buf, pos, o_client)
                o_clock = buf[pos]
                pos += 1
                if o_clock >= 0x80:
                    o_clock, pos = _uint_tail(buf, pos, o_clock)
                origin = (o_client, o_clock)
            if info & 0x40:
                r_client = buf[pos]
                pos += 1
                if r_client >= 0x80:
                    r_client, pos = _uint_tail(buf, pos, r_client)
                r_clock = buf[pos]
                pos += 1
                if r_clock >= 0x80:
                    r_clock, pos = _uint_tail(buf, pos, r_clock)
                right_origin = (r_client, r_clock)
            if not info & 0xC0:  # no origin to copy the parent from: it is written
                has_name = buf[pos]
                pos += 1
                if has_name == 1:
                    parent, pos = _string(buf, pos, end)
                elif has_name == 0:
                    p_client, pos = _uint(buf, pos)
                    p_clock, pos = _uint(buf, pos)
                    parent = (p_client, p_clock)
                else:
                    _fail(f"parent info must be 0 or 1, got {has_name}", pos - 1, end)
                if info & 0x20:
                    parent_sub, pos = _string(buf, pos, end)
            type_ref: int | None = None
            length = 1
            values = _EMPTY
            if ref == _REF_ANY:
                n = buf[pos]
                pos += 1
                if n >= 0x80:
                    n, pos = _uint_tail(buf, pos, n)
                if n > end - pos:
                    _fail(f"Any content count {n} exceeds the remaining input", at, end)
                length = n
                if n == 1:
                    value, pos = _any(buf, pos, end, 0)
                    values = (value,)
                else:
                    decoded: list[object] = []
                    for _ in range(n):
                        value, pos = _any(buf, pos, end, 0)
                        decoded.append(value)
                    values = tuple(decoded)
            elif ref == _REF_STRING:
                text, pos = _string(buf, pos, end)
                length = len(text) if text.isascii() else len(text.encode("utf-16-le")) >> 1
                values = (text,)
            elif ref == _REF_DELETED:
                length, pos = _uint(buf, pos)
            elif ref == _REF_TYPE:
                type_ref, pos = _type_ref(buf, pos, end)
            elif ref == _REF_BINARY:
                blob, pos = _bytes(buf, pos, end)
                values = (blob,)
            elif ref == _REF_JSON:
                n, pos = _count(buf, pos, end, 1, "JSON content")
                length = n
                decoded = []
                for _ in range(n):
                    value, pos = _json(buf, pos, end)
                    decoded.append(value)
                values = tuple(decoded)
            elif ref == _REF_EMBED:
                _, pos = _json(buf, pos, end)
            elif ref == _REF_FORMAT:
                _, pos = _string(buf, pos, end)  # attribute key
                _, pos = _json(buf, pos, end)  # attribute value
            elif ref == _REF_DOC:
                _, pos = _string(buf, pos, end)  # guid
                _, pos = _any(buf, pos, end, 0)  # options
            elif ref == _REF_MOVE:  # yrs: signed-varint flags, start id, [end id]
                flags, pos = _sint(buf, pos)
                _, pos = _uint(buf, pos)
                _, pos = _uint(buf, pos)
                if not flags & 1:  # bit 0 = collapsed; otherwise an end id follows
                    _, pos = _uint(buf, pos)
                    _, pos = _uint(buf, pos)
            else:
                _fail(f"unknown content ref {ref}", at, end)
            append(
                YItem(
                    client,
                    clock,
                    length,
                    origin,
                    right_origin,
                    parent,
                    parent_sub,
                    _KINDS[ref],
                    values,
                    type_ref,
                )
            )
            clock += length
    deletes: list[tuple[int, int, int]] = []
    # Each delete-set client takes at least 2 bytes (client, n_ranges), each range 2.
    at = pos
    n_clients = buf[pos]
    pos += 1
    if n_clients >= 0x80:
        n_clients, pos = _uint_tail(buf, pos, n_clients)
    if n_clients * 2 > end - pos:
        _fail(f"delete-set client count {n_clients} exceeds the remaining input", at, end)
    for _ in range(n_clients):
        client, pos = _uint(buf, pos)
        n_ranges, pos = _count(buf, pos, end, 2, "delete range")
        for _ in range(n_ranges):
            clock = buf[pos]
            pos += 1
            if clock >= 0x80:
                clock, pos = _uint_tail(buf, pos, clock)
            length = buf[pos]
            pos += 1
            if length >= 0x80:
                length, pos = _uint_tail(buf, pos, length)
            deletes.append((client, clock, length))
    if pos != end:
        _fail(f"{end - pos} trailing bytes after the delete set", pos, end)
    return YUpdate(tuple(items), tuple(deletes))
