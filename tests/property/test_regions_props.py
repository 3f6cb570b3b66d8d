"""Hypothesis: random region edits on 2–3 replicas under random (lossy, one-way, partial)
sync schedules always end converged after a final bounded pump: the same ``state_digest()``,
heads, history and conflicts, and every working copy equal to its folded value."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hybridsync as hs
from hybridsync.testing import (
    LossyChannel,
    ManualClock,
    assert_converged,
    sync_all,
)

TEXTS = ("t0", "t1")
BUFFER = "b0"
SHAPE = (1500,)  # float32: 6000 bytes, two blocks (one full, one partial)
DTYPE = "float32"
PIECES = ["a", "b", " ", "\n", "word", "😀", "👍🏽", "e\u0301", "\u0301", "日本"]

small_text = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
text_name = st.sampled_from(TEXTS)


def step(n: int) -> st.SearchStrategy[tuple[Any, ...]]:
    r = st.integers(0, n - 1)
    return st.one_of(
        st.tuples(st.just("set"), r, text_name, small_text),
        st.tuples(st.just("insert"), r, text_name, st.integers(0, 40), small_text),
        st.tuples(st.just("delete"), r, text_name, st.integers(0, 40), st.integers(0, 8)),
        st.tuples(st.just("append"), r, text_name, small_text),
        st.tuples(st.just("write"), r, st.integers(0, SHAPE[0] - 1),
                  st.integers(-1000, 1000)),
        st.tuples(st.just("fill"), r, st.integers(0, 1), st.integers(-5, 5)),
        st.tuples(st.just("delete_region"), r, st.sampled_from([*TEXTS, BUFFER])),
        st.tuples(st.just("txn"), r, text_name, small_text, st.sampled_from(["k", "j"]),
                  st.integers(0, 9)),
        st.tuples(st.just("commit"), r),
        st.tuples(st.just("send"), r, r),
        st.tuples(st.just("send"), r, r),
        st.tuples(st.just("lose"), r, r),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[tuple[Any, ...]]]:
    n = draw(st.integers(2, 3))
    return n, draw(st.lists(step(n), min_size=1, max_size=30))


def run_step(mems: list[hs.Memory], s: tuple[Any, ...]) -> None:
    op, i = s[0], s[1]
    m = mems[i]
    if op in ("send", "lose"):
        j = s[2]
        if i == j:
            return
        frames = m.sync_to(mems[j].peer)
        if op == "send":
            for f in frames:
                mems[j].receive(m.peer, f)
    elif op == "set":
        m.text(s[2]).set(s[3])
    elif op == "insert":
        t = m.text(s[2])
        t.insert(min(s[3], len(t)), s[4])
    elif op == "delete":
        m.text(s[2]).delete(s[3], s[4])
    elif op == "append":
        m.text(s[2]).append(s[3])
    elif op == "write":
        m.buffer(BUFFER, shape=SHAPE, dtype=DTYPE).write(s[2], [float(s[3])])
    elif op == "fill":
        arr = m.buffer(BUFFER, shape=SHAPE, dtype=DTYPE).array
        block = 1024  # float32 elements per 4 KiB block
        arr[s[2] * block : (s[2] + 1) * block] = float(s[3])
    elif op == "delete_region":
        # Any region this replica has a handle for, even one it never committed; unknown
        # names raise KeyError.
        with contextlib.suppress(KeyError):
            m.delete_region(s[2])
    elif op == "txn":
        with m.transaction(note="txn"):
            m.fields[s[4]] = s[5]
            m.text(s[2]).append(s[3])
    elif op == "commit":
        m.commit()
    else:  # pragma: no cover - the strategy draws only the ops above
        raise AssertionError(op)


def check_working_copies(mem: hs.Memory) -> None:
    """After a sync, what the handles show is what the fold computed."""
    for kind, name, data in mem.region_bytes():
        if kind == "text":
            assert mem.text(name).value.encode() == data
        else:
            assert mem.buffer(name, shape=SHAPE, dtype=DTYPE).read().tobytes() == data
    for name in TEXTS:
        if name not in mem.regions() and name in mem._regions.texts:
            assert mem.text(name).value == ""


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_region_edits_under_random_sync_converge(
    scenario: tuple[int, list[tuple[Any, ...]]],
) -> None:
    n, steps = scenario
    clock = ManualClock(1_700_000_000_000)
    incarnations = itertools.count(1)
    mems = [hs.Memory("space", f"p{k}", clock=clock, incarnation=next(incarnations))
            for k in range(n)]
    try:
        for s in steps:
            run_step(mems, s)
            clock.advance(1)
        sync_all(mems, max_rounds=2_000)
        snap = assert_converged(mems)
        assert {c.kind for c in snap.conflicts} <= {
            "hunk-failed", "edit-of-deleted-region", "block-overwritten", "concurrent-write"}
        for m in mems:
            check_working_copies(m)
            assert m.stats().pending == 0
        # Converged replicas stay converged: nothing left to commit, nothing to send.
        for m in mems:
            m.commit()
        assert sync_all(mems, max_rounds=50) == 0
        assert assert_converged(mems) == snap
    finally:
        for m in mems:
            m.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), small_text, st.integers(0, 40)), min_size=2,
                max_size=12),
       st.integers(0, 2**32))
def test_concurrent_text_edits_give_the_same_result_over_any_channel(
    edits: list[tuple[int, str, int]], seed: int,
) -> None:
    """The same concurrent edits, delivered directly or through a lossy, duplicating,
    reordering channel, give the same bytes, history and conflicts."""
    results = []
    for channel in (None, LossyChannel(seed=seed, loss_probability=0.2,
                                       duplicate_probability=0.3)):
        clock = ManualClock(1_700_000_000_000)
        mems = [hs.Memory("space", f"p{k}", clock=clock, incarnation=k + 1) for k in range(3)]
        try:
            mems[0].text("t").set("shared base text 😀 with e\u0301 marks\n")
            sync_all(mems)
            for who, piece, at in edits:
                t = mems[who].text("t")
                t.insert(min(at, len(t)), piece)
                mems[who].commit()
            if channel is not None:
                sync_all(mems, channel=channel, max_rounds=2_000)
            sync_all(mems, max_rounds=2_000)
            snap = assert_converged(mems)
            results.append((snap.digest, snap.history, snap.conflicts))
        finally:
            for m in mems:
                m.close()
    assert results[0] == results[1]
