"""``Memory``: configuration, sans-I/O sync (acks, loss, duplication, reordering, batching),
restart from a store, stats, and atomic rejection of bad frames."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

import hybridsync as hs
from hybridsync.causal import Contribution
from hybridsync.store.sqlite import SQLiteStore
from hybridsync.testing import (
    LossyChannel,
    ManualClock,
    StoreConformance,
    assert_converged,
    snapshot,
    sync_all,
    sync_pair,
)
from hybridsync.wire import encode_frame

MakeMemory = Callable[..., hs.Memory]


# ---- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"space": ""}, {"space": 3}, {"space": "s" * 257}, {"peer": ""}, {"peer": None},
        {"peer": "p" * 257}, {"batch_size": 0}, {"batch_size": True}, {"batch_size": 1.5},
        {"max_frame_bytes": 10}, {"retransmit_rounds": 0}, {"incarnation": -1},
        {"incarnation": 2**64}, {"incarnation": "1"}, {"clock": 5},
        {"store": "memory-store", "path": "x.db"},
    ],
    ids=repr,
)
def test_bad_configuration_raises_config_error(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"space": "s", "peer": "p", "clock": lambda: 0, "incarnation": 1}
    args.update(kwargs)
    if args.get("store") == "memory-store":
        args["store"] = hs.MemoryStore()
    space, peer = args.pop("space"), args.pop("peer")
    with pytest.raises(hs.ConfigError) as info:
        hs.Memory(space, peer, **args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_defaults_need_no_clock_or_incarnation() -> None:
    m = hs.Memory("s", "p")
    m.fields["x"] = 1
    assert m.incarnation > 0 and m.history()[0].hlc > 0


@pytest.mark.parametrize("peer", ["", None, 5, "a", "x" * 300])
def test_bad_peer_names_for_sync(make_memory: MakeMemory, peer: object) -> None:
    a = make_memory("a")
    with pytest.raises(hs.ConfigError):
        a.sync_to(peer)  # type: ignore[arg-type]
    with pytest.raises(hs.ConfigError):
        a.receive(peer, b"\x00")  # type: ignore[arg-type]


# ---- sync ---------------------------------------------------------------------------------


def test_acknowledgements_stop_traffic(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["x"] = 1
    b.fields["y"] = 2
    rounds = sync_pair(a, b)
    assert 0 < rounds <= 3
    assert a.sync_to("b") == [] and b.sync_to("a") == []
    assert a.sync_to("b") == [] and b.sync_to("a") == []  # and it stays quiet
    a.fields["z"] = 3
    frames = a.sync_to("b")
    assert len(frames) == 1
    for f in frames:
        b.receive("a", f)
    ack = b.sync_to("a")
    assert len(ack) == 1
    for f in ack:
        a.receive("b", f)
    assert a.sync_to("b") == [] and b.sync_to("a") == []
    assert_converged([a, b])


def test_first_contact_exchanges_version_vectors(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    sync_pair(a, b)  # nothing to send but the handshake
    assert a.sync_to("b") == [] and b.sync_to("a") == []
    assert a.stats().frames_sent >= 1 and b.stats().frames_received >= 1


@pytest.mark.parametrize("seed", range(6))
def test_converges_over_a_lossy_duplicating_reordering_channel(
    make_memory: MakeMemory, clock: ManualClock, seed: int
) -> None:
    mems = [make_memory(p, retransmit_rounds=2) for p in ("a", "b", "c", "d")]
    channel = LossyChannel(seed=seed, loss_probability=0.3, duplicate_probability=0.2)
    commits = 0
    for step in range(30):
        m = mems[(step * 7 + seed) % len(mems)]
        m.fields[f"k{step % 5}"] = {"step": step, "by": m.peer}
        if step % 3 == 0:
            del m.fields[f"k{step % 5}"]
            commits += 1
        commits += 1
        clock.advance(1)
        for src in mems:
            for dst in mems:
                if src is not dst:
                    for frame in src.sync_to(dst.peer):
                        channel.send(src.peer, dst.peer, frame)
        channel.deliver(mems)
    assert channel.stats.dropped > 0 and channel.stats.duplicated > 0
    channel.loss_probability = 0.0  # the faults stop (duplication and reordering go on)
    sync_all(mems, channel=channel)
    snap = assert_converged(mems)
    assert snap.log_length == commits


def test_lossy_channel_is_deterministic_per_seed(make_memory: MakeMemory) -> None:
    def run(seed: int) -> tuple[int, int, int]:
        a, b = hs.Memory("s", "a", clock=lambda: 0, incarnation=1), hs.Memory(
            "s", "b", clock=lambda: 0, incarnation=2
        )
        ch = LossyChannel(seed=seed, loss_probability=0.5, duplicate_probability=0.5)
        for i in range(10):
            a.fields[f"k{i}"] = i
            for f in a.sync_to("b"):
                ch.send("a", "b", f)
            for f in b.sync_to("a"):
                ch.send("b", "a", f)
            ch.deliver([a, b])
        return ch.stats.dropped, ch.stats.duplicated, len(b.history())

    assert run(1) == run(1)
    assert len({run(s) for s in range(8)}) > 1


def test_lossy_channel_validates_its_options() -> None:
    for bad in ({"seed": "1"}, {"seed": 1, "loss_probability": 1.5},
                {"seed": 1, "duplicate_probability": -0.1}, {"seed": True}):
        with pytest.raises(hs.ConfigError):
            LossyChannel(**bad)  # type: ignore[arg-type]


def test_sync_all_reports_replicas_that_never_settle(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["x"] = 1
    black_hole = LossyChannel(seed=0, loss_probability=1.0)
    with pytest.raises(hs.GuaranteeViolation, match="did not settle"):
        sync_all([a, b], channel=black_hole, max_rounds=50)
    with pytest.raises(hs.ConfigError):
        sync_all([a])
    with pytest.raises(hs.ConfigError):
        sync_all([a, b], max_rounds=0)


def _workload(batch_size: int) -> tuple[hs.Memory, list[int]]:
    """Two writers with fixed clocks and incarnations (so ids are identical across runs)
    feeding a reader; returns the reader and the frame count of each delivery."""
    w1 = hs.Memory("s", "w1", clock=lambda: 1000, incarnation=1, batch_size=batch_size)
    w2 = hs.Memory("s", "w2", clock=lambda: 2000, incarnation=2, batch_size=batch_size)
    for i in range(20):
        w1.fields[f"k{i % 4}"] = i
        w2.fields[f"k{i % 3}"] = [i, {"w2": True}]
        if i % 5 == 0:
            sync_pair(w1, w2)
    reader = hs.Memory("s", "r", clock=lambda: 0, incarnation=3, batch_size=batch_size)
    counts = []
    for w in (w2, w1):
        frames = w.sync_to("r")
        counts.append(len(frames))
        for f in frames:
            reader.receive(w.peer, f)
    sync_all([w1, w2, reader])
    return reader, counts


def test_batching_does_not_change_state_or_history() -> None:
    small, small_counts = _workload(1)
    large, large_counts = _workload(4096)
    assert snapshot(small) == snapshot(large)
    assert small.conflicts() and small.conflicts() == large.conflicts()
    assert large_counts == [1, 1]
    assert all(n >= 20 for n in small_counts)


def test_small_frames_split_large_commits(make_memory: MakeMemory) -> None:
    a = make_memory("a", max_frame_bytes=1024)
    b = make_memory("b")
    for i in range(5):
        a.fields[f"blob{i}"] = bytes([i]) * 900
    frames = a.sync_to("b")
    assert len(frames) == 5
    for f in frames:
        b.receive("a", f)
    assert_converged([a, b])


def test_relay_through_a_third_replica(make_memory: MakeMemory) -> None:
    a, hub, c = make_memory("a"), make_memory("hub"), make_memory("c")
    a.fields["from_a"] = 1
    c.fields["from_c"] = 2
    for _ in range(3):
        sync_pair(a, hub)
        sync_pair(hub, c)
    assert_converged([a, hub, c])
    assert a.fields.to_dict() == {"from_a": 1, "from_c": 2}


def test_restart_from_a_store_keeps_every_commit(make_memory: MakeMemory) -> None:
    store = hs.MemoryStore()
    a = make_memory("a", store=store)
    b = make_memory("b")
    a.fields["x"] = 1
    sync_pair(a, b)
    b.fields["x"] = 2
    sync_pair(a, b)
    with a.transaction(note="before crash"):
        a.fields["y"] = {"nested": [1, 2]}
    unsent = snapshot(a)
    a.close()
    del a
    a2 = make_memory("a", store=store)  # a new incarnation on the same store
    assert snapshot(a2) == unsent
    a2.fields["z"] = "after restart"
    b.fields["w"] = "meanwhile"
    sync_pair(a2, b)
    snap = assert_converged([a2, b])
    assert snap.log_length == 5  # a#1 b#1 a#2 (the transaction) a#3 b#2
    assert [c.seq for c in a2.history() if c.author == "a"] == [1, 2, 3]
    assert b.fields["y"] == {"nested": [1, 2]} and b.fields["z"] == "after restart"


def test_restarted_peer_is_resynced_by_its_partners(make_memory: MakeMemory) -> None:
    store = hs.MemoryStore()
    a = make_memory("a", store=store)
    b = make_memory("b")
    a.fields["x"] = 1
    sync_pair(a, b)
    a2 = make_memory("a", store=store)
    b.fields["only_b"] = True  # b's link still believes the old incarnation's state
    sync_pair(a2, b)
    assert_converged([a2, b])


def test_stats_and_frontier(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["x"] = "v"
    b.fields["y"] = "w"
    s = a.stats()
    assert s.log_length == 1 and s.heads == 1 and s.version_vector == {"a": 1}
    assert s.stable_frontier == {"a": 1}  # nobody else known yet
    sync_pair(a, b)
    for m in (a, b):
        s = m.stats()
        assert s.log_length == 2 and s.heads == 2 and s.conflicts == 0
        assert s.version_vector == {"a": 1, "b": 1} and s.stable_frontier == {"a": 1, "b": 1}
        assert s.frames_sent > 0 and s.bytes_received > 0 and s.pending == 0
        assert s.content_bytes == len(m.fields_json().encode())
        assert set(s.as_dict()) >= {"log_length", "metadata_bytes", "rejected"}
    assert len(a.heads) == 2 and list(a.heads) == sorted(a.heads)
    a.fields["z"] = 1
    assert len(a.heads) == 1 and a.stable_frontier().get("a") == 1


def test_repr_mentions_space_and_peer(make_memory: MakeMemory) -> None:
    assert "agent-a" in repr(make_memory("agent-a", space="swarm-1"))


# ---- atomic rejection of contributions with bad payloads ------------------------------------


def _forged_pair(space: str, second_payload: bytes) -> bytes:
    """A frame from author ``x``: an honest first contribution and a second one whose id is
    correct for its content but whose payload is not a Yjs update (a buggy or hostile
    member: ids are not signatures)."""
    x = hs.Memory(space, "x", clock=lambda: 0, incarnation=9)
    x.fields["a"] = 1
    c1 = x.history()[0]
    c2 = Contribution.create(space, "x", 2, (c1.id,), 2, 0, "fields", second_payload)
    dots = {c1.id: ("x", 1)}
    return encode_frame(5, [("x", 2)], [c1, c2], dots.__getitem__)


def test_undecodable_payload_alone_is_rejected(make_memory: MakeMemory) -> None:
    r = make_memory("r")
    r.fields["mine"] = 1
    x = hs.Memory("space", "x", clock=lambda: 0, incarnation=9)
    c1 = Contribution.create("space", "x", 1, (), 1, 0, "fields", b"\xff\xff\xff")
    frame = encode_frame(5, [("x", 1)], [c1], None)
    before = snapshot(r)
    with pytest.raises(hs.PayloadError):
        r.receive("x", frame)
    assert snapshot(r) == before
    assert x.history() == []


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"", b"\x01"])
def test_undecodable_payload_rejects_the_whole_frame(
    make_memory: MakeMemory, payload: bytes
) -> None:
    r = make_memory("r")
    r.fields["mine"] = 1
    before = snapshot(r)
    with pytest.raises(hs.PayloadError):
        r.receive("x", _forged_pair("space", payload))
    assert snapshot(r) == before  # the honest first contribution was not applied either


def test_mutated_vv_in_an_accepted_frame_does_not_block_convergence(
    make_memory: MakeMemory,
) -> None:
    """The vv is not covered by ids; an honest peer's later frames still get us in sync."""
    a, b = make_memory("a"), make_memory("b")
    a.fields["x"] = 1
    (frame,) = a.sync_to("b")
    obj = msgpack.unpackb(frame, raw=False)
    b.receive("a", msgpack.packb(obj, use_bin_type=True))
    sync_pair(a, b)
    assert_converged([a, b])


