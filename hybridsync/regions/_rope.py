"""An immutable text split into chunks: edits and comparisons cost what changed, not the text.

A text region's fold value is a :class:`Rope`. An edit builds a new rope that shares every
untouched chunk with the old one, so a checkpoint costs the chunks that changed since the
previous one, not a copy of the text. Comparing a rope with a ``str`` goes chunk by chunk with
``str.startswith``/``str.endswith`` at an offset, which compare in place (no slice copies):
finding where a whole new text differs from the fold value is one ``memcmp`` pass over the
common part plus a search inside one chunk.

Chunk boundaries are an implementation detail: two ropes with the same characters are equal
whatever their chunking, and nothing computed from a rope depends on where its chunks end.

A *compact* rope (what a text fold starts with) keeps a chunk that CPython would store with 2
or 4 bytes a character (one ``→`` or emoji among ASCII makes the whole ``str`` that wide) as its
UTF-8 encoding when that is smaller, and decodes it when it is read: about half the memory for
mostly-ASCII text with a few wide characters, for a few microseconds per chunk an edit or a
read touches. Comparing a compact rope with a ``str`` decodes every chunk it passes, so the
replica that hands over whole texts (``TextRegion.set``) makes its fold's rope *hot*
(:meth:`Rope.hot`: every chunk a ``str``) and keeps it so. The representation is never visible:
every method returns the same as for the ``str`` chunks.
"""

from __future__ import annotations

import bisect
import re
import sys
from array import array
from itertools import accumulate
from operator import sub

__all__ = ["CHUNK_CHARS", "Rope"]

# Target chunk size, in code points: small enough that a checkpoint after a few edits costs
# little (each edit copies one chunk), large enough that a 10 MB text is ~5,000 chunks.
CHUNK_CHARS = 1 << 11
_MAX_CHUNK = 2 * CHUNK_CHARS
_MIN_CHUNK = CHUNK_CHARS // 4


Chunk = str | bytes  # bytes: the UTF-8 of a compact rope's wide chunk


def _split(s: str) -> list[str]:
    if len(s) <= _MAX_CHUNK:
        return [s] if s else []
    n = -(-len(s) // CHUNK_CHARS)
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


_ASTRAL_LEAD = re.compile(rb"[\xf0-\xf4]")  # the first byte of a 4-byte UTF-8 sequence


def _packed(c: str) -> Chunk:
    """A compact rope's chunk: the UTF-8 of ``c`` when that is smaller than the ``str``
    (which CPython stores with 1, 2 or 4 bytes a character, by its widest one)."""
    if c.isascii():
        return c
    try:
        c.encode("latin-1")  # 1 byte a character already
        return c
    except UnicodeEncodeError:
        pass
    b = c.encode("utf-8", "surrogatepass")
    if len(b) < 2 * len(c) or (len(b) < 4 * len(c) and _ASTRAL_LEAD.search(b)):
        return b  # smaller than the str's 2 (or, with an astral character, 4) bytes each
    return c


def _text(c: Chunk) -> str:
    return c if type(c) is str else c.decode("utf-8", "surrogatepass")  # type: ignore[union-attr]


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
    """An immutable sequence of code points stored as chunks of about ``CHUNK_CHARS``.

    ``Rope(chunks)`` takes ``str`` chunks; ``compact=True`` stores wide ones as UTF-8."""

    __slots__ = ("_chunks", "_len", "_starts", "compact")

    def __init__(
        self, chunks: list[str], *, compact: bool = False,
        _packed_chunks: tuple[list[Chunk], list[int]] | None = None,
    ) -> None:
        self.compact = compact
        if _packed_chunks is not None:  # (chunks as stored, their lengths in code points)
            stored, lengths = _packed_chunks
        else:
            lengths = [len(c) for c in chunks]
            stored = [_packed(c) for c in chunks] if compact else list[Chunk](chunks)
        self._chunks: list[Chunk] = stored
        # chunk k spans [starts[k], starts[k + 1]); an array: 8 bytes a chunk, not an int object
        self._starts = array("q", accumulate(lengths, initial=0))
        self._len = self._starts[-1]

    @classmethod
    def of(cls, text: str, *, compact: bool = False) -> Rope:
        return cls(_split(text), compact=compact)

    def hot(self) -> Rope:
        """This text with every chunk a ``str`` (itself when it already is): fast to compare
        with a ``str``. Shares the ``str`` chunks."""
        if not self.compact:  # a rope that is not compact holds str chunks only
            return self
        starts = self._starts
        lengths = list(map(sub, starts[1:], starts[:-1]))
        return Rope([], _packed_chunks=([_text(c) for c in self._chunks], lengths))

    def __len__(self) -> int:
        return self._len

    def __str__(self) -> str:
        return "".join(map(_text, self._chunks))

    def __repr__(self) -> str:
        return (f"Rope({self._len} chars in {len(self._chunks)} chunks"
                f"{', compact' if self.compact else ''})")

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
        return tuple(map(_text, self._chunks))

    def stored_bytes(self) -> int:
        """Bytes the chunks take (``sys.getsizeof`` of each): what the text costs in memory."""
        return sum(map(sys.getsizeof, self._chunks))

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
            return _text(self._chunks[i])[start - base : end - base]
        first = _text(self._chunks[i])[start - starts[i] :]
        last = _text(self._chunks[j])[: end - starts[j]]
        return "".join([first, *map(_text, self._chunks[i + 1 : j]), last])

    def common_prefix(self, s: str) -> int:
        """Length of the common prefix of this text and ``s``: compares in place."""
        pos = 0
        for stored in self._chunks:
            c = _text(stored)
            if s.startswith(c, pos):
                pos += len(c)
            else:
                return pos + _prefix_in(c, s, pos)
        return pos

    def common_suffix(self, s: str, limit: int) -> int:
        """Length (at most ``limit``) of the common suffix of this text and ``s``."""
        end = len(s)
        got = 0
        for stored in reversed(self._chunks):
            if got >= limit:
                return limit
            c = _text(stored)
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
        compact = self.compact
        if not n:
            return Rope.of("".join(t for _, _, t in edits), compact=compact)

        def chunk_at(pos: int) -> int:  # the chunk holding pos (the last one for pos == len)
            return min(bisect.bisect_right(starts, pos) - 1, n - 1)

        out: list[Chunk] = []
        lengths: list[int] = []
        k = e = 0  # chunks[:k] are emitted; edits[:e] are applied
        while e < len(edits):
            i = chunk_at(edits[e][0])
            out.extend(chunks[k:i])
            lengths.extend(map(sub, starts[k + 1 : i + 1], starts[k:i]))
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
                lengths.pop()
                merged = _text(out.pop()) + merged
            for c in _split(merged):
                out.append(_packed(c) if compact else c)
                lengths.append(len(c))
        out.extend(chunks[k:])
        lengths.extend(map(sub, starts[k + 1 :], starts[k:n]))
        return Rope([], compact=compact, _packed_chunks=(out, lengths))

    def _between(self, start: int, end: int) -> str:
        return self.slice(start, end) if end > start else ""
