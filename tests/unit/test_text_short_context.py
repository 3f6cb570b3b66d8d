"""A context cut short by the end (the start) of its author's text holds only at the end (the
start): taken as a free-standing context, its one to three characters match text the author
never saw, and the hunk lands inside a concurrent edit without a conflict (G2). Found by the
simulator's richer region workload (``tests/sim/test_sim_regions.py``, seeds 3 and 49 of the
small scale: ``⟦r14⟧`` became ``⟦r19⟧`` and ``⟦r19⟧`` appeared twice)."""

from __future__ import annotations

import hybridsync as hs
from hybridsync.regions._textdiff import apply_patch, make_patch
from hybridsync.testing import assert_converged, sync_all


def test_a_short_end_context_does_not_match_inside_a_concurrent_insert() -> None:
    base = "one ⟦r3⟧ ⟦r4⟧"
    mine = "one ⟦r3⟧ ⟦r9⟧ ⟦r4⟧"  # the diff trims to inserting "9⟧ ⟦r" before "4⟧"
    hunks = make_patch(base, mine)
    (h,) = hunks
    assert h.diffs[-1][1] == "4⟧"  # the suffix is cut short by the end of the text
    # concurrently: ⟦r3⟧ deleted (the prefix is gone), a paragraph appended after ⟦r4⟧
    theirs = "one ⟦r4⟧\n\nfiller ⟦r14⟧ words"
    value, failed = apply_patch(theirs, hunks)
    assert failed == hunks and value == theirs  # reported, not landed inside ⟦r14⟧
    # with its prefix still there, the append does not stop it
    value, failed = apply_patch(base + "\n\nfiller ⟦r14⟧ words", hunks)
    assert failed == [] and value == mine + "\n\nfiller ⟦r14⟧ words"
    # and at the end of the text the short suffix still holds on its own
    value, failed = apply_patch("two ⟦r4⟧", hunks)
    assert failed == [] and value == "two ⟦r9⟧ ⟦r4⟧"


def test_replicas_report_the_hunk_instead_of_damaging_a_marker() -> None:
    a, b, c = (hs.Memory("s", p) for p in "abc")
    a.text("t").set("one ⟦r3⟧ ⟦r4⟧")
    a.commit()
    sync_all([a, b, c])
    for i in range(3):  # b's Lamport clock runs ahead: its edit sorts after c's
        b.fields["n"] = i
    b.text("t").set("one ⟦r3⟧ ⟦r9⟧ ⟦r4⟧")
    b.commit()
    c.text("t").set("one ⟦r4⟧\n\nfiller ⟦r14⟧ words")
    c.commit()
    sync_all([a, b, c])
    assert_converged([a, b, c])
    assert a.text("t").value == "one ⟦r4⟧\n\nfiller ⟦r14⟧ words"
    b_id = b.history()[-1].hex_id
    assert [x.kind for x in a.conflicts() if b_id in x.contributions] == ["hunk-failed"]
