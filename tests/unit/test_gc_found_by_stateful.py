"""Core GC bugs found by the stateful GC machine (tests/property/test_stateful_gc.py,
``GcReplicasLearned`` before it introduced every replica first), shrunk to plain tests.

All need members *learned* (no ``members=``) and a replica that compacts before it has heard
of a member that wrote concurrently: alone, every replica is its own only member, so its own
work is stable at once. These runs end with different values, or ``receive`` raising
``IntegrityError`` on honest frames (docs/gc.md, "Known limits and open bugs"), which is why
compaction runs by itself only with declared members since 2026-11-21; here it is asked for
explicitly (``gc_min_entries=2``). With the members declared each case converges (the last
test).
"""

from __future__ import annotations

import pytest

import hybridsync as hs
from hybridsync.errors import IntegrityError
from hybridsync.testing import ManualClock, sync_all


def _replicas(n: int, **options: object) -> list[hs.Memory]:
    clock = ManualClock(1_700_000_000_000)
    return [
        hs.Memory("s", f"p{i}", clock=clock, incarnation=i + 1, gc_min_entries=2,
                  retransmit_rounds=1, **options)  # type: ignore[arg-type]
        for i in range(n)
    ]


def _values(mems: list[hs.Memory]) -> list[str]:
    return [m.fields_json() for m in mems]


@pytest.mark.xfail(
    strict=True, raises=IntegrityError,
    reason="open core bug: two replicas that each compacted their own work before they met "
           "(members learned) never converge: receive() raises IntegrityError('a checkpoint "
           "that lacks part of our own compacted state', Memory._adopt_checkpoint) on an "
           "honest checkpoint frame, and each keeps its own value",
)
def test_two_replicas_that_compacted_before_they_met_converge() -> None:
    a, b = _replicas(2)
    a.fields["k"] = 1
    assert a.collect() == 1
    b.fields["k"] = 2
    assert b.collect() == 1
    sync_all([a, b], max_rounds=50)
    assert a.fields_json() == b.fields_json()


@pytest.mark.xfail(
    strict=True, raises=hs.GuaranteeViolation,
    reason="open core bug: p0 compacts its write alone, p1 writes concurrently (its write "
           "sorts inside p0's checkpoint: late); with a third replica p1 sends its write to "
           "p2, which refuses it as late too, so p1 never re-bases it (it was sent to another "
           "session) and nobody can serve a roll-back: the replicas never settle and p1 keeps "
           "{'k': 2} while p0 and p2 show {'k': 1} (with two replicas p1 re-bases and they "
           "converge)",
)
def test_late_work_sent_to_a_third_replica_converges() -> None:
    mems = _replicas(3, batch_size=1)
    mems[0].fields["k"] = 1
    assert mems[0].collect() == 1
    mems[1].fields["k"] = 2
    sync_all(mems, max_rounds=200)
    values = _values(mems)
    assert values == [values[0]] * 3


@pytest.mark.xfail(
    strict=True, raises=IntegrityError,
    reason="open core bug: as above with a second write of p0 after its compaction (with "
           "other values the run never settles instead); "
           "receive() raises IntegrityError('p0 claims that p1#1 exists, which this replica "
           "never made') on an honest frame (the symptom tests/sim/_gc_helpers.py files under "
           "'re-based copy meets its original')",
)
def test_late_work_then_more_work_of_the_compacting_replica_converges() -> None:
    mems = _replicas(3, batch_size=1)
    mems[0].fields["a"] = None  # (these values give the ids that meet the raise)
    assert mems[0].collect() == 1
    mems[1].fields["a"] = None
    mems[0].fields["c"] = [4]
    sync_all(mems, max_rounds=200)
    values = _values(mems)
    assert values == [values[0]] * 3


@pytest.mark.parametrize("n", [2, 3])
def test_with_members_declared_the_same_runs_converge(n: int) -> None:
    """The control: declared members wait for each other, so nothing is compacted alone."""
    names = [f"p{i}" for i in range(n)]
    mems = _replicas(n, batch_size=1, members=names)
    mems[0].fields["k"] = 1
    assert mems[0].collect() == 0  # p1.. have acknowledged nothing yet
    mems[1].fields["k"] = 2
    mems[0].fields["c"] = 3
    sync_all(mems, max_rounds=200)
    values = _values(mems)
    assert values == [values[0]] * n
    assert all(m.stats().late == 0 for m in mems)
