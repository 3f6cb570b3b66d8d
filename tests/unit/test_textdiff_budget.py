"""The text diff checks its size budget before it cuts a middle into units (issue 3): a full
rewrite of a big text is replaced whole after a bounded scan instead of being tokenised, and
within the budget the diff is exactly the one that tokenising everything first gives.

Work is measured by the characters the unit patterns read (a proxy, never a clock)."""

from __future__ import annotations

import random
import re
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridsync.regions import _textdiff
from hybridsync.regions._textdiff import (
    CHAR_DIFF_BUDGET,
    TINY_CHAR_DIFF,
    UNIT_DIFF_BUDGET,
    apply_patch,
    decode_patch,
    encode_patch,
    make_patch,
)

EQUAL, INSERT, DELETE = 0, 1, -1
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DMP = _textdiff._engine()
WORDS, LINES = _textdiff._WORDS, _textdiff._LINES


class CountingPattern:
    """A unit pattern that counts the characters its ``findall`` reads."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.chars = 0
        self.calls = 0

    def findall(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> list[Any]:
        self.calls += 1
        self.chars += max(0, min(endpos, len(text)) - pos)
        return self.pattern.findall(text, pos, endpos)


def counting(monkeypatch: pytest.MonkeyPatch) -> tuple[CountingPattern, CountingPattern]:
    words, lines = CountingPattern(WORDS), CountingPattern(LINES)
    monkeypatch.setattr(_textdiff, "_WORDS", words)
    monkeypatch.setattr(_textdiff, "_LINES", lines)
    return words, lines


def reference_middle_diffs(a: str, b: str, unit: str = "word") -> list[tuple[int, str]]:
    """The diff as it was before the budget was checked ahead of tokenising: cut both texts
    into units whole, then let ``_unit_diff`` refuse when the counts are over the budget."""
    if not a and not b:
        return []
    if not a:
        return [(INSERT, b)]
    if not b:
        return [(DELETE, a)]
    if unit == "char" or len(a) * len(b) <= TINY_CHAR_DIFF:
        if len(a) * len(b) <= CHAR_DIFF_BUDGET:
            diffs = _DMP.diff_main(a, b, False)
            _DMP.diff_cleanupSemantic(diffs)
            return _textdiff._normalized(diffs)
    elif unit == "word":
        words = _textdiff._unit_diff(WORDS.findall(a), WORDS.findall(b))
        if words is not None:
            return words
    lines = _textdiff._unit_diff(LINES.findall(a), LINES.findall(b))
    return lines or [(DELETE, a), (INSERT, b)]


def words_text(rng: random.Random, n_chars: int, words_per_line: int) -> str:
    vocab = ["agent", "memory", "sync", "plan", "note", "check", "the", "a", "café", "naïve"]
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = " ".join(rng.choices(vocab, k=words_per_line)) + rng.choice(["", ".", ","])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


# ---- a huge rewrite is replaced whole after a bounded scan ------------------------------------


def test_a_full_rewrite_of_megabytes_is_not_cut_into_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(31)
    a = "A\n" + words_text(rng, 3_000_000, 8)
    b = "B\n" + words_text(rng, 3_000_000, 8)
    words, lines = counting(monkeypatch)
    hunks = make_patch(a, b)
    # about isqrt(budget) + 1 words of each side, in two or three windows: a few tens of
    # kilobytes of the six megabytes; no line is cut at all (str.count told their number)
    assert 0 < words.chars < 100_000
    assert lines.calls == 0
    assert len(hunks) == 1
    assert [op for op, _ in hunks[0].diffs] == [DELETE, INSERT]
    assert apply_patch(a, hunks) == (b, [])
    assert apply_patch(a, decode_patch(encode_patch(hunks))) == (b, [])


def test_middle_diffs_of_a_full_rewrite_is_one_replacement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(32)
    a, b = words_text(rng, 1_000_000, 8), words_text(rng, 1_000_000, 8)
    expected = reference_middle_diffs(a, b)
    words, lines = counting(monkeypatch)
    assert _textdiff._middle_diffs(a, b) == expected == [(DELETE, a), (INSERT, b)]
    assert words.chars < 100_000 and lines.calls == 0


def test_one_paragraph_rewritten_in_a_large_text_keeps_its_word_diff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(33)
    paragraphs = words_text(rng, 1_000_000, 40).split("\n")
    k = len(paragraphs) // 2
    a = "\n".join(paragraphs)
    paragraphs[k] = paragraphs[k].replace("agent", "AGENT", 3)
    b = "\n".join(paragraphs)
    p, s = _textdiff.trim(a, b)
    expected = reference_middle_diffs(a[p : len(a) - s], b[p : len(b) - s])
    words, _ = counting(monkeypatch)
    hunks = make_patch(a, b)
    assert words.chars <= 2 * (len(a) - p - s + len(b) - p - s)  # only the middles are read
    assert len(expected) > 2 and any(op == INSERT and "AGENT" in t for op, t in expected)
    assert _textdiff._middle_diffs(a[p : len(a) - s], b[p : len(b) - s]) == expected
    assert apply_patch(a, hunks) == (b, [])


def test_too_many_words_but_few_lines_diffs_lines_after_a_bounded_word_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(34)
    a = words_text(rng, 600_000, 300)
    lines_ = a.split("\n")
    for i in range(0, len(lines_), 3):
        lines_[i] = "rewritten " + lines_[i][::-1]
    b = "\n".join(lines_)
    expected = reference_middle_diffs(a, b)
    assert len(expected) > 2  # a line diff, not one replacement
    words, lines = counting(monkeypatch)
    assert _textdiff._middle_diffs(a, b) == expected
    assert words.chars < 100_000
    assert lines.chars == len(a) + len(b)
    assert apply_patch(a, make_patch(a, b)) == (b, [])


def test_a_word_against_more_units_than_one_character_can_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One word against four million (one a character): within the product budget, but more
    units than code points, so lines (as before); the scan stops soon after 0x10FFFF units."""
    a, b = "x", "y " * 2_000_000
    assert UNIT_DIFF_BUDGET >= 1 * len(b) > 0x10FFFF
    expected = reference_middle_diffs(a, b)
    words, _ = counting(monkeypatch)
    assert _textdiff._middle_diffs(a, b) == expected == [(DELETE, a), (INSERT, b)]
    assert words.chars < len(b) - 1_000_000


