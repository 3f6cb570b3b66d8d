"""The record layer: every post-handshake record is ChaCha20-Poly1305 (RFC 8439) under its
direction's key, with the record's sequence number as the nonce (implicit, never sent).

Record plaintext = one type byte + body. Because both sides count records, a replayed,
dropped, reordered, truncated or tampered record fails authentication, and the session must
be closed (there is no resynchronisation, as in TLS 1.3).

>>> s, o = RecordSealer(b"k" * 32), RecordOpener(b"k" * 32)
>>> first, second = s.seal(RecordType.SYNC, b"frame"), s.seal(RecordType.PING, b"")
>>> o.open(first)
(<RecordType.SYNC: 2>, b'frame')
>>> o.open(first)
Traceback (most recent call last):
...
hybridsync.errors.AuthenticationError: record 1 failed authentication (...)
"""

from __future__ import annotations

from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hybridsync.errors import AuthenticationError, ConfigError, FrameError
from hybridsync.security._keys import KEY_BYTES

__all__ = ["RECORD_OVERHEAD_BYTES", "RecordOpener", "RecordSealer", "RecordType"]

TAG_BYTES = 16
RECORD_OVERHEAD_BYTES = 1 + TAG_BYTES  # type byte + Poly1305 tag
_AAD = b"hybridsync/v1/record"
_MAX_COUNTER = (1 << 64) - 1


class RecordType(IntEnum):
    HELLO = 1  # msgpack map: who we are (peer name, instance); the first record each way
    SYNC = 2  # one sans-I/O frame of Memory.sync_to / Memory.receive, opaque
    PING = 3  # heartbeat, empty
    BYE = 4  # goodbye, UTF-8 reason; the sender closes after it


# type byte -> RecordType, and the one-byte plaintext prefix of each type (no per-record enum
# construction or bytes([kind]) allocation on the hot path)
_BY_BYTE: dict[int, RecordType] = {int(t): t for t in RecordType}
_PREFIX: dict[RecordType, bytes] = {t: bytes([t]) for t in RecordType}


def _aead(key: bytes) -> ChaCha20Poly1305:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ConfigError(f"record keys are {KEY_BYTES} bytes")
    return ChaCha20Poly1305(key)


class RecordSealer:
    """Encrypts this direction's records in order; the n-th record uses nonce n. One AEAD
    object (one expanded key) per direction, reused for every record."""

    __slots__ = ("_aead", "counter")

    def __init__(self, key: bytes) -> None:
        self._aead = _aead(key)
        self.counter = 0

    def seal(self, kind: RecordType, body: bytes) -> bytes:
        n = self.counter
        if n > _MAX_COUNTER:
            raise AuthenticationError("record counter exhausted: open a new session")
        out = self._aead.encrypt(n.to_bytes(12, "big"), _PREFIX[kind] + body, _AAD)
        self.counter = n + 1
        return out


class RecordOpener:
    """Decrypts the other direction's records in order; any failure is final (the caller
    closes the session)."""

    __slots__ = ("_aead", "_dead", "counter")

    def __init__(self, key: bytes) -> None:
        self._aead = _aead(key)
        self.counter = 0
        self._dead = False

    def open(self, record: bytes) -> tuple[RecordType, bytes]:
        """``(type, body)`` of the next record (any bytes-like object; not copied)."""
        if self._dead:
            raise AuthenticationError("the session's record stream already failed")
        n = self.counter
        try:
            if len(record) < RECORD_OVERHEAD_BYTES:
                raise FrameError(f"record of {len(record)} bytes is shorter than its tag")
            try:
                plain = self._aead.decrypt(n.to_bytes(12, "big"), record, _AAD)
            except InvalidTag:
                raise AuthenticationError(
                    f"record {n} failed authentication "
                    "(tampered, replayed, reordered or truncated)"
                ) from None
            kind = _BY_BYTE.get(plain[0])
            if kind is None:
                raise FrameError(f"unknown record type {plain[0]}")
        except (AuthenticationError, FrameError):
            self._dead = True
            raise
        self.counter = n + 1
        return kind, plain[1:]
