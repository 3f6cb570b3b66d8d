"""An immutable text split into chunks: edits and comparisons cost what changed, not the text.

A text region's fold value is a :class:`Rope`. An edit builds a new rope that shares every
untouched chunk with the old one, so a checkpoint costs the chunks that changed since the
previous one, not a copy of the text. Comparing a rope with a ``str`` goes chunk by chunk with
``str.startswith``/``str.endswith`` at an offset, which compare in place (no slice copies):
finding where a whole new text differs from the fold value is one ``memcmp`` pass over the
common part plus a search inside one chunk.

Chunk boundaries are an implementation detail: two ropes with the same characters are equal
whatever their chunking, and nothing computed from a rope depends on where its chunks end.
"""

from __future__ import annotations

import bisect
from array import array
from itertools import accumulate

__all__ = ["CHUNK_CHARS", "Rope"]

# Target chunk size, in code points: small enough that a checkpoint after a few edits costs
# little (each edit copies one chunk), large enough that a 10 MB text is ~5,000 chunks.
CHUNK_CHARS = 1 << 11
_MAX_CHUNK = 2 * CHUNK_CHARS
_MIN_CHUNK = CHUNK_CHARS // 4


def _split(s: str) -> list[str]:
    if len(s) <= _MAX_CHUNK:
        return [s] if s else []
    n = -(-len(s) // CHUNK_CHARS)
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


def _prefix_in(chunk: str, s: str, pos: int) -> int:
    """Length of the common prefix of ``chunk`` and ``s[pos:]`` (``chunk`` is short)."""
    lo, hi = 0, min(len(chunk), len(s) - pos)
    # Invariant: chunk[:lo] matches; chunk[:hi + 1] does not (or hi is the limit).
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if s.startswith(chunk[lo:mid], pos + lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _suffix_in(chunk: str, s: str, end: int, limit: int) -> int:
    """Length (at most ``limit``) of the common suffix of ``chunk`` and ``s[:end]``."""
    lo, hi = 0, min(len(chunk), end, limit)
    n = len(chunk)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if s.endswith(chunk[n - mid : n - lo], 0, end - lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


class Rope:
    """An immutable sequence of code points stored as chunks of about ``CHUNK_CHARS``."""

    __slots__ = ("_chunks", "_len", "_starts")

    def __init__(self, chunks: list[str]) -> None:
        self._chunks = chunks
        # chunk k spans [starts[k], starts[k + 1]); an array: 8 bytes a chunk, not an int object
        self._starts = array("q", accumulate(map(len, chunks), initial=0))
        self._len = self._starts[-1]

    @classmethod
    def of(cls, text: str) -> Rope:
        return cls(_split(text))

    def __len__(self) -> int:
        return self._len

    def __str__(self) -> str:
        return "".join(self._chunks)

    def __repr__(self) -> str:
        return f"Rope({self._len} chars in {len(self._chunks)} chunks)"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rope):
            return self._len == other._len and (
                self._chunks == other._chunks or str(self) == str(other)
            )
        if isinstance(other, str):
            return self._len == len(other) and self.common_prefix(other) == self._len
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @property
    def chunks(self) -> tuple[str, ...]:
        return tuple(self._chunks)

    def slice(self, start: int, end: int) -> str:
        """``str(self)[start:end]``, copying only the chunks it spans."""
        start, end = max(0, start), min(self._len, end)
        if start >= end:
            return ""
        starts = self._starts
        i = bisect.bisect_right(starts, start) - 1
        j = bisect.bisect_left(starts, end) - 1
        if i == j:
            base = starts[i]
            return self._chunks[i][start - base : end - base]
        first = self._chunks[i][start - starts[i] :]
        last = self._chunks[j][: end - starts[j]]
        return "".join([first, *self._chunks[i + 1 : j], last])

    def common_prefix(self, s: str) -> int:
        """Length of the common prefix of this text and ``s``: compares in place."""
        pos = 0
        for c in self._chunks:
            if s.startswith(c, pos):
                pos += len(c)
            else:
                return pos + _prefix_in(c, s, pos)
        return pos

    def common_suffix(self, s: str, limit: int) -> int:
        """Length (at most ``limit``) of the common suffix of this text and ``s``."""
        end = len(s)
        got = 0
        for c in reversed(self._chunks):
            if got >= limit:
                return limit
            if len(c) <= limit - got and s.endswith(c, 0, end):
                got += len(c)
                end -= len(c)
            else:
                return got + _suffix_in(c, s, end, limit - got)
        return min(got, limit)

    def replace(self, edits: list[tuple[int, int, str]]) -> Rope:
        """A new rope with each ``(start, end, text)`` applied; spans are in this rope's
        coordinates, sorted and disjoint. Shares every chunk no edit touches."""
        if not edits:
            return self
        chunks, starts, n = self._chunks, self._starts, len(self._chunks)
        if not n:
            return Rope.of("".join(t for _, _, t in edits))

        def chunk_at(pos: int) -> int:  # the chunk holding pos (the last one for pos == len)
            return min(bisect.bisect_right(starts, pos) - 1, n - 1)

        out: list[str] = []
        k = e = 0  # chunks[:k] are emitted; edits[:e] are applied
        while e < len(edits):
            i = chunk_at(edits[e][0])
            out.extend(chunks[k:i])
            pieces: list[str] = []
            cur = starts[i]
            while True:  # every edit that lands in the chunks i..j, merged into one piece
                s0, s1, text = edits[e]
                pieces.append(self._between(cur, s0))
                pieces.append(text)
                cur = s1
                e += 1
                j = chunk_at(max(s1 - 1, s0))
                if e >= len(edits) or (edits[e][0] >= starts[j + 1] and j + 1 < n):
                    break
            hi = max(starts[j + 1], cur)
            pieces.append(self._between(cur, hi))
            k = j + 1
            merged = "".join(pieces)
            if len(merged) < _MIN_CHUNK and out:  # keep chunks near the target size
                merged = out.pop() + merged
            out.extend(_split(merged))
        out.extend(chunks[k:])
        return Rope(out)

    def _between(self, start: int, end: int) -> str:
        return self.slice(start, end) if end > start else ""
