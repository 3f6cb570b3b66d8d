"""The bounded, deterministic diff and fuzzy patch under text regions (``regions/_textdiff``):
round trips for any Unicode, the wire encoding, total decoding, determinism, the size budgets
and failed hunks that are reported rather than dropped."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
from typing import Any

import msgpack
import pytest
from diff_match_patch import diff_match_patch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hybridsync.errors import PayloadError
from hybridsync.regions import _textdiff
from hybridsync.regions._rope import Rope
from hybridsync.regions._textdiff import (
    CHAR_DIFF_BUDGET,
    DIGEST_BYTES,
    ELIDE_MIN_BYTES,
    LINE_DIFF_BUDGET,
    PATCH_FORMAT,
    Hunk,
    apply_patch,
    decode_patch,
    encode_patch,
    make_patch,
)

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EQUAL, INSERT, DELETE = 0, 1, -1

# Characters that break naive diff code: astral emoji, ZWJ sequences, skin tones, flags,
# combining marks, CRLF, NUL and the \x01-\x04 "null padding" diff-match-patch uses itself.
TRICKY = [
    "😀",
    "👍🏽",
    "👩‍👩‍👧",
    "🇫🇷",
    "e\u0301",
    "\u0301",
    "\u0308\u0323",
    "\u200d",
    "\ufe0f",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "\x01",
    "\x02",
    "\x03",
    "\x04",
    "𝕏",
    "\U0010ffff",
    "ß",
    "İ",
]
unicode_text = st.lists(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY)), max_size=120
).map("".join)
# Few distinct pieces: many repeats, so contexts are ambiguous and matches are fuzzy.
small_alphabet_text = st.lists(st.sampled_from(["a", "b", " ", "\n", *TRICKY]), max_size=120).map(
    "".join
)


@st.composite
def edited(draw: st.DrawFn, base: st.SearchStrategy[str]) -> tuple[str, str]:
    """A text and a version of it with a few splices (the usual shape of a cycle's diff)."""
    a = draw(base)
    b = a
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(b)))
        j = draw(st.integers(i, min(len(b), i + 20)))
        b = b[:i] + draw(unicode_text.map(lambda s: s[:15])) + b[j:]
    return a, b


text_pairs = st.one_of(
    st.tuples(unicode_text, unicode_text),
    st.tuples(small_alphabet_text, small_alphabet_text),
    edited(unicode_text),
    edited(small_alphabet_text),
)


def exact_apply(text: str, hunks: list[Hunk]) -> str:
    """Apply literal hunks without any search: each must match exactly where its author
    saw it."""
    for h in hunks:
        assert all(isinstance(s, str) for _, s in h.diffs)
        old = "".join(str(s) for op, s in h.diffs if op != INSERT)
        new = "".join(str(s) for op, s in h.diffs if op != DELETE)
        assert text[h.start2 : h.start2 + len(old)] == old
        text = text[: h.start2] + new + text[h.start2 + len(old) :]
    return text


# ---- round trips ---------------------------------------------------------------------------


@PROPS
@given(text_pairs)
@example(("", ""))
@example(("", "😀"))
@example(("😀", ""))
@example(("e\u0301e\u0301", "e\u0301\u0308e\u0301"))
@example(("\x01\x02\x03\x04abc", "\x01\x02\x03\x04abd"))
def test_make_then_apply_round_trips(pair: tuple[str, str]) -> None:
    a, b = pair
    hunks = make_patch(a, b)
    assert apply_patch(a, hunks) == (b, [])
    assert exact_apply(a, hunks) == b
    # what a receiver gets: long old middles elided (length + digest), still exact
    assert apply_patch(a, decode_patch(encode_patch(hunks))) == (b, [])
    assert apply_patch(Rope.of(a), decode_patch(encode_patch(hunks)))[0] == b
    # Positions and lengths count code points (Python indices), never UTF-16 units or bytes.
    for h in hunks:
        assert h.length1 == sum(len(s) for op, s in h.diffs if op != INSERT)
        assert h.length2 == sum(len(s) for op, s in h.diffs if op != DELETE)
        assert all(s for _, s in h.diffs)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("👩‍👩‍👧 family", "👩‍👩‍👦 family"),  # one code point inside a ZWJ sequence
        ("🇫🇷🇩🇪🇮🇹", "🇫🇷🇮🇹"),  # a whole flag (two regional indicators) removed
        ("cafe\u0301 noir", "cafe\u0301\u0327 noir"),  # a second combining mark
        ("line one\r\nline two\r\n", "line one\r\nline 2\r\n"),
        ("👍🏽" * 50, "👍🏽" * 25 + "👍🏿" + "👍🏽" * 24),  # skin tone swap mid-run
        ("𝕏" * 40 + "end", "start" + "𝕏" * 40 + "end"),
        ("\U0010ffff\x00", "\x00\U0010ffff"),
    ],
)
def test_round_trip_keeps_emoji_and_combining_marks(a: str, b: str) -> None:
    hunks = make_patch(a, b)
    assert apply_patch(a, hunks) == (b, [])
    assert apply_patch(a, decode_patch(encode_patch(hunks))) == (b, [])
    assert decode_patch(encode_patch(hunks, elide_min_bytes=1 << 40)) == hunks


