"""Garbage collection at the causal-stability frontier (DESIGN.md §1, docs/gc.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hybridsync as hs
from hybridsync.errors import PayloadError
from hybridsync.store import MemoryStore
from hybridsync.testing import ManualClock, sync_all, sync_pair
from hybridsync.wire import encode_checkpoint_frame


def _workload(
    gc: int | None, stores: list[MemoryStore] | None = None, rounds: int = 30
) -> list[hs.Memory]:
    clock = lambda: 0  # noqa: E731
    ms = [
        hs.Memory(
            "s",
            p,
            clock=clock,
            incarnation=i + 1,
            gc_min_entries=gc,
            store=stores[i] if stores else None,
        )
        for i, p in enumerate("abc")
    ]
    for r in range(rounds):
        for m in ms:
            m.fields[f"k{r % 5}"] = f"{m.peer}{r}"
            if r % 7 == 3 and "k1" in m.fields:
                del m.fields["k1"]
            m.text("notes").set(m.text("notes").value + f"{m.peer}{r} ")
            if r % 11 == 5 and m.peer == "b":
                m.delete_region("notes")
            m.commit()
        if r % 3:
            sync_all(ms)
    sync_all(ms)
    return ms


def _conflicts(m: hs.Memory) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.kind, c.location, c.contributions) for c in m.conflicts()]


def test_gc_changes_no_value_and_no_conflict() -> None:
    with_gc = _workload(8)
    without = _workload(None)
    assert all(m.stats().compacted > 100 for m in with_gc)
    assert {m.state_digest() for m in with_gc} == {without[0].state_digest()}
    assert _conflicts(with_gc[0]) == _conflicts(without[0])
    assert len(with_gc[0].history()) < len(without[0].history())
    # what is left of the history is the suffix of the full one
    tail = [c.id for c in with_gc[0].history()]
    full = [c.id for c in without[0].history()]
    assert full[-len(tail) :] == tail


def test_restart_from_a_checkpoint(tmp_path: Path) -> None:
    stores = [MemoryStore() for _ in range(3)]
    ms = _workload(8, stores)
    again = hs.Memory("s", "a", clock=lambda: 0, incarnation=99, gc_min_entries=8, store=stores[0])
    assert again.state_digest() == ms[0].state_digest()
    assert _conflicts(again) == _conflicts(ms[0])
    assert again.stats().log_length < 20 and stores[0].get_meta("checkpoint")


def test_sqlite_compaction_and_restart(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    a = hs.Memory("s", "a", path=str(db), clock=lambda: 0, incarnation=1, gc_min_entries=4)
    b = hs.Memory("s", "b", clock=lambda: 0, incarnation=2, gc_min_entries=4)
    for i in range(20):
        a.fields[f"x{i % 3}"] = i
        b.text("t").set(f"version {i}")
        b.commit()
        sync_pair(a, b)
    assert a.stats().compacted > 0
    digest = a.state_digest()
    a.close()
    again = hs.Memory("s", "a", path=str(db), clock=lambda: 0, incarnation=3)
    assert again.state_digest() == digest
    assert again.text("t").value == "version 19"


def test_joiner_catches_up_from_a_checkpoint_and_rebases_its_own_writes() -> None:
    ms = _workload(8)
    d = hs.Memory("s", "d", clock=lambda: 0, incarnation=7, gc_min_entries=8)
    d.fields["joiner"] = 1
    d.text("mine").set("written before joining")
    d.commit()
    sync_pair(ms[0], d)
    assert d.stats().late >= 1 and ms[0].stats().late >= 1  # its early work sorted inside
    sync_all([*ms, d])
    assert len({m.state_digest() for m in [*ms, d]}) == 1
    assert ms[2].fields["joiner"] == 1  # re-based, not lost
    assert ms[2].text("mine").value == "written before joining"


def test_stability_is_gossiped_through_a_relay() -> None:
    """a - hub - c: a and c never talk, yet both learn that everything is stable."""
    clock = lambda: 0  # noqa: E731
    a, hub, c = (
        hs.Memory("s", p, clock=clock, incarnation=i + 1, gc_min_entries=4)
        for i, p in enumerate(["a", "hub", "c"])
    )
    for i in range(12):
        a.fields["a"] = i
        c.fields["c"] = i
        for _ in range(3):
            sync_pair(a, hub)
            sync_pair(hub, c)
    assert a.stats().compacted > 0 and c.stats().compacted > 0
    assert a.state_digest() == c.state_digest() == hub.state_digest()


def test_a_silent_member_blocks_gc_until_it_is_retired() -> None:
    now = [0]
    clock = lambda: now[0]  # noqa: E731
    a, b, silent = (
        hs.Memory("s", p, clock=clock, incarnation=i + 1, gc_min_entries=2, retire_after_ms=60_000)
        for i, p in enumerate("abz")
    )
    silent.fields["hello"] = 1
    sync_pair(silent, a)  # a now knows z as a member; z goes silent
    for i in range(10):
        a.fields["x"] = i
        sync_pair(a, b)
    assert a.stats().compacted == 0  # z never acknowledged
    now[0] = 120_000
    for i in range(10):
        a.fields["x"] = 100 + i
        sync_pair(a, b)
    assert "z" in a.stats().retired and a.stats().compacted > 0
    assert a.state_digest() == b.state_digest()


def test_garbage_checkpoint_frame_is_rejected_and_changes_nothing() -> None:
    d = hs.Memory("s", "d", clock=lambda: 0, incarnation=9)
    d.fields["x"] = 1
    before = d.state_digest()
    for junk in (b"", b"\x91\x01", b"not msgpack at all"):
        with pytest.raises(PayloadError):
            d.receive("a", encode_checkpoint_frame(1, junk))
    assert d.state_digest() == before


def test_a_receiver_of_one_writer_compacts_too() -> None:
    """Once frames stop carrying the writer's version vector (the receiver knows it), the
    writer's contributions themselves acknowledge their causal past: the receiver's frontier
    keeps moving and its log stays as short as the writer's."""
    clock = lambda: 0  # noqa: E731
    writer = hs.Memory("s", "w", clock=clock, incarnation=1, gc_min_entries=4)
    reader = hs.Memory("s", "r", clock=clock, incarnation=2, gc_min_entries=4)
    for i in range(60):
        writer.fields["k"] = i
        writer.text("t").set(f"line {i}\n" * 3)
        writer.commit()
        sync_pair(writer, reader)
    assert reader.fields["k"] == 59 and reader.state_digest() == writer.state_digest()
    assert reader.stats().compacted > 100
    assert reader.stats().log_length <= 2 * max(4, writer.stats().log_length)