# ---- within the budget nothing changes --------------------------------------------------------

PIECES = ["agent", "plan", "a", " ", "  ", "\n", "\n\n", ",", ". ", "é", "e\u0301", "😀", "\t",
          "x", "naïve", "—", "\r\n"]
texts = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)


@PROPS
@given(a=texts, b=texts, budget=st.integers(1, 600), unit=st.sampled_from(["word", "line"]))
def test_middle_diffs_equal_tokenising_everything_first(
    a: str, b: str, budget: int, unit: str
) -> None:
    """Small budgets put small texts on every side of every threshold."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_textdiff, "UNIT_DIFF_BUDGET", budget)
        mp.setattr(_textdiff, "_WORDS_SCAN", 3)
        assert _textdiff._middle_diffs(a, b, unit) == reference_middle_diffs(a, b, unit)


@PROPS
@given(text=st.text(st.sampled_from(["a", "é", "\u0301", " ", "\n", ",", "😀", "_", "1"]),
                    max_size=200) | texts,
       scan=st.integers(1, 9), cap=st.integers(0, 120))
def test_words_cut_by_windows_are_the_texts_words(text: str, scan: int, cap: int) -> None:
    everything = _textdiff._WORDS.findall(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_textdiff, "_WORDS_SCAN", scan)
        assert _textdiff._words(text, len(text)) == everything
        assert _textdiff._words(text, cap) == (everything if len(everything) <= cap else None)


@given(text=texts)
@PROPS
def test_line_count_is_the_number_of_lines(text: str) -> None:
    if text:
        assert _textdiff._line_count(text) == len(LINES.findall(text))
