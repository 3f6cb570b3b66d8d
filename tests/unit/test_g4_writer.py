"""G4, writer side: when a replica compacts must not change what it writes next (docs/gc.md,
"What it costs in G4"). Holds for compactions that drop no deleted key's chain; one that does
still declares its cut and writes sets of those keys without an origin (open, measured here
so the day it changes is seen)."""

from __future__ import annotations

import hybridsync as hs
from hybridsync.regions import decode_parts
from hybridsync.testing import sync_all, sync_pair


def _pair() -> tuple[hs.Memory, hs.Memory]:
    a, b = (hs.Memory("g4", p, clock=lambda: 0, incarnation=i + 1, gc_min_entries=None)
            for i, p in enumerate("ab"))
    return a, b


def _run(compact: bool, *, deleted: bool) -> tuple[dict[tuple[str, int], str], str, str]:
    """Both replicas overwrite 300 keys (a fields state well past 4 KB) and edit a text;
    ``deleted``: a also deletes five keys before the cut. Then, with or without a's
    compaction at that cut, 40 rounds of writes by both: overwrites, new keys, deletes and
    re-sets of keys deleted after the cut, text inserts. Returns the id of every
    contribution written after the cut, the fields JSON and the text."""
    a, b = _pair()
    for r in range(600):
        (a if r % 2 else b).fields[f"k{r % 300}"] = f"value {r}"
        if r % 50 == 0:
            a.text("t").set(a.text("t").value + f" w{r}")
    sync_pair(a, b)
    if deleted:
        for i in range(5):
            del a.fields[f"k{i}"]
        sync_pair(a, b)
    before = {(c.author, c.seq) for c in a.history()}
    if compact:
        assert a.collect() > 0 and a._fields_cut is not None
        assert bool(a._dropped.tails) == deleted  # anchors: only for deleted keys
    for r in range(40):
        a.fields[f"k{r}"] = r
        b.fields[f"k{r + 1}"] = -r
        if r % 7 == 0:
            a.fields.pop(f"k{r + 2}", None)
        if r % 11 == 0:
            a.fields[f"new{r}"] = [r]
        if r % 5 == 0:
            t = a.text("t")
            t.set(t.value[:10] + f" x{r}" + t.value[10:])
            a.commit()
        if r % 3 == 0:
            sync_pair(a, b)
    sync_pair(a, b)
    assert a.state_digest() == b.state_digest()
    after = {(c.author, c.seq): c.hex_id for c in a.history()
             if (c.author, c.seq) not in before}
    assert len(after) > 60
    return after, a.fields_json(), a.text("t").value


def test_a_compaction_of_overwritten_entries_leaves_every_later_contribution_as_it_was() -> None:
    plain, compacted = _run(False, deleted=False), _run(True, deleted=False)
    assert compacted == plain


def test_a_compaction_that_drops_a_deleted_key_still_changes_later_contributions() -> None:
    """The open part of G4's writer side: the cut is declared (a ``cut`` part) and a set of
    a dropped key has no origin, so ids differ from the first contribution on (parents
    carry it along); values do not."""
    plain, compacted = _run(False, deleted=True), _run(True, deleted=True)
    assert plain[1:] == compacted[1:]
    assert sum(plain[0][k] != compacted[0][k] for k in plain[0]) > len(plain[0]) // 2


def test_a_later_compaction_that_drops_deleted_keys_declares_and_receivers_catch_up() -> None:
    """An undeclared compaction (overwrites only) followed by one that drops deleted keys:
    the second still declares its cut, and a replica that never compacts by itself catches
    up before applying, so all three end in the same state."""
    a, b = _pair()
    c = hs.Memory("g4", "c", clock=lambda: 0, incarnation=3, gc_min_entries=None)
    for r in range(600):
        a.fields[f"k{r % 300}"] = f"value {r}"
    sync_all([a, b, c])
    assert a.collect() > 0 and not a._dropped.tails
    a.fields["k1"] = "first after"
    assert a.history()[-1].kind == "fields"  # nothing declared
    sync_all([a, b, c])
    assert b._fields_cut is None and c._fields_cut is None  # nobody had to catch up
    for i in range(40):
        del a.fields[f"k{i}"]
    for r in range(300):
        a.fields[f"k{40 + r % 260}"] = f"again {r}"
    sync_all([a, b, c])
    assert a.collect() > 0 and a._dropped.tails
    a.fields["k3"] = "back"  # a set of a dropped key: no origin, declared
    planes = [p.plane for p in decode_parts(a.history()[-1].payload)]
    assert "cut" in planes
    sync_all([a, b, c])
    assert b._fields_cut is not None and c._fields_cut is not None
    assert b.fields["k3"] == c.fields["k3"] == "back"
    assert a.state_digest() == b.state_digest() == c.state_digest()