def test_an_outside_yjs_client_that_holds_dropped_items_still_lands_its_writes() -> None:
    """A Yjs client (y-protocols endpoint) synced before a compaction keeps the chain of a
    deleted key; its later set of that key names the dropped tail. The replica rewrites the
    update before applying it and exports what it commits, so the write is visible here and
    on a peer."""
    import pycrdt

    from hybridsync.fields._yencode import RawUpdate, decode_raw, encode_raw, with_header

    clock = lambda: 0  # noqa: E731
    a = hs.Memory("s", "a", clock=clock, incarnation=1, gc_min_entries=2)
    b = hs.Memory("s", "b", clock=clock, incarnation=2, gc_min_entries=2)
    a.fields["gone"] = "x"
    del a.fields["gone"]
    sync_pair(a, b)
    client: pycrdt.Doc[Any] = pycrdt.Doc()
    client.apply_update(a.doc.get_update())
    a._pin_anchors()  # what the y-protocols room does while a client is connected
    for i in range(40):  # churn until the checkpoint is big enough to be compacted
        a.fields["other"] = f"{i}" * 400
        sync_pair(a, b)
    assert a.stats().compacted > 0 and a._dropped  # the tail of "gone" was dropped
    before = client.get_state()
    client.get("fields", type=pycrdt.Map)["gone"] = "back"
    # yrs writes this set with no origin; yjs (typeMapSet) names the key's current item,
    # deleted or not, as its origin: write it the way a browser would
    raw = decode_raw(client.get_update(before))
    (tail,) = a._dropped.tails.values()
    as_yjs = encode_raw(RawUpdate(
        tuple((c, tuple(with_header(st, origin=tail, right_origin=None, parent=None,
                                    parent_sub=None) for st in structs))
              for c, structs in raw.clients),
        raw.deletes,
    ))
    a.apply_yjs_update(as_yjs, origin="yjs:client")
    sync_pair(a, b)
    assert a.fields["gone"] == "back" and b.fields["gone"] == "back"
    assert a.state_digest() == b.state_digest()