def test_equal_texts_give_no_hunks_and_no_hunks_change_nothing() -> None:
    for t in ("", "x", "😀\n" * 100):
        assert make_patch(t, t) == []
        assert apply_patch(t, []) == (t, [])
    assert decode_patch(encode_patch([])) == []


def test_hunk_text_renders_edits_with_context() -> None:
    (h,) = make_patch("the quick brown fox", "the slow brown fox")
    assert h.text == "the -[quick]+[slow] bro"  # four characters of context each side


# ---- wire encoding -------------------------------------------------------------------------


@PROPS
@given(text_pairs)
def test_encode_decode_round_trips(pair: tuple[str, str]) -> None:
    hunks = make_patch(*pair)
    data = encode_patch(hunks)
    assert isinstance(data, bytes) and data[0] == PATCH_FORMAT
    decoded = decode_patch(data)
    assert encode_patch(decoded) == data
    # the same hunks, but an old middle of >= ELIDE_MIN_BYTES UTF-8 bytes is its length
    # and digest
    assert len(decoded) == len(hunks)
    for h, d in zip(hunks, decoded, strict=True):
        assert (d.start2, d.length1, d.length2) == (h.start2, h.length1, h.length2)
        inserts = [t for op, t in h.diffs if op == INSERT]
        assert [t for op, t in d.diffs if op == INSERT] == inserts
        shape = _textdiff._shape(h)
        assert shape is not None
        middle = "".join(t for _, t in shape.literal)
        elided = len(middle.encode()) >= ELIDE_MIN_BYTES
        assert (d.digest is not None) == elided
        assert any(isinstance(t, int) for _, t in d.diffs) == elided
        if d.digest is not None:
            assert d.digest == _textdiff.digest_of(middle) and len(d.digest) == DIGEST_BYTES
    literal = encode_patch(hunks, elide_min_bytes=1 << 40)
    assert decode_patch(literal) == hunks
    assert encode_patch(decode_patch(literal), elide_min_bytes=1 << 40) == literal


def decode_or_reject(data: bytes) -> list[Hunk] | None:
    """The property: a list of hunks or PayloadError, never another exception."""
    try:
        hunks = decode_patch(data)
    except PayloadError:
        return None
    assert isinstance(hunks, list) and all(isinstance(h, Hunk) for h in hunks)
    return hunks


@PROPS
@given(st.binary(max_size=300))
def test_decode_of_random_bytes_raises_payload_error_only(data: bytes) -> None:
    decode_or_reject(data)


msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=10),
        st.binary(max_size=10),
    ),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=30,
)


@PROPS
@given(msgpack_values)
def test_decode_of_wrongly_shaped_msgpack_raises_payload_error_only(value: Any) -> None:
    decode_or_reject(msgpack.packb(value, use_bin_type=True))


