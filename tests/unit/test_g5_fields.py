"""G5 for the fields at the replica level: the fields checkpoint is kept once, not twice (the
issue's concrete case through ``hs.Memory`` is in ``tests/sim/test_g5_churn.py``).

After a compaction that leaves no field write in the retained suffix, the fields checkpoint is
compacted and equals the live Yjs document: the replica stops keeping it as a document of its
own (the store's checkpoint holds it durably) and ``stats()`` counts the state once. Kept
twice, the issue's case measured 2.65x (two documents of ~25.5 KB for 14.4 KB of content).
"""

from __future__ import annotations

import random

import pytest

import hybridsync as hs
from hybridsync.errors import StoreError
from hybridsync.store import MemoryStore


def _ratio(m: hs.Memory) -> float:
    st = m.stats()
    return st.metadata_bytes / st.content_bytes


def _overwrite_rounds(a: hs.Memory, b: hs.Memory, rng: random.Random, *,
                      collect: bool) -> None:
    """60 transactions of 100 overwrites of 300 small values on a; a and b sync (and, with
    ``collect``, both collect) after every 20."""
    for i in range(60):
        with a.transaction():
            for _ in range(100):
                a.fields[f"k{rng.randrange(300):04d}"] = f"v{rng.randrange(100_000)}"
        if i % 20 == 19:
            _sync(a, b)
            if collect:
                a.collect()
                b.collect()


def _released_pair(store: MemoryStore) -> tuple[hs.Memory, hs.Memory]:
    """6,000 overwrites of 300 small values on replica a (``store``), synced to b and
    collected on both every 2,000: the retained suffix is empty, the checkpoint released."""
    a = hs.Memory("g5", "a", clock=lambda: 0, incarnation=1, store=store)
    b = hs.Memory("g5", "b", clock=lambda: 0, incarnation=2)
    _overwrite_rounds(a, b, random.Random(7), collect=True)
    assert a.stats().log_length == 0 and a.fields_json() == b.fields_json()
    assert _ratio(a) <= 2.0
    return a, b


def _sync(a: hs.Memory, b: hs.Memory) -> None:
    for f in a.sync_to("b"):
        b.receive("a", f)
    for f in b.sync_to("a"):
        a.receive("b", f)


def test_a_released_checkpoint_is_counted_again_once_the_live_document_moves_on() -> None:
    store = MemoryStore()
    a, b = _released_pair(store)
    after_collect = a.stats().metadata_bytes
    checkpoint = store.get_meta("checkpoint")
    assert checkpoint
    # one write: the live document moves away from the checkpoint, which is then kept
    # separately (in the store only) and counted in full
    a.fields["k0000"] = "changed"
    grown = a.stats().metadata_bytes - after_collect
    assert grown > len(checkpoint) // 2, (grown, len(checkpoint))
    # the next compaction folds the write into the checkpoint read back from the store
    _sync(a, b)
    assert a.collect() == 1
    assert a.fields_json() == b.fields_json()
    assert a.fields["k0000"] == "changed"
    assert _ratio(a) <= 2.0
    # a restart from the store rebuilds the same state
    again = hs.Memory("g5", "a", clock=lambda: 0, incarnation=3, store=store)
    assert again.fields_json() == a.fields_json()


def test_a_store_that_lost_the_checkpoint_is_reported() -> None:
    store = MemoryStore()
    a, b = _released_pair(store)
    a.fields["k0000"] = "changed"
    store.set_meta("checkpoint", b"")
    for f in a.sync_to("b"):
        b.receive("a", f)
    with pytest.raises(StoreError, match="fields checkpoint"):
        for f in b.sync_to("a"):
            a.receive("b", f)
        a.collect()


def test_the_bytes_trigger_compacts_without_a_collect_and_is_on_with_declared_members() -> None:
    """``gc_min_bytes``: ``receive`` compacts once the stable prefix weighs half the content
    (at least that many bytes), long before ``gc_min_entries`` (256) contributions; a driver
    with ``auto_collect`` off sees it in ``collect_due``. On by default (16 KiB) only where
    compaction itself is: with the members declared and ``gc_min_entries`` left "auto"."""
    assert hs.Memory("g5", "a", clock=lambda: 0, incarnation=1).gc_min_bytes is None
    assert hs.Memory("g5", "a", clock=lambda: 0, incarnation=1, members=("a", "b"),
                     gc_min_entries=256).gc_min_bytes is None
    ratios: dict[int | None, float] = {}
    for trigger in (None, 16 << 10):
        rng = random.Random(3)
        a = hs.Memory("g5", "a", clock=lambda: 0, incarnation=1, members=("a", "b"))
        b = hs.Memory("g5", "b", clock=lambda: 0, incarnation=2, members=("a", "b"))
        assert a.gc_min_bytes == b.gc_min_bytes == 16 << 10
        a.gc_min_bytes = b.gc_min_bytes = trigger
        b.auto_collect = False
        _overwrite_rounds(a, b, rng, collect=False)
        assert a.stats().compacted == (0 if trigger is None else 60)
        assert b.collect_due is (trigger is not None)
        ratios[trigger] = _ratio(a)
    assert ratios[16 << 10] <= 2.0 < 10 < ratios[None], ratios


@pytest.mark.parametrize("bad", [0, 1023, -1, 1.5, "16k", True])
def test_a_bad_gc_min_bytes_is_refused(bad: object) -> None:
    m = hs.Memory("g5", "a", clock=lambda: 0, incarnation=1)
    with pytest.raises(hs.ConfigError, match="gc_min_bytes"):
        m.gc_min_bytes = bad  # type: ignore[assignment]
    assert m.gc_min_bytes is None