def _declaring_pair() -> tuple[hs.Memory, hs.Memory]:
    """a compacts its fields checkpoint (dropping deleted keys) while b never reaches its own
    trigger (gc off): b learns a's cut only from a's contributions."""
    clock = lambda: 0  # noqa: E731
    a = hs.Memory("s", "a", clock=clock, incarnation=1, gc_min_entries=2)
    b = hs.Memory("s", "b", clock=clock, incarnation=2, gc_min_entries=None)
    for i in range(30):
        a.fields[f"gone{i}"] = "x" * 400
        sync_pair(a, b)
        del a.fields[f"gone{i}"]
        sync_pair(a, b)
    return a, b


def test_a_receiver_compacts_as_far_as_a_declared_cut_before_applying() -> None:
    a, b = _declaring_pair()
    assert a._fields_cut is not None and a._dropped.tails  # a compacted, anchors exist
    assert b._fields_cut is not None  # b (GC off) caught up with an earlier declaration
    cut = a._fields_cut
    # a's native set of a key whose chain it dropped (no origin) carries a's latest cut
    a.fields["gone3"] = "back"
    assert "cut" in [p.plane for p in hs.regions.decode_parts(a.history()[-1].payload)]
    sync_pair(a, b)
    assert b._fields_cut >= cut  # compacted as far before applying it
    assert b.fields["gone3"] == "back" and a.state_digest() == b.state_digest()
    parts = [p.plane for c in b.history() if c.kind == "multi"
             for p in hs.regions.decode_parts(c.payload)]
    assert "cut" in parts


def test_anchors_are_forgotten_once_a_declaration_is_stable_but_not_while_pinned() -> None:
    clock = lambda: 0  # noqa: E731
    ms = [hs.Memory("s", p, clock=clock, incarnation=i + 1, gc_min_entries=4)
          for i, p in enumerate("ab")]
    release = ms[0]._pin_anchors()
    for r in range(600):
        for m in ms:
            m.fields[f"{m.peer}{r}"] = r
            if r >= 3:
                del m.fields[f"{m.peer}{r - 3}"]
        sync_all(ms)
    pinned = len(ms[0]._dropped.anchors)
    assert pinned > 900  # every deleted key's anchor kept for the connected client
    release()
    for r in range(600, 900):
        for m in ms:
            m.fields[f"{m.peer}{r}"] = r
            del m.fields[f"{m.peer}{r - 3}"]
        sync_all(ms)
    # what is left: the anchors of the compactions since the last stable declaration
    assert len(ms[0]._dropped.anchors) < pinned // 2
    assert len(ms[1]._dropped.anchors) < pinned // 2
    assert ms[0].state_digest() == ms[1].state_digest()


def test_a_malformed_cut_part_rejects_the_frame_and_changes_nothing() -> None:
    from hybridsync.causal import Contribution
    from hybridsync.regions import Part, encode_parts
    from hybridsync.wire import encode_frame

    a = hs.Memory("s", "a")
    a.fields["mine"] = 1
    before = a.state_digest()
    for bad in (b"\xc1", b"\x92\x01\xc4\x03abc", b"\x91\x01", b"\x92\xff\xc4\x20" + b"i" * 32):
        payload = encode_parts([Part("cut", "", bad)])
        c = Contribution.create("s", "x", 1, (), 1, 0, "multi", payload)
        with pytest.raises(PayloadError):
            a.receive("x", encode_frame(5, [("x", 1)], [c], None))
        assert a.state_digest() == before and len(a.history()) == 1
    two = encode_parts([Part("cut", "", b"\x92\x01\xc4\x20" + b"i" * 32)] * 2)
    c = Contribution.create("s", "x", 1, (), 1, 0, "multi", two)
    with pytest.raises(PayloadError):
        a.receive("x", encode_frame(5, [("x", 1)], [c], None))
    assert a.state_digest() == before and len(a.history()) == 1