@PROPS
@given(edited(unicode_text), st.data())
def test_decode_of_corrupted_encodings_raises_payload_error_only(
    pair: tuple[str, str], data: st.DataObject
) -> None:
    raw = bytearray(encode_patch(make_patch(*pair)))
    if data.draw(st.booleans()) and raw:
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    for _ in range(data.draw(st.integers(0, 4))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    decode_or_reject(bytes(raw))


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1},  # a map, not a list
        [[0, 0, 0, 0]],  # four fields
        [[0, 0, 0, 0, [[2, "x"]]]],  # op out of range
        [[0, 0, 0, 0, [[True, "x"]]]],  # bool is not an op
        [[-1, 0, 0, 0, []]],  # negative position
        [[1 << 40, 0, 0, 0, []]],  # absurd position
        [[0, 0, 0, 0.5, []]],  # float
        [[0, 0, 0, 0, [[0, b"bytes"]]]],  # bytes, not text
        [[0, 0, 0, 0, [[0]]]],
        [[0, 0, 0, 0, "not a list"]],
        "a string",
        7,
    ],
    ids=repr,
)
def test_decode_rejects_each_malformed_shape(value: Any) -> None:
    with pytest.raises(PayloadError):
        decode_patch(msgpack.packb(value, use_bin_type=True))


def test_decode_rejects_invalid_utf8_and_ext_types() -> None:
    good = encode_patch(make_patch("abc", "abd"))
    bad_utf8 = good.replace(b"c", b"\xff", 1)
    for data in (bad_utf8, b"", b"\xc1", msgpack.packb(msgpack.ExtType(1, b"x")), b"\x91\xd4"):
        with pytest.raises(PayloadError):
            decode_patch(data)


# ---- determinism ---------------------------------------------------------------------------


DETERMINISM_INPUTS = [
    ("alpha beta gamma\n" * 30, "alpha BETA gamma\n" * 15 + "delta\n" + "alpha beta gamma\n" * 15),
    ("😀 one\ntwo\nthree\n" * 400, "😀 one\n2\nthree\n" * 400),  # line mode
    ("x" * 3000 + "\n" + "y" * 3000, "z" * 2500 + "\n" + "w" * 2500),  # whole replace
]


def test_same_inputs_give_the_same_hunks() -> None:
    for a, b in DETERMINISM_INPUTS:
        first = make_patch(a, b)
        assert make_patch(a, b) == first
        assert encode_patch(make_patch(a, b)) == encode_patch(first)
        target = a.replace("gamma", "GAMMA", 3)
        assert apply_patch(target, first) == apply_patch(target, first)


def test_hunks_do_not_depend_on_the_process_or_hash_seed() -> None:
    script = textwrap.dedent(
        """
        import hashlib, sys
        sys.path.insert(0, sys.argv[1])
        from test_textdiff import DETERMINISM_INPUTS
        from hybridsync.regions._textdiff import encode_patch, make_patch
        h = hashlib.sha256()
        for a, b in DETERMINISM_INPUTS:
            h.update(encode_patch(make_patch(a, b)))
        print(h.hexdigest())
        """
    )
    here = os.path.dirname(__file__)
    digests = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script, here],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        digests.add(out.stdout.strip())
    h = hashlib.sha256()
    for a, b in DETERMINISM_INPUTS:
        h.update(encode_patch(make_patch(a, b)))
    digests.add(h.hexdigest())
    assert len(digests) == 1


# ---- budgets: every path gives a correct patch -------------------------------------------


def words_text(rng: random.Random, n_chars: int, words_per_line: int) -> str:
    vocab = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "😀",
        "naïve",
        "e\u0301t\u00e9",
        "日本語",
        "agent",
        "memory",
        "sync",
    ]
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = " ".join(rng.choices(vocab, k=words_per_line))
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def test_char_unit_diffs_by_characters() -> None:
    a = "prefix " + "abcdefghij" * 50 + " suffix"
    b = "prefix " + "abcdefXhij" * 50 + " suffix"
    mid = _textdiff._middle_diffs(a[7:-7], b[7:-7], "char")
    assert sum(1 for op, _ in mid if op == INSERT) > 1  # a real character diff
    assert apply_patch(a, make_patch(a, b, unit="char")) == (b, [])
    # by words (the default) the one long word is replaced whole: still exact
    assert _textdiff._middle_diffs(a[7:-7], b[7:-7]) == [(DELETE, a[7:-7]), (INSERT, b[7:-7])]
    assert apply_patch(a, make_patch(a, b)) == (b, [])


