"""The y-protocols wire format, as pure functions over bytes (sans-I/O).

A y-protocols message is one WebSocket binary message. Every integer is a lib0 unsigned
varint (7-bit groups, least significant first, high bit = more follows); a *varUint8Array*
is a varint length and that many bytes; a *varString* is a varUint8Array of UTF-8::

    message     := type:varuint body
    type 0 sync := sub:varuint data:varUint8Array
                     sub 0  SyncStep1  data = a Yjs state vector
                     sub 1  SyncStep2  data = a Yjs v1 update (what the receiver lacks)
                     sub 2  Update     data = a Yjs v1 update (an incremental change)
    type 1 awareness := data:varUint8Array, data := n:varuint { client:varuint clock:varuint
                                                                state:varString(JSON) }
                     (state "null" = that client left)
    type 2 auth      := sub:varuint reason:varString  (sub 0 = permission denied)
    type 3 query awareness := (nothing)
    state vector := n:varuint { client:varuint clock:varuint }

Sources: the y-protocols README and PROTOCOL.md (sync, awareness, auth), lib0 ``encoding``
and ``decoding`` (varuint, varUint8Array, varString). :func:`decode_message` is total: any
input that is not exactly one well-formed message — truncated, trailing bytes, an unknown
type or sub-type, a length past the end, invalid UTF-8, awareness state that is not JSON —
raises :class:`~hybridsync.errors.YjsMessageError`. Yjs updates inside sync messages are
only carried here; ``hybridsync.interop._apply`` checks them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, NoReturn

from hybridsync.errors import YjsMessageError

__all__ = [
    "MESSAGE_AUTH",
    "MESSAGE_AWARENESS",
    "MESSAGE_QUERY_AWARENESS",
    "MESSAGE_SYNC",
    "AuthDenied",
    "AwarenessEntry",
    "AwarenessUpdate",
    "Message",
    "QueryAwareness",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "decode_message",
    "decode_state_vector",
    "encode_message",
    "encode_state_vector",
    "write_uint",
]

MESSAGE_SYNC: Final = 0
MESSAGE_AWARENESS: Final = 1
MESSAGE_AUTH: Final = 2
MESSAGE_QUERY_AWARENESS: Final = 3
SYNC_STEP1: Final = 0
SYNC_STEP2: Final = 1
SYNC_UPDATE: Final = 2
AUTH_PERMISSION_DENIED: Final = 0

UINT_LIMIT: Final = 1 << 53
"""lib0 reads varuints as JavaScript numbers: at most 2**53 - 1 (``Number.MAX_SAFE_INTEGER``)."""
_MAX_VARINT_BYTES: Final = 10  # 10 * 7 = 70 bits cover the 64-bit client ids of yrs


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """'Here is my state vector: send me what I lack.'"""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The answer to a :class:`SyncStep1`: a Yjs v1 update with what the asker lacks."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental Yjs v1 update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state: ``state`` is its JSON text, ``"null"`` when it left."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """'Send me every awareness state you know.'"""


@dataclass(frozen=True, slots=True)
class AuthDenied:
    """Auth message, permission denied, with a human-readable reason."""

    reason: str


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | QueryAwareness | AuthDenied


# ---- encoding ------------------------------------------------------------------------------
def write_uint(out: bytearray, value: int) -> None:
    """Append ``value`` as a lib0 unsigned varint."""
    if not 0 <= value < UINT_LIMIT:
        raise ValueError(f"lib0 varuint out of range: {value}")
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def _write_bytes(out: bytearray, data: bytes) -> None:
    write_uint(out, len(data))
    out += data


def encode_state_vector(sv: dict[int, int]) -> bytes:
    """A Yjs state vector (``client -> clock``), clients in descending order as yjs writes."""
    out = bytearray()
    write_uint(out, len(sv))
    for client in sorted(sv, reverse=True):
        write_uint(out, client)
        write_uint(out, sv[client])
    return bytes(out)


def encode_message(msg: Message) -> bytes:
    """One y-protocols message."""
    out = bytearray()
    if isinstance(msg, SyncStep1 | SyncStep2 | SyncUpdate):
        write_uint(out, MESSAGE_SYNC)
        if isinstance(msg, SyncStep1):
            write_uint(out, SYNC_STEP1)
            _write_bytes(out, bytes(msg.state_vector))
        else:
            write_uint(out, SYNC_STEP2 if isinstance(msg, SyncStep2) else SYNC_UPDATE)
            _write_bytes(out, bytes(msg.update))
    elif isinstance(msg, AwarenessUpdate):
        inner = bytearray()
        write_uint(inner, len(msg.entries))
        for e in msg.entries:
            write_uint(inner, e.client_id)
            write_uint(inner, e.clock)
            _write_bytes(inner, e.state.encode())
        write_uint(out, MESSAGE_AWARENESS)
        _write_bytes(out, bytes(inner))
    elif isinstance(msg, QueryAwareness):
        write_uint(out, MESSAGE_QUERY_AWARENESS)
    elif isinstance(msg, AuthDenied):
        write_uint(out, MESSAGE_AUTH)
        write_uint(out, AUTH_PERMISSION_DENIED)
        _write_bytes(out, msg.reason.encode())
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"not a y-protocols message: {msg!r}")
    return bytes(out)


# ---- decoding ------------------------------------------------------------------------------
def _fail(what: str) -> NoReturn:
    raise YjsMessageError(f"malformed y-protocols message: {what}")


class _Reader:
    """Bounds-checked reads over one buffer; every failure is a :class:`YjsMessageError`."""

    __slots__ = ("buf", "limit", "pos")

    def __init__(self, buf: bytes, limit: int = UINT_LIMIT) -> None:
        self.buf = buf
        self.pos = 0
        self.limit = limit

    def uint(self, what: str) -> int:
        buf, pos = self.buf, self.pos
        value = shift = 0
        for _ in range(_MAX_VARINT_BYTES):
            if pos >= len(buf):
                _fail(f"truncated varuint ({what})")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                if value >= self.limit:
                    _fail(f"varuint of {value.bit_length()} bits ({what})")
                self.pos = pos
                return value
            shift += 7
        _fail(f"varuint longer than {_MAX_VARINT_BYTES} bytes ({what})")

    def bytes(self, what: str) -> bytes:
        n = self.uint(f"length of {what}")
        end = self.pos + n
        if end > len(self.buf):
            _fail(f"{what}: length {n} runs past the end ({len(self.buf) - self.pos} left)")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def string(self, what: str) -> str:
        raw = self.bytes(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            _fail(f"{what} is not valid UTF-8")

    def end(self, what: str) -> None:
        if self.pos != len(self.buf):
            _fail(f"{len(self.buf) - self.pos} trailing bytes after {what}")


def _bytes_of(data: object) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise YjsMessageError(f"a y-protocols message is bytes, not {type(data).__name__}")


def decode_message(data: bytes) -> Message:
    """Decode exactly one y-protocols message; :class:`YjsMessageError` otherwise."""
    r = _Reader(_bytes_of(data))
    kind = r.uint("message type")
    msg: Message
    if kind == MESSAGE_SYNC:
        sub = r.uint("sync message type")
        if sub == SYNC_STEP1:
            msg = SyncStep1(r.bytes("state vector"))
            decode_state_vector(msg.state_vector)
        elif sub == SYNC_STEP2:
            msg = SyncStep2(r.bytes("update"))
        elif sub == SYNC_UPDATE:
            msg = SyncUpdate(r.bytes("update"))
        else:
            _fail(f"unknown sync message type {sub}")
    elif kind == MESSAGE_AWARENESS:
        msg = AwarenessUpdate(_awareness_entries(r.bytes("awareness update")))
    elif kind == MESSAGE_QUERY_AWARENESS:
        msg = QueryAwareness()
    elif kind == MESSAGE_AUTH:
        sub = r.uint("auth message type")
        if sub != AUTH_PERMISSION_DENIED:
            _fail(f"unknown auth message type {sub}")
        msg = AuthDenied(r.string("auth reason"))
    else:
        _fail(f"unknown message type {kind}")
    r.end("the message")
    return msg


def _awareness_entries(data: bytes) -> tuple[AwarenessEntry, ...]:
    r = _Reader(data)
    n = r.uint("awareness entry count")
    if n * 3 > len(data) - r.pos:  # each entry takes at least 3 bytes
        _fail(f"awareness entry count {n} exceeds the remaining input")
    entries = []
    for _ in range(n):
        client = r.uint("awareness client id")
        clock = r.uint("awareness clock")
        state = r.string("awareness state")
        try:
            json.loads(state)
        except (ValueError, RecursionError):
            _fail(f"awareness state of client {client} is not JSON")
        entries.append(AwarenessEntry(client, clock, state))
    r.end("the awareness update")
    return tuple(entries)


def decode_state_vector(data: bytes, *, limit: int = UINT_LIMIT) -> dict[int, int]:
    """A Yjs state vector ``client -> clock``; :class:`YjsMessageError` if malformed.
    ``limit`` bounds every number (2**53 for what lib0 can read; yrs writes up to 2**64)."""
    r = _Reader(_bytes_of(data), limit)
    n = r.uint("state vector length")
    if n * 2 > len(r.buf) - r.pos:
        _fail(f"state vector length {n} exceeds the remaining input")
    sv: dict[int, int] = {}
    for _ in range(n):
        client = r.uint("state vector client")
        clock = r.uint("state vector clock")
        if client in sv:
            _fail(f"client {client} appears twice in the state vector")
        sv[client] = clock
    r.end("the state vector")
    return sv