def test_checkpoint_v3_round_trips_the_anchor_generations(tmp_path: Path) -> None:
    clock = lambda: 0  # noqa: E731
    path = str(tmp_path / "a.db")
    a = hs.Memory("s", "a", clock=clock, incarnation=1, gc_min_entries=2, path=path)
    b = hs.Memory("s", "b", clock=clock, incarnation=2, gc_min_entries=2)
    for i in range(30):
        a.fields[f"k{i}"] = "x" * 400
        del a.fields[f"k{i}"]
        sync_pair(a, b)
    cut, gens, stable2 = a._fields_cut, a._gens, a._stable2
    assert cut is not None
    a.close()
    again = hs.Memory("s", "a", clock=clock, incarnation=3, gc_min_entries=2, path=path)
    assert again._fields_cut == cut and again._gens == gens and again._stable2 == stable2
    assert again._declare  # it says its cut again on its next contribution
    assert again.state_digest() == b.state_digest()


# ---- compaction off the receive path, and retransmission over a reliable transport ------
def _one_writer(gc_min: int) -> tuple[hs.Memory, hs.Memory]:
    a = hs.Memory("s", "a", clock=lambda: 0, incarnation=1, gc_min_entries=gc_min)
    b = hs.Memory("s", "b", clock=lambda: 0, incarnation=2, gc_min_entries=gc_min)
    return a, b


def test_without_auto_collect_receive_never_compacts_and_collect_due_says_when_to() -> None:
    a, b = _one_writer(8)
    b.auto_collect = False
    assert not b.collect_due  # an empty log: the length check alone answers
    for i in range(20):
        a.fields[f"k{i}"] = i
        sync_pair(a, b)
    assert b.stats().compacted == 0 and b.stats().log_length == 20
    assert b.collect_due
    before = dict(b.fields)
    assert b.collect() == 20
    assert not b.collect_due and b.stats().compacted == 20 and dict(b.fields) == before
    b.auto_collect = True  # back on: the next receive that makes it due compacts
    for i in range(8):
        a.fields[f"j{i}"] = i
        sync_pair(a, b)
    assert b.stats().compacted > 20


def test_collect_due_is_false_while_the_head_is_not_stable_or_gc_is_off() -> None:
    a, b = _one_writer(4)
    c = hs.Memory("s", "c", clock=lambda: 0, incarnation=3, gc_min_entries=4)
    b.auto_collect = False
    c.fields["hello"] = 0
    sync_all([a, b, c])  # c is a member b knows, and it will not acknowledge what follows
    for i in range(10):
        a.fields[f"k{i}"] = i
        sync_pair(a, b)
    # eleven held, only c#1 (acknowledged by all) stable: fewer than gc_min_entries
    assert len(b.history()) == 11 and not b.collect_due and b.collect() == 1
    off = hs.Memory("s", "x", gc_min_entries=None)
    assert not off.collect_due
    with pytest.raises(hs.ConfigError):
        b.auto_collect = 1  # type: ignore[assignment]


def test_a_reliable_sync_never_resends_and_resend_sends_the_unacknowledged_again() -> None:
    def stalled(reliable: bool) -> list[list[bytes]]:
        a, b = _one_writer(1 << 20)
        sync_pair(a, b)
        a.fields["k"] = 1
        first = a.sync_to("b", reliable=reliable)  # lost: b never hears of it
        assert first
        return [a.sync_to("b", reliable=reliable) for _ in range(40)]

    assert any(stalled(reliable=False)), "an unreliable link retransmits after a stall"
    assert not any(stalled(reliable=True)), "a reliable one never does"

    a, b = _one_writer(1 << 20)
    sync_pair(a, b)
    a.fields["k"] = 1
    lost = a.sync_to("b", reliable=True)
    assert lost and not a.sync_to("b", reliable=True)
    a.resend("b")  # a new session: what the old one carried may be gone
    again = a.sync_to("b", reliable=True)
    assert again
    for frame in again:
        b.receive("a", frame)
    assert b.fields["k"] == 1
    a.resend("never-seen")  # no link: nothing to do
    with pytest.raises(hs.ConfigError):
        a.sync_to("b", reliable="yes")  # type: ignore[arg-type]


