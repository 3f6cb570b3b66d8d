"""Group commit (``Memory(group_commit=True)``, docs/fields.md): autocommitted field writes
made between two cycles become one contribution at the next cycle.

Every test here fails if the batch is lost, committed at the wrong moment, split wrongly, or
ordered after something it happened before (a remote write, a transaction, a compaction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import hybridsync as hs
from hybridsync.fields._plane import _PENDING_WRITES
from hybridsync.store.sqlite import SQLiteStore
from hybridsync.testing import ManualClock, assert_converged, sync_all, sync_pair

MakeMemory = Callable[..., hs.Memory]


def _group(make_memory: MakeMemory, peer: str, **options: object) -> hs.Memory:
    return make_memory(peer, group_commit=True, **options)


# ---- pending writes -------------------------------------------------------------------------


def test_pending_writes_are_read_at_once_but_not_committed(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    a.fields["goal"] = "ship v1"
    a.fields["n"] = 3
    a.fields["n"] = 4
    assert a.fields["goal"] == "ship v1" and a.fields["n"] == 4 and "goal" in a.fields
    assert a.fields.to_dict() == {"goal": "ship v1", "n": 4}
    assert a.pending_writes == 3
    assert a.history() == [] and a.heads == ()
    assert a.fields_json() == '{"goal":"ship v1","n":4}'


def test_without_group_commit_nothing_is_pending(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    a.fields["x"] = 1
    a.fields["y"] = 2
    assert a.pending_writes == 0 and len(a.history()) == 2


def test_group_commit_must_be_a_bool(make_memory: MakeMemory) -> None:
    with pytest.raises(hs.ConfigError, match="group_commit"):
        make_memory("a", group_commit=1)


@pytest.mark.parametrize("cycle", ["commit", "sync_to", "transaction", "close"])
def test_each_cycle_commits_the_batch_as_one_contribution(
    make_memory: MakeMemory, cycle: str
) -> None:
    a = _group(make_memory, "a")
    for i in range(50):
        a.fields[f"k{i % 7}"] = i
    assert a.history() == []
    if cycle == "commit":
        a.commit()
    elif cycle == "sync_to":
        a.sync_to("b")
    elif cycle == "transaction":
        with a.transaction(note="after"):
            a.fields["t"] = "in the transaction"
    else:
        a.close()
    history = a.history()
    assert a.pending_writes == 0
    assert history[0].kind == "fields" and history[0].note == "" and history[0].seq == 1
    assert len(history) == (2 if cycle == "transaction" else 1)
    if cycle == "transaction":
        assert history[1].note == "after" and history[1].seq == 2
    # the one contribution carries every write: a replica that only gets it sees them all
    b = make_memory("b")
    sync_pair(a, b) if cycle != "close" else b.receive("a", _frame_of(a))
    expected = {f"k{j}": max(i for i in range(50) if i % 7 == j) for j in range(7)}
    got = b.fields.to_dict()
    assert {k: got[k] for k in expected} == expected


def _frame_of(a: hs.Memory) -> bytes:
    frames = a.sync_to("b")
    assert len(frames) == 1
    return frames[0]


def test_poll_commits_the_batch_once_the_interval_has_passed(
    make_memory: MakeMemory, clock: ManualClock
) -> None:
    a = _group(make_memory, "a", commit_interval_ms=100)
    a.fields["x"] = 1
    assert a.poll() is False and a.pending_writes == 1
    clock.advance(100)
    assert a.poll() is True
    assert a.pending_writes == 0 and len(a.history()) == 1


def test_writes_after_a_cycle_start_the_next_batch(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    for batch in range(3):
        for i in range(10):
            a.fields[f"b{batch}.{i}"] = i
        a.commit()
    a.commit()  # nothing pending: no empty contribution
    assert [c.seq for c in a.history()] == [1, 2, 3]


def test_a_transaction_abort_keeps_the_writes_pending_before_it(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    a.fields["before"] = 1
    a.fields["also"] = "kept"
    with pytest.raises(RuntimeError, match="boom"), a.transaction(note="doomed"):
        a.fields["inside"] = 2
        raise RuntimeError("boom")
    assert a.fields.to_dict() == {"also": "kept", "before": 1}
    assert [c.note for c in a.history()] == [""]  # the batch, committed before the block
    b = make_memory("b")
    sync_pair(a, b)
    assert b.fields.to_dict() == {"also": "kept", "before": 1}
    a.fields["after"] = 3  # the plane keeps working after the rebuild
    a.commit()
    sync_pair(a, b)
    assert b.fields.to_dict() == {"after": 3, "also": "kept", "before": 1}


def test_writes_in_a_transaction_join_it_not_the_batch(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    with a.transaction(note="claim"):
        a.fields["x"] = 1
        a.fields["y"] = 2
        assert a.pending_writes == 0
    assert [(c.seq, c.note) for c in a.history()] == [(1, "claim")]


# ---- what ends a batch early -----------------------------------------------------------------


def test_writes_other_than_small_sets_commit_the_batch_then_themselves(
    make_memory: MakeMemory,
) -> None:
    a = _group(make_memory, "a")
    a.fields["x"] = 1
    a.fields["big"] = "y" * 20_000  # larger than a small value
    assert a.pending_writes == 0 and len(a.history()) == 2
    a.fields["z"] = 2
    a.fields["nested"] = {"t1": {"status": "open"}}  # a container
    assert len(a.history()) == 4
    a.fields["w"] = 3
    del a.fields["x"]  # a deletion
    assert len(a.history()) == 6
    a.fields["v"] = 4
    a.fields["nested"]["t1"]["status"] = "done"  # a small set, nested: batched
    assert a.pending_writes == 2 and len(a.history()) == 6
    a.commit()
    b = make_memory("b")
    sync_pair(a, b)
    assert b.fields.to_dict() == a.fields.to_dict()
    assert b.fields["nested"]["t1"]["status"] == "done" and "x" not in b.fields


def test_a_full_batch_commits_itself(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    for i in range(_PENDING_WRITES + 5):
        a.fields[f"k{i % 100}"] = i
    assert len(a.history()) == 1 and a.pending_writes == 5
    a.commit()
    assert len(a.history()) == 2


def test_a_batch_stays_within_the_payload_limit(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    value = "v" * 4000  # small (4 KB), but 2,000 of them would be 8 MB
    for i in range(2_000):
        a.fields[f"key{i}"] = value
    a.commit()
    sizes = [len(c.payload) for c in a.history()]
    assert len(sizes) >= 4 and max(sizes) < (3 << 20)
    b = make_memory("b")
    sync_pair(a, b)
    assert len(b.fields) == 2_000


# ---- observers and the pending hook -----------------------------------------------------------


def test_observers_fire_when_the_batch_is_committed(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    seen: list[hs.Change] = []
    a.observe(seen.append)
    a.fields["x"] = 1
    a.fields["y"] = {"nested": True}  # a container: the batch commits, then this write
    a.fields["y"]["nested"] = False
    a.fields["z"] = 3
    assert [set(ch.paths) for ch in seen] == [{"x"}, {"y"}]
    a.commit()
    assert len(seen) == 3
    last = seen[-1]
    assert last.local and last.seq == 3 and set(last.paths) == {"y/nested", "z"}
    assert [ch.contribution for ch in seen] == [c.hex_id for c in a.history()]


def test_on_pending_is_called_once_per_batch(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    calls: list[int] = []
    unsubscribe = a.on_pending(lambda: calls.append(a.pending_writes))
    a.fields["x"] = 1
    a.fields["y"] = 2
    assert calls == [0]  # called as the batch opens, before its first write lands
    a.commit()
    a.fields["z"] = 3
    assert calls == [0, 0]
    a.commit()
    unsubscribe()
    unsubscribe()  # idempotent
    a.fields["w"] = 4
    assert calls == [0, 0]
    with pytest.raises(hs.ConfigError):
        a.on_pending(42)  # type: ignore[arg-type]


def test_an_on_pending_callback_that_raises_is_logged(
    make_memory: MakeMemory, caplog: pytest.LogCaptureFixture
) -> None:
    a = _group(make_memory, "a")

    def bad() -> None:
        raise ValueError("listener bug")

    a.on_pending(bad)
    with caplog.at_level(logging.ERROR, logger="hybridsync"):
        a.fields["x"] = 1
    assert a.fields["x"] == 1 and "on_pending callback" in caplog.text
    a.commit()
    assert len(a.history()) == 1


def test_observe_without_paths_spares_the_tracking(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    quiet: list[hs.Change] = []
    a.observe(quiet.append, paths=False)
    a.fields["x"] = 1
    assert quiet[-1].paths == ()
    loud: list[hs.Change] = []
    stop = a.observe(loud.append)
    a.fields["y"] = 2
    assert quiet[-1].paths == ("y",) and loud[-1].paths == ("y",)
    stop()
    a.fields["z"] = 3
    assert quiet[-1].paths == () and len(loud) == 1


# ---- durability ------------------------------------------------------------------------------


def test_a_batch_is_durable_once_the_cycle_that_commits_it_returns(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    a = hs.Memory("s", "a", path=str(db), group_commit=True)

    def stored() -> dict[str, object]:
        """What a restart after a crash now would find (a second, read-only connection)."""
        reader = SQLiteStore(db, space="s", peer="a", exclusive=False)
        try:
            other = hs.Memory("s", "reader", store=reader)
            return other.fields.to_dict()
        finally:
            reader.close()

    a.fields["x"] = 1
    a.fields["y"] = 2
    assert stored() == {}  # pending: not durable yet
    a.commit()
    assert stored() == {"x": 1, "y": 2}
    a.fields["z"] = 3
    assert "z" not in stored()
    a.sync_to("b")
    assert stored() == {"x": 1, "y": 2, "z": 3}
    a.fields["w"] = 4
    a.close()  # close commits what is pending
    again = hs.Memory("s", "a", path=str(db), group_commit=True)
    try:
        assert again.fields.to_dict() == {"w": 4, "x": 1, "y": 2, "z": 3}
        assert len(again.history()) == 3
    finally:
        again.close()


# ---- sync, conflicts, convergence --------------------------------------------------------------


def _conflicts(m: hs.Memory) -> list[tuple[str, str, tuple[str, ...], tuple[object, ...]]]:
    return [(c.plane, c.location, c.authors, c.values) for c in m.conflicts()]


@pytest.mark.parametrize("group", [False, True])
def test_a_write_pending_when_a_concurrent_one_arrives_is_a_conflict(
    make_memory: MakeMemory, group: bool
) -> None:
    """The pending write was made before the remote one arrived: it must be committed as
    concurrent with it (the same conflict as without group commit), not after it."""
    a = make_memory("a", group_commit=group)
    b = make_memory("b")
    a.fields["k"] = "from a"
    b.fields["k"] = "from b"
    for frame in b.sync_to("a"):
        a.receive("b", frame)
    sync_pair(a, b)
    assert_converged([a, b])
    assert _conflicts(a) == _conflicts(b)
    (conflict,) = a.conflicts()
    assert conflict.location == "k"
    assert dict(zip(conflict.authors, conflict.values, strict=True)) == {
        "a": "from a", "b": "from b"
    }


def test_conflicts_are_the_same_with_and_without_group_commit(make_memory: MakeMemory) -> None:
    def run(group: bool) -> tuple[list[object], str]:
        a = make_memory("a", group_commit=group, incarnation=1)
        b = make_memory("b", group_commit=group, incarnation=2)
        for r in range(5):
            a.fields[f"k{r}"] = f"a{r}"
            a.fields["shared"] = f"a{r}"
            b.fields["shared"] = f"b{r}"
            b.fields[f"only-b{r}"] = r
            if group:  # the cycle a per-write replica runs after every write
                a.commit()
                b.commit()
            sync_pair(a, b)
        a.fields["late"] = 1
        b.fields["late"] = 2
        sync_pair(a, b)
        assert_converged([a, b])
        # which of a pair is first follows the total order, i.e. the contribution ids,
        # which differ between the modes: compare who wrote what where
        found = [(c.location, sorted(zip(c.authors, map(repr, c.values), strict=True)))
                 for c in a.conflicts()]
        return sorted(found), a.fields_json()

    with_group, without = run(True), run(False)
    assert len(with_group[0]) == 6  # "shared" in each of the 5 rounds, and "late"
    assert with_group == without


def test_a_batch_that_writes_a_key_twice_reports_its_last_value(make_memory: MakeMemory) -> None:
    a = _group(make_memory, "a")
    b = make_memory("b")
    a.fields["k"] = "first"
    a.fields["k"] = "second"
    b.fields["k"] = "b's"
    sync_pair(a, b)
    assert_converged([a, b])
    (conflict,) = a.conflicts()
    assert conflict.location == "k" and set(conflict.values) == {"second", "b's"}


def test_group_commit_replicas_converge(make_memory: MakeMemory) -> None:
    ms = [_group(make_memory, p) for p in "abc"]
    for r in range(40):
        m = ms[r % 3]
        m.fields[f"k{r % 6}"] = r
        m.fields[f"own-{m.peer}"] = r
        if r % 5 == 0:
            m.fields["doc"] = {"round": r}
        if r % 7 == 0:
            sync_all(ms)
    sync_all(ms)
    snap = assert_converged(ms)
    assert all(m.pending_writes == 0 for m in ms)
    assert ms[0].fields["own-c"] == 38 and snap.log_length < 40 * 2


# ---- garbage collection -------------------------------------------------------------------------


def test_compaction_commits_pending_writes_first(make_memory: MakeMemory) -> None:
    """A compaction that drops deleted entries rebuilds the fields document: the pending
    batch is committed first (after the stable prefix), so nothing of it is lost."""
    a = _group(make_memory, "a", gc_min_entries=None)
    b = make_memory("b", gc_min_entries=None)
    for i in range(12):
        a.fields[f"x{i % 3}"] = i  # overwrites: deleted entries for the compaction to drop
        a.commit()
        sync_pair(a, b)
    a.fields["pending"] = "survives"
    a.fields["x0"] = "overwritten while pending"
    assert a.pending_writes == 2
    assert a.collect() == 12
    assert a.pending_writes == 0 and a.stats().compacted == 12
    assert [c.seq for c in a.history()] == [13]
    assert a.fields["pending"] == "survives" and a.fields["x0"] == "overwritten while pending"
    sync_pair(a, b)
    assert a.state_digest() == b.state_digest() and a.heads == b.heads
    assert b.fields["pending"] == "survives"


def test_a_checkpoint_adopted_with_writes_pending_keeps_them(make_memory: MakeMemory) -> None:
    a = make_memory("a", gc_min_entries=4)
    b = make_memory("b", gc_min_entries=4)
    for i in range(20):
        a.fields[f"k{i % 4}"] = i
        sync_pair(a, b)
    assert a.stats().compacted > 0
    d = _group(make_memory, "d", gc_min_entries=4)
    for frame in d.sync_to("a"):  # d says what it holds (nothing): a answers with a checkpoint
        a.receive("d", frame)
    frames = a.sync_to("d")
    d.fields["joiner"] = "pending when the checkpoint came"
    d.fields["k0"] = "d's"
    assert d.pending_writes == 2
    for frame in frames:
        d.receive("a", frame)
    # the batch was committed before the adoption; it sorted inside the checkpoint, so its
    # writes were re-based: written again on the adopted state (pending again, here)
    assert d.stats().late >= 1
    assert d.fields["joiner"] == "pending when the checkpoint came" and d.fields["k0"] == "d's"
    sync_all([a, b, d])
    assert_converged([a, b, d])
    assert a.fields["joiner"] == "pending when the checkpoint came"
    assert a.fields["k0"] == "d's"
