"""Bounded, deterministic diff and fuzzy patch for text regions (Fraser 2009, diff-match-patch).

Indices are Python string indices: Unicode code points, never UTF-16 units or UTF-8 bytes,
so emoji and combining marks survive every round trip. The diff never reads a clock: instead
of ``Diff_Timeout`` (wall-clock, so not reproducible in the simulator) it bounds the work by
size: trim the common prefix and suffix, then diff the middle by characters when it is small,
by lines when lines keep it small, and otherwise replace the middle whole. Every step is
O(text) or bounded, so a full rewrite of a 10 MB text cannot stall the cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, overload

import msgpack
from diff_match_patch import diff_match_patch

from hybridsync.errors import PayloadError
from hybridsync.regions._rope import Rope

__all__ = ["PATCH_MARGIN", "Hunk", "apply_patch", "decode_patch", "encode_patch", "make_patch",
           "trim"]

# Cost bounds (products of the two middle lengths the O(N·D) bisection may explore).
CHAR_DIFF_BUDGET = 4_000_000
LINE_DIFF_BUDGET = 4_000_000  # also the budget of word diffs (units, not characters)
UNIT_DIFF_BUDGET = LINE_DIFF_BUDGET
TINY_CHAR_DIFF = 256  # middles this small (product of lengths) always diff by characters
_WORDS = re.compile(r"\w+|\s+|[^\w\s]+")
_LINES = re.compile(r"[^\n]*\n|[^\n]+")
_EQUAL, _INSERT, _DELETE = 0, 1, -1
PATCH_MARGIN = 4  # context characters on each side of a hunk (diff-match-patch's default)
# A hunk's context widens until its text is unique within this many characters of its place
# (patch_apply only looks that far: Match_Threshold x Match_Distance plus the pattern).
_UNIQUE_WINDOW = 1000


class _BoundedEngine(diff_match_patch):  # type: ignore[misc]
    """diff-match-patch whose every diff is bounded by size instead of by a wall clock.

    ``patch_apply`` diffs a hunk against the text it fuzzily found; with no timeout that is
    O(N·D) and a hostile or unlucky 20 KB deletion would stall every replica's fold. Here a
    diff whose trimmed middle exceeds the budget becomes one delete + insert, so the hunk
    fails cleanly (reported as a conflict) instead.
    """

    def diff_main(
        self, text1: str, text2: str, checklines: bool = True, deadline: float | None = None
    ) -> list[tuple[int, str]]:
        if len(text1) * len(text2) <= CHAR_DIFF_BUDGET or text1 == text2:
            return super().diff_main(text1, text2, False, deadline)  # type: ignore[no-any-return]
        p = self.diff_commonPrefix(text1, text2)
        s = self.diff_commonSuffix(text1[p:], text2[p:])
        mid1, mid2 = text1[p : len(text1) - s], text2[p : len(text2) - s]
        out: list[tuple[int, str]] = []
        if p:
            out.append((_EQUAL, text1[:p]))
        if len(mid1) * len(mid2) <= CHAR_DIFF_BUDGET:
            out.extend(super().diff_main(mid1, mid2, False, deadline))
        else:
            if mid1:
                out.append((_DELETE, mid1))
            if mid2:
                out.append((_INSERT, mid2))
        if s:
            out.append((_EQUAL, text1[len(text1) - s :]))
        return out


def _engine() -> diff_match_patch:
    dmp = _BoundedEngine()
    dmp.Diff_Timeout = 0  # no wall clock: the budgets above bound the work instead
    # Tighter than the defaults (0.5, 1000): a hunk that cannot find its context close to
    # where its author saw it fails loudly (a Conflict) instead of landing somewhere wrong.
    # 0.25 (was 0.35), measured by benchmarks/text_damage.py: overlapping concurrent
    # edits are damaged silently 6 % of the time instead of 16 %, at the price of more
    # reported conflicts for edits within 8 characters of each other (14 % instead of 4 %).
    # 0.2 cuts silent damage further but fails hunks at a text's start after a concurrent
    # insert there (the null padding no longer matches). See docs/diffsync.md.
    dmp.Match_Threshold = 0.25
    dmp.Match_Distance = 600
    dmp.Patch_DeleteThreshold = 0.35
    return dmp


_DMP = _engine()
# Splits hunks so that patch_apply's padding (Patch_Margin on each side) keeps every piece
# within Match_MaxBits: patch_apply then never re-splits, and results map 1:1 to pieces.
_SPLITTER = _engine()
_SPLITTER.Match_MaxBits = _DMP.Match_MaxBits - 2 * _DMP.Patch_Margin


@dataclass(frozen=True, slots=True)
class Hunk:
    """One patch hunk: diffs with context, and where its author saw it."""

    start1: int
    start2: int
    length1: int
    length2: int
    diffs: tuple[tuple[int, str], ...]

    @property
    def text(self) -> str:
        """A readable rendering, for conflict reports: ``-deleted+inserted`` with context."""
        out = []
        for op, s in self.diffs:
            out.append(s if op == _EQUAL else ("+" if op == _INSERT else "-") + f"[{s}]")
        return "".join(out)


def _middle_diffs(a: str, b: str, unit: str = "word") -> list[tuple[int, str]]:
    """Diff two texts that differ at both ends, within the size budgets.

    ``unit`` is the granularity: ``"word"`` (runs of word characters, of spaces, of other
    characters), ``"line"`` or ``"char"``. Coarser units are cheaper (the O(N·D) bisection
    runs over units) and keep edits to whole words, at the cost of shipping a whole word
    for a one-letter change. Tiny middles always diff by characters; a middle too big for
    its unit falls back to lines, then to one replacement.
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
        diffs = _unit_diff(_WORDS.findall(a), _WORDS.findall(b))
        if diffs is not None:
            return diffs
    lines_a, lines_b = _LINES.findall(a), _LINES.findall(b)
    return _unit_diff(lines_a, lines_b) or [(_DELETE, a), (_INSERT, b)]


