"""Regression tests: bugs the simulator found, as minimal reproductions and as pinned seeds.

A minimal reproduction uses the public API only and says exactly what is wrong. Bugs still
open in the core are ``xfail(strict=True)``: when one is fixed its test XPASSes and fails the
suite, and the fix's author removes the mark (and the bug's entry in ``conftest.py``).
Pinned seeds replay the exact run that found a bug: ``python -m hybridsync.sim`` plus the
options written out below.
"""

from __future__ import annotations

import re

import pytest

import hybridsync as hs
from hybridsync.errors import GuaranteeViolation
from hybridsync.sim import SimOptions, check_policies, run


class _Abort(Exception):
    pass


def _pump(a: hs.Memory, b: hs.Memory) -> None:
    for frame in a.sync_to(b.peer):
        b.receive(a.peer, frame)


def _memory(peer: str, incarnation: int, **kw: object) -> hs.Memory:
    return hs.Memory("regress", peer, clock=lambda: 0, incarnation=incarnation, **kw)  # type: ignore[arg-type]


# ---- fixed bugs: plain regression tests --------------------------------------------------------
def test_local_commit_names_its_own_previous_contribution() -> None:
    """Found by seed 1 (star): a#2 built on b#1, which had a#1 as parent, named only b#1;
    every peer then rejected a's frames ("a#2 must name a#1 as a parent")."""
    a, b = _memory("a", 1), _memory("b", 2)
    a.fields["x"] = 1
    _pump(a, b)
    b.fields["y"] = 2
    _pump(b, a)
    a.fields["z"] = 3
    _pump(a, b)
    assert b.fields.to_dict() == {"x": 1, "y": 2, "z": 3}


def test_parked_contribution_that_arrives_again_is_applied_once() -> None:
    """Found by seed 2 (G3 "applied twice"): a#2 parked for want of a#1, then a frame with
    a#1 and a#2 applied a#2 from the frame and again from the parking lot (second Change
    event, second store append, duplicated conflicts)."""
    store = hs.MemoryStore()
    a1 = _memory("a", 1, store=store, batch_size=1)
    a1.fields["x"] = 1
    a1.fields["x"] = 2
    _f1, f2 = a1.sync_to("b")
    (both,) = _memory("a", 2, store=store).sync_to("b")
    b_store = hs.MemoryStore()
    b = _memory("b", 3, store=b_store)
    b.fields["x"] = 9
    applied: list[tuple[str, int]] = []
    b.observe(lambda ch: applied.append((ch.author, ch.seq)))
    b.receive("a", f2)
    b.receive("a", both)
    assert applied == [("a", 1), ("a", 2)]
    assert len(b_store) == 3
    assert len(b.conflicts()) == len({(c.contributions, c.location) for c in b.conflicts()})


def test_rollback_of_a_list_created_and_appended_twice_raises_the_original_error() -> None:
    """Found by seed 97: the journal restored a list after deleting the key that held it and
    pycrdt panicked (PanicException, a BaseException) instead of the block's exception."""
    m = _memory("a", 1)
    with pytest.raises(KeyError), m.transaction():
        m.fields["l"] = ["a"]
        m.fields["l"].append("b")
        m.fields["l"].append("c")
        raise KeyError("abort")
    assert m.fields.to_dict() == {}


# ---- core bugs found by the simulator, fixed: rollbacks rebuild the document from the log -----
def test_rollback_of_a_new_key_keeps_a_concurrent_write() -> None:
    lost = []
    for inc in range(1, 9):
        a, b = _memory("a", inc), _memory("b", 100 + inc)
        a.fields["k"] = "kept"
        with pytest.raises(_Abort), b.transaction():
            b.fields["k"] = "draft"
            raise _Abort
        _pump(a, b)
        _pump(b, a)
        assert a.fields_json() == b.fields_json()
        if a.fields.get("k") != "kept" and not a.conflicts():
            lost.append(inc)
    assert lost == [], f"a's write vanished silently for incarnations {lost}"


def test_rollback_restores_a_replaced_map_without_draft_values() -> None:
    m = _memory("a", 1)
    m.fields["k"] = {"n1": 1}
    with pytest.raises(_Abort), m.transaction():
        m.fields["k"] = {"n0": "draft1"}
        m.fields["k"]["n0"] = "draft2"
        raise _Abort
    assert m.fields.to_dict() == {"k": {"n1": 1}}


def test_a_rollback_commits_the_same_bytes_every_time() -> None:
    heads = set()
    for _ in range(10):
        m = _memory("a", 1)
        m.fields["k"] = {f"n{i}": i for i in range(8)}
        with pytest.raises(_Abort), m.transaction():
            del m.fields["k"]
            raise _Abort
        heads.add(m.heads)
    assert len(heads) == 1