# ---- declared members ---------------------------------------------------------------------
def test_a_declared_member_that_wrote_alone_is_never_late() -> None:
    """The late-joiner shape (tests/sim/test_group_commit_sim.py, _joiner_setup) with the
    members declared: p0 does not compact past p2's unsent writes, so nothing is late and no
    one re-bases."""
    clock = ManualClock(1_700_000_000_000)
    names = ("p0", "p1", "p2")
    p0, p1, p2 = (hs.Memory("s", p, clock=clock, incarnation=i + 1, gc_min_entries=None,
                            members=names) for i, p in enumerate(names))
    for i in range(3):
        p0.fields[f"a{i}"] = i
        p1.fields[f"b{i}"] = i
        sync_pair(p0, p1)
    p2.fields["c"] = "written alone"
    assert p0.collect() == 0, "p2 is a member that has acknowledged nothing yet"
    sync_pair(p2, p1)
    sync_all([p0, p1, p2])
    sync_all([p0, p1, p2])
    assert p0.heads == p1.heads == p2.heads
    assert p0.fields["c"] == "written alone" and p0.stats().late == 0
    assert p0.collect() > 0 and p0.state_digest() == p1.state_digest() == p2.state_digest()


def test_a_declared_member_never_heard_of_blocks_gc_until_it_is_retired() -> None:
    clock = ManualClock(1_700_000_000_000)
    a, b = (hs.Memory("s", p, clock=clock, incarnation=i + 1, gc_min_entries=None,
                      members=("a", "b", "ghost"), retire_after_ms=10_000)
            for i, p in enumerate("ab"))
    for i in range(4):
        a.fields[f"k{i}"] = i
        sync_pair(a, b)
    assert a.collect() == 0 and a.stats().retired == ()
    clock.advance(10_001)
    assert a.collect() == 4 and "ghost" in a.stats().retired


@pytest.mark.parametrize("bad", ["p1", b"p1", [1], ["ok", ""], 5, ["x" * 300]])
def test_members_must_be_peer_names(bad: object) -> None:
    with pytest.raises(hs.ConfigError):
        hs.Memory("s", "a", members=bad)  # type: ignore[arg-type]


def test_compaction_leaves_no_contribution_in_the_conflict_index() -> None:
    """A single writer never has a concurrent contribution, so nothing asks the fields
    conflict index for writes; it deferred every applied contribution and kept them all
    (found by the W1 memory work: ~0.7 KB a cycle, the first payload for good)."""
    a, b = _one_writer(8)
    for i in range(40):
        a.fields[f"k{i % 5}"] = i
        a.text("t").set(f"text {i}")
        a.commit()
        sync_pair(a, b)
    for m in (a, b):
        assert m.stats().compacted > 0
        index = m._conflict_index
        held = {c.id for c in m.history()}
        assert all(c.id in held for c in index._backlog)
        assert set(index._writes) <= held


def test_by_default_a_replica_compacts_by_itself_only_with_declared_members() -> None:
    """``gc_min_entries="auto"``: with members learned as they are heard of, a replica alone
    is its own only member and would fold its own work at once; two such replicas that
    compacted before they met could never take each other's work
    (tests/unit/test_gc_found_by_stateful.py). So by default only declared members turn
    compaction on; an explicit ``gc_min_entries`` opts in with members learned."""
    clock = ManualClock(1_700_000_000_000)

    def make(peer: str, inc: int, **kw: Any) -> hs.Memory:
        return hs.Memory("s", peer, clock=clock, incarnation=inc, **kw)

    learned = [make("a", 1), make("b", 2)]
    for i, m in enumerate(learned):
        for j in range(300):  # past the default threshold, each alone
            m.fields[f"{m.peer}{j % 7}"] = i * 1000 + j
    assert [m.stats().compacted for m in learned] == [0, 0]
    assert not learned[0].collect_due
    sync_all(learned)  # they meet: nothing was compacted, both take everything
    assert learned[0].fields_json() == learned[1].fields_json()
    assert len(learned[0].fields.to_dict()) == 14

    declared = [make(p, i + 10, members=("a", "b")) for i, p in enumerate("ab")]
    for j in range(300):
        declared[0].fields[f"k{j % 7}"] = j
    sync_all(declared)
    assert all(m.stats().compacted > 0 for m in declared)  # 256 stable: compacted by itself

    opted_in = make("a", 20, gc_min_entries=4)
    for j in range(6):
        opted_in.fields["k"] = j
    assert opted_in.collect_due  # alone, its own work is stable at once
    assert opted_in.collect() > 0
    with pytest.raises(hs.ConfigError):
        make("a", 21, gc_min_entries="sometimes")  # type: ignore[arg-type]