def _unit_diff(ua: list[str], ub: list[str]) -> list[tuple[int, str]] | None:
    """Diff two sequences of units (each coded as one character), semantic cleanup on the
    result; ``None`` when the unit counts exceed the budget."""
    if len(ua) * len(ub) > UNIT_DIFF_BUDGET or len(ua) + len(ub) > 0x10FFFF:
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


def trim(shadow: str | Rope, new: str) -> tuple[int, int]:
    """Lengths of the common prefix and suffix of ``shadow`` and ``new`` (not overlapping).

    A rope compares in place, chunk by chunk: about one ``memcmp`` pass over the common part.
    """
    rope = shadow if isinstance(shadow, Rope) else Rope.of(shadow)
    p = rope.common_prefix(new)
    s = rope.common_suffix(new, min(len(rope), len(new)) - p)
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
    on each side, widened until the hunk's text is unique near its place); positions count
    code points in the text with the earlier hunks applied.
    """
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


def _close(
    shadow: Rope, new: str, h1: int, h2: int, diffs: list[tuple[int, str]], margin: int
) -> Hunk:
    """One hunk with its context: ``margin`` characters each side, more while the hunk's text
    is not unique within ``_UNIQUE_WINDOW`` characters of its place (the text as it is when
    the hunk applies: ``new`` before it, ``shadow`` from it on)."""
    while diffs and diffs[-1][0] == _EQUAL:
        diffs.pop()
    old = "".join(t for op, t in diffs if op != _INSERT)
    len1 = len(old)
    len2 = sum(len(t) for op, t in diffs if op != _DELETE)
    e1 = h1 + len1
    window_before = new[max(0, h2 - _UNIQUE_WINDOW) : h2]
    window = window_before + shadow.slice(h1, e1 + _UNIQUE_WINDOW)
    at = len(window_before)  # where the hunk's old text starts in window
    pad = 0
    pattern = old
    while (
        window.find(pattern) != window.rfind(pattern)
        and len(pattern) < _DMP.Match_MaxBits - 2 * margin
        and pad < _UNIQUE_WINDOW - margin
    ):
        pad += margin
        pattern = window[max(0, at - pad) : at + len1 + pad]
    pad += margin
    prefix = window[max(0, at - pad) : at]
    suffix = window[at + len1 : at + len1 + pad]
    out = ([(_EQUAL, prefix)] if prefix else []) + diffs + ([(_EQUAL, suffix)] if suffix else [])
    start = h2 - len(prefix)
    return Hunk(start, start, len(prefix) + len1 + len(suffix),
                len(prefix) + len2 + len(suffix), tuple(out))


def encode_patch(hunks: list[Hunk]) -> bytes:
    out: bytes = msgpack.packb(
        [[h.start1, h.start2, h.length1, h.length2, [[op, t] for op, t in h.diffs]]
         for h in hunks],
        use_bin_type=True,
    )
    return out


def unpack_list(data: bytes, what: str) -> list[Any]:
    """msgpack-decode a payload that must be a list; :class:`PayloadError` otherwise."""
    try:
        raw = msgpack.unpackb(data, raw=False, max_map_len=0, max_ext_len=0)
    except Exception as exc:
        raise PayloadError(f"{what} is not msgpack ({type(exc).__name__})") from None
    if type(raw) is not list:
        raise PayloadError(f"{what} must be a list")
    return raw


def decode_patch(data: bytes) -> list[Hunk]:
    """Inverse of :func:`encode_patch`; :class:`PayloadError` on anything malformed."""
    raw = unpack_list(data, "text patch")
    if type(raw) is not list:
        raise PayloadError("text patch must be a list of hunks")
    hunks = []
    for h in raw:
        if type(h) is not list or len(h) != 5 or type(h[4]) is not list:
            raise PayloadError("a hunk is [start1, start2, length1, length2, diffs]")
        nums = h[:4]
        if any(type(n) is not int or not 0 <= n < 1 << 40 for n in nums):
            raise PayloadError("hunk positions must be non-negative ints")
        diffs = []
        for d in h[4]:
            if (type(d) is not list or len(d) != 2 or type(d[0]) is not int
                    or d[0] not in (-1, 0, 1) or type(d[1]) is not str):
                raise PayloadError("a diff is [op in -1/0/1, text]")
            diffs.append((d[0], d[1]))
        hunks.append(Hunk(nums[0], nums[1], nums[2], nums[3], tuple(diffs)))
    return hunks


@overload
def apply_patch(text: str, hunks: list[Hunk]) -> tuple[str, list[Hunk]]: ...
@overload
def apply_patch(text: Rope, hunks: list[Hunk]) -> tuple[Rope, list[Hunk]]: ...
def apply_patch(text: str | Rope, hunks: list[Hunk]) -> tuple[str | Rope, list[Hunk]]:
    """Fuzzy-apply hunks to ``text``: the new text and the hunks that failed to apply.

    Deterministic and total: the result depends only on the characters of ``text`` and on
    ``hunks`` (never on a rope's chunking), and no input makes it raise. A rope comes back as
    a rope that shares the chunks no hunk touched.

    When every hunk's old text sits exactly where its author saw it (the common case: a patch
    on the very text it was made from, or one that changed only elsewhere), the hunks apply
    in place, in time proportional to what they change. Otherwise the whole patch goes through
    ``patch_apply``: hunks are split into pieces small enough that it never splits them again
    (its own splitting skips patches), so each result maps back to exactly one hunk.
    """
    if not hunks:
        return text, []
    rope = text if isinstance(text, Rope) else Rope.of(text)
    exact = _apply_exact(rope, hunks)
    if exact is not None:
        return (exact if isinstance(text, Rope) else str(exact)), []
    new_text, failed = _apply_fuzzy(str(text), hunks)
    return (Rope.of(new_text) if isinstance(text, Rope) else new_text), failed


def _apply_fuzzy(text: str, hunks: list[Hunk]) -> tuple[str, list[Hunk]]:
    pieces: list[Any] = []
    counts: list[int] = []
    try:
        for h in hunks:
            pt = _patch_obj()
            pt.start1, pt.start2 = h.start1, h.start2
            pt.length1, pt.length2 = h.length1, h.length2
            pt.diffs = list(h.diffs)
            one = [pt]
            _SPLITTER.patch_splitMax(one)
            counts.append(len(one))
            pieces.extend(one)
        new_text, results = _DMP.patch_apply(pieces, text)
    except Exception:
        # Hunks no honest diff produces can trip diff-match-patch (IndexError in
        # patch_splitMax). Total and deterministic: nothing applies, every hunk is reported.
        return text, list(hunks)
    if len(results) != len(pieces):  # pragma: no cover - defensive: report everything
        return text, list(hunks)
    failed: list[Hunk] = []
    i = 0
    for h, n in zip(hunks, counts, strict=True):
        if not all(results[i : i + n]):
            failed.append(h)
        i += n
    return new_text, failed


def _apply_exact(rope: Rope, hunks: list[Hunk]) -> Rope | None:
    """Apply hunks whose old text sits exactly at ``start1`` of the text with the earlier
    hunks applied; ``None`` when any does not. Work: the chunks the hunks touch."""
    for h in hunks:
        old = "".join(t for op, t in h.diffs if op != _INSERT)
        start = h.start1
        if start + len(old) > len(rope) or rope.slice(start, start + len(old)) != old:
            return None
        new = "".join(t for op, t in h.diffs if op != _DELETE)
        if new != old:
            rope = rope.replace([(start, start + len(old), new)])
    return rope


def _patch_obj() -> Any:
    from diff_match_patch import patch_obj  # the class lives beside diff_match_patch

    return patch_obj()
