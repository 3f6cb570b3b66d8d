"""Wire format: versioned msgpack frames with hard limits and total validation."""

from hybridsync.wire._frames import (
    MAX_AUTHOR_BYTES,
    MAX_CONTRIBUTIONS_PER_FRAME,
    MAX_FRAME_BYTES,
    MAX_NOTE_BYTES,
    MAX_PARENTS,
    MAX_PAYLOAD_BYTES,
    VERSION,
    SyncFrame,
    decode_frame,
    encode_checkpoint_frame,
    encode_frame,
)

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
