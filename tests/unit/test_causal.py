"""The causal layer: content addresses, version vectors, the HLC, the log and its buffer."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import hybridsync as hs
from hybridsync.causal import (
    ID_BYTES,
    ID_PREFIX_BYTES,
    CausalLog,
    Contribution,
    Draft,
    HybridLogicalClock,
    VersionVector,
    compute_id,
    hlc_split,
)
from hybridsync.testing import ManualClock, assert_converged, snapshot, sync_all
from hybridsync.wire import encode_frame

SPACE = "space"
MakeMemory = Callable[..., hs.Memory]


def _contribution(**overrides: object) -> Contribution:
    fields: dict[str, object] = {
        "space": SPACE, "author": "a", "seq": 1, "parents": (), "lamport": 1, "hlc": 7,
        "kind": "fields", "payload": b"\x00\x00", "note": "",
    }
    fields.update(overrides)
    return Contribution.create(**fields)  # type: ignore[arg-type]


# ---- ids ---------------------------------------------------------------------------------


def test_id_is_blake2b_256_over_the_canonical_encoding() -> None:
    parents = (b"\x02" * 32, b"\x01" * 32)
    c = Contribution.create(SPACE, "a", 3, parents, 4, 99, "fields", b"upd", "note")
    body = msgpack.packb(
        [1, SPACE, "a", 3, sorted(parents), 4, 99, "fields", "note", b"upd"], use_bin_type=True
    )
    assert c.id == hashlib.blake2b(body, digest_size=32).digest()
    assert len(c.id) == ID_BYTES == 32
    assert c.parents == tuple(sorted(parents))  # canonical: parents are sorted
    assert c.hex_id == c.id.hex()


def test_parent_order_does_not_change_the_id() -> None:
    p1, p2 = b"\x01" * 32, b"\x02" * 32
    assert _contribution(parents=(p1, p2)).id == _contribution(parents=(p2, p1)).id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("space", "other-space"),
        ("author", "b"),
        ("seq", 2),
        ("parents", (b"\x01" * 32,)),
        ("lamport", 2),
        ("hlc", 8),
        ("kind", "multi"),
        ("payload", b"\x00\x01"),
        ("note", "n"),
    ],
)
def test_id_changes_with_every_field_and_the_space(field: str, value: object) -> None:
    assert _contribution(**{field: value}).id != _contribution().id


def test_compute_id_matches_create() -> None:
    c = _contribution(note="x")
    assert compute_id(SPACE, c.author, c.seq, c.parents, c.lamport, c.hlc, c.kind, c.note,
                      c.payload) == c.id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("author", "mallory"),
        ("seq", 5),
        ("parents", (b"\x07" * 32,)),
        ("lamport", 9),
        ("hlc", 0),
        ("kind", "multi"),
        ("note", "forged"),
        ("payload", b"\x00\x00\x00"),
        ("id", b"\x00" * 32),
    ],
)
def test_verify_rejects_tampering(field: str, value: object) -> None:
    c = _contribution()
    c.verify(SPACE)  # the honest one passes
    tampered = dataclasses.replace(c, **{field: value})
    with pytest.raises(hs.IntegrityError, match="does not match"):
        tampered.verify(SPACE)


def test_verify_rejects_another_space() -> None:
    with pytest.raises(hs.IntegrityError):
        _contribution().verify("other-space")


def test_contribution_is_frozen() -> None:
    c = _contribution()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seq = 2  # type: ignore[misc]


# ---- version vectors ---------------------------------------------------------------------

vvs = st.dictionaries(st.sampled_from("abcde"), st.integers(0, 6)).map(VersionVector)


def test_version_vector_basics() -> None:
    v = VersionVector({"a": 2, "b": 0})
    assert dict(v) == {"a": 2}  # zero entries are not stored
    assert v.get("b") == 0 and v.get("zz") == 0 and v["a"] == 2
    with pytest.raises(KeyError):
        v["b"]
    assert v == {"a": 2, "c": 0} and v != {"a": 3}
    assert hash(v) == hash(VersionVector({"a": 2}))
    assert v.to_dict() == {"a": 2}
    assert len(VersionVector()) == 0


def test_merge_meet_dominates_examples() -> None:
    a = VersionVector({"x": 2, "y": 1})
    b = VersionVector({"x": 1, "z": 4})
    assert a.merge(b) == {"x": 2, "y": 1, "z": 4}
    assert a.meet(b) == {"x": 1}
    assert not a.dominates(b) and not b.dominates(a)
    assert a.merge(b).dominates(a) and a.merge(b).dominates(b)
    assert a.dominates(a.meet(b))


@given(vvs, vvs, vvs)
def test_merge_and_meet_are_a_lattice(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.meet(b) == b.meet(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.meet(b).meet(c) == a.meet(b.meet(c))
    assert a.merge(a) == a == a.meet(a)
    assert a.merge(a.meet(b)) == a == a.meet(a.merge(b))  # absorption
    m = a.merge(b)
    assert m.dominates(a) and m.dominates(b)
    assert a.dominates(a.meet(b)) and b.dominates(a.meet(b))
    assert (a.dominates(b) and b.dominates(a)) == (a == b)
    assert a.dominates(b) == (a.merge(b) == a)
    for author in "abcde":
        assert m.get(author) == max(a.get(author), b.get(author))
        assert a.meet(b).get(author) == min(a.get(author), b.get(author))


# ---- hybrid logical clock ----------------------------------------------------------------


def test_hlc_follows_physical_time_when_it_moves_forward() -> None:
    clock = ManualClock(1_000)
    hlc = HybridLogicalClock(clock)
    t1 = hlc.tick()
    assert hlc_split(t1) == (1_000, 0)
    clock.advance(5)
    assert hlc_split(hlc.tick()) == (1_005, 0)


def test_hlc_is_monotonic_when_the_clock_goes_backwards() -> None:
    clock = ManualClock(10_000)
    hlc = HybridLogicalClock(clock)
    seen = [hlc.tick()]
    for step in [-5_000, 0, -1, 3, -10_000, 20_000, -1]:
        clock.set(max(0, clock() + step))
        seen.append(hlc.tick())
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    # while the physical clock lags, the ms part holds and the logical part counts up
    assert hlc_split(seen[1]) == (10_000, 1)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2**60)), min_size=1))
def test_hlc_ticks_after_everything_issued_or_observed(events: list[tuple[int, int]]) -> None:
    clock = ManualClock(0)
    hlc = HybridLogicalClock(clock)
    highest = 0
    for now, remote in events:
        clock.set(now)
        hlc.observe(remote)
        highest = max(highest, remote)
        ts = hlc.tick()
        assert ts > highest
        highest = ts


def test_hlc_observe_ignores_older_and_out_of_range_timestamps() -> None:
    hlc = HybridLogicalClock(ManualClock(0), last=500)
    hlc.observe(100)
    assert hlc.last == 500
    hlc.observe(1 << 64)  # not a 64-bit timestamp: ignored
    assert hlc.last == 500
    hlc.observe(900)
    assert hlc.last == 900 and hlc.tick() == 901


def test_replica_hlc_moves_past_remote_timestamps(make_memory: MakeMemory) -> None:
    fast = make_memory("fast", clock=ManualClock(5_000_000))
    slow = make_memory("slow", clock=ManualClock(1_000))
    fast.fields["x"] = 1
    sync_all([fast, slow])
    slow.fields["y"] = 2
    fast_c = fast.history()[0]
    slow_c = next(c for c in slow.history() if c.author == "slow")
    assert slow_c.hlc > fast_c.hlc


# ---- the deterministic total order --------------------------------------------------------


def _three_writers(make_memory: MakeMemory) -> list[hs.Memory]:
    mems = [make_memory(p) for p in ("a", "b", "c")]
    for i, m in enumerate(mems):
        m.fields[f"k{i}"] = i
        m.fields["shared"] = m.peer
    return mems


def test_history_is_sorted_by_lamport_then_id_and_topological(make_memory: MakeMemory) -> None:
    mems = _three_writers(make_memory)
    sync_all(mems)
    mems[0].fields["after"] = True
    sync_all(mems)
    hist = mems[0].history()
    assert [c.order_key for c in hist] == sorted(c.order_key for c in hist)
    position = {c.id: i for i, c in enumerate(hist)}
    for c in hist:
        assert all(position[p] < position[c.id] for p in c.parents)
        lamports = [hist[position[p]].lamport for p in c.parents]
        assert c.lamport == max(lamports, default=0) + 1
    assert len({tuple(c.hex_id for c in m.history()) for m in mems}) == 1


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_total_order_does_not_depend_on_delivery_order(
    make_memory: MakeMemory, order: tuple[int, ...]
) -> None:
    writers = _three_writers(make_memory)
    reader = make_memory("reader")
    for i in order:
        for frame in writers[i].sync_to("reader"):
            reader.receive(writers[i].peer, frame)
    reference = make_memory("reference")
    for w in writers:
        for frame in w.sync_to("reference"):
            reference.receive(w.peer, frame)
    assert [c.id for c in reader.history()] == [c.id for c in reference.history()]
    assert reader.fields_json() == reference.fields_json()


# ---- causal delivery ---------------------------------------------------------------------


def _chain(
    make_memory: MakeMemory, n: int, peer: str = "w"
) -> tuple[hs.Memory, list[bytes]]:
    """A writer with ``n`` contributions, and one frame per contribution (a#k in frame k-1)."""
    w = make_memory(peer, batch_size=1)
    for i in range(n):
        w.fields[f"k{i}"] = i
    frames = w.sync_to("r")
    assert len(frames) == n
    return w, frames


def test_contribution_waits_for_its_parents(make_memory: MakeMemory) -> None:
    w, frames = _chain(make_memory, 5)
    r = make_memory("r")
    applied: list[str] = []
    r.observe(lambda ch: applied.append(ch.contribution))
    for frame in reversed(frames[1:]):
        r.receive("w", frame)
        assert r.history() == [] and r.fields_json() == "{}"
    assert r.stats().pending == 4
    r.receive("w", frames[0])
    assert r.stats().pending == 0
    assert applied == [c.hex_id for c in w.history()]
    assert snapshot(r) == snapshot(w)


def test_every_apply_comes_after_its_parents_under_random_delivery(make_memory: MakeMemory) -> None:
    a, b = make_memory("a", batch_size=1), make_memory("b", batch_size=1)
    for i in range(6):
        a.fields[f"a{i}"] = i
        b.fields[f"b{i}"] = i
        if i % 2:
            sync_all([a, b])
    frames = [("a", f) for f in a.sync_to("r")] + [("b", f) for f in b.sync_to("r")]
    random.Random(3).shuffle(frames)
    r = make_memory("r")
    held: set[bytes] = set()
    by_hex = {c.hex_id: c for c in a.history()}

    def check(change: hs.Change) -> None:
        c = by_hex[change.contribution]
        assert set(c.parents) <= held, "applied before its parents (G3)"
        held.add(c.id)

    r.observe(check)
    for src, frame in frames:
        r.receive(src, frame)
    assert held == {c.id for c in a.history()}
    assert_converged([a, r])


def test_duplicates_are_idempotent(make_memory: MakeMemory) -> None:
    w, frames = _chain(make_memory, 3)
    r = make_memory("r")
    for frame in frames:
        r.receive("w", frame)
    after_once = snapshot(r)
    changes: list[hs.Change] = []
    r.observe(changes.append)
    for frame in frames + frames[::-1]:
        r.receive("w", frame)
    assert snapshot(r) == after_once == snapshot(w)
    assert changes == []


def test_log_add_is_idempotent() -> None:
    log = CausalLog(SPACE)
    c = _contribution()
    log.check(c)
    assert log.add(c) is True
    assert log.add(c) is False
    assert len(log) == 1 and log.heads == {c.id}
    assert log.version_vector() == {"a": 1}


def _draft(c: Contribution, parent_dots: tuple[tuple[str, int], ...] = ()) -> Draft:
    return Draft(c.author, c.seq, parent_dots, c.lamport, c.hlc, c.kind, c.note, c.payload,
                 c.id[:ID_PREFIX_BYTES])


def _log_chain(author: str, n: int) -> list[Contribution]:
    out: list[Contribution] = []
    for seq in range(1, n + 1):
        parents = (out[-1].id,) if out else ()
        out.append(_contribution(author=author, seq=seq, parents=parents, lamport=seq))
    return out


def test_pending_buffer_releases_in_causal_order() -> None:
    log = CausalLog(SPACE)
    chain = _log_chain("a", 4)
    drafts = [_draft(c, ((c.author, c.seq - 1),) if c.seq > 1 else ()) for c in chain]
    for d in reversed(drafts[1:]):
        assert log.park(d) is True
    assert log.pending_count == 3 and log.take_ready() == []
    first = log.resolve(drafts[0])
    assert first == chain[0]
    log.check(first)
    log.add(first)
    applied = [first]
    while ready := log.take_ready():
        for d in ready:
            c = log.resolve(d)
            assert c is not None
            log.check(c)
            log.add(c)
            applied.append(c)
    assert applied == chain and log.pending_count == 0


def test_pending_buffer_is_bounded_and_evicts_the_farthest_draft() -> None:
    log = CausalLog(SPACE, max_pending=2)
    chain = _log_chain("a", 5)
    drafts = {c.seq: _draft(c, ((c.author, c.seq - 1),) if c.seq > 1 else ()) for c in chain}
    assert log.park(drafts[3]) and log.park(drafts[5])
    assert log.pending_count == 2
    # full: a draft farther from applicable (higher lamport) than everything held is refused
    late = _draft(_contribution(author="b", seq=1, lamport=9), ())
    late = dataclasses.replace(late, seq=2, parent_dots=(("b", 1),))
    assert log.park(late) is False
    assert {d.dot for d in log.pending_drafts()} == {("a", 3), ("a", 5)}
    # a nearer one evicts the highest (lamport, dot): a#5
    assert log.park(drafts[2]) is True
    assert {d.dot for d in log.pending_drafts()} == {("a", 2), ("a", 3)}
    assert log.pending_count == 2
    # re-parking a held dot is a no-op
    assert log.park(drafts[2]) is True and log.pending_count == 2


def test_pending_bytes_bound() -> None:
    log = CausalLog(SPACE, max_pending_bytes=300)
    big = _contribution(author="a", seq=2, lamport=2, payload=b"x" * 200)
    assert log.park(_draft(big, (("a", 1),))) is True
    other = _contribution(author="a", seq=3, lamport=3, payload=b"y" * 200)
    assert log.park(_draft(other, (("a", 2),))) is False  # would exceed the byte budget
    assert log.pending_count == 1


def test_replica_with_a_tiny_buffer_still_converges(make_memory: MakeMemory) -> None:
    w, frames = _chain(make_memory, 12)
    r = make_memory("r", max_pending=3)
    for frame in reversed(frames):
        r.receive("w", frame)
        assert r.stats().pending <= 3
    sync_all([w, r])  # anti-entropy resends whatever was evicted
    assert_converged([w, r])


def test_mismatched_id_is_rejected_and_changes_nothing(make_memory: MakeMemory) -> None:
    w = make_memory("w")
    w.fields["x"] = 1
    (frame,) = w.sync_to("r")
    obj = msgpack.unpackb(frame, raw=False)
    item = obj[5][0]
    item[7] = item[7] + b"\x00"  # the payload no longer matches the id prefix
    r = make_memory("r")
    r.fields["mine"] = 1
    before = snapshot(r)
    with pytest.raises(hs.IntegrityError):
        r.receive("w", msgpack.packb(obj, use_bin_type=True))
    assert snapshot(r) == before


def test_log_resolve_rejects_a_wrong_prefix() -> None:
    log = CausalLog(SPACE)
    c = _contribution()
    bad = dataclasses.replace(_draft(c), id_prefix=bytes(8))
    with pytest.raises(hs.IntegrityError, match="does not match"):
        log.resolve(bad)
    short = dataclasses.replace(_draft(c), id_prefix=c.id[:4])
    with pytest.raises(hs.IntegrityError):
        log.resolve(short)


def test_equivocation_is_rejected(make_memory: MakeMemory) -> None:
    honest = make_memory("w")
    honest.fields["x"] = "honest"
    r = make_memory("r")
    for frame in honest.sync_to("r"):
        r.receive("w", frame)
    before = snapshot(r)
    # the same author and seq, other content, with a correct id for that content
    twin = make_memory("w", incarnation=99)
    twin.fields["x"] = "forked"
    (forged,) = twin.sync_to("r")
    with pytest.raises(hs.IntegrityError, match="already held"):
        r.receive("w", forged)
    assert snapshot(r) == before


def test_log_check_rejects_equivocation_and_bad_metadata() -> None:
    log = CausalLog(SPACE)
    c1 = _contribution()
    log.check(c1)
    log.add(c1)
    with pytest.raises(hs.IntegrityError, match="equivocation"):
        log.check(_contribution(note="other"))
    with pytest.raises(hs.IntegrityError, match="lamport"):
        log.check(_contribution(seq=2, parents=(c1.id,), lamport=5))
    with pytest.raises(hs.IntegrityError, match="not held"):
        log.check(_contribution(seq=2, parents=(c1.id, b"\x09" * 32), lamport=2))
    with pytest.raises(hs.IntegrityError, match="arrived before"):
        log.check(_contribution(seq=3, parents=(c1.id,), lamport=2))
    with pytest.raises(hs.IntegrityError, match="arrived before"):
        log.check(_contribution(author="b", seq=2, parents=(c1.id,), lamport=2))
    b1 = _contribution(author="b")
    log.check(b1)
    log.add(b1)
    with pytest.raises(hs.IntegrityError, match="causal past holds"):
        log.check(_contribution(author="b", seq=2, parents=(c1.id,), lamport=2))
    with pytest.raises(hs.IntegrityError, match="wrong length"):
        log.check(dataclasses.replace(_contribution(author="c"), id=b"\x01" * 16))


def test_frame_replayed_from_another_space_is_rejected(make_memory: MakeMemory) -> None:
    other = make_memory("w", space="other-space")
    other.fields["x"] = 1
    (frame,) = other.sync_to("r")
    r = make_memory("r")
    before = snapshot(r)
    with pytest.raises(hs.IntegrityError):
        r.receive("w", frame)
    assert snapshot(r) == before


def test_forged_frame_with_honest_looking_ids_but_skipped_lamport(make_memory: MakeMemory) -> None:
    w = make_memory("w")
    w.fields["x"] = 1
    c1 = w.history()[0]
    c2 = Contribution.create(SPACE, "w", 2, (c1.id,), 7, 0, "fields", b"\x00\x00")
    dots = {c1.id: ("w", 1)}
    frame = encode_frame(1, None, [c1, c2], dots.__getitem__)
    r = make_memory("r")
    before = snapshot(r)
    with pytest.raises(hs.IntegrityError, match="lamport"):
        r.receive("w", frame)
    assert snapshot(r) == before


def test_parked_copy_of_a_contribution_is_not_applied_twice(make_memory: MakeMemory) -> None:
    """w#2 waits in the buffer; a retransmission then brings w#1 and w#2 together. The
    parked copy, released by w#1, must not be applied a second time."""
    w = make_memory("w", batch_size=1)
    w.fields["x"] = 1
    w.fields["x"] = 2
    c1, c2 = w.history()
    store = hs.MemoryStore()
    r = make_memory("r", store=store)
    r.fields["x"] = "mine"  # concurrent with both: every extra apply would add conflicts
    changes: list[hs.Change] = []
    r.observe(changes.append)
    dots = {c1.id: ("w", 1)}
    r.receive("w", encode_frame(1, None, [c2], dots.__getitem__))
    assert r.stats().pending == 1
    r.receive("w", encode_frame(1, None, [c1, c2], dots.__getitem__))
    assert [(ch.author, ch.seq) for ch in changes] == [("w", 1), ("w", 2)]
    assert len(store) == 3 and r.stats().log_length == 3
    assert len(r.conflicts()) == 2  # r#1 against w#1 and against w#2, nothing between w's
    assert all(set(c.authors) == {"r", "w"} for c in r.conflicts())


def test_a_compacted_parent_kept_as_a_stub_is_found_by_its_dot() -> None:
    """a#1 is the parent of b#1, which stays after a#1 and a#2 are compacted: a#1 is kept
    as a stub although a#2 is a's chain stub, and a contribution that names a#1 (as b#1 does,
    written by a member that saw only a#1) still resolves, in the log and after a restore
    from its stubs (learned-star seed 12 refused such work as late)."""
    a1, a2 = _log_chain("a", 2)
    b1 = next(c for i in range(64) if (c := _contribution(
        author="b", seq=1, parents=(a1.id,), lamport=2, payload=bytes([0, i]))).id > a2.id)
    log = CausalLog(SPACE)
    for c in (a1, a2, b1):
        log.check(c)
        log.add(c)
    assert [c.id for c in log.compact(2, set())] == [a1.id, a2.id]
    assert log.id_of("a", 1) == a1.id and log.id_of("a", 2) == a2.id
    assert log.id_of("a", 3) is None and log.id_of("a", 0) is None
    c2 = _contribution(author="c", seq=1, parents=(a1.id,), lamport=2, payload=b"\x00\x02")
    assert log.resolve(_draft(c2, (("a", 1),))) == c2
    again = CausalLog(SPACE)
    again.restore(log.stubs(), log.compacted(), log.gone_dots())
    assert again.id_of("a", 1) == a1.id and again.id_of("a", 2) == a2.id
    assert again.resolve(_draft(c2, (("a", 1),))) == c2
