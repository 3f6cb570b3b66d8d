"""A contribution's parts: each plane's share of one ``multi`` payload, and region names."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from hybridsync.errors import ConfigError, PayloadError
from hybridsync.regions._textdiff import unpack_list

__all__ = ["Part", "check_region_name", "decode_parts", "encode_parts"]

_MAX_NAME_BYTES = 256


@dataclass(frozen=True, slots=True)
class Part:
    """One plane's share of a contribution: ``fields`` (Yjs update), ``text`` (patch),
    ``buffer`` (block delta), ``delete`` (a region tombstone; data names the kind) or
    ``cut`` (the author's fields compaction cut, ``docs/gc.md``; region empty)."""

    plane: str
    region: str
    data: bytes


def encode_parts(parts: list[Part]) -> bytes:
    out: bytes = msgpack.packb([[p.plane, p.region, p.data] for p in parts], use_bin_type=True)
    return out


def decode_parts(payload: bytes) -> list[Part]:
    """Parse a ``multi`` payload; :class:`PayloadError` on anything malformed."""
    raw = unpack_list(payload, "multi payload")
    if not raw:
        raise PayloadError("multi payload must be a non-empty list of parts")
    parts = []
    for p in raw:
        if (type(p) is not list or len(p) != 3 or type(p[0]) is not str
                or type(p[1]) is not str or type(p[2]) is not bytes):
            raise PayloadError("a part is [plane, region, data]")
        if p[0] not in ("fields", "text", "buffer", "delete", "cut"):
            raise PayloadError(f"unknown plane {p[0]!r}")
        parts.append(Part(p[0], p[1], p[2]))
    return parts


def check_region_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name.encode()) > _MAX_NAME_BYTES:
        raise ConfigError(f"region names are non-empty str of at most 256 bytes, got {name!r}")
    return name
