"""Text patch format 2 and the anchored applier (``regions/_textdiff``): the byte layout,
elided old middles (length + digest), total decoding, and where a hunk applies when
concurrent edits moved or touched its text."""

from __future__ import annotations

import msgpack
import pytest

from hybridsync.errors import ConfigError, PayloadError
from hybridsync.regions import _textdiff
from hybridsync.regions._rope import Rope
from hybridsync.regions._textdiff import (
    DIGEST_BYTES,
    ELIDE_MIN_BYTES,
    PATCH_FORMAT,
    SEARCH_RADIUS,
    Hunk,
    apply_patch,
    decode_patch,
    digest_of,
    encode_patch,
    make_patch,
)

EQUAL, INSERT, DELETE = 0, 1, -1
NOTES = (
    "Plan: collect the logs, then check every step of the migration.\n"
    "Status: the first replica is up, the second one waits for its checkpoint.\n"
    "Next: rerun the tool call and write the result into the shared memory.\n"
)


def uint(n: int) -> list[int]:
    """LEB128, written out independently of the encoder."""
    out = []
    while True:
        byte, n = n % 128, n // 128
        out.append(byte + (128 if n else 0))
        if not n:
            return out


def wire(hunks: list[Hunk]) -> list[Hunk]:
    """What a receiver folds: the hunks through the wire."""
    return decode_patch(encode_patch(hunks))


# ---- the byte layout ---------------------------------------------------------------------


def test_a_short_replacement_is_literal_and_laid_out_as_documented() -> None:
    (h,) = make_patch("the quick brown fox", "the slow brown fox")
    assert h.diffs == ((EQUAL, "the "), (DELETE, "quick"), (INSERT, "slow"), (EQUAL, " bro"))
    data = encode_patch([h])
    assert data == bytes([
        PATCH_FORMAT,
        0,  # start
        4,  # four ops
        4 << 3 | 0, *b"the ",
        5 << 3 | 2, *b"quick",
        4 << 3 | 1, *b"slow",
        4 << 3 | 0, *b" bro",
    ])
    assert decode_patch(data) == [h]


def test_a_long_old_middle_travels_as_its_length_and_digest() -> None:
    old = "the first replica is up, the second one waits"
    new_text = NOTES.replace(old, "both replicas are up")
    (h,) = make_patch(NOTES, new_text)
    data = encode_patch([h])
    (d,) = decode_patch(data)
    assert d.digest == digest_of(old) and len(d.digest) == DIGEST_BYTES
    assert d.diffs == ((EQUAL, "us: "), (DELETE, len(old)), (INSERT, "both replicas are up"),
                       (EQUAL, " for"))
    assert old.encode() not in data
    start = NOTES.index(old) - 4
    assert data == bytes([PATCH_FORMAT, *uint(start), 4,
                          4 << 3 | 0, *b"us: ", *uint(len(old) << 3 | 4),
                          *uint(20 << 3 | 1), *b"both replicas are up", 4 << 3 | 0, *b" for",
                          *digest_of(old)])
    assert uint(364) == [0xEC, 0x02]  # 45 << 3 | 4: two bytes
    assert len(data) < len(encode_patch([h], elide_min_bytes=1 << 40)) - len(old) + 12
    assert apply_patch(NOTES, [d]) == (new_text, [])
    # equal runs between the contexts are elided too: the digest covers them
    (h2,) = make_patch(NOTES, NOTES.replace("collect the logs, then check", "read logs, check"))
    (d2,) = wire([h2])
    assert [op for op, t in d2.diffs if isinstance(t, int)] and d2.digest is not None
    assert apply_patch(NOTES, [d2]) == (NOTES.replace("collect the logs, then check",
                                                      "read logs, check"), [])


def test_the_elision_threshold_counts_utf8_bytes() -> None:
    base = "x" * 40 + "é" * 8 + "y" * 40  # 8 characters, 16 UTF-8 bytes
    (h,) = make_patch(base, base.replace("é" * 8, "e"))
    (d,) = wire([h])
    assert d.digest is not None and ELIDE_MIN_BYTES == 16
    (h,) = make_patch(base, base.replace("é" * 7, "e"))  # 14 bytes: literal
    assert wire([h]) == [h]