# A Yjs v1 update that yrs decodes (pycrdt.get_state accepts it) but fails to integrate:
# a binary item whose parent is another binary item. pycrdt raises RuntimeError after it
# has already inserted the first items (map key "d"); the replica must undo that.
_DECODES_BUT_FAILS_TO_INTEGRATE = bytes.fromhex(
    "010599f197e906012701066669656c6473016401230099f197e90601016100080099f197e90602027c3f80"
    "00007c400000008799f197e906b80401280099f197e906050162017402787800"
)


def test_payload_that_fails_to_integrate_leaves_the_replica_unchanged(
    make_memory: MakeMemory,
) -> None:
    r = make_memory("r")
    r.fields["mine"] = 1
    c = Contribution.create("space", "x", 1, (), 1, 0, "fields", _DECODES_BUT_FAILS_TO_INTEGRATE)
    before = snapshot(r)
    with pytest.raises(hs.PayloadError):
        r.receive("x", encode_frame(1, [("x", 1)], [c], None))
    assert snapshot(r) == before


# ---- stores: the conformance suite from hybridsync.testing ----------------------------------


class TestMemoryStoreConformance(StoreConformance):
    def make_store(self, directory: Path) -> hs.Store:
        return hs.MemoryStore()


class TestSQLiteStoreConformance(StoreConformance):
    def make_store(self, directory: Path) -> hs.Store:
        return SQLiteStore(directory / "replica.db", space=self.space, peer=self.peer)

    def reopen(self, store: hs.Store, directory: Path) -> hs.Store:
        store.close()
        return SQLiteStore(directory / "replica.db", space=self.space, peer=self.peer)


