"""Text and buffer regions through ``Memory``: edits and sync, Unicode, concurrent merges and
their conflicts, delivery-order independence, deletion tombstones, block deltas, layout
checks, restart from a store, transactions, and hostile payloads."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
from collections.abc import Callable

import numpy as np
import pytest

import hybridsync as hs
from hybridsync.causal import Contribution
from hybridsync.regions._buffer import BLOCK_BYTES
from hybridsync.regions._parts import Part, encode_parts
from hybridsync.regions._textdiff import Hunk, encode_patch, make_patch
from hybridsync.regions._textfold import CHECKPOINT_EVERY, MAX_CHECKPOINTS, TextFold
from hybridsync.testing import (
    LossyChannel,
    ManualClock,
    assert_converged,
    snapshot,
    sync_all,
    sync_pair,
)
from hybridsync.wire import encode_frame

MakeMemory = Callable[..., hs.Memory]
REGION_KINDS = {"hunk-failed", "edit-of-deleted-region", "block-overwritten", "concurrent-write"}

PARAGRAPHS = (
    "Title: shared notes\n\n"
    "The quick brown fox jumps over the lazy dog near the river bank.\n\n"
    "Second paragraph: agents write their findings here.\n\n"
    "End.\n"
)
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def send(src: hs.Memory, dst: hs.Memory) -> int:
    """One direction, one round: deliver what ``src`` has for ``dst`` now."""
    frames = src.sync_to(dst.peer)
    for f in frames:
        dst.receive(src.peer, f)
    return len(frames)


def region_conflicts(mem: hs.Memory) -> list[hs.Conflict]:
    return [c for c in mem.conflicts() if c.plane in ("text", "buffer")]


def order_of(mem: hs.Memory) -> dict[str, int]:
    return {c.hex_id: i for i, c in enumerate(mem.history())}


def last_by(mem: hs.Memory, author: str) -> Contribution:
    return [c for c in mem.history() if c.author == author][-1]


# ---- texts: edits, sync, Unicode ---------------------------------------------------------


def test_set_insert_delete_append_sync_to_identical_values(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    t = a.text("notes")
    t.set("hello world")
    t.insert(5, ",")
    t.append("!")
    t.delete(0, 1)
    t.insert(0, "H")
    assert t.value == "Hello, world!" and str(t) == t.value and len(t) == 13
    sync_pair(a, b)
    assert b.text("notes").value == "Hello, world!"
    b.text("notes").append(" (seen by b)")
    sync_pair(a, b)
    assert a.text("notes").value == b.text("notes").value == "Hello, world! (seen by b)"
    assert a.regions() == b.regions() == {"notes": "text"}
    assert_converged([a, b])


def test_several_texts_in_one_cycle_are_one_contribution(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    for i in range(3):
        a.text(f"t{i}").set(f"text number {i}")
    a.commit()
    assert [c.kind for c in a.history()] == ["multi"]
    a.commit()  # nothing changed: no empty contribution
    assert len(a.history()) == 1
    sync_pair(a, b)
    assert {n: b.text(n).value for n in b.regions()} == {f"t{i}": f"text number {i}"
                                                         for i in range(3)}


UNICODE_SAMPLES = [
    "👩‍👩‍👧 family, 👍🏽 thumbs, 🇫🇷🇩🇪 flags",
    "cafe\u0301 with combining acute, Zalgo: z\u0335\u0321\u030ca\u0334\u0317",
    "CJK 日本語, math 𝕏𝕐, max \U0010ffff, NUL \x00, padding chars \x01\x02\x03\x04",
    "lines\r\nwith CRLF\r\nand\ttabs\n",
]


@pytest.mark.parametrize("sample", UNICODE_SAMPLES)
def test_emoji_and_combining_marks_survive_edits_and_sync(
    make_memory: MakeMemory, sample: str
) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("u").set(sample)
    sync_pair(a, b)
    assert b.text("u").value == sample
    # Indices are code points: insert after the first character of a ZWJ sequence / mark.
    b.text("u").insert(1, "\u0301")
    b.text("u").append("🧪\u0308")
    a.text("u").insert(0, "👋🏿 ")
    sync_pair(a, b)
    expected = "👋🏿 " + sample[:1] + "\u0301" + sample[1:] + "🧪\u0308"
    assert a.text("u").value == b.text("u").value == expected
    assert a.region_bytes() == b.region_bytes() == [("text", "u", expected.encode())]


def test_text_indices_are_code_points(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    t = a.text("t")
    t.set("😀é")
    t.insert(1, "|")
    assert t.value == "😀|é"
    t.delete(0, 1)
    assert t.value == "|é"


@pytest.mark.parametrize("bad", ["\ud800", "ok \udfff", "\udc00\ud800"])
def test_lone_surrogates_raise_config_error(make_memory: MakeMemory, bad: str) -> None:
    a = make_memory("a")
    t = a.text("t")
    t.set("fine")
    for op in (lambda: t.set(bad), lambda: t.insert(1, bad), lambda: t.append(bad)):
        with pytest.raises(hs.ConfigError):
            op()
    assert t.value == "fine"
    a.commit()
    assert a.text("t").value == "fine"


def test_text_of_wrong_type_or_bad_name_raises_config_error(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    with pytest.raises(hs.ConfigError):
        a.text("t").set(b"bytes")  # type: ignore[arg-type]
    for name in ("", "n" * 257, 3):
        with pytest.raises(hs.ConfigError):
            a.text(name)  # type: ignore[arg-type]
        with pytest.raises(hs.ConfigError):
            a.buffer(name, shape=(4,), dtype="uint8")  # type: ignore[arg-type]


def test_receive_commits_local_edits_before_folding_remote_ones(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("doc").set(PARAGRAPHS)
    sync_pair(a, b)
    a.text("doc").set(PARAGRAPHS.replace("Title", "TITLE"))  # not committed yet
    b.text("doc").set(PARAGRAPHS.replace("End.", "The end."))
    send(b, a)
    assert a.history()[-1].author in ("a", "b")
    assert {c.author for c in a.history()[1:]} == {"a", "b"}  # a's edit was committed
    assert a.text("doc").value == PARAGRAPHS.replace("Title", "TITLE").replace("End.", "The end.")
    sync_pair(a, b)
    assert b.text("doc").value == a.text("doc").value
    assert_converged([a, b])


# ---- texts: concurrent edits ---------------------------------------------------------------


def test_concurrent_edits_of_different_paragraphs_merge(make_memory: MakeMemory) -> None:
    a, b, c = make_memory("a"), make_memory("b"), make_memory("c")
    a.text("doc").set(PARAGRAPHS)
    sync_all([a, b, c])
    a.text("doc").set(PARAGRAPHS.replace("quick brown fox", "quick 🦊"))
    b.text("doc").set(PARAGRAPHS.replace("agents write", "agents ✍️ write"))
    c.text("doc").set(PARAGRAPHS.replace("End.", "Fin.\u0301"))
    sync_all([a, b, c])
    expected = (PARAGRAPHS.replace("quick brown fox", "quick 🦊")
                .replace("agents write", "agents ✍️ write").replace("End.", "Fin.\u0301"))
    for m in (a, b, c):
        assert m.text("doc").value == expected
        assert m.conflicts() == []
    assert_converged([a, b, c])


def concurrent_same_words(make_memory: MakeMemory) -> tuple[hs.Memory, hs.Memory]:
    a, b = make_memory("a"), make_memory("b")
    a.text("doc").set(PARAGRAPHS)
    sync_pair(a, b)
    a.text("doc").set(PARAGRAPHS.replace(SENTENCE, "Agent A rewrote this sentence entirely."))
    b.text("doc").set(PARAGRAPHS.replace("quick brown fox jumps", "slow red hen walks"))
    sync_pair(a, b)
    return a, b


def test_concurrent_edits_of_the_same_words_converge_and_report_failed_hunks(
    make_memory: MakeMemory,
) -> None:
    a, b = concurrent_same_words(make_memory)
    snap = assert_converged([a, b])
    assert a.text("doc").value == b.text("doc").value
    failed = [c for c in snap.conflicts if c.kind == "hunk-failed"]
    assert failed, "the later rewrite cannot find its sentence: it must be reported"
    later = a.history()[-1]
    for conflict in failed:
        assert conflict.plane == "text" and conflict.location == "doc"
        assert conflict.contributions == (later.hex_id,)
        assert conflict.authors == (later.author,)
        assert isinstance(conflict.values[0], str) and conflict.values[0]
    # Untouched paragraphs survive whatever happened to the contested sentence.
    for keep in ("Title: shared notes", "Second paragraph", "End."):
        assert keep in a.text("doc").value


@pytest.mark.parametrize("seed", range(6))
def test_concurrent_word_edits_with_three_replicas_converge_identically(
    make_memory: MakeMemory, seed: int
) -> None:
    rng = random.Random(seed)
    mems = [make_memory(p) for p in ("a", "b", "c")]
    words = PARAGRAPHS.split(" ")
    mems[0].text("doc").set(PARAGRAPHS)
    sync_all(mems)
    for m in mems:
        for _ in range(rng.randint(1, 3)):
            w = list(words)
            i = rng.randrange(len(w))
            w[i : i + rng.randint(1, 4)] = [rng.choice(["X", "Ÿ̈", "🙂", "word", ""])]
            m.text("doc").set(" ".join(w))
            m.commit()
    sync_all(mems, channel=LossyChannel(seed=seed, duplicate_probability=0.3))
    sync_all(mems)
    snap = assert_converged(mems)
    kinds = {c.kind for c in snap.conflicts}
    assert kinds <= {"hunk-failed"}
    assert all(m.text("doc").value == mems[0].text("doc").value for m in mems)


# ---- delivery order cannot change the result -------------------------------------------


def contributions_in_frames(make_memory: MakeMemory) -> tuple[list[tuple[str, bytes]],
                                                               list[hs.Memory]]:
    """Three authors, two rounds of concurrent edits touching every region kind; each
    commit's frames for an observer ``o`` are recorded. Returns the frames and the authors,
    fully synced."""
    a, b, c = make_memory("a"), make_memory("b"), make_memory("c")
    frames: list[tuple[str, bytes]] = []

    def emit(m: hs.Memory) -> None:
        m.commit()
        frames.extend((m.peer, f) for f in m.sync_to("o"))

    def kv(m: hs.Memory) -> np.ndarray:
        return m.buffer("kv", shape=(3, 1024), dtype="float32").array

    a.text("doc").set(PARAGRAPHS)
    a.text("gone").set("this region will be deleted")
    kv(a)[:] = 1.0
    emit(a)
    sync_all([a, b, c])
    with a.transaction(note="a1"):
        a.fields["owner"] = "a"
        a.text("doc").set(PARAGRAPHS.replace(SENTENCE, "Agent A rewrote this sentence."))
        kv(a)[0, :10] = 2.0
        a.delete_region("gone")
    emit(a)
    b.text("doc").set(PARAGRAPHS.replace("agents write", "agents WRITE"))
    kv(b)[2, 5] = 3.0
    emit(b)
    c.text("doc").set(PARAGRAPHS.replace("quick brown fox jumps", "slow red hen walks"))
    kv(c)[0, 100] = 4.0
    emit(c)
    sync_pair(a, b)
    b.text("doc").append("Appendix by b 📎.\n")
    emit(b)
    c.fields["tally"] = 3
    c.text("gone").append(" (edited by c, who never saw the deletion)")
    kv(c)[1, 1] = 5.0
    emit(c)
    sync_all([a, b, c])
    return frames, [a, b, c]


def test_every_delivery_order_gives_the_same_state_history_and_conflicts(
    make_memory: MakeMemory,
) -> None:
    frames, authors = contributions_in_frames(make_memory)
    reference = assert_converged(authors)
    kinds = {c.kind for c in reference.conflicts}
    assert {"hunk-failed", "edit-of-deleted-region"} <= kinds
    assert kinds & {"block-overwritten", "concurrent-write"}
    assert kinds <= REGION_KINDS
    assert authors[0].regions() == {"doc": "text", "kv": "buffer"}
    n = len(frames)
    assert 5 <= n <= 7
    orders = list(itertools.permutations(range(n)))
    if len(orders) > 720:
        orders = random.Random(7).sample(orders, 720)
    seen_parking = False
    for k, order in enumerate(orders):
        o = make_memory("o")
        # Every order, then two duplicates (the first frames again) at the end.
        for i in (*order, *order[:2]):
            src, frame = frames[i]
            o.receive(src, frame)
        seen_parking |= order[0] != 0
        got = snapshot(o)
        assert got == reference, f"delivery order {order} diverged (case {k})"
        o.close()
    assert seen_parking


def test_lossy_duplicating_reordering_delivery_gives_the_same_result(
    make_memory: MakeMemory,
) -> None:
    frames, authors = contributions_in_frames(make_memory)
    reference = assert_converged(authors)
    for seed in range(5):
        fresh = [make_memory(f"x{seed}"), make_memory(f"y{seed}")]
        rng = random.Random(seed)
        shuffled = list(frames)
        rng.shuffle(shuffled)
        for src, frame in shuffled[: len(shuffled) // 2]:
            fresh[0].receive(src, frame)
        for src, frame in shuffled[len(shuffled) // 3 :]:
            fresh[1].receive(src, frame)
        sync_all(fresh, channel=LossyChannel(seed=seed, loss_probability=0.3,
                                             duplicate_probability=0.3))
        sync_all([*authors, *fresh], max_rounds=2_000)
        snap = assert_converged([*authors, *fresh])
        assert (snap.digest, snap.history, snap.conflicts) == (
            reference.digest, reference.history, reference.conflicts)


def test_text_fold_rewinds_through_thinned_checkpoints_to_the_same_value() -> None:
    """Hundreds of entries (checkpoints taken and thinned), late arrivals that sort early
    (rewind and replay), duplicates: the same value and issues as folding in order."""
    n = CHECKPOINT_EVERY * (MAX_CHECKPOINTS + 4)
    entries = []
    text = ""
    for k in range(n):
        cid = hashlib.blake2b(str(k).encode(), digest_size=8).digest()
        new = text + f"line {k} 😀\n" if k % 3 else text.replace("line", "LINE", 1)
        entries.append(((k // 2, cid), cid, make_patch(text, new)))
        text = new
    in_order = TextFold(lambda x, y: False)
    for key, cid, hunks in sorted(entries):
        in_order.add(key, cid, hunks)
    assert in_order.value.count("😀") == sum(1 for k in range(n) if k % 3)  # no line lost
    ordered = sorted(entries)
    arrival = [e for i, e in enumerate(ordered) if i % 20] + ordered[::20][::-1]
    late = TextFold(lambda x, y: False)
    for key, cid, hunks in arrival + ordered[:5]:  # and a few duplicates
        late.add(key, cid, hunks)
    assert late.replays > 0 and len(late) == n
    assert late.value == in_order.value
    assert late.issues() == in_order.issues()


def test_long_offline_histories_fold_the_same_in_any_author_order(
    make_memory: MakeMemory, clock: ManualClock
) -> None:
    authors = [make_memory(p) for p in ("a", "b", "c")]
    authors[0].text("log").set("shared log\n")
    sync_all(authors)
    for k in range(20):
        for m in authors:
            m.text("log").append(f"{m.peer} entry {k}\n")
            m.commit()
            clock.advance(1)
    frames = {m.peer: m.sync_to("o") for m in authors}
    sync_all(authors)
    reference = assert_converged(authors)
    for order in (["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]):
        o = make_memory("o")
        for peer in order:
            for f in frames[peer]:
                o.receive(peer, f)
        assert snapshot(o) == reference


# ---- deletion tombstones -------------------------------------------------------------------


def test_concurrent_edit_does_not_resurrect_a_deleted_text(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("t").set("base text")
    sync_pair(a, b)
    a.delete_region("t")
    a.commit()
    b.fields["pad"] = 1  # b's edit comes later in the order than the deletion
    b.text("t").set("base text, edited by b")
    b.commit()
    sync_pair(a, b)
    snap = assert_converged([a, b])
    assert a.regions() == b.regions() == {}
    assert a.region_bytes() == []
    (conflict,) = snap.conflicts
    deletion, edit = last_by(a, "a"), last_by(a, "b")
    assert conflict.kind == "edit-of-deleted-region"
    assert conflict.plane == "text" and conflict.location == "t"
    assert set(conflict.contributions) == {deletion.hex_id, edit.hex_id}
    assert set(conflict.authors) == {"a", "b"}


def test_edit_after_seeing_the_deletion_recreates_the_text(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("t").set("old")
    sync_pair(a, b)
    a.delete_region("t")
    sync_pair(a, b)
    assert b.regions() == {} and b.text("t").value == ""
    b.text("t").set("reborn 🐣")
    sync_pair(a, b)
    assert a.regions() == b.regions() == {"t": "text"}
    assert a.text("t").value == "reborn 🐣"
    assert a.conflicts() == b.conflicts() == []
    assert_converged([a, b])


def test_concurrent_write_does_not_resurrect_a_deleted_buffer(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.buffer("kv", shape=(2048,), dtype="float32").array[:] = 1.0
    sync_pair(a, b)
    a.delete_region("kv")
    a.commit()
    b.fields["pad"] = 1
    b.buffer("kv", shape=(2048,), dtype="float32").array[7] = 9.0
    b.commit()
    sync_pair(a, b)
    snap = assert_converged([a, b])
    assert a.regions() == {}
    assert [c.kind for c in snap.conflicts] == ["edit-of-deleted-region"]
    assert snap.conflicts[0].plane == "buffer"
    # Seeing the deletion, a write re-creates it from zeros.
    b.buffer("kv", shape=(2048,), dtype="float32").array[3] = 2.0
    sync_pair(a, b)
    expected = np.zeros(2048, dtype="float32")
    expected[3] = 2.0
    np.testing.assert_array_equal(a.buffer("kv", shape=(2048,), dtype="float32").read(),
                                  expected)
    assert a.regions() == {"kv": "buffer"}
    assert_converged([a, b])


@pytest.mark.parametrize("kind", ["text", "buffer"])
def test_concurrent_edit_sorting_before_the_deletion_is_reported(
    make_memory: MakeMemory, kind: str
) -> None:
    a, b = make_memory("a"), make_memory("b")
    if kind == "text":
        a.text("r").set("base text")
    else:
        a.buffer("r", shape=(1024,), dtype="uint8").array[:] = 1
    sync_pair(a, b)
    a.fields["pad"] = 1  # a's deletion comes later in the order than b's edit
    a.delete_region("r")
    a.commit()
    if kind == "text":
        b.text("r").set("base text, edited by b")
    else:
        b.buffer("r", shape=(1024,), dtype="uint8").array[0] = 9
    b.commit()
    sync_pair(a, b)
    snap = assert_converged([a, b])
    assert a.regions() == {}
    edit = last_by(a, "b")
    assert order_of(a)[edit.hex_id] < order_of(a)[last_by(a, "a").hex_id]
    assert any(c.kind == "edit-of-deleted-region" and edit.hex_id in c.contributions
               for c in snap.conflicts)


def test_set_then_delete_in_one_cycle_deletes(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    t = a.text("t")
    t.set("hello")
    a.delete_region("t")
    a.commit()
    assert a.regions() == {}


def test_deletion_of_a_buffer_the_receiver_never_saw_converges(make_memory: MakeMemory) -> None:
    a, b, c = make_memory("a"), make_memory("b"), make_memory("c")
    a.buffer("kv", shape=(4,), dtype="uint8")
    a.delete_region("kv")
    a.commit()
    b.buffer("kv", shape=(4,), dtype="uint8").array[0] = 7
    b.commit()
    send(a, c)
    sync_all([a, b, c])
    assert_converged([a, b, c])


def test_deleting_an_unknown_region_raises(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    with pytest.raises((KeyError, hs.ConfigError)):
        a.delete_region("never-made")


# ---- buffers ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "float32", "int64", "uint8", "bool"])
def test_in_place_writes_and_write_sync(make_memory: MakeMemory, dtype: str) -> None:
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=(64, 100), dtype=dtype)
    assert kv.shape == (64, 100) and kv.dtype == np.dtype(dtype)
    kv.array[3] = 1
    kv.array[60, 99] = 1
    kv.write(50 * 100 + 7, [1, 1, 1])
    kv.write(0, np.ones(5, dtype=dtype))
    expected = kv.read()
    sync_pair(a, b)
    got = b.buffer("kv", shape=(64, 100), dtype=dtype)
    np.testing.assert_array_equal(got.read(), expected)
    np.testing.assert_array_equal(got.array, expected)
    assert b.regions() == {"kv": "buffer"}
    assert_converged([a, b])


def test_read_is_a_copy_and_array_is_live(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=(8,), dtype="int32")
    copy = kv.read()
    copy[0] = 5
    assert kv.array[0] == 0
    live = kv.array
    sync_pair(a, b)
    b.buffer("kv", shape=(8,), dtype="int32").array[2] = 42
    sync_pair(a, b)
    assert live[2] == 42  # the same array object follows remote writes


def test_write_out_of_range_raises_config_error(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    kv = a.buffer("kv", shape=(10,), dtype="uint8")
    for offset, data in [(9, [1, 2]), (-1, [1]), (11, [])]:
        with pytest.raises(hs.ConfigError):
            kv.write(offset, data)
    np.testing.assert_array_equal(kv.read(), np.zeros(10, dtype="uint8"))


def test_partial_last_block_syncs(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    kv = a.buffer("kv", shape=(BLOCK_BYTES + 904,), dtype="uint8")
    kv.array[-1] = 255
    kv.array[BLOCK_BYTES] = 1
    sync_pair(a, b)
    got = b.buffer("kv", shape=(BLOCK_BYTES + 904,), dtype="uint8").read()
    assert got[-1] == 255 and got[BLOCK_BYTES] == 1 and int(got.sum()) == 256


def test_a_one_block_change_sends_about_one_block(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    shape = (256, 1024)  # 1 MiB of float32: 256 blocks
    rng = np.random.default_rng(1)
    kv = a.buffer("kv", shape=shape, dtype="float32")
    kv.array[:] = rng.standard_normal(shape, dtype="float32")
    sync_pair(a, b)
    before = a.stats().bytes_sent
    kv.array[100, 3] = 123.0  # one element: one 4 KiB block
    kv.write(100 * 1024 + 1000, [7.0])  # same block
    assert send(a, b) >= 1
    sent = a.stats().bytes_sent - before
    assert sent <= 1.1 * BLOCK_BYTES + 200, f"{sent} bytes on the wire for one block"
    payload = a.history()[-1].payload
    assert len(payload) <= BLOCK_BYTES + 200
    sync_pair(a, b)
    np.testing.assert_array_equal(b.buffer("kv", shape=shape, dtype="float32").read(),
                                  kv.read())


def test_concurrent_writes_to_one_block_converge_to_the_later_one(
    make_memory: MakeMemory,
) -> None:
    a, b, c = make_memory("a"), make_memory("b"), make_memory("c")
    for m in (a, b, c):
        m.buffer("kv", shape=(4, 1024), dtype="float32")
    a.buffer("kv", shape=(4, 1024), dtype="float32").array[1, 0] = 1.0
    b.buffer("kv", shape=(4, 1024), dtype="float32").array[1, 500] = 2.0
    a.commit()
    b.commit()
    sync_all([a, b, c])
    snap = assert_converged([a, b, c])
    ca, cb = last_by(a, "a"), last_by(a, "b")
    order = order_of(a)
    earlier, later = sorted([ca, cb], key=lambda x: order[x.hex_id])
    block = c.buffer("kv", shape=(4, 1024), dtype="float32").read()[1]
    if later.author == "a":
        assert block[0] == 1.0 and block[500] == 0.0
    else:
        assert block[0] == 0.0 and block[500] == 2.0
    (conflict,) = snap.conflicts
    assert conflict.kind in {"block-overwritten", "concurrent-write"}
    assert conflict.plane == "buffer" and conflict.location == "kv"
    assert conflict.contributions == (earlier.hex_id, later.hex_id)
    assert conflict.authors == (earlier.author, later.author)
    for m in (a, b, c):
        assert region_conflicts(m) == [conflict]


def test_three_concurrent_writers_of_one_block_list_conflicts_in_one_order(
    make_memory: MakeMemory, clock: ManualClock
) -> None:
    mems = [make_memory(f"p{k}") for k in range(3)]
    for m in mems:
        m.buffer("b0", shape=(1500,), dtype="float32").write(0, [1.0])
        clock.advance(1)
    sync_all(mems)
    assert len(mems[0].conflicts()) == 3
    assert_converged(mems)


def test_concurrent_writes_to_different_blocks_merge(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.buffer("kv", shape=(4, 1024), dtype="float32").array[0, 0] = 1.0
    b.buffer("kv", shape=(4, 1024), dtype="float32").array[3, 1023] = 2.0
    sync_pair(a, b)
    for m in (a, b):
        arr = m.buffer("kv", shape=(4, 1024), dtype="float32").read()
        assert arr[0, 0] == 1.0 and arr[3, 1023] == 2.0 and arr.sum() == 3.0
        assert m.conflicts() == []
    assert_converged([a, b])


def test_wrong_layout_or_kind_raises_config_error(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.buffer("kv", shape=(16, 8), dtype="float16").array[0, 0] = 1
    a.text("notes").set("text")
    sync_pair(a, b)
    for m in (a, b):
        with pytest.raises(hs.ConfigError):
            m.buffer("kv", shape=(8, 16), dtype="float16")
        with pytest.raises(hs.ConfigError):
            m.buffer("kv", shape=(16, 8), dtype="float32")
        with pytest.raises(hs.ConfigError):
            m.buffer("notes", shape=(4,), dtype="uint8")  # a text used as a buffer
        with pytest.raises(hs.ConfigError):
            m.text("kv")  # a buffer used as a text
        assert m.buffer("kv", shape=[16, 8], dtype=np.float16).shape == (16, 8)
    for shape, dtype in [((4,), "complex64"), ((-1,), "uint8"), ((4,), "no-such-dtype"),
                         ((1 << 40,), "float64")]:
        with pytest.raises(hs.ConfigError):
            a.buffer("other", shape=shape, dtype=dtype)


def test_concurrent_buffers_of_different_layouts_converge_with_a_conflict(
    make_memory: MakeMemory,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.buffer("kv", shape=(4,), dtype="uint8").array[0] = 1
    b.buffer("kv", shape=(8,), dtype="uint8").array[0] = 2
    sync_pair(a, b)
    snap = assert_converged([a, b])
    assert snap.conflicts


def test_same_name_as_text_and_buffer_concurrently_converges(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("x").set("hi")
    b.buffer("x", shape=(4,), dtype="uint8").array[0] = 1
    sync_pair(a, b)
    snap = assert_converged([a, b])
    assert snap.conflicts


# ---- restart, transactions ------------------------------------------------------------


def test_restart_from_a_memory_store_keeps_regions(clock: ManualClock) -> None:
    store = hs.MemoryStore()
    a = hs.Memory("space", "a", store=store, clock=clock, incarnation=1)
    b = hs.Memory("space", "b", clock=clock, incarnation=2)
    a.text("doc").set("héllo 😀\u0301")
    a.text("gone").set("soon deleted")
    kv = a.buffer("kv", shape=(3, 2048), dtype="float16")
    kv.array[2, 2047] = 1.5
    a.commit()
    a.delete_region("gone")
    a.commit()
    b.buffer("kv", shape=(3, 2048), dtype="float16").array[2, 0] = 2.5  # same block: conflict
    sync_pair(a, b)
    before = snapshot(a)
    assert before.conflicts
    a.close()

    a2 = hs.Memory("space", "a", store=store, clock=clock, incarnation=3)
    assert snapshot(a2) == before
    assert a2.regions() == {"doc": "text", "kv": "buffer"}
    assert a2.text("doc").value == "héllo 😀\u0301"
    with pytest.raises(hs.ConfigError):
        a2.buffer("kv", shape=(2048, 3), dtype="float16")
    kv2 = a2.buffer("kv", shape=(3, 2048), dtype="float16")
    np.testing.assert_array_equal(kv2.read(), b.buffer("kv", shape=(3, 2048),
                                                        dtype="float16").read())
    # The restarted replica keeps editing and syncing.
    a2.text("doc").append(" again")
    kv2.array[0, 0] = 3.0
    sync_pair(a2, b)
    assert b.text("doc").value == "héllo 😀\u0301 again"
    assert_converged([a2, b])
    a2.close()
    a3 = hs.Memory("space", "a", store=store, clock=clock, incarnation=4)
    assert snapshot(a3) == snapshot(a2)


def test_transaction_mixing_fields_and_regions_is_one_multi_contribution(
    make_memory: MakeMemory,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("gone").set("x")
    a.commit()
    n = len(a.history())
    with a.transaction(note="claim t1"):
        a.fields["tasks"] = {"t1": {"status": "claimed"}}
        a.text("doc").set("plan for t1 📝")
        a.buffer("kv", shape=(2, 1024), dtype="float32").array[1, 1] = 0.5
        a.delete_region("gone")
    history = a.history()
    assert len(history) == n + 1
    assert history[-1].kind == "multi" and history[-1].note == "claim t1"
    sync_pair(a, b)
    assert b.fields["tasks"]["t1"]["status"] == "claimed"
    assert b.text("doc").value == "plan for t1 📝"
    assert b.buffer("kv", shape=(2, 1024), dtype="float32").read()[1, 1] == 0.5
    assert b.regions() == {"doc": "text", "kv": "buffer"}
    assert_converged([a, b])


def test_fields_only_transaction_stays_a_fields_contribution(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    a.text("doc").set("committed first")
    a.commit()
    with a.transaction():
        a.fields["x"] = 1
    assert a.history()[-1].kind == "fields"


def test_a_failed_transaction_rolls_back_region_edits(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    t = a.text("t")
    t.set("committed")
    a.commit()
    n = len(a.history())
    with pytest.raises(RuntimeError), a.transaction():
        a.fields["x"] = 1
        t.set("inside a failed transaction")
        raise RuntimeError("boom")
    a.commit()
    assert t.value == "committed"
    assert "x" not in a.fields.to_dict()
    assert all(c.kind != "multi" for c in a.history()[n:])


def test_concurrent_field_writes_inside_multi_contributions_are_reported(
    make_memory: MakeMemory,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    with a.transaction():
        a.fields["owner"] = "a"
        a.text("notes-a").set("a's notes")
    with b.transaction():
        b.fields["owner"] = "b"
        b.buffer("kv-b", shape=(8,), dtype="uint8").array[0] = 1
    sync_pair(a, b)
    snap = assert_converged([a, b])
    (conflict,) = snap.conflicts
    assert conflict.plane == "fields" and conflict.location == "owner"
    assert conflict.kind == "concurrent-write"
    assert set(conflict.authors) == {"a", "b"}


def test_conflicts_of_one_contribution_in_fields_and_a_region_are_listed(
    make_memory: MakeMemory,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    with b.transaction():
        b.fields["j"] = 0
        b.text("t").append("aaa")
    with a.transaction():
        a.fields["j"] = 0
        a.text("t").append("a")
    sync_pair(a, b)
    snap = assert_converged([a, b])
    # The field write conflicts; both creations of "t" apply exactly (pure insertions at 0
    # into the text as the fold has it), so nothing of either is lost.
    assert sorted(c.kind for c in snap.conflicts) == ["concurrent-write"]
    assert sorted(a.text("t").value) == sorted("aaaa")


def test_concurrent_field_write_and_failed_hunk_in_transactions(
    make_memory: MakeMemory,
) -> None:
    """Both kinds reported when they belong to different contributions of the pair."""
    a, b = make_memory("a"), make_memory("b")
    a.text("doc").set(PARAGRAPHS)
    sync_pair(a, b)
    a.fields["owner"] = "a"  # a plain fields contribution ...
    a.text("doc").set(PARAGRAPHS.replace(SENTENCE, "Agent A rewrote this sentence."))
    a.commit()  # ... and a text one
    b.fields["owner"] = "b"
    b.text("doc").set(PARAGRAPHS.replace("quick brown fox jumps", "slow red hen walks"))
    b.commit()
    sync_pair(a, b)
    snap = assert_converged([a, b])
    kinds = sorted(c.kind for c in snap.conflicts)
    assert "concurrent-write" in kinds and "hunk-failed" in kinds


# ---- hostile payloads ---------------------------------------------------------------------


def test_a_hostile_text_patch_never_escapes_receive(make_memory: MakeMemory) -> None:
    r = make_memory("r", space="space")
    r.text("t").set("hello")
    r.commit()
    hunks = [Hunk(0, 0, 29, 0, ()), Hunk(0, 0, 0, 0, ())]
    payload = encode_parts([Part("text", "t", encode_patch(hunks))])
    c = Contribution.create("space", "x", 1, (), 1, 0, "multi", payload)
    before = snapshot(r)
    try:
        r.receive("x", encode_frame(1, [("x", 1)], [c], None))
    except hs.ProtocolError:
        assert snapshot(r) == before
    else:
        r.state_digest()
        r.conflicts()


@pytest.mark.parametrize(
    "part",
    [
        Part("text", "t", b"\xff\xfe"),
        Part("buffer", "kv", b"\x93"),
        Part("delete", "t", b"neither"),
    ],
    ids=["bad-patch", "bad-delta", "bad-delete"],
)
def test_undecodable_region_parts_reject_the_frame(make_memory: MakeMemory, part: Part) -> None:
    r = make_memory("r", space="space")
    r.text("t").set("hello")
    r.commit()
    payload = encode_parts([Part("text", "ok", encode_patch([])), part])
    c = Contribution.create("space", "x", 1, (), 1, 0, "multi", payload)
    before = snapshot(r)
    with pytest.raises(hs.ProtocolError):
        r.receive("x", encode_frame(1, [("x", 1)], [c], None))
    assert snapshot(r) == before


@pytest.mark.parametrize("name", ["", "n" * 257])
def test_a_bad_remote_region_name_is_a_protocol_error(
    make_memory: MakeMemory, name: str
) -> None:
    r = make_memory("r", space="space")
    x = hs.Memory("space", "x", clock=lambda: 0, incarnation=99)
    x.text("ok").set("one")
    x.commit()
    c1 = x.history()[0]
    payload = encode_parts([Part("text", name, encode_patch([Hunk(0, 0, 0, 4, ((1, "evil"),))]))])
    c2 = Contribution.create("space", "x", 2, (c1.id,), 2, 0, "multi", payload)
    dots = {c1.id: ("x", 1)}
    # Directly: the frame is rejected as a protocol error, the replica unchanged.
    before = snapshot(r)
    with pytest.raises(hs.ProtocolError):
        r.receive("x", encode_frame(5, [("x", 2)], [c1, c2], dots.__getitem__))
    assert snapshot(r) == before
    # Parked first, released by its parent: never a non-protocol exception out of receive.
    r.receive("x", encode_frame(5, [("x", 2)], [c2], dots.__getitem__))
    with contextlib.suppress(hs.ProtocolError):
        r.receive("x", encode_frame(5, [("x", 1)], [c1], None))
    assert [c.hex_id for c in r.history()] == [c1.hex_id]
