"""Bounded, deterministic diff and anchored patch for text regions (Fraser 2009, diff-match-patch).

Indices are Python string indices: Unicode code points, never UTF-16 units or UTF-8 bytes,
so emoji and combining marks survive every round trip. The diff never reads a clock: instead
of ``Diff_Timeout`` (wall-clock, so not reproducible in the simulator) it bounds the work by
size: trim the common prefix and suffix, then diff the middle by characters when it is small,
by lines when lines keep it small, and otherwise replace the middle whole. The unit counts
are checked before the middle is cut into units (words: a few thousand cut, lines: counted
with ``str.count``), so every step is O(text) at ``memcmp``/``memchr`` speed or bounded, and
a full rewrite of a 10 MB text costs a few tens of milliseconds, not its tokenisation.

A hunk is a *prefix* context, the *old middle* it rewrites, and a *suffix* context. It applies
(:func:`apply_patch`) at the position nearest to where its author saw it at which the old
middle is intact and at least one of the two contexts is intact: never onto text its author
did not see, so an edit that a concurrent one touched fails and is reported instead of
interleaving with it. On the wire (:func:`encode_patch`, format 2) a long old middle travels
as its length and an 8-byte BLAKE2b digest instead of its text.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import msgpack
from diff_match_patch import diff_match_patch

from hybridsync.errors import ConfigError, PayloadError
from hybridsync.regions._rope import Rope, _prefix_in, _suffix_in

__all__ = ["DIGEST_BYTES", "PATCH_FORMAT", "PATCH_MARGIN", "Hunk", "Patch", "apply_patch",
           "decode_patch", "encode_patch", "make_patch", "trim"]

# Cost bounds (products of the two middle lengths the O(N·D) bisection may explore).
CHAR_DIFF_BUDGET = 4_000_000
LINE_DIFF_BUDGET = 4_000_000  # also the budget of word diffs (units, not characters)
UNIT_DIFF_BUDGET = LINE_DIFF_BUDGET
TINY_CHAR_DIFF = 256  # middles this small (product of lengths) always diff by characters
_WORDS = re.compile(r"\w+|\s+|[^\w\s]+")
_LINES = re.compile(r"[^\n]*\n|[^\n]+")
_EQUAL, _INSERT, _DELETE = 0, 1, -1
PATCH_MARGIN = 4  # context characters on each side of a hunk (diff-match-patch's default)
MAX_CONTEXT = 64  # contexts widen (in steps of the margin) at most to this many characters
# How far (code points) from where its author saw it a hunk may apply; a hunk's contexts
# widen until its text is unique that far around its place, and a little more.
SEARCH_RADIUS = 1000
_UNIQUE_WINDOW = SEARCH_RADIUS + MAX_CONTEXT
# Work bound of a hunk that did not apply where its author saw it: the nearest candidate
# positions are verified, at most this many characters' worth (between 2 and 256 of them).
_VERIFY_BUDGET = 1 << 16
# One context is enough to place a hunk only when its old middle is empty (an insert) or at
# least this long: a concurrent deletion can leave a short run of the same characters (a
# space, a comma) where the old middle was, next to the surviving context.
ONE_CONTEXT_MIN = 4
_MAX_CANDIDATES = 256

# ---- wire format 2 (docs/wire.md) ----
PATCH_FORMAT = 2  # first byte of an encoded patch; format 1 was a msgpack array of hunks
DIGEST_BYTES = 8
# The old middle of a hunk travels as its length and digest once its text has this many
# UTF-8 bytes (below that, the text is about as short as the digest).
ELIDE_MIN_BYTES = 16
_MAX_INT = 1 << 40  # positions and lengths (code points or bytes) on the wire
_TEXT_KIND = {_EQUAL: 0, _INSERT: 1, _DELETE: 2}
_ELIDED_KIND = {_EQUAL: 3, _DELETE: 4}
_KIND_OP = (_EQUAL, _INSERT, _DELETE, _EQUAL, _DELETE)

Diff = tuple[int, str | int]


def _engine() -> diff_match_patch:
    dmp = diff_match_patch()
    dmp.Diff_Timeout = 0  # no wall clock: the budgets below bound every diff instead
    return dmp


_DMP = _engine()


@dataclass(frozen=True, slots=True)
class Hunk:
    """One patch hunk: diffs with context, and where its author saw it.

    ``diffs`` are ``(op, text)`` with op −1 delete, 0 equal, 1 insert; the first and last
    equal diffs are the prefix and suffix contexts. A hunk decoded from the wire may carry
    its old middle *elided*: its equal and delete diffs between the contexts are then
    ``(op, length)`` (code points) and ``digest`` is the BLAKE2b-64 of the old middle.
    """

    start1: int
    start2: int
    length1: int
    length2: int
    diffs: tuple[Diff, ...]
    digest: bytes | None = None

    @property
    def text(self) -> str:
        """A readable rendering, for conflict reports: ``-[deleted]+[inserted]`` with
        context; an elided run shows as ``{n chars}`` (``-{n chars}`` when deleted)."""
        out = []
        for op, s in self.diffs:
            if isinstance(s, int):
                out.append(("-" if op == _DELETE else "") + f"{{{s} chars}}")
            else:
                out.append(s if op == _EQUAL else ("+" if op == _INSERT else "-") + f"[{s}]")
        return "".join(out)


class Patch(list[Hunk]):
    """Hunks decoded from the wire, with the very ``bytes`` object they were decoded from
    (``data``): a fold keeps that instead of the hunks (``_textfold``), so a patch is held
    once, in its compact encoded form, and decoded again only for a replay."""

    __slots__ = ("data",)

    def __init__(self, hunks: list[Hunk], data: bytes) -> None:
        super().__init__(hunks)
        self.data = data


def digest_of(text: str) -> bytes:
    """The digest of an old middle: BLAKE2b, 8 bytes, of its UTF-8 encoding (lone surrogates,
    which no region text holds, encoded as-is so that this is total)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                           digest_size=DIGEST_BYTES).digest()


