"""Late work under open membership: a replica that compacted without a member it did not know
yet rolls back to a peer's older checkpoint and applies the late work at its place in the
order (docs/gc.md, "Late work: roll-back"). The joiner shapes that used to break live in
tests/sim/test_group_commit_sim.py; here: the wire, the store, the all-or-nothing swap,
durability and the refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

import hybridsync as hs
from hybridsync._gc import decode_checkpoint
from hybridsync.causal import Contribution
from hybridsync.errors import FrameError, PayloadError
from hybridsync.store import MemoryStore
from hybridsync.store.sqlite import SQLiteStore
from hybridsync.testing import ManualClock, sync_all, sync_pair
from hybridsync.wire import decode_frame, encode_checkpoint_frame, encode_frame

MakeMemory = Callable[..., hs.Memory]


def _setup(make: MakeMemory, **p0_options: object) -> tuple[hs.Memory, hs.Memory, hs.Memory]:
    """p0 and p1 write and sync; p2, never heard of, writes alone; p0 compacts everything."""
    p0 = make("p0", gc_min_entries=None, **p0_options)
    p1 = make("p1", gc_min_entries=None)
    p2 = make("p2", gc_min_entries=None)
    for i in range(3):
        p0.fields[f"a{i}"] = i
        p1.fields[f"b{i}"] = i
        p0.text("notes").set(f"p0 line {i}\n")
        sync_pair(p0, p1)
    p2.fields["c"] = "written alone"
    p2.text("notes").set("p2's own notes\n")
    p2.commit()
    assert p0.collect() > 0
    return p0, p1, p2


def _late_at_p0(p0: hs.Memory, p1: hs.Memory, p2: hs.Memory) -> None:
    """p2's work reaches p1 (accepted) and p0 (late: it sorts inside p0's checkpoint)."""
    sync_pair(p2, p1)
    for frame in p1.sync_to("p0"):
        p0.receive("p1", frame)
    assert p0.stats().late > 0 and "c" not in p0.fields


# ---- the wire ------------------------------------------------------------------------------


def test_a_rollback_request_and_an_offer_round_trip() -> None:
    frame = decode_frame(encode_frame(7, [("a", 2)], [], lambda _: ("a", 1), None, 41))
    assert frame.rollback == 41 and frame.vv == {"a": 2} and frame.acks is None
    with_acks = decode_frame(encode_frame(7, [("a", 2)], [], lambda _: ("a", 1),
                                          [("b", [("a", 1)])], 5))
    assert with_acks.rollback == 5 and with_acks.acks == {"b": {"a": 1}}
    offer = decode_frame(encode_checkpoint_frame(7, b"", offer=True))
    assert offer.offer and offer.checkpoint == b""
    plain = decode_frame(encode_checkpoint_frame(7, b"xyz"))
    assert not plain.offer and plain.rollback is None


@pytest.mark.parametrize("tail", [[None, 0], [None, -1], [None, "5"], [None, 1 << 60],
                                  [None, 3, 4]])
def test_a_malformed_rollback_request_is_rejected(tail: list[object]) -> None:
    frame = msgpack.packb([1, 1, 7, ["a"], [1], [], *tail], use_bin_type=True)
    with pytest.raises(FrameError):
        decode_frame(frame)


@pytest.mark.parametrize("flag", [0, 2, True, "1", None])
def test_a_malformed_offer_flag_is_rejected(flag: object) -> None:
    with pytest.raises(FrameError):
        decode_frame(msgpack.packb([1, 2, 7, b"", flag], use_bin_type=True))


# ---- the store -----------------------------------------------------------------------------


def _contributions(n: int) -> list[Contribution]:
    mem = hs.Memory("s", "w", clock=lambda: 0, incarnation=1, gc_min_entries=None)
    for i in range(n):
        mem.fields["k"] = i
        mem.commit()
    return mem.history()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_compact_with_add_replaces_the_log_in_one_step(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(
        str(tmp_path / "a.db"), space="s", peer="w")
    cs = _contributions(4)
    store.append(cs[:3])
    store.compact([cs[0].id, cs[1].id], b"checkpoint", [cs[2], cs[3]])
    assert [c.id for c in store.contributions()] == [cs[2].id, cs[3].id]
    assert store.get_meta("checkpoint") == b"checkpoint"
    store.close()


def test_an_sqlite_compaction_that_fails_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "a.db"), space="s", peer="w")
    cs = _contributions(3)
    store.append(cs[:2])
    store.set_meta("checkpoint", b"old")
    bad = Contribution(cs[2].id, cs[2].author, cs[2].seq, cs[2].parents, cs[2].lamport,
                       cs[2].hlc, cs[2].kind, cs[2].note, object())  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 (sqlite refuses the payload's type)
        store.compact([cs[0].id], b"new", [bad])
    assert [c.id for c in store.contributions()] == [cs[0].id, cs[1].id]
    assert store.get_meta("checkpoint") == b"old"
    store.close()


# ---- the roll-back -------------------------------------------------------------------------


def test_a_rollback_applies_late_work_at_its_place_and_everyone_agrees(
    make_memory: MakeMemory,
) -> None:
    p0, p1, p2 = _setup(make_memory)
    _late_at_p0(p0, p1, p2)
    sync_all([p0, p1, p2])
    assert p0.stats().rollbacks == 1
    assert p0.fields["c"] == "written alone"
    assert p0.state_digest() == p1.state_digest() == p2.state_digest()
    assert p0.heads == p1.heads == p2.heads
    assert p0.conflicts() == p1.conflicts() == p2.conflicts()
    # the order is the one a replica that never compacted has: p1 and p2 never did
    assert [c.hex_id for c in p0.history()] == [c.hex_id for c in p1.history()]
    assert p0.compacted_upto is None  # p1 never compacted: p0 went back to the empty state


def test_a_rollback_survives_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    path = str(tmp_path / "p0.db")

    def make(peer: str, **options: object) -> hs.Memory:
        options.setdefault("incarnation", {"p0": 1, "p1": 2, "p2": 3}[peer])
        return hs.Memory("space", peer, clock=clock, **options)  # type: ignore[arg-type]

    p0, p1, p2 = _setup(make, path=path)
    _late_at_p0(p0, p1, p2)
    sync_all([p0, p1, p2])
    assert p0.stats().rollbacks == 1
    digest, heads = p0.state_digest(), p0.heads
    p0.close()
    again = hs.Memory("space", "p0", clock=clock, incarnation=4, path=path,
                      gc_min_entries=None)
    assert again.state_digest() == digest and again.heads == heads
    assert again.fields["c"] == "written alone"
    again.close()


def test_a_peer_that_lacks_what_we_compacted_cannot_serve_a_rollback(
    make_memory: MakeMemory,
) -> None:
    """p2 sent its work towards p1 (the frames are lost), so it declines p0's checkpoint (p1
    may hold that work). p0 asks p2 for a roll-back; p2 holds its late work but not what p0
    compacted: p0 abandons it and does not ask p2 again; nothing changes, the two fall
    quiet. Once p1 is heard, p2 learns what it lacks and all three converge."""
    p0, p1, p2 = _setup(make_memory)
    assert p2.sync_to("p1")  # lost in the network
    before = p0.state_digest()
    for _ in range(10):
        frames = [(p2, p0, f) for f in p2.sync_to("p0")] + [(p0, p2, f) for f in p0.sync_to("p2")]
        for src, dst, f in frames:
            dst.receive(src.peer, f)
        if not frames:
            break
    else:
        pytest.fail("p0 and p2 kept exchanging frames")
    assert p0.stats().late > 0 and p0.stats().rollbacks == 0 and p2.stats().late == 0
    assert p0.state_digest() == before and p0._rollback is None
    assert ("p2", min(d.lamport for d in p0._late_pool.values())) in p0._rollback_failed
    p1.resend("p2")
    p2.resend("p1")
    sync_all([p0, p1, p2])
    assert p0.state_digest() == p1.state_digest() == p2.state_digest()
    assert p0.fields["c"] == "written alone" and p0.stats().rollbacks == 1


def test_a_rollback_with_a_forged_contribution_restores_the_state(
    make_memory: MakeMemory,
) -> None:
    """A serving peer that sends a contribution whose id does not match its content: the
    swap fails, the state is restored exactly, the roll-back is abandoned."""
    p0, p1, p2 = _setup(make_memory)
    _late_at_p0(p0, p1, p2)
    digest, heads, fields = p0.state_digest(), p0.heads, p0.fields_json()
    frames = p0.sync_to("p1")  # carries the roll-back request
    assert any(decode_frame(f).rollback for f in frames)
    for f in frames:
        p1.receive("p0", f)
    answer = p1.sync_to("p0")
    assert decode_frame(answer[0]).offer
    p0.receive("p1", answer[0])
    assert p0._rollback is not None
    # forge: p0#1's payload changed, its id prefix kept (only the swap recomputes the id)
    forged = []
    for f in answer[1:]:
        obj = msgpack.unpackb(f, raw=False)
        for item in obj[5]:
            if obj[3][item[0]] == "p0" and item[1] == 1:
                item[6] = "forged note"
        forged.append(msgpack.packb(obj, use_bin_type=True))
    for f in forged:
        p0.receive("p1", f)
    assert p0._rollback is None and p0.stats().rollbacks == 0
    assert (p0.state_digest(), p0.heads, p0.fields_json()) == (digest, heads, fields)
    assert p0.stats().rejected > 0


def test_a_rollback_whose_frames_were_lost_is_asked_for_again(
    make_memory: MakeMemory,
) -> None:
    """p1 answers p0's request, but only the offer arrives: the contributions of p0's
    compacted range that follow are lost, and so is everything p1 sends for a while. What p1
    believes p0 holds may then never make it resend them (learned-star seed 40 stayed stuck
    so): p0 asks again after a while, p1 serves again, and the roll-back completes."""
    p0, p1, p2 = _setup(make_memory)
    _late_at_p0(p0, p1, p2)
    for f in p0.sync_to("p1"):  # carries the roll-back request
        p1.receive("p0", f)
    answer = p1.sync_to("p0")
    assert decode_frame(answer[0]).offer and len(answer) > 1
    p0.receive("p1", answer[0])  # the rest is lost
    assert p0._rollback is not None and p0._rollback.need
    asked_again = False
    for _ in range(200):  # p1's frames keep being lost until p0 asks again
        frames = p0.sync_to("p1")
        asked_again = any(decode_frame(f).rollback for f in frames)
        for f in frames:
            p1.receive("p0", f)
        if asked_again:
            break
        p1.sync_to("p0")
    assert asked_again
    answer = p1.sync_to("p0")
    assert decode_frame(answer[0]).offer  # served again
    for f in answer:
        p0.receive("p1", f)
    assert p0.stats().rollbacks == 1 and p0._rollback is None
    sync_all([p0, p1, p2])
    assert p0.fields["c"] == "written alone"
    assert p0.state_digest() == p1.state_digest() == p2.state_digest()


def test_a_rollback_given_up_because_the_server_compacted_is_asked_again(
    make_memory: MakeMemory,
) -> None:
    """p1 offers the empty state (it never compacted), then compacts and sends its new
    checkpoint before the roll-back completes: p0 gives that roll-back up, but p1 changed,
    so p0 asks it again and rolls back to the new checkpoint, which holds p2's late work
    (learned-star seed 174 gave p1 up for good)."""
    p0, p1, p2 = _setup(make_memory)
    _late_at_p0(p0, p1, p2)
    for f in p0.sync_to("p1"):
        p1.receive("p0", f)
    answer = p1.sync_to("p0")
    p0.receive("p1", answer[0])  # the empty offer; the rest is lost
    assert p0._rollback is not None and p0._rollback.checkpoint is None
    for f in p1.sync_to("p2"):
        p2.receive("p1", f)
    sync_pair(p1, p2)
    assert p1.collect() > 0
    plain = [f for f in p1.sync_to("p0") if decode_frame(f).checkpoint]
    assert plain and not decode_frame(plain[0]).offer
    p0.receive("p1", plain[0])
    assert p0._rollback is None and p0.stats().rollbacks == 0
    for _ in range(200):
        for f in p0.sync_to("p1"):
            p1.receive("p0", f)
        for f in p1.sync_to("p0"):
            p0.receive("p1", f)
        if p0.stats().rollbacks:
            break
    assert p0.stats().rollbacks == 1 and p0.fields["c"] == "written alone"
    sync_all([p0, p1, p2])
    assert p0.state_digest() == p1.state_digest() == p2.state_digest()


def test_a_garbage_offer_is_rejected_and_changes_nothing(make_memory: MakeMemory) -> None:
    p0, p1, p2 = _setup(make_memory)
    _late_at_p0(p0, p1, p2)
    before = p0.state_digest()
    with pytest.raises(PayloadError):
        p0.receive("p1", encode_checkpoint_frame(5, b"not a checkpoint", offer=True))
    assert p0.state_digest() == before and p0._rollback is None


def test_an_offer_without_late_work_is_ignored(make_memory: MakeMemory) -> None:
    a = make_memory("a")
    a.fields["x"] = 1
    before = a.state_digest()
    a.receive("b", encode_checkpoint_frame(5, b"", offer=True))
    assert a.state_digest() == before and a._rollback is None


def test_a_replica_serves_a_rollback_only_from_an_older_checkpoint(
    make_memory: MakeMemory,
) -> None:
    a = make_memory("a", gc_min_entries=None)
    b = make_memory("b", gc_min_entries=None)
    for i in range(3):
        a.fields[f"k{i}"] = i
        sync_pair(a, b)
    assert a.collect() > 0
    base = a.compacted_upto
    assert base is not None
    b.fields["y"] = 1
    sync_pair(a, b)
    asks = [base[0] - 1, base[0]]  # before our base: cannot serve; at its lamport: can
    answers = []
    for lamport in asks:
        a.receive("b", encode_frame(b.incarnation, sorted(b.version_vector.items()), [],
                                    lambda _: ("b", 1), None, lamport))
        answers.append([decode_frame(f) for f in a.sync_to("b")])
    cannot, can = answers
    # both are answered with our checkpoint (b learns "cannot" from its base); only the
    # servable one is followed by everything after it
    assert cannot[0].offer and can[0].offer
    assert decode_checkpoint("space", cannot[0].checkpoint or b"").base == base
    assert sum(len(f.drafts) for f in cannot) == 0
    assert sum(len(f.drafts) for f in can) == len(a.history()) > 0
