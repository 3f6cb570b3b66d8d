"""Texts and buffers: regions synced by diff/patch cycles with deterministic folds."""

from hybridsync.regions._buffer import BLOCK_BYTES, BufferRegion
from hybridsync.regions._bufferfold import BufferFold
from hybridsync.regions._folds import FoldIssue
from hybridsync.regions._parts import Part, decode_parts, encode_parts
from hybridsync.regions._plane import RegionsPlane
from hybridsync.regions._text import TextRegion
from hybridsync.regions._textdiff import Hunk, apply_patch, decode_patch, encode_patch, make_patch
from hybridsync.regions._textfold import TextFold

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