def test_word_unit_diffs_keep_whole_words() -> None:
    a = "the agent wrote a plan, then a check; the plan ran."
    b = "the agent drafted a plan, then two checks; the plan ran."
    mid = _textdiff._middle_diffs(a, b)
    changed = [s for op, s in mid if op != EQUAL]
    assert changed == ["wrote", "drafted", "a check", "two checks"]
    for unit in ("word", "line", "char"):
        assert apply_patch(a, make_patch(a, b, unit=unit)) == (b, [])


def test_tiny_middles_diff_by_characters_whatever_the_unit() -> None:
    assert _textdiff._middle_diffs("colour", "color") == [
        (EQUAL, "colo"), (DELETE, "u"), (EQUAL, "r")]


def test_large_middles_with_few_lines_diff_by_lines() -> None:
    rng = random.Random(1)
    a = words_text(rng, 60_000, 40)
    lines = a.split("\n")
    for i in range(0, len(lines), 7):
        lines[i] = lines[i].upper()
    b = "\n".join(lines)
    assert len(a) * len(b) > CHAR_DIFF_BUDGET
    assert (a.count("\n") + 1) * (b.count("\n") + 1) <= LINE_DIFF_BUDGET
    mid = _textdiff._middle_diffs(a, b)
    assert len(mid) > 2  # line diffs, not one big replacement
    hunks = make_patch(a, b)
    assert len(hunks) > 1
    assert apply_patch(a, hunks) == (b, [])


def test_two_megabyte_rewrite_gives_a_correct_patch() -> None:
    """Beyond both budgets the middle is replaced whole: bounded work, still exact."""
    rng = random.Random(2)
    a = words_text(rng, 2_000_000, 6)
    b = words_text(rng, 2_000_000, 6)
    assert (a.count("\n") + 1) * (b.count("\n") + 1) > LINE_DIFF_BUDGET
    hunks = make_patch(a, b)
    assert exact_apply(a, hunks) == b
    decoded = decode_patch(encode_patch(hunks))
    assert decoded[0].diffs[1] == (DELETE, len(a) - 1)  # 2 M characters travel as 8 bytes
    assert apply_patch(a, decoded) == (b, [])


def test_long_lines_rewritten_give_a_correct_line_patch() -> None:
    rng = random.Random(3)
    a = words_text(rng, 600_000, 300)
    lines = a.split("\n")
    for i in range(0, len(lines), 3):
        lines[i] = "rewritten " + lines[i][::-1]
    b = "\n".join(lines)
    assert (a.count("\n") + 1) * (b.count("\n") + 1) <= LINE_DIFF_BUDGET
    hunks = make_patch(a, b)
    assert exact_apply(a, hunks) == b


def test_rewrite_of_a_200k_text_round_trips_through_apply() -> None:
    rng = random.Random(4)
    a = words_text(rng, 200_000, 6)
    b = "new header\n" + words_text(rng, 200_000, 6)
    assert apply_patch(a, make_patch(a, b)) == (b, [])


class _TooMuchWork(Exception):
    pass