def test_conformance_suite_catches_a_broken_store() -> None:
    """The suite can fail: a store that loses its order is caught."""

    class Reversing(hs.MemoryStore):
        def contributions(self) -> Iterator[Contribution]:
            return iter(list(super().contributions())[::-1])

    class Suite(StoreConformance):
        def make_store(self, directory: Path) -> hs.Store:
            return Reversing()

    with pytest.raises(AssertionError):
        Suite().run_all()
    assert "test_append_keeps_application_order_and_every_field" in list(Suite().checks())


# ---- what an accepted frame may claim -----------------------------------------------------


def test_a_vv_claiming_our_own_future_is_rejected(make_memory: MakeMemory) -> None:
    """A frame whose vv claims the receiver's own r#99 (r has r#1) would make r believe the
    peer holds everything of r's, and r would never send it r#1."""
    w, r = make_memory("w"), make_memory("r")
    r.fields["mine"] = 1
    w.fields["theirs"] = 2
    (frame,) = w.sync_to("r")
    obj = msgpack.unpackb(frame, raw=False)
    obj[3].append("r")  # author table
    obj[4].append(99)  # vv entry: "I hold r#1..r#99"
    before = snapshot(r)
    with pytest.raises(hs.ProtocolError):
        r.receive("w", msgpack.packb(obj, use_bin_type=True))
    assert snapshot(r) == before
    sync_pair(w, r)
    assert_converged([w, r])