# ---- the diff --------------------------------------------------------------------------------
def _middle_diffs(a: str, b: str, unit: str = "word") -> list[tuple[int, str]]:
    """Diff two texts that differ at both ends, within the size budgets.

    ``unit`` is the granularity: ``"word"`` (runs of word characters, of spaces, of other
    characters), ``"line"`` or ``"char"``. Coarser units are cheaper (the O(N·D) bisection
    runs over units) and keep edits to whole words, at the cost of shipping a whole word
    for a one-letter change. Tiny middles always diff by characters; a middle too big for
    its unit falls back to lines, then to one replacement. The budget is checked before the
    middle is cut into units (:func:`_words_within_budget`, line counts by ``str.count``), so
    a middle too big for words or lines costs a bounded scan, not its tokenisation.
    """
    if not a and not b:
        return []
    if not a:
        return [(_INSERT, b)]
    if not b:
        return [(_DELETE, a)]
    if unit == "char" or len(a) * len(b) <= TINY_CHAR_DIFF:
        if len(a) * len(b) <= CHAR_DIFF_BUDGET:
            diffs = _DMP.diff_main(a, b, False)
            _DMP.diff_cleanupSemantic(diffs)
            return _normalized(diffs)
    elif unit == "word":
        words = _words_within_budget(a, b)
        if words is not None:
            diffs = _unit_diff(*words)
            if diffs is not None:
                return diffs
    if not _within_unit_budget(_line_count(a), _line_count(b)):
        return [(_DELETE, a), (_INSERT, b)]
    return _unit_diff(_LINES.findall(a), _LINES.findall(b)) or [(_DELETE, a), (_INSERT, b)]


def _within_unit_budget(na: int, nb: int) -> bool:
    """Whether a diff of ``na`` by ``nb`` units is allowed: the product within
    ``UNIT_DIFF_BUDGET`` and every unit codable as one character."""
    return na * nb <= UNIT_DIFF_BUDGET and na + nb <= 0x10FFFF


def _line_count(text: str) -> int:
    """``len(_LINES.findall(text))`` by one ``str.count``: a unit per newline, and one more
    for a last line without one."""
    return text.count("\n") + (not text.endswith("\n"))


