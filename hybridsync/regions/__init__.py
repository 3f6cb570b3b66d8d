"""Texts and buffers: regions synced by diff/patch cycles with deterministic folds."""

from hybridsync.regions._folds import BufferFold, FoldIssue, TextFold
from hybridsync.regions._plane import (
    BLOCK_BYTES,
    BufferRegion,
    Part,
    RegionsPlane,
    TextRegion,
    decode_parts,
    encode_parts,
)
from hybridsync.regions._textdiff import Hunk, apply_patch, decode_patch, encode_patch, make_patch

__all__ = [
    "BLOCK_BYTES",
    "BufferFold",
    "BufferRegion",
    "FoldIssue",
    "Hunk",
    "Part",
    "RegionsPlane",
    "TextFold",
    "TextRegion",
    "apply_patch",
    "decode_parts",
    "decode_patch",
    "encode_parts",
    "encode_patch",
    "make_patch",
]