def test_a_vv_claiming_third_party_contributions_does_not_blind_the_link(
    make_memory: MakeMemory,
) -> None:
    v, w, r = make_memory("v"), make_memory("w"), make_memory("r")
    v.fields["from_v"] = 1
    sync_pair(v, r)  # r holds v#1, w does not
    w.fields["theirs"] = 2
    (frame,) = w.sync_to("r")
    obj = msgpack.unpackb(frame, raw=False)
    obj[3].append("v")
    obj[4].append(99)  # "I hold v#1..v#99"
    with contextlib.suppress(hs.HybridSyncError):  # rejecting such a frame is fine too
        r.receive("w", msgpack.packb(obj, use_bin_type=True))
    sync_pair(w, r, max_rounds=200)
    assert_converged([w, r])


def test_rejected_frame_from_a_stranger_does_not_make_it_a_member(
    make_memory: MakeMemory,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["x"] = 1
    sync_pair(a, b)
    frontier = a.stable_frontier()
    assert frontier == {"a": 1}
    with pytest.raises(hs.FrameError):
        a.receive("mallory", b"\xc1garbage")
    assert a.stable_frontier() == frontier  # no empty ack from "mallory" holds it back
    assert a.stats().stable_frontier == frontier.to_dict()


# ---- the hybridsync.testing helpers themselves ---------------------------------------------


def test_manual_clock() -> None:
    clock = ManualClock(10)
    clock.advance(5)
    clock.advance(-3)
    assert clock() == 12
    clock.set(0)
    assert clock() == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(hs.ConfigError):
            clock.set(bad)  # type: ignore[arg-type]
    with pytest.raises(hs.ConfigError):
        ManualClock(-5)


def test_assert_converged_reports_the_difference(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.fields["x"] = 1
    with pytest.raises(hs.GuaranteeViolation, match="fields_json"):
        assert_converged([a, b])
    sync_pair(a, b)
    assert assert_converged([a, b]) == snapshot(b)
    with pytest.raises(hs.ConfigError):
        assert_converged([])
    with pytest.raises(hs.ConfigError):
        sync_all([a, make_memory("a")])  # two replicas with one name


@pytest.mark.parametrize("how", ["transaction", "update", "extend"])
def test_a_commit_too_large_for_any_frame_is_refused(make_memory: MakeMemory, how: str) -> None:
    """Each value is under the 8 MiB per-value limit, but together they exceed the 15 MiB
    a contribution may carry: committing it would make every later frame to every peer a
    FrameError, so it must be refused (FieldValueError) and change nothing."""
    a, b = make_memory("a"), make_memory("b")
    a.fields["l"] = []
    sync_pair(a, b)
    before = snapshot(a)
    blobs = [bytes([i]) * (6 << 20) for i in range(3)]
    with pytest.raises(hs.FieldValueError):
        if how == "transaction":
            with a.transaction():
                for i, blob in enumerate(blobs):
                    a.fields[f"k{i}"] = blob
        elif how == "update":
            a.fields.update({f"k{i}": blob for i, blob in enumerate(blobs)})
        else:
            a.fields["l"].extend(blobs)
    assert snapshot(a) == before
    a.fields["after"] = "small"
    sync_pair(a, b)
    assert_converged([a, b])


def test_restart_recomputes_the_same_conflicts(make_memory: MakeMemory) -> None:
    store = hs.MemoryStore()
    a, b, c = make_memory("a", store=store), make_memory("b"), make_memory("c")
    for m in (a, b, c):
        m.fields["k"] = {"by": m.peer}
    b.fields["tasks"] = {"t1": "open"}
    sync_all([a, b, c])
    a.fields["tasks"] = "replaced"
    del c.fields["tasks"]
    sync_all([a, b, c])
    before = snapshot(a)
    assert len(before.conflicts) == 4
    again = make_memory("a", store=store)
    assert snapshot(again) == before