def test_an_elided_hunk_renders_its_lengths_in_conflicts() -> None:
    old = "the first replica is up, the second one waits"
    (d,) = wire(make_patch(NOTES, NOTES.replace(old, "both are up")))
    assert d.text == f"us: -{{{len(old)} chars}}+[both are up] for"


def test_format_1_msgpack_patches_are_still_read() -> None:
    v1 = msgpack.packb([[4, 4, 13, 12, [[0, "the "], [-1, "quick"], [1, "slow"],
                                        [0, " bro"]]]], use_bin_type=True)
    (h,) = decode_patch(v1)
    assert h == Hunk(4, 4, 13, 12, ((EQUAL, "the "), (DELETE, "quick"), (INSERT, "slow"),
                                    (EQUAL, " bro")))
    assert apply_patch("xx, the quick brown fox", [h]) == ("xx, the slow brown fox", [])


# ---- total decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",  # unknown format
        b"\x03\x00",
        bytes([PATCH_FORMAT, 0x80]),  # truncated number
        bytes([PATCH_FORMAT, 0x80, 0x00, 0]),  # start not in its shortest form
        bytes([PATCH_FORMAT, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0]),  # start too big
        bytes([PATCH_FORMAT, 0, 2, 0 << 3 | 0]),  # two ops announced, one there
        bytes([PATCH_FORMAT, 0, 1, 5 << 3 | 1, *b"abc"]),  # text shorter than its length
        bytes([PATCH_FORMAT, 0, 1, 1 << 3 | 1, 0xFF]),  # not UTF-8
        bytes([PATCH_FORMAT, 0, 1, 1 << 3 | 5]),  # op kind 5
        bytes([PATCH_FORMAT, 0, 1, 1 << 3 | 7]),  # op kind 7
        bytes([PATCH_FORMAT, 0, 1, 3 << 3 | 4, *b"1234567"]),  # digest one byte short
        bytes([PATCH_FORMAT, 0, 1, 3 << 3 | 3]),  # elided, no digest at all
    ],
    ids=repr,
)
def test_malformed_patches_raise_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_patch(data)


def test_an_empty_patch_is_one_byte() -> None:
    assert encode_patch([]) == bytes([PATCH_FORMAT])
    assert decode_patch(bytes([PATCH_FORMAT])) == []


@pytest.mark.parametrize(
    "hunk",
    [
        Hunk(0, 0, 0, 3, ((INSERT, 3),), b"\0" * DIGEST_BYTES),  # an insert needs its text
        Hunk(0, 0, 3, 0, ((DELETE, 3),)),  # elided without a digest
        Hunk(0, 0, 3, 0, ((DELETE, "abc"),), b"\0" * DIGEST_BYTES),  # digest, nothing elided
        Hunk(0, 0, 3, 0, ((DELETE, 3),), b"\0" * 3),  # digest of the wrong size
        Hunk(0, 0, 3, 0, ((2, "abc"),)),  # op 2
        Hunk(-1, -1, 0, 1, ((INSERT, "a"),)),  # negative position
    ],
    ids=["insert-as-length", "no-digest", "digest-without-elision", "short-digest", "op-2",
         "negative"],
)
def test_encode_refuses_hunks_no_decoder_could_give_back(hunk: Hunk) -> None:
    with pytest.raises(ConfigError):
        encode_patch([hunk])
    # ... and the applier, which must be total, reports them instead of raising
    assert apply_patch("abcdef", [hunk])[1] in ([hunk], [])


# ---- where a hunk applies -----------------------------------------------------------------


def test_a_concurrent_edit_touching_the_prefix_does_not_stop_the_hunk() -> None:
    """Edits that touch (gap 0) both apply: each finds the other's context gone but its own
    old middle intact, with the other context around it."""
    a = NOTES.replace("collect the logs", "gather the traces")
    b = NOTES.replace(", then check", " and verify")
    for first, second in ((a, b), (b, a)):
        p1, p2 = wire(make_patch(NOTES, first)), wire(make_patch(NOTES, second))
        value, failed = apply_patch(NOTES, p1)
        value, failed2 = apply_patch(value, p2)
        assert failed == failed2 == []
        assert value == NOTES.replace("collect the logs, then check",
                                      "gather the traces and verify")


