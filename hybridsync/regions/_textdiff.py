"""Bounded, deterministic diff and fuzzy patch for text regions (Fraser 2009, diff-match-patch).

Indices are Python string indices: Unicode code points, never UTF-16 units or UTF-8 bytes,
so emoji and combining marks survive every round trip. The diff never reads a clock: instead
of ``Diff_Timeout`` (wall-clock, so not reproducible in the simulator) it bounds the work by
size: trim the common prefix and suffix, then diff the middle by characters when it is small,
by lines when lines keep it small, and otherwise replace the middle whole. Every step is
O(text) or bounded, so a full rewrite of a 10 MB text cannot stall the cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
from diff_match_patch import diff_match_patch

from hybridsync.errors import PayloadError

__all__ = ["Hunk", "apply_patch", "decode_patch", "encode_patch", "make_patch"]

# Cost bounds (products of the two middle lengths the O(N·D) bisection may explore).
CHAR_DIFF_BUDGET = 4_000_000
LINE_DIFF_BUDGET = 4_000_000
_EQUAL, _INSERT, _DELETE = 0, 1, -1


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
    dmp.Match_Threshold = 0.35
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


def _middle_diffs(a: str, b: str) -> list[tuple[int, str]]:
    if not a and not b:
        return []
    if not a:
        return [(_INSERT, b)]
    if not b:
        return [(_DELETE, a)]
    if len(a) * len(b) <= CHAR_DIFF_BUDGET:
        diffs = _DMP.diff_main(a, b, False)
        _DMP.diff_cleanupSemantic(diffs)
        return [(op, s) for op, s in diffs]
    lines_a, lines_b = a.count("\n") + 1, b.count("\n") + 1
    if lines_a * lines_b <= LINE_DIFF_BUDGET:
        ca, cb, line_array = _DMP.diff_linesToChars(a, b)
        diffs = _DMP.diff_main(ca, cb, False)
        _DMP.diff_charsToLines(diffs, line_array)
        _DMP.diff_cleanupSemantic(diffs)
        return [(op, s) for op, s in diffs]
    return [(_DELETE, a), (_INSERT, b)]


def make_patch(shadow: str, new: str) -> list[Hunk]:
    """Hunks turning ``shadow`` into ``new``; ``[]`` when they are equal."""
    if shadow == new:
        return []
    p = _DMP.diff_commonPrefix(shadow, new)
    s = _DMP.diff_commonSuffix(shadow[p:], new[p:])
    mid_a, mid_b = shadow[p : len(shadow) - s], new[p : len(new) - s]
    diffs: list[tuple[int, str]] = []
    if p:
        diffs.append((_EQUAL, shadow[:p]))
    diffs.extend(_middle_diffs(mid_a, mid_b))
    if s:
        diffs.append((_EQUAL, shadow[len(shadow) - s :]))
    patches = _DMP.patch_make(shadow, diffs)
    return [
        Hunk(pt.start1, pt.start2, pt.length1, pt.length2, tuple((op, t) for op, t in pt.diffs))
        for pt in patches
    ]


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


def apply_patch(text: str, hunks: list[Hunk]) -> tuple[str, list[Hunk]]:
    """Fuzzy-apply hunks to ``text``: the new text and the hunks that failed to apply.

    Deterministic and total: the same text and hunks give the same result on every replica,
    and no input makes it raise. Hunks are split into pieces small enough that
    ``patch_apply`` never splits them again (its own splitting skips patches), so each result
    maps back to exactly one hunk.
    """
    if not hunks:
        return text, []
    exact = _apply_exact(text, hunks)
    if exact is not None:
        return exact, []
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


def _apply_exact(text: str, hunks: list[Hunk]) -> str | None:
    """Apply hunks whose old text sits exactly where their author saw it, in O(len(text)).

    The common case (a patch on the very text it was made from, or on one that changed only
    elsewhere) never reaches fuzzy matching. ``None`` when any hunk does not fit exactly.
    """
    out: list[str] = []
    pos = 0
    delta = 0  # a hunk's start1 counts in the text with the earlier hunks applied
    for h in hunks:
        old = "".join(t for op, t in h.diffs if op != _INSERT)
        new = "".join(t for op, t in h.diffs if op != _DELETE)
        start = h.start1 - delta
        if start < pos or text[start : start + len(old)] != old:
            return None
        delta += len(new) - len(old)
        out.append(text[pos:start])
        out.append(new)
        pos = start + len(old)
    out.append(text[pos:])
    return "".join(out)


def _patch_obj() -> Any:
    from diff_match_patch import patch_obj  # the class lives beside diff_match_patch

    return patch_obj()