def test_deleting_the_same_map_twice_is_not_a_conflict() -> None:
    a, b = _memory("a", 1), _memory("b", 2)
    a.fields["k"] = {"n0": {"n2": 1}}
    _pump(a, b)
    _pump(b, a)
    del a.fields["k"]["n0"]
    del b.fields["k"]["n0"]
    _pump(a, b)
    _pump(b, a)
    assert a.conflicts() == b.conflicts()
    assert a.conflicts() == []


# Found by seed 2536: a transaction that created a key and deleted it again committed a Yjs
# item born deleted; where it sorted after a concurrent write of that key it hid that value,
# and the conflict index skipped born-deleted items, so nothing was reported (silent loss).
def test_a_transaction_that_sets_and_deletes_a_new_key_keeps_a_concurrent_write() -> None:
    lost = []
    for inc in range(1, 9):
        a, b = _memory("a", inc), _memory("b", 100 + inc)
        a.fields["k"] = "kept"
        with b.transaction():
            b.fields["k"] = "scratch"
            del b.fields["k"]
        _pump(a, b)
        _pump(b, a)
        assert a.fields_json() == b.fields_json()
        if a.fields.get("k") != "kept" and not a.conflicts():
            lost.append(inc)
    assert lost == [], f"a's write vanished silently for incarnations {lost}"


# ---- pinned seeds --------------------------------------------------------------------------
# The runs that found the bugs above, every option written out: each replays with
# `python -m hybridsync.sim --seed N` and these options.
SEED_1 = SimOptions(seed=1, peers=4, ticks=75, liveness_ticks=600, loss=0.0, duplicate=0.05,
                    reorder=False, max_delay_ticks=4, routing="star", gossip_fanout=3,
                    batch_size=2, partitions=True, crashes=False, write_rate=0.6)
SEED_2 = SimOptions(seed=2, peers=3, ticks=43, liveness_ticks=600, loss=0.0, duplicate=0.2,
                    reorder=True, max_delay_ticks=5, routing="gossip", gossip_fanout=3,
                    batch_size=8, partitions=False, crashes=True, write_rate=0.3)
SEED_97 = SimOptions(seed=97, peers=2, ticks=44, liveness_ticks=600, loss=0.3, duplicate=0.2,
                     reorder=False, max_delay_ticks=5, routing="gossip", gossip_fanout=2,
                     batch_size=1, partitions=True, crashes=True, write_rate=1.0)
SEED_103 = SimOptions(seed=103, peers=3, ticks=36, liveness_ticks=600, loss=0.3, duplicate=0.0,
                      reorder=True, max_delay_ticks=5, routing="gossip", gossip_fanout=3,
                      batch_size=1, partitions=True, crashes=False, write_rate=0.3)
SEED_2536 = SimOptions(seed=2536, peers=2, ticks=57, liveness_ticks=600, loss=0.0,
                       duplicate=0.2, reorder=True, max_delay_ticks=5, routing="mesh",
                       gossip_fanout=3, batch_size=8, partitions=True, crashes=True,
                       write_rate=0.6)
SEED_10_EPOCHS = SimOptions(seed=10, peers=4, ticks=30, liveness_ticks=300, loss=0.05,
                            duplicate=0.05, reorder=False, max_delay_ticks=2, routing="star",
                            gossip_fanout=3, batch_size=1, partitions=True, crashes=False,
                            write_rate=1.0, mode="epochs", epochs=3, burst_ops=12)
SEED_6_EPOCHS = SimOptions(seed=6, peers=2, ticks=30, liveness_ticks=300, loss=0.05,
                           duplicate=0.2, reorder=False, max_delay_ticks=5, routing="star",
                           gossip_fanout=2, batch_size=512, partitions=False, crashes=True,
                           write_rate=1.0, mode="epochs", epochs=3, burst_ops=12)


@pytest.mark.parametrize("options", [SEED_1, SEED_2, SEED_97], ids=["seed1", "seed2", "seed97"])
def test_pinned_seed_of_a_fixed_bug_passes(options: SimOptions) -> None:
    run(options)


def _fails_with(options: SimOptions, pattern: str) -> None:
    """Pass when the run passes (the strict xfail then reports the fix); raise
    GuaranteeViolation when it fails as expected; fail the test on any other violation."""
    result = run(options, raise_on_violation=False)
    if result.ok:
        return
    assert re.search(pattern, result.violation or "", re.S), result.violation
    message = (result.violation or "").split("\nreplay with:")[0]
    raise GuaranteeViolation(message, replay=result.replay)


def test_pinned_seed_103_rollback_erases_a_concurrent_write() -> None:
    run(SEED_103)


def test_pinned_seed_10_rolled_back_value_visible() -> None:
    run(SEED_10_EPOCHS)


def test_pinned_seed_6_policies_disagree_on_a_rollback() -> None:
    check_policies(SEED_6_EPOCHS)


def test_pinned_seed_2536_set_then_delete_erases_a_concurrent_write() -> None:
    run(SEED_2536)