def test_a_concurrent_edit_of_the_old_middle_fails_the_hunk_literal_or_elided() -> None:
    target = NOTES.replace("the second one waits", "the second one is late")
    hunks = make_patch(NOTES, NOTES.replace("the first replica is up, the second one waits",
                                            "all replicas are up"))
    for patch in (hunks, wire(hunks)):
        assert apply_patch(target, patch) == (target, patch)


def test_an_insert_whose_both_contexts_are_gone_fails() -> None:
    (h,) = make_patch(NOTES, NOTES.replace("every step", "every single step"))
    assert [op for op, _ in h.diffs] == [EQUAL, INSERT, EQUAL]
    target = NOTES.replace("check every step of", "audit the whole")
    assert apply_patch(target, [h]) == (target, [h])


def test_a_hunk_follows_its_text_when_a_concurrent_edit_moved_it() -> None:
    """A concurrent insert of 600 characters before the hunk: it applies 600 characters
    later (diff-match-patch's fuzzy match gave up beyond ~150), and beyond the search
    radius it fails rather than look further."""
    edit = NOTES.replace("write the result", "write the final result")
    hunks = wire(make_patch(NOTES, edit))
    for shift in (600, SEARCH_RADIUS - 10):
        pad = ("filler words " * 200)[:shift]
        assert apply_patch(pad + NOTES, hunks) == (pad + edit, [])
    far = ("filler words " * 200)[: SEARCH_RADIUS + 200]
    assert apply_patch(far + NOTES, hunks) == (far + NOTES, hunks)


def test_both_contexts_beat_nearer_candidates_with_one() -> None:
    """Of two places holding the old middle, the one with both contexts around it wins even
    when the other (one context) is nearer to where the author saw it."""
    base = "<<A>>text<<B>>  <<A>>text<<Z>>"
    hunks = [Hunk(0, 0, 15, 15, ((EQUAL, "<A>>"), (DELETE, "text"), (INSERT, "TEXT"),
                                  (EQUAL, "<<Z>")))]
    assert apply_patch(base, hunks) == ("<<A>>text<<B>>  <<A>>TEXT<<Z>>", [])


def test_ties_go_to_the_lower_position() -> None:
    base = "ab" + "x" * 10 + "ab"
    hunks = [Hunk(6, 6, 2, 3, ((EQUAL, "a"), (INSERT, "!"), (EQUAL, "b")))]
    # expected at 6 + 1 = 7; "a|b" sits at 1 and at 13, both 6 away: the lower wins
    assert apply_patch(base, hunks) == ("a!b" + "x" * 10 + "ab", [])


def test_a_failed_hunk_shifts_the_next_one_by_its_growth() -> None:
    """As diff-match-patch does: positions after a failed hunk are expected without it."""
    new = NOTES.replace("Plan:", "Plan (draft, v2):").replace("shared memory", "memory")
    hunks = wire(make_patch(NOTES, new))
    assert len(hunks) == 2
    target = NOTES.replace("Plan: collect", "Goal - gather")  # both contexts gone
    out, failed = apply_patch(target, hunks)
    assert failed == [hunks[0]] and out == target.replace("shared memory", "memory")


def test_apply_is_the_same_on_a_str_and_on_ropes_chunked_any_way() -> None:
    edit = NOTES.replace("the first replica", "replica one")
    hunks = wire(make_patch(NOTES, edit))
    target = "preface, " + NOTES
    want = apply_patch(target, hunks)
    for size in (1, 7, 64):
        rope = Rope([target[i : i + size] for i in range(0, len(target), size)])
        got, failed = apply_patch(rope, hunks)
        assert (str(got), failed) == want


def test_the_digest_is_blake2b_64_of_utf8() -> None:
    import hashlib

    assert digest_of("é✓") == hashlib.blake2b("é✓".encode(), digest_size=8).digest()
    assert digest_of("\ud800") == hashlib.blake2b(b"\xed\xa0\x80", digest_size=8).digest()
    assert _textdiff.DIGEST_BYTES == 8