def _words_within_budget(a: str, b: str) -> tuple[list[str], list[str]] | None:
    """``(_WORDS.findall(a), _WORDS.findall(b))`` when their counts are within the unit
    budget (:func:`_within_unit_budget`), else ``None``, after cutting only about as many
    units as the budget allows: at most ``isqrt(UNIT_DIFF_BUDGET) + 1`` of each text to learn
    that both are over it, then as many of the longer one as the shorter one leaves."""
    root = math.isqrt(UNIT_DIFF_BUDGET)
    ua, ub = _words(a, root), _words(b, root)
    if ua is None and ub is None:
        return None  # both have more than root units: (root + 1) ** 2 > the budget
    if ua is None:
        assert ub is not None
        ua = _words(a, _unit_cap(len(ub)))
    elif ub is None:
        ub = _words(b, _unit_cap(len(ua)))
    if ua is None or ub is None:
        return None
    return ua, ub


def _unit_cap(n: int) -> int:
    """The most units a text may have to be diffed against one of ``n`` (``n >= 1``) units."""
    return min(UNIT_DIFF_BUDGET // n, 0x10FFFF - n)


_WORDS_SCAN = 1 << 12  # characters cut into words at a time by _words (doubles as it goes)


def _words(text: str, cap: int) -> list[str] | None:
    """``_WORDS.findall(text)`` if that has at most ``cap`` units, else ``None``: cut a
    window at a time, so the work is about ``cap`` units (plus one window), whatever
    ``len(text)``. The units cover the text end to end and none reaches back past its
    start, so a window's units are the text's, except its last one, which may go on past
    the window: the next window starts at that unit again."""
    out: list[str] = []
    pos, n, step = 0, len(text), _WORDS_SCAN
    while pos < n:
        end = min(n, pos + step)
        got = _WORDS.findall(text, pos, end)
        step *= 2
        if end < n:
            if len(got) < 2:
                continue  # one unit as long as the window: a wider window
            pos = end - len(got.pop())
        else:
            pos = n
        out += got
        if len(out) > cap:
            return None
    return out


def _unit_diff(ua: list[str], ub: list[str]) -> list[tuple[int, str]] | None:
    """Diff two sequences of units (each coded as one character), semantic cleanup on the
    result; ``None`` when the unit counts exceed the budget."""
    if not _within_unit_budget(len(ua), len(ub)):
        return None
    codes: dict[str, str] = {}
    units: list[str] = []

    def code(u: str) -> str:
        c = codes.get(u)
        if c is None:
            c = codes[u] = chr(len(units))
            units.append(u)
        return c

    ca = "".join([code(u) for u in ua])
    cb = "".join([code(u) for u in ub])
    coded = _DMP.diff_main(ca, cb, False)
    diffs = [(op, "".join([units[ord(c)] for c in t])) for op, t in coded]
    _DMP.diff_cleanupSemantic(diffs)
    return _normalized(diffs)


def _normalized(diffs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """No empty diffs and no two neighbours with the same op (the cleanups can leave both)."""
    out: list[tuple[int, str]] = []
    for op, t in diffs:
        if not t:
            continue
        if out and out[-1][0] == op:
            out[-1] = (op, out[-1][1] + t)
        else:
            out.append((op, t))
    return out


_WINDOW = 1 << 16  # characters of ``old`` copied at a time by the str comparisons below


def _str_prefix(old: str, new: str) -> int:
    """Length of the common prefix of two ``str``: ``new.startswith`` a window of ``old`` at a
    time (a 64 Ki-character slice copy stays in cache, so this runs at about the speed of a
    rope's in-place pass), then the rope's binary search inside the window that differs."""
    n = min(len(old), len(new))
    i = 0
    while i < n:
        j = min(n, i + _WINDOW)
        window = old[i:j]
        if new.startswith(window, i):
            i = j
            continue
        return i + _prefix_in(window, new, i)
    return n


def _str_suffix(old: str, new: str, limit: int) -> int:
    """Length (at most ``limit``) of the common suffix of two ``str``, as :func:`_str_prefix`."""
    n = min(len(old), len(new), limit)
    a, b = len(old), len(new)
    got = 0
    while got < n:
        w = min(_WINDOW, n - got)
        window = old[a - got - w : a - got]
        if new.endswith(window, 0, b - got):
            got += w
            continue
        return got + _suffix_in(window, new, b - got, w)
    return n


def trim(shadow: str | Rope, new: str) -> tuple[int, int]:
    """Lengths of the common prefix and suffix of ``shadow`` and ``new`` (not overlapping).

    A rope compares in place, chunk by chunk: about one ``memcmp`` pass over the common part
    (a compact rope decodes the chunks it passes). Two ``str`` compare window by window.
    """
    if isinstance(shadow, str):
        p = _str_prefix(shadow, new)
        return p, _str_suffix(shadow, new, min(len(shadow), len(new)) - p)
    p = shadow.common_prefix(new)
    s = shadow.common_suffix(new, min(len(shadow), len(new)) - p)
    return p, s


def make_patch(
    shadow: str | Rope,
    new: str,
    *,
    unit: str = "word",
    margin: int = PATCH_MARGIN,
    trimmed: tuple[int, int] | None = None,
) -> list[Hunk]:
    """Hunks turning ``shadow`` into ``new``; ``[]`` when they are equal.

    The work is one comparison of the two texts plus a bounded diff of what lies between
    their common prefix and suffix (``trimmed`` skips the comparison when the caller made it).
    Hunks follow diff-match-patch's ``patch_make`` (each one is the edits of a stretch with
    no equality of ``2 * margin`` characters or more, with ``margin`` characters of context
    on each side, widened until the hunk can only apply at its place: see :func:`_close`);
    positions count code points in the text with the earlier hunks applied. Every hunk is
    literal (its old text is in its diffs); :func:`encode_patch` elides long ones.
    ``margin`` is at least ``ONE_CONTEXT_MIN``: the applier reads a shorter context as one
    cut short by the start or the end of the text (:func:`_contexts`).
    """
    if margin < ONE_CONTEXT_MIN:
        raise ValueError(f"margin must be at least {ONE_CONTEXT_MIN}, got {margin}")
    rope = shadow if isinstance(shadow, Rope) else Rope.of(shadow)
    p, s = trimmed if trimmed is not None else trim(rope, new)
    if p == len(rope) == len(new):
        return []
    mid_a, mid_b = rope.slice(p, len(rope) - s), new[p : len(new) - s]
    diffs = _middle_diffs(mid_a, mid_b, unit)
    return _hunks(rope, new, p, diffs, margin)


def _hunks(
    shadow: Rope, new: str, p: int, diffs: list[tuple[int, str]], margin: int
) -> list[Hunk]:
    hunks: list[Hunk] = []
    c1 = c2 = p  # where the current diff starts, in shadow and in new
    cur: list[tuple[int, str]] = []
    h1 = h2 = 0  # where the open hunk starts, in shadow and in new
    for op, t in diffs:
        if op == _EQUAL and (len(t) >= 2 * margin or not cur):
            if cur:
                hunks.append(_close(shadow, new, h1, h2, cur, margin))
                cur = []
        else:
            if not cur:
                h1, h2 = c1, c2
            cur.append((op, t))
        if op != _INSERT:
            c1 += len(t)
        if op != _DELETE:
            c2 += len(t)
    if cur:
        hunks.append(_close(shadow, new, h1, h2, cur, margin))
    return hunks


def _unique(window: str, pattern: str) -> bool:
    return window.find(pattern) == window.rfind(pattern)


def _close(
    shadow: Rope, new: str, h1: int, h2: int, diffs: list[tuple[int, str]], margin: int
) -> Hunk:
    """One hunk with its context: ``margin`` characters each side, widened by ``margin``
    (up to ``MAX_CONTEXT``) until neither *prefix + old middle* nor *old middle + suffix*
    occurs elsewhere within ``_UNIQUE_WINDOW`` characters of its place, in the text as it is
    when the hunk applies (``new`` before it, ``shadow`` from it on). A context at the very
    start or end of the text is empty, which anchors that side there."""
    while diffs and diffs[-1][0] == _EQUAL:
        diffs.pop()
    old = "".join(t for op, t in diffs if op != _INSERT)
    len1 = len(old)
    len2 = sum(len(t) for op, t in diffs if op != _DELETE)
    e1 = h1 + len1
    window_before = new[max(0, h2 - _UNIQUE_WINDOW) : h2]
    window = window_before + shadow.slice(h1, e1 + _UNIQUE_WINDOW)
    at = len(window_before)  # where the hunk's old text starts in window
    at_start, at_end = h2 == 0, e1 >= len(shadow)
    pad = margin
    while True:
        prefix = window[max(0, at - pad) : at]
        suffix = window[at + len1 : at + len1 + pad]
        if pad >= MAX_CONTEXT or (
            (at_start or _unique(window, prefix + old))
            and (at_end or _unique(window, old + suffix))
        ):
            break
        pad = min(pad + margin, MAX_CONTEXT)
    out = ([(_EQUAL, prefix)] if prefix else []) + diffs + ([(_EQUAL, suffix)] if suffix else [])
    start = h2 - len(prefix)
    return Hunk(start, start, len(prefix) + len1 + len(suffix),
                len(prefix) + len2 + len(suffix), tuple(out))


# ---- applying ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Shape:
    """A hunk taken apart: contexts, the ops between them, and what the old middle must be."""

    prefix: str
    suffix: str
    middle: tuple[Diff, ...]
    old_len: int
    growth: int  # new middle length minus old middle length
    literal: tuple[tuple[int, str], ...]  # (offset in the old middle, text) to compare
    digest: bytes | None


def _shape(h: Hunk) -> _Shape | None:
    """``None`` for a hunk no encoder produces (an insert given as a length, a negative
    length, a digest of the wrong size): it always fails."""
    d = list(h.diffs)
    prefix = suffix = ""
    if d and d[0][0] == _EQUAL and isinstance(first := d[0][1], str):
        prefix = first
        del d[0]
    if d and d[-1][0] == _EQUAL and isinstance(last := d[-1][1], str):
        suffix = last
        del d[-1]
    if h.digest is not None and len(h.digest) != DIGEST_BYTES:
        return None
    old_len = new_len = 0
    literal: list[tuple[int, str]] = []
    for op, t in d:
        if op not in _TEXT_KIND:
            return None
        if isinstance(t, int):
            if op == _INSERT or t < 0 or h.digest is None:
                return None
            n = t
        else:
            n = len(t)
            if op != _INSERT:
                literal.append((old_len, t))
        if op != _INSERT:
            old_len += n
        if op != _DELETE:
            new_len += n
    return _Shape(prefix, suffix, tuple(d), old_len, new_len - old_len, tuple(literal),
                  h.digest)


def _old_middle(rope: Rope, sh: _Shape, x: int) -> str | None:
    """The old middle at ``x`` if it is the one the hunk expects, else ``None``."""
    old = rope.slice(x, x + sh.old_len)
    for off, t in sh.literal:
        if not old.startswith(t, off):
            return None
    if sh.digest is not None and digest_of(old) != sh.digest:
        return None
    return old


def _contexts(rope: Rope, sh: _Shape, x: int) -> int:
    """How many contexts hold the old middle at ``x`` in place: 2 both, 1 one, 0 none.

    The prefix holds it when it ends at ``x``, the suffix when it starts where the old middle
    ends; an empty context (the hunk was at the start or the end of the text) holds at the
    start (the end) of the text. One context counts only for an old middle that is empty
    (an insert) or at least ``ONE_CONTEXT_MIN`` long. A context shorter than that was cut
    short by the start (the end) of its author's text and holds only at the start (the end).
    """
    p, s, end = sh.prefix, sh.suffix, x + sh.old_len
    # A context shorter than ONE_CONTEXT_MIN was cut short by the start (the end) of its
    # author's text: it is that text's first (last) characters, and holds only there. Taken
    # as a free-standing context, two characters such as "1⟧" match text its author never
    # saw, inside a concurrent edit: the hunk would land there with no conflict.
    before = ((x >= len(p) and rope.slice(x - len(p), x) == p
               and (len(p) >= ONE_CONTEXT_MIN or x == len(p))) if p else x == 0)
    after = ((rope.slice(end, end + len(s)) == s
              and (len(s) >= ONE_CONTEXT_MIN or end + len(s) == len(rope))) if s
             else end == len(rope))
    if before and after:
        return 2
    if 0 < sh.old_len < ONE_CONTEXT_MIN:
        return 0
    return int(before or after)


def _candidates(rope: Rope, sh: _Shape, expected: int) -> list[int]:
    """Positions within ``SEARCH_RADIUS`` of ``expected`` with at least one context around
    them, in the order :func:`_locate` tries them: both contexts before one, then the
    nearest to ``expected``, then the lower."""
    n, size = sh.old_len, len(rope)
    lo, hi = max(0, expected - SEARCH_RADIUS), min(size - n, expected + SEARCH_RADIUS)
    if lo > hi:
        return []
    found: set[int] = set()
    p, s = sh.prefix, sh.suffix
    if p:
        base = max(0, lo - len(p))
        seg = rope.slice(base, hi)
        i = seg.find(p)
        while i != -1:
            found.add(base + i + len(p))
            i = seg.find(p, i + 1)
    elif lo == 0:
        found.add(0)
    if s:
        base = lo + n
        seg = rope.slice(base, hi + n + len(s))
        i = seg.find(s)
        while i != -1:
            found.add(base + i - n)
            i = seg.find(s, i + 1)
    elif lo <= size - n <= hi:
        found.add(size - n)
    ranked = [(2 - k, abs(x - expected), x) for x in found if (k := _contexts(rope, sh, x))]
    ranked.sort()
    return [x for _, _, x in ranked]


def _locate(rope: Rope, sh: _Shape, expected: int) -> tuple[int, str] | None:
    """Where the hunk applies and the old middle there, or ``None`` (it fails).

    The rule (the whole of it, so that every replica computes the same): among positions
    ``x`` with ``|x - expected| <= SEARCH_RADIUS`` at which the old middle is the one the
    hunk expects (its literal text, its digest) and held in place by its contexts
    (:func:`_contexts`), those held by both first, then the nearest to ``expected``, then
    the lower. Only the first few candidates in that order are examined (``_VERIFY_BUDGET``).
    """
    n = sh.old_len
    if 0 <= expected <= len(rope) - n and _contexts(rope, sh, expected) == 2:
        old = _old_middle(rope, sh, expected)  # the first in that order: the common case
        if old is not None:
            return expected, old
    limit = max(2, min(_MAX_CANDIDATES, _VERIFY_BUDGET // max(n, 1)))
    for x in _candidates(rope, sh, expected)[:limit]:
        old = _old_middle(rope, sh, x)
        if old is not None:
            return x, old
    return None


def _rewritten(sh: _Shape, old: str) -> str:
    """The new middle: the ops between the contexts applied to the old middle."""
    out: list[str] = []
    i = 0
    for op, t in sh.middle:
        if op == _INSERT:
            assert isinstance(t, str)  # _shape refuses inserts given as lengths
            out.append(t)
            continue
        k = t if isinstance(t, int) else len(t)
        if op == _EQUAL:
            out.append(old[i : i + k])
        i += k
    return "".join(out)


@overload
def apply_patch(text: str, hunks: Sequence[Hunk]) -> tuple[str, list[Hunk]]: ...
@overload
def apply_patch(text: Rope, hunks: Sequence[Hunk]) -> tuple[Rope, list[Hunk]]: ...
def apply_patch(text: str | Rope, hunks: Sequence[Hunk]) -> tuple[str | Rope, list[Hunk]]:
    """Apply hunks to ``text`` in order: the new text and the hunks that failed to apply.

    Each hunk applies where :func:`_locate` finds it, expected at its author's position
    shifted as diff-match-patch's ``patch_apply`` shifts it (by how far the previous hunk
    landed from where it was expected, or by a failed hunk's growth). The old middle is
    replaced by the hunk's new middle; a hunk that is not found changes nothing and is
    returned. Deterministic and total: the result depends only on the characters of
    ``text`` and on ``hunks`` (never on a rope's chunking), and no input makes it raise. A
    rope comes back as a rope that shares the chunks no hunk touched; the work is what the
    hunks change, plus a bounded search around a hunk that moved.
    """
    if not hunks:
        return text, []
    rope = text if isinstance(text, Rope) else Rope.of(text)
    failed: list[Hunk] = []
    delta = 0
    for h in hunks:
        sh = _shape(h)
        if sh is None:
            failed.append(h)
            continue
        expected = h.start2 + len(sh.prefix) + delta
        found = _locate(rope, sh, expected)
        if found is None:
            failed.append(h)
            delta -= sh.growth
            continue
        x, old = found
        delta = x - expected
        new = _rewritten(sh, old)
        if new != old:
            rope = rope.replace([(x, x + sh.old_len, new)])
    return (rope if isinstance(text, Rope) else str(rope)), failed


# ---- the wire ----------------------------------------------------------------------------------
def _put_uint(out: bytearray, n: int) -> None:
    """LEB128: 7 bits a byte, least significant first, high bit = more follows."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_uint(data: bytes, pos: int) -> tuple[int, int]:
    """A shortest-form LEB128 uint below ``_MAX_INT`` at ``pos``: (value, next pos)."""
    n = shift = 0
    while True:
        if pos >= len(data):
            raise PayloadError("text patch truncated")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if n >= _MAX_INT:
            raise PayloadError("a text patch number is out of range")
        if b < 0x80:
            if b == 0 and shift:
                raise PayloadError("a text patch number is not in its shortest form")
            return n, pos
        shift += 7


def _for_wire(h: Hunk, min_bytes: int) -> Hunk:
    """``h`` as it goes on the wire: its old middle elided when it is literal and has at
    least ``min_bytes`` UTF-8 bytes; :class:`ConfigError` when no decoder could give it back
    (an op other than −1/0/1, an insert given as a length, a digest without an elided op or
    an elided op without a digest, a digest of the wrong size, a bad position)."""
    sh = _shape(h)
    elided = any(isinstance(t, int) for _, t in h.diffs)
    if sh is None or elided != (h.digest is not None) or not 0 <= h.start2 < _MAX_INT:
        raise ConfigError("not an encodable hunk (ops -1/0/1, inserts as text, a digest "
                          "exactly when the old middle is elided, 0 <= start < 2^40)")
    if elided or not sh.literal:
        return h
    old = "".join(t for _, t in sh.literal)
    if (len(old) if old.isascii() else len(old.encode("utf-8", "surrogatepass"))) < min_bytes:
        return h
    middle: list[Diff] = [(op, t if op == _INSERT else len(t)) for op, t in sh.middle
                          if isinstance(t, str)]
    diffs = ([(_EQUAL, sh.prefix)] if sh.prefix else []) + middle + (
        [(_EQUAL, sh.suffix)] if sh.suffix else [])
    return Hunk(h.start1, h.start2, h.length1, h.length2, tuple(diffs), digest_of(old))


def encode_patch(hunks: Sequence[Hunk], *, elide_min_bytes: int = ELIDE_MIN_BYTES) -> bytes:
    """Patch format 2 (``docs/wire.md``): the byte ``PATCH_FORMAT``, then per hunk
    ``uint start``, ``uint count`` and ``count`` ops, each ``uint (length << 3 | kind)``
    followed by ``length`` UTF-8 bytes for kinds 0 equal, 1 insert, 2 delete, or nothing for
    the elided kinds 3 equal and 4 delete (``length`` in code points), then the 8-byte
    digest when any op is elided. uints are LEB128. A literal hunk's old middle is elided
    once it has ``elide_min_bytes`` UTF-8 bytes; :class:`ConfigError` for a hunk no decoder
    could give back (see :func:`_for_wire`).
    """
    out = bytearray([PATCH_FORMAT])
    for h in hunks:
        h = _for_wire(h, elide_min_bytes)
        _put_uint(out, h.start2)
        _put_uint(out, len(h.diffs))
        for op, t in h.diffs:
            if isinstance(t, int):
                _put_uint(out, t << 3 | _ELIDED_KIND[op])
            else:
                data = t.encode("utf-8")
                _put_uint(out, len(data) << 3 | _TEXT_KIND[op])
                out += data
        if h.digest is not None:
            out += h.digest
    return bytes(out)


def unpack_list(data: bytes, what: str) -> list[Any]:
    """msgpack-decode a payload that must be a list; :class:`PayloadError` otherwise."""
    try:
        raw = msgpack.unpackb(data, raw=False, max_map_len=0, max_ext_len=0)
    except Exception as exc:
        raise PayloadError(f"{what} is not msgpack ({type(exc).__name__})") from None
    if type(raw) is not list:
        raise PayloadError(f"{what} must be a list")
    return raw


def decode_patch(data: bytes) -> Patch:
    """Inverse of :func:`encode_patch` (format 2; format 1, a msgpack array of hunks
    ``[start1, start2, length1, length2, [[op, text], ...]]``, is still read);
    :class:`PayloadError` on anything malformed. The result keeps ``data`` itself (the same
    object when it is a ``bytes``) as :attr:`Patch.data`."""
    if type(data) is not bytes:
        data = bytes(data)
    if data[:1] == bytes([PATCH_FORMAT]):
        return Patch(_decode_v2(data), data)
    if data[:1] and (0x90 <= data[0] <= 0x9F or data[0] in (0xDC, 0xDD)):
        return Patch(_decode_v1(data), data)
    raise PayloadError("not a text patch (unknown format)")


def _decode_v2(data: bytes) -> list[Hunk]:
    hunks: list[Hunk] = []
    pos, end = 1, len(data)
    while pos < end:
        start, pos = _get_uint(data, pos)
        count, pos = _get_uint(data, pos)
        if count > end - pos:
            raise PayloadError("text patch truncated")
        diffs: list[Diff] = []
        len1 = len2 = 0
        elided = False
        for _ in range(count):
            v, pos = _get_uint(data, pos)
            kind, length = v & 7, v >> 3
            if kind > 4:
                raise PayloadError(f"unknown text patch op kind {kind}")
            op = _KIND_OP[kind]
            t: str | int
            if kind < 3:
                if length > end - pos:
                    raise PayloadError("text patch truncated")
                try:
                    t = data[pos : pos + length].decode("utf-8")
                except UnicodeDecodeError:
                    raise PayloadError("text patch text is not UTF-8") from None
                pos += length
                n = len(t)
            else:
                t = n = length
                elided = True
            diffs.append((op, t))
            len1 += n if op != _INSERT else 0
            len2 += n if op != _DELETE else 0
        digest = None
        if elided:
            if end - pos < DIGEST_BYTES:
                raise PayloadError("text patch truncated")
            digest, pos = data[pos : pos + DIGEST_BYTES], pos + DIGEST_BYTES
        hunks.append(Hunk(start, start, len1, len2, tuple(diffs), digest))
    return hunks


def _decode_v1(data: bytes) -> list[Hunk]:
    raw = unpack_list(data, "text patch")
    hunks = []
    for h in raw:
        if type(h) is not list or len(h) != 5 or type(h[4]) is not list:
            raise PayloadError("a hunk is [start1, start2, length1, length2, diffs]")
        nums = h[:4]
        if any(type(n) is not int or not 0 <= n < _MAX_INT for n in nums):
            raise PayloadError("hunk positions must be non-negative ints")
        diffs: list[Diff] = []
        for d in h[4]:
            if (type(d) is not list or len(d) != 2 or type(d[0]) is not int
                    or d[0] not in (-1, 0, 1) or type(d[1]) is not str):
                raise PayloadError("a diff is [op in -1/0/1, text]")
            diffs.append((d[0], d[1]))
        hunks.append(Hunk(nums[0], nums[1], nums[2], nums[3], tuple(diffs)))
    return hunks
