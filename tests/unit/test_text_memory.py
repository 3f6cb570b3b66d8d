"""Copies of a text that W1 (``benchmarks/texts.py``) showed to cost memory, and that must
not come back: checked by identity and by what objects hold, never by measuring memory.

- the writer's value is the very ``str`` the agent handed over (no copy);
- a text fold keeps a patch as the encoded ``bytes`` it was decoded from (the same object),
  never as hunks: not the first contribution's decoded whole-text insert beside the rope;
- the log and the store hold one contribution object, so one payload;
- ``compute_id`` feeds the payload to the hash without packing it (msgpack's reusable
  ``Packer`` buffer kept the size of the largest payload ever hashed).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack
import pytest

import hybridsync as hs
import hybridsync.causal._contribution as contribution_mod
from hybridsync.causal import Contribution, compute_id
from hybridsync.regions._rope import Rope
from hybridsync.regions._textdiff import (
    Hunk,
    Patch,
    apply_patch,
    decode_patch,
    encode_patch,
    make_patch,
)
from hybridsync.regions._textfold import TextFold
from hybridsync.store import MemoryStore

WORDS = ("alpha", "beta", "naïve", "café", "→", "✓", "🙂", "gamma", "delta")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _move(a: hs.Memory, b: hs.Memory) -> None:
    for f in a.sync_to(b.peer):
        b.receive(a.peer, f)
    for f in b.sync_to(a.peer):
        a.receive(b.peer, f)


def _pair() -> tuple[hs.Memory, hs.Memory, MemoryStore, MemoryStore]:
    sa, sb = MemoryStore(), MemoryStore()
    a = hs.Memory("mem", "a", store=sa, commit_interval_ms=None, gc_min_entries=None)
    b = hs.Memory("mem", "b", store=sb, commit_interval_ms=None, gc_min_entries=None)
    return a, b, sa, sb


def _fold(m: hs.Memory, name: str = "s") -> TextFold:
    fold: TextFold = m._regions.texts[name].fold
    return fold


def test_writer_value_is_the_str_handed_over() -> None:
    a, b, _, _ = _pair()
    rng = random.Random(1)
    text = _text(rng, 3000)
    a.text("s").set(text)
    assert a.text("s").value is text  # before the cycle
    _move(a, b)
    assert a.text("s").value is text  # after its own patch folded in exactly
    for _ in range(5):
        i = rng.randrange(len(text) - 50)
        text = text[:i] + _text(rng, 8) + text[i + 40:]
        a.text("s").set(text)
        _move(a, b)
        assert a.text("s").value is text
    assert b.text("s").value == text


def test_fold_entries_hold_the_encoded_patch_not_hunks() -> None:
    a, b, _, _ = _pair()
    rng = random.Random(2)
    text = _text(rng, 5000)
    a.text("s").set(text)
    _move(a, b)
    for _ in range(4):
        i = rng.randrange(len(text) - 50)
        text = text[:i] + _text(rng, 6) + text[i + 30:]
        a.text("s").set(text)
        _move(a, b)
    for m in (a, b):
        entries = _fold(m)._entries
        assert len(entries) == 5
        assert all(type(e.hunks) is bytes for e in entries)
        # the first entry is the whole-text insert: held once, UTF-8 encoded, not as a str
        first = entries[0].hunks
        assert isinstance(first, bytes) and len(first) >= len(text.encode()) - 1000
    assert b.text("s").value == text


def test_a_decoded_patch_is_kept_as_the_same_bytes_object() -> None:
    old, new = "the quick brown fox jumps", "the quick red fox leaps"
    data = encode_patch(make_patch(old, new))
    patch = decode_patch(data)
    assert isinstance(patch, Patch) and patch.data is data
    fold = TextFold(lambda x, y: False)
    fold.add((1, b"\x01" * 32), b"\x01" * 32, encode_patch(make_patch("", old)))
    fold.add((2, b"\x02" * 32), b"\x02" * 32, patch)
    assert fold._entries[1].hunks is data
    assert fold.value == new


def _late_order(patches: list[Any]) -> list[int]:
    order = list(range(len(patches)))
    order.insert(1, order.pop())  # the last one arrives second: every later add replays
    return order


def test_replays_from_bytes_match_replays_from_hunks() -> None:
    """A fold that keeps bytes decodes them again on a replay: the same value and issues
    as a fold that was handed plain hunk lists, in any arrival order."""
    rng = random.Random(3)
    base = _text(rng, 400)
    texts = [base]
    for _ in range(40):
        t = texts[rng.randrange(len(texts))]  # concurrent edits of older versions
        i = rng.randrange(len(t) - 20)
        texts.append(t[:i] + _text(rng, 3) + t[i + rng.randrange(1, 15):])
    encoded = [encode_patch(make_patch("", base))] + [
        encode_patch(make_patch(texts[k - 1] if k % 3 else base, texts[k]))
        for k in range(1, len(texts))
    ]
    keys = [(k + 1, bytes([k]) * 32) for k in range(len(encoded))]
    for order in (list(range(len(encoded))), _late_order(encoded), sorted(
            range(len(encoded)), key=lambda k: -k)):
        as_bytes, as_hunks = TextFold(lambda x, y: False), TextFold(lambda x, y: False)
        for k in order:
            as_bytes.add(keys[k], keys[k][1], decode_patch(encoded[k]))
            as_hunks.add(keys[k], keys[k][1], list(decode_patch(encoded[k])))
        assert all(type(e.hunks) is bytes for e in as_bytes._entries)
        assert all(type(e.hunks) is list for e in as_hunks._entries)
        assert as_bytes.value == as_hunks.value
        assert as_bytes.issues() == as_hunks.issues()
        upto = keys[len(keys) // 2]
        assert as_bytes.compact(upto) == as_hunks.compact(upto)
        assert as_bytes.base() == as_hunks.base() and as_bytes.value == as_hunks.value


def test_fold_accepts_an_encoded_patch_and_rejects_a_malformed_one() -> None:
    fold = TextFold(lambda x, y: False)
    fold.add((1, b"\x01" * 32), b"\x01" * 32, encode_patch(make_patch("", "héllo 🙂")))
    assert fold.value == "héllo 🙂"
    with pytest.raises(hs.errors.PayloadError):
        fold.add((2, b"\x02" * 32), b"\x02" * 32, b"\x07garbage")
    assert len(fold) == 1 and fold.value == "héllo 🙂"  # nothing changed
    fold.add((2, b"\x02" * 32), b"\x02" * 32, encode_patch(make_patch("héllo 🙂", "hé 🙂!")))
    assert fold.value == "hé 🙂!" and type(fold._entries[1].hunks) is bytes


def test_log_and_store_share_each_contribution_and_its_payload() -> None:
    a, b, sa, sb = _pair()
    a.text("s").set(_text(random.Random(4), 2000))
    _move(a, b)
    a.text("s").set(a.text("s").value + " more")
    _move(a, b)
    for m, store in ((a, sa), (b, sb)):
        held = list(store.contributions())
        assert len(held) == 2
        for c in held:
            logged = m._log.get(c.id)
            assert logged is c and logged.payload is c.payload


def test_compute_id_is_the_hash_of_the_canonical_msgpack_encoding() -> None:
    packb = msgpack.Packer(use_bin_type=True).pack
    rng = random.Random(5)
    for n in (0, 1, 255, 256, 65_535, 65_536, 70_000):
        payload = rng.randbytes(n)
        args: tuple[Any, ...] = ("sp", "a", 7, (b"\x01" * 32, b"\x02" * 32), 5,
                                 1_795_219_200_000, "multi", "nöte", payload)
        body = packb([1, *args[:3], list(args[3]), *args[4:]])
        assert compute_id(*args) == hashlib.blake2b(body, digest_size=32).digest()


def test_compute_id_never_packs_the_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    packed: list[Any] = []
    real = contribution_mod._packb

    def spy(obj: Any) -> bytes:
        packed.append(obj)
        out: bytes = real(obj)
        return out

    monkeypatch.setattr(contribution_mod, "_packb", spy)
    payload = b"x" * 100_000
    c = Contribution.create("sp", "a", 1, (), 1, 0, "multi", payload)
    c.verify("sp")
    assert packed and not any(payload in obj for obj in packed)


def test_plain_hunk_lists_are_kept_as_given() -> None:
    """Plain hunk lists (not decoded from bytes) are kept as given: nothing to share."""
    fold = TextFold(lambda x, y: False)
    hunks: list[Hunk] = make_patch("", "plain")
    fold.add((1, b"\x01" * 32), b"\x01" * 32, hunks)
    assert fold._entries[0].hunks is hunks and fold.value == "plain"


# ---- compact ropes: wide chunks kept as UTF-8, never visible --------------------------------
ALPHABETS = ("abc def\n", "àéïõü ", "→✓“”’ ", "🙂👍🏽𝄞 ", "a")


def _random_text(rng: random.Random, n: int) -> str:
    """Runs from alphabets of every str kind (ASCII, Latin-1, BMP, astral)."""
    out: list[str] = []
    while sum(map(len, out)) < n:
        alphabet = rng.choice(ALPHABETS)
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3000))))
    return "".join(out)[:n]


def test_a_compact_rope_reads_like_its_str() -> None:
    rng = random.Random(6)
    for trial in range(12):
        text = _random_text(rng, rng.choice([0, 5, 3000, 20_000]))
        compact, hot = Rope.of(text, compact=True), Rope.of(text)
        assert compact.compact and not hot.compact
        for r in (compact, hot, compact.hot()):
            assert str(r) == text and len(r) == len(text) and r == text
            assert "".join(r.chunks) == text
        assert compact == hot and compact.hot() == hot and not compact.hot().compact
        for _ in range(30):
            a, b = sorted(rng.randrange(len(text) + 1) for _ in range(2))
            assert compact.slice(a, b) == text[a:b]
            other = text[:a] + _random_text(rng, rng.randrange(40)) + text[b:]
            p = compact.common_prefix(other)
            assert p == hot.common_prefix(other)
            assert compact.common_suffix(other, len(other) - p) == hot.common_suffix(
                other, len(other) - p)
        edits: list[tuple[int, int, str]] = []
        pos = 0
        while pos < len(text) and len(edits) < 6:
            a = min(len(text), pos + rng.randrange(1, 5000))
            b = min(len(text), a + rng.randrange(0, 300))
            edits.append((a, b, _random_text(rng, rng.randrange(0, 500))))
            pos = b + 1
        expected = text
        for a, b, t in reversed(edits):
            expected = expected[:a] + t + expected[b:]
        got = compact.replace(edits)
        assert got.compact and str(got) == expected and got == hot.replace(edits), trial


def test_a_compact_rope_keeps_wide_chunks_as_utf8_and_narrow_ones_as_str() -> None:
    ascii_part, wide_part = "plain words " * 400, "naïve → café ✓ " * 400
    rope = Rope.of(ascii_part + wide_part + "🙂" * 3000, compact=True)
    kinds = {type(c) for c in rope._chunks}
    assert kinds == {str, bytes}
    for c in rope._chunks:
        if isinstance(c, str):  # kept as str: narrow, or no smaller as UTF-8 (emoji: 4 B each)
            assert c.isascii() or max(c) <= "\xff" or len(c.encode()) >= 4 * len(c)
        else:  # UTF-8: smaller than its str (2 bytes a character, 4 with an emoji)
            t = c.decode()
            assert len(c) < (2 if max(t) <= "\uffff" else 4) * len(t)
    assert rope.stored_bytes() < Rope.of(str(rope)).stored_bytes()


def test_ropes_stay_compact_while_a_known_str_is_compared() -> None:
    """A writer compares a new text with the str it knows equals its shadow (the one it
    handed over, or the one a read joined), so its rope stays compact; only a set() with no
    such str at hand (after a remote edit, without a read) makes the rope hot."""
    a, b, _, _ = _pair()
    text = "shared notes → ✓ " * 2000
    a.text("s").set(text)
    _move(a, b)
    assert _fold(a).rope.compact and _fold(b).rope.compact
    assert any(isinstance(c, bytes) for c in _fold(a).rope._chunks)
    assert a.text("s").value is text and b.text("s").value == text
    # b read the text (a join): it compares with that str and stays compact
    b.text("s").set(b.text("s").value.replace("notes", "memos", 3))
    _move(b, a)
    assert _fold(b).rope.compact and _fold(a).rope.compact
    assert a.text("s").value == b.text("s").value and a.text("s").value.count("memos") == 3
    # a remote edit, then a set() without a read: compared with the rope, made hot
    b.text("s").set(b.text("s").value + " tail")
    _move(b, a)
    a.text("s").set("head " + text)
    assert not _fold(a).rope.compact
    _move(a, b)
    assert a.text("s").value == b.text("s").value


def test_the_known_str_always_equals_the_shadow() -> None:
    """Random sets (from a read, or blind), syncs and reads on two replicas: whenever a
    state holds a str for its shadow it is exactly the shadow's text, and both converge."""
    rng = random.Random(8)
    a, b, _, _ = _pair()
    base = _text(rng, 600)
    a.text("s").set(base)
    _move(a, b)
    for _ in range(120):
        m = rng.choice((a, b))
        op = rng.randrange(4)
        if op == 0:  # an edit of what it reads
            v = m.text("s").value
            i = rng.randrange(len(v) + 1)
            m.text("s").set(v[:i] + _text(rng, 2) + v[i + rng.randrange(20):])
        elif op == 1:  # a blind whole new text
            m.text("s").set(_text(rng, rng.randrange(1, 300)))
        elif op == 2:
            _move(m, b if m is a else a)
        else:
            m.text("s").value  # noqa: B018 - a read joins the rope
        for x in (a, b):
            st = x._regions.texts["s"]
            assert st._known is None or st._known == str(st.shadow)
    _move(a, b)
    _move(b, a)
    assert a.text("s").value == b.text("s").value


def test_patches_apply_the_same_on_compact_and_hot_ropes() -> None:
    rng = random.Random(7)
    for _ in range(10):
        old = _random_text(rng, 6000)
        i = rng.randrange(len(old) - 100)
        new = old[:i] + _random_text(rng, 50) + old[i + rng.randrange(80):]
        drifted = _random_text(rng, rng.randrange(30)) + old  # the hunk has to move
        hunks = decode_patch(encode_patch(make_patch(old, new)))
        for base in (old, drifted):
            want = apply_patch(base, hunks)
            got = apply_patch(Rope.of(base, compact=True), hunks)
            assert (str(got[0]), got[1]) == want
