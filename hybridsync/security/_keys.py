"""Key schedule: group secret → space key → per-session direction keys (see docs/security.md).

Everything here is a pure function of its inputs; nonces come from the caller (the driver
draws them from ``os.urandom``), so tests can replay a handshake byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hybridsync.errors import ConfigError

__all__ = [
    "KEY_BYTES",
    "MIN_SECRET_BYTES",
    "SessionKeys",
    "derive_session_keys",
    "space_key",
    "space_tag",
]

KEY_BYTES = 32
MIN_SECRET_BYTES = 8
MAX_SECRET_BYTES = 4096
_LABEL = b"hybridsync/v1/"
# scrypt (RFC 7914) stretches the group secret once per process and secret, so a captured
# handshake costs an offline guesser ~40 ms of CPU and 16 MiB of memory per guess.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, bytes | bytearray):
        raise ConfigError(f"secret must be bytes, got {type(secret).__name__}")
    if not MIN_SECRET_BYTES <= len(secret) <= MAX_SECRET_BYTES:
        raise ConfigError(
            f"secret must be {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, got {len(secret)}"
        )
    return bytes(secret)


@lru_cache(maxsize=16)
def _stretched(secret: bytes) -> bytes:
    kdf = Scrypt(salt=_LABEL + b"group", length=KEY_BYTES, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(secret)


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, _LABEL + label, hashlib.sha256)
    for p in parts:
        h.update(len(p).to_bytes(4, "big"))
        h.update(p)
    return h.digest()


def space_key(secret: bytes, space: str) -> bytes:
    """The 32-byte key that members of ``space`` share: HMAC(scrypt(secret), space). Peers of
    another space, or with another secret, hold a different key and fail the handshake.

    >>> k1, k2 = space_key(b"group key", "s1"), space_key(b"group key", "s2")
    >>> k1 == space_key(b"group key", "s1") != k2
    True
    """
    if not isinstance(space, str) or not space:
        raise ConfigError("space must be a non-empty str")
    return _mac(_stretched(_check_secret(secret)), b"space", space.encode())


def space_tag(secret: bytes, space: str) -> str:
    """A public, keyed name for a space (32 hex digits) to advertise in discovery: equal for
    members of one space, unlinkable to the space name without the secret.

    >>> len(space_tag(b"group key", "swarm-1"))
    32
    """
    return _mac(space_key(secret, space), b"space-tag").hex()[:32]


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """The two direction keys of one session (initiator → responder and back)."""

    initiator_to_responder: bytes
    responder_to_initiator: bytes

    def __repr__(self) -> str:  # never print keys
        return "SessionKeys(<hidden>)"

    def for_role(self, *, initiator: bool) -> tuple[bytes, bytes]:
        """``(send_key, receive_key)`` for one side."""
        if initiator:
            return self.initiator_to_responder, self.responder_to_initiator
        return self.responder_to_initiator, self.initiator_to_responder


def derive_session_keys(
    key: bytes, nonce_i: bytes, nonce_r: bytes, transcript: bytes
) -> SessionKeys:
    """HKDF-SHA256 (RFC 5869): salt = both nonces, ikm = the space key, info = a hash of the
    whole handshake transcript; 64 bytes split into the two direction keys."""
    info = _LABEL + b"session" + hashlib.sha256(transcript).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_BYTES, salt=nonce_i + nonce_r,
               info=info).derive(key)
    return SessionKeys(okm[:KEY_BYTES], okm[KEY_BYTES:])


def proof(key: bytes, role: bytes, transcript_hash: bytes) -> bytes:
    """HMAC-SHA256 that a side (``b"initiator"``/``b"responder"``) holds ``key``; the role
    label stops reflection of one side's proof back at it."""
    return _mac(key, b"proof/" + role, transcript_hash)
