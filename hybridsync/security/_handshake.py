"""Mutual challenge–response over a pre-shared space key, sans-I/O (see docs/security.md).

Three messages; each side proves it holds the key with an HMAC over a hash of the transcript
so far, bound to its role; nothing about the space, the peers or the memory is sent::

    M1  initiator → responder   MAGIC | VERSION | nonce_i                       (37 bytes)
    M2  responder → initiator   MAGIC | VERSION | nonce_r | proof_r             (69 bytes)
    M3  initiator → responder   proof_i                                         (32 bytes)

    proof_r = HMAC(key, "proof/responder", SHA-256(M1 | MAGIC | VERSION | nonce_r))
    proof_i = HMAC(key, "proof/initiator", SHA-256(M1 | M2))
    session keys = HKDF(key, salt = nonce_i | nonce_r, info = SHA-256(M1 | M2 | M3))

>>> from hybridsync.security import space_key
>>> k = space_key(b"group key", "s")
>>> a = Handshake(k, initiator=True, nonce=b"a" * 32)
>>> b = Handshake(k, initiator=False, nonce=b"b" * 32)
>>> m2 = b.receive(a.start()); m3 = a.receive(m2); b.receive(m3)
>>> a.done and b.done and a.keys == b.keys
True
"""

from __future__ import annotations

import hashlib
import hmac

from hybridsync.errors import AuthenticationError, ConfigError
from hybridsync.security._keys import KEY_BYTES, SessionKeys, derive_session_keys, proof

__all__ = ["HANDSHAKE_MAX_BYTES", "MAGIC", "NONCE_BYTES", "VERSION", "Handshake"]

MAGIC = b"HSYN"
VERSION = 1
NONCE_BYTES = 32
PROOF_BYTES = 32
HANDSHAKE_MAX_BYTES = 128  # no handshake message is longer: larger length prefixes close
_HEAD = MAGIC + bytes([VERSION])
_M1_BYTES = len(_HEAD) + NONCE_BYTES
_M2_BYTES = len(_HEAD) + NONCE_BYTES + PROOF_BYTES


class Handshake:
    """One side of the handshake. ``start()`` (initiator only) gives M1; ``receive(msg)``
    consumes the peer's message and returns the reply to send (or ``None``); it raises
    :class:`~hybridsync.errors.AuthenticationError` on anything unexpected, after which the
    object is dead. When ``done``, ``keys`` holds the session keys."""

    __slots__ = ("_dead", "_initiator", "_key", "_keys", "_m1", "_m2", "_nonce", "_step")

    def __init__(self, key: bytes, *, initiator: bool, nonce: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ConfigError(f"key must be {KEY_BYTES} bytes")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ConfigError(f"nonce must be {NONCE_BYTES} random bytes")
        self._key = key
        self._initiator = bool(initiator)
        self._nonce = nonce
        self._step = 0
        self._m1 = b""
        self._m2 = b""
        self._keys: SessionKeys | None = None
        self._dead = False

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def initiator_nonce(self) -> bytes:
        """The initiator's nonce (known to both sides once M1 passed): a connection id that
        both ends agree on, used to break ties between duplicate connections."""
        if not self._m1:
            raise AuthenticationError("no M1 yet")
        return self._m1[len(_HEAD) :]

    @property
    def done(self) -> bool:
        return self._keys is not None

    @property
    def keys(self) -> SessionKeys:
        if self._keys is None:
            raise AuthenticationError("the handshake has not completed")
        return self._keys

    def start(self) -> bytes:
        """M1 (initiator, once)."""
        if not self._initiator or self._step != 0 or self._dead:
            raise ConfigError("start() is called once, by the initiator")
        self._m1 = _HEAD + self._nonce
        self._step = 1
        return self._m1

    def receive(self, message: bytes) -> bytes | None:
        """Consume the peer's next message; return ours to send, if any."""
        if self._dead or self.done:
            raise AuthenticationError("handshake already finished")
        try:
            if self._initiator:
                return self._initiator_receive(bytes(message))
            return self._responder_receive(bytes(message))
        except AuthenticationError:
            self._dead = True
            raise

    def _initiator_receive(self, m2: bytes) -> bytes:
        if self._step != 1:
            raise AuthenticationError("unexpected handshake message")
        if len(m2) != _M2_BYTES or not m2.startswith(_HEAD):
            raise AuthenticationError("malformed handshake reply (M2)")
        head, proof_r = m2[: _M2_BYTES - PROOF_BYTES], m2[_M2_BYTES - PROOF_BYTES :]
        nonce_r = head[len(_HEAD) :]
        expected = proof(self._key, b"responder", hashlib.sha256(self._m1 + head).digest())
        if not hmac.compare_digest(proof_r, expected):
            raise AuthenticationError("the responder does not hold the space key")
        m3 = proof(self._key, b"initiator", hashlib.sha256(self._m1 + m2).digest())
        self._keys = derive_session_keys(self._key, self._nonce, nonce_r, self._m1 + m2 + m3)
        self._step = 2
        return m3

    def _responder_receive(self, message: bytes) -> bytes | None:
        if self._step == 0:
            if len(message) != _M1_BYTES or not message.startswith(_HEAD):
                raise AuthenticationError("malformed handshake hello (M1)")
            self._m1 = message
            head = _HEAD + self._nonce
            proof_r = proof(self._key, b"responder", hashlib.sha256(self._m1 + head).digest())
            self._m2 = head + proof_r
            self._step = 1
            return self._m2
        if len(message) != PROOF_BYTES:
            raise AuthenticationError("malformed handshake proof (M3)")
        expected = proof(self._key, b"initiator", hashlib.sha256(self._m1 + self._m2).digest())
        if not hmac.compare_digest(message, expected):
            raise AuthenticationError("the initiator does not hold the space key")
        nonce_i = self._m1[len(_HEAD) :]
        self._keys = derive_session_keys(
            self._key, nonce_i, self._nonce, self._m1 + self._m2 + message
        )
        self._step = 2
        return None