def counting_verifications(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Count the candidate positions the applier verifies (the work of a hunk that did not
    apply where its author saw it); raise once more than ``limit``."""
    calls = [0]
    original = _textdiff._old_middle

    def counting(rope: Rope, shape: Any, x: int) -> str | None:
        calls[0] += 1
        if calls[0] > limit:
            raise _TooMuchWork(f"more than {limit} candidate positions verified")
        return original(rope, shape, x)

    monkeypatch.setattr(_textdiff, "_old_middle", counting)
    return calls


def test_applying_a_big_rewrite_verifies_a_bounded_number_of_positions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Work proxy, not timing: a 400 k-character rewrite is verified once where its author
    saw it, and a couple of times when it no longer fits there."""
    rng = random.Random(2)
    a = "A " + words_text(rng, 400_000, 6)
    b = "B " + words_text(rng, 400_000, 6)
    hunks = decode_patch(encode_patch(make_patch(a, b)))
    assert len(hunks) == 1 and hunks[0].digest is not None
    calls = counting_verifications(monkeypatch, 1)
    assert apply_patch(a, hunks) == (b, [])
    assert calls == [1]
    calls[0] = -2  # three verifications at most: where expected, then the two candidates
    concurrently_edited = a[:200_000] + "X" + a[200_001:]
    assert apply_patch(concurrently_edited, hunks) == (concurrently_edited, hunks)


def test_a_hostile_hunk_verifies_a_bounded_number_of_positions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-character prefix that occurs everywhere and an elided middle of 50 k characters
    that is nowhere: a handful of verifications, not one per occurrence."""
    text = "a" * 100_000
    hostile = Hunk(50_000, 50_000, 0, 0, ((EQUAL, "a"), (DELETE, 50_000), (INSERT, "x")),
                   b"\0" * DIGEST_BYTES)
    counting_verifications(monkeypatch, 3)
    assert apply_patch(text, [hostile]) == (text, [hostile])


class _OverBudget(Exception):
    pass


def test_fuzzy_apply_work_stays_within_the_diff_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 20 KB deletion applied after a concurrent edit of 10% of its words never diffs
    (no O(N*D) work at all) and is reported: its old text is not there any more."""
    rng = random.Random(5)
    words = ["".join(rng.choices("abcdefghij", k=6)) for _ in range(3000)]
    base = "HEAD\n" + " ".join(words) + "\nTAIL\n"
    deleted = "HEAD\n\nTAIL\n"
    edited_words = [w.upper() if i % 10 == 0 else w for i, w in enumerate(words)]
    concurrently_edited = "HEAD\n" + " ".join(edited_words) + "\nTAIL\n"
    hunks = make_patch(base, deleted)
    original = diff_match_patch.diff_main

    def bounded_diff_main(
        self: diff_match_patch, text1: str, text2: str, *args: Any, **kwargs: Any
    ) -> Any:
        if len(text1) * len(text2) > CHAR_DIFF_BUDGET:
            raise _OverBudget(f"diff_main on {len(text1)} x {len(text2)} characters")
        return original(self, text1, text2, *args, **kwargs)

    monkeypatch.setattr(diff_match_patch, "diff_main", bounded_diff_main)
    for patch in (hunks, decode_patch(encode_patch(hunks))):
        assert apply_patch(concurrently_edited, patch) == (concurrently_edited, patch)
        assert apply_patch(base, patch) == (deleted, [])


# ---- failed hunks are reported, never dropped silently ----------------------------------


PARAGRAPHS = (
    "First paragraph: agents keep notes here.\n\n"
    "Second paragraph: the quick brown fox jumps over the lazy dog.\n\n"
    "Third paragraph: nothing to see.\n"
)


def test_a_hunk_whose_context_is_gone_is_reported() -> None:
    hunks = make_patch(PARAGRAPHS, PARAGRAPHS.replace("quick brown fox", "slow red hen"))
    assert len(hunks) == 1
    target = PARAGRAPHS.replace(
        "the quick brown fox jumps over the lazy dog", "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"
    )
    out, failed = apply_patch(target, hunks)
    assert failed == hunks
    assert out == target


def test_of_two_hunks_the_one_that_fails_is_reported_and_the_other_applies() -> None:
    new = PARAGRAPHS.replace("agents keep", "agents KEEP").replace("quick brown", "slow red")
    hunks = make_patch(PARAGRAPHS, new)
    assert len(hunks) == 2
    target = PARAGRAPHS.replace("the quick brown fox jumps over the lazy dog", "Q" * 43)
    out, failed = apply_patch(target, hunks)
    assert failed == [hunks[1]]
    assert "agents KEEP" in out and "Q" * 43 in out


def test_a_long_failing_hunk_split_into_pieces_is_reported() -> None:
    old_sentence = "the quick brown fox jumps over the lazy dog and keeps on running far away"
    a = "intro\n\n" + old_sentence + "\n\noutro\n"
    b = a.replace(old_sentence, "a completely different sentence that replaces everything")
    hunks = make_patch(a, b)
    target = a.replace(old_sentence, "#" * len(old_sentence))
    _, failed = apply_patch(target, hunks)
    assert failed == hunks


def test_failure_after_a_padding_split_is_still_reported() -> None:
    a = "abcdefghijklmnopqrstuvwxyz0123456789" + "-" * 200 + "THE QUICK BROWN FOX"
    b = a[25:].replace("QUICK", "SLOW")
    hunks = make_patch(a, b)
    assert len(hunks) == 2 and hunks[0].length1 == 29
    target = a.replace("THE QUICK BROWN FOX", "z" * 19)
    out, failed = apply_patch(target, hunks)
    assert out.startswith("z0123456789")  # the first hunk applied
    assert failed == [hunks[1]]


@pytest.mark.parametrize(
    "hunks",
    [
        # Decodable but never made by make_patch: an edit-free hunk whose length grows past
        # Match_MaxBits with padding, followed by another hunk.
        [Hunk(0, 0, 29, 0, ()), Hunk(0, 0, 0, 0, ())],
        [Hunk(0, 0, 33, 33, ((EQUAL, "0" * 16), (EQUAL, "0" * 17))), Hunk(0, 0, 0, 0, ())],
    ],
    ids=["empty-diffs", "equal-only"],
)
def test_apply_patch_is_total_on_decodable_hunks(hunks: list[Hunk]) -> None:
    decoded = decode_or_reject(encode_patch(hunks))
    if decoded is None:
        return  # rejecting them at decode time is a fine fix too
    out, failed = apply_patch("some text", decoded)
    assert isinstance(out, str) and all(h in decoded for h in failed)


hunk_strategy = st.builds(
    Hunk,
    st.integers(0, 300),
    st.integers(0, 300),
    st.integers(0, 300),
    st.integers(0, 300),
    st.lists(
        st.tuples(st.sampled_from([DELETE, EQUAL, INSERT]), unicode_text.map(lambda s: s[:40])),
        min_size=1,
        max_size=5,
    )
    .filter(lambda ds: any(op != EQUAL and s for op, s in ds))
    .map(tuple),
)


@settings(PROPS, max_examples=100)
@given(unicode_text, st.lists(hunk_strategy, max_size=4))
def test_apply_patch_is_total_on_hunks_with_edits(text: str, hunks: list[Hunk]) -> None:
    """Any decodable hunk list carrying real edits applies or fails, without raising."""
    decoded = decode_patch(encode_patch(hunks))
    out, failed = apply_patch(text, decoded)
    assert isinstance(out, str)
    assert all(h in decoded for h in failed)
    assert apply_patch(text, decoded) == (out, failed)  # deterministic


# ---- the cycle's shape: span replacements in a words text (benchmark W1) ------------------


def test_span_replacements_give_hunks_that_apply_exactly_in_place() -> None:
    """Regression: two equalities side by side once made overlapping hunks, so the writer's
    own fold differed from the text it handed over. Every patch of a span replacement must
    apply exactly where its author saw it, on a str and on a rope, literal or elided."""
    rng = random.Random(11)
    text = words_text(rng, 20_000, 12)
    for _ in range(300):
        start = rng.randrange(len(text) - 200)
        end = start + rng.randint(20, 200)
        new = text[:start] + words_text(rng, rng.randint(20, 200), 40) + text[end:]
        hunks = make_patch(text, new)
        assert exact_apply(text, hunks) == new
        rope = Rope.of(text)
        for h in decode_patch(encode_patch(hunks)):
            shape = _textdiff._shape(h)
            assert shape is not None
            expected = h.start2 + len(shape.prefix)
            assert _textdiff._locate(rope, shape, expected) is not None
            assert _textdiff._locate(rope, shape, expected)[0] == expected  # type: ignore[index]
            rope, failed = apply_patch(rope, [h])
            assert failed == []
        assert rope == new
        assert apply_patch(text, hunks) == (new, [])
        text = new


@pytest.mark.parametrize("margin", [0, 1, _textdiff.ONE_CONTEXT_MIN - 1])
def test_a_margin_the_applier_would_read_as_cut_short_is_refused(margin: int) -> None:
    """The applier takes a context shorter than ONE_CONTEXT_MIN for one cut short by the
    text's start or end (it holds only there), so hunks are never made with one."""
    with pytest.raises(ValueError, match="margin"):
        _textdiff.make_patch("alpha beta gamma", "alpha BETA gamma", margin=margin)
    assert _textdiff.make_patch("alpha beta gamma", "alpha BETA gamma",
                                margin=_textdiff.ONE_CONTEXT_MIN)
