"""Group security for sessions (G7), sans-I/O: the key schedule, the mutual challenge–response
handshake and the AEAD record layer. The driver (``hybridsync.peer``) moves the bytes.

See ``docs/security.md`` for the threat model and what is and is not protected.
"""

from hybridsync.security._handshake import HANDSHAKE_MAX_BYTES, NONCE_BYTES, Handshake
from hybridsync.security._keys import SessionKeys, derive_session_keys, space_key, space_tag
from hybridsync.security._records import (
    RECORD_OVERHEAD_BYTES,
    RecordOpener,
    RecordSealer,
    RecordType,
)

__all__ = [
    "HANDSHAKE_MAX_BYTES",
    "NONCE_BYTES",
    "RECORD_OVERHEAD_BYTES",
    "Handshake",
    "RecordOpener",
    "RecordSealer",
    "RecordType",
    "SessionKeys",
    "derive_session_keys",
    "space_key",
    "space_tag",
]
