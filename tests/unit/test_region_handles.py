"""Region handles and deletion at the API: ``delete_region`` of an unknown name is a clear
``RegionNotFound`` (also a ``KeyError``) that records nothing; a handle taken before a deletion
raises ``ConfigError`` on every read and write instead of silently re-creating the region; a
handle taken after the deletion re-creates it (docs/diffsync.md, "Deletion")."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import hybridsync as hs
from hybridsync.errors import RegionNotFound
from hybridsync.testing import assert_converged, sync_all

MakeMemory = Callable[..., hs.Memory]


def test_deleting_an_unknown_region_is_region_not_found_and_records_nothing(
    make_memory: MakeMemory,
) -> None:
    a = make_memory("a")
    a.text("t").set("kept")
    a.commit()
    before = (a.state_digest(), a.heads, len(a.history()))
    with pytest.raises(RegionNotFound, match="'never-made'") as info:
        a.delete_region("never-made")
    assert isinstance(info.value, hs.ConfigError) and isinstance(info.value, KeyError)
    assert str(info.value) == "no text or buffer region named 'never-made'"
    a.commit()
    assert (a.state_digest(), a.heads, len(a.history())) == before
    assert a.regions() == {"t": "text"}


def test_a_text_handle_taken_before_a_deletion_raises_on_read_and_write(
    make_memory: MakeMemory,
) -> None:
    a = make_memory("a")
    t = a.text("t")
    t.set("hello")
    a.commit()
    a.delete_region("t")
    for use in (lambda: t.value, lambda: t.set("x"), lambda: t.append("x"), lambda: len(t)):
        with pytest.raises(hs.ConfigError, match="not yet committed"):
            use()
    a.commit()
    for use in (lambda: t.value, lambda: t.set("zzz"), lambda: t.insert(0, "z")):
        with pytest.raises(hs.ConfigError, match=r"'t' was deleted .*mem\.text\('t'\)"):
            use()
    a.commit()
    assert a.regions() == {}
    assert [c.kind for c in a.history()] == ["multi", "multi"]


def test_a_handle_taken_after_the_deletion_re_creates_the_region(
    make_memory: MakeMemory,
) -> None:
    a, b = make_memory("a"), make_memory("b")
    old = a.text("t")
    old.set("first life")
    a.commit()
    a.delete_region("t")
    a.commit()
    fresh = a.text("t")
    assert fresh.value == ""
    fresh.set("second life")
    a.commit()
    assert a.regions() == {"t": "text"}
    # the region exists again: the old handle names it again
    assert old.value == "second life"
    sync_all([a, b])
    assert_converged([a, b])
    assert b.text("t").value == "second life"
    # a second deletion makes the re-creating handle stale too
    a.delete_region("t")
    a.commit()
    with pytest.raises(hs.ConfigError, match="was deleted"):
        fresh.set("third")


def test_a_remote_deletion_makes_the_receiver_s_handle_stale(make_memory: MakeMemory) -> None:
    a, b = make_memory("a"), make_memory("b")
    a.text("t").set("shared")
    a.commit()
    sync_all([a, b])
    kept = b.text("t")
    assert kept.value == "shared"
    a.delete_region("t")
    a.commit()
    sync_all([a, b])
    with pytest.raises(hs.ConfigError, match="was deleted"):
        kept.set("written after the deletion arrived")
    b.commit()
    sync_all([a, b])
    assert_converged([a, b])
    assert a.regions() == b.regions() == {}


def test_a_buffer_handle_and_its_array_cannot_re_create_a_deleted_buffer(
    make_memory: MakeMemory,
) -> None:
    a = make_memory("a")
    buf = a.buffer("kv", shape=(8, 8), dtype="float16")
    arr = buf.array
    arr[0] = 1
    a.commit()
    a.delete_region("kv")
    a.commit()
    for use in (lambda: buf.array, lambda: buf.read(),
                lambda: buf.write(0, np.ones(1, dtype="float16"))):
        with pytest.raises(hs.ConfigError, match=r"'kv' was deleted .*mem\.buffer\('kv'"):
            use()
    arr[1] = 7  # through an array handed out before the deletion: no longer the region
    a.commit()
    assert a.regions() == {}
    assert len(a.history()) == 2
    again = a.buffer("kv", shape=(8, 8), dtype="float16")
    assert not again.read().any()
    again.write(3, [2.0])
    a.commit()
    assert a.regions() == {"kv": "buffer"}
    assert again.read().reshape(-1)[3] == 2.0


def test_a_re_creating_handle_outlives_the_compaction_of_the_tombstone(
    make_memory: MakeMemory,
) -> None:
    a = make_memory("a", members=["a"], gc_min_entries=1)
    a.text("t").set("to be deleted")
    a.commit()
    a.delete_region("t")
    a.commit()
    fresh = a.text("t")
    old_gone = a.stats().compacted
    a.collect()
    assert a.stats().compacted > old_gone  # the deletion was folded away
    fresh.set("back")
    a.commit()
    assert a.regions() == {"t": "text"}
    assert a.text("t").value == "back"
