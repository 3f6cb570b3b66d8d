"""A handle asked for between ``delete_region`` and the cycle that commits the deletion:
before, it was handed out, took edits, and the cycle then dropped them without a trace (the
deletion superseded them; found by the simulator's richer region workload with edits
deferred to the poll timer). Now ``mem.text``/``mem.buffer`` commit the pending deletion
first and re-create the region; inside a transaction they refuse with a clear
``ConfigError``."""

from __future__ import annotations

import numpy as np
import pytest

import hybridsync as hs
from hybridsync.testing import sync_pair


def test_a_text_asked_for_after_its_deletion_commits_it_and_is_re_created() -> None:
    mem, other = hs.Memory("s", "a"), hs.Memory("s", "b")
    mem.text("t").set("first")
    mem.commit()
    old = mem.text("t")
    mem.delete_region("t")
    before = mem.version_vector.get("a", 0)
    again = mem.text("t")  # commits the deletion: one contribution
    assert mem.version_vector.get("a", 0) == before + 1 and again.value == ""
    again.set("second")
    mem.commit()
    assert old.value == "second"  # the region exists again (test_region_handles.py)
    assert mem.region_bytes() == [("text", "t", b"second")]
    sync_pair(mem, other)
    assert other.region_bytes() == mem.region_bytes() and other.conflicts() == []


def test_a_buffer_asked_for_after_its_deletion_commits_it_and_is_re_created() -> None:
    mem = hs.Memory("s", "a")
    mem.buffer("kv", shape=(8,)).write(0, np.ones(8, dtype=np.float32))
    mem.commit()
    mem.delete_region("kv")
    mem.buffer("kv", shape=(8,)).write(0, np.full(8, 2.0, dtype=np.float32))
    mem.commit()
    (kind, name, data), = mem.region_bytes()
    assert (kind, name) == ("buffer", "kv")
    assert np.frombuffer(data, dtype=np.float32).tolist() == [2.0] * 8


def test_inside_a_transaction_a_deleted_region_is_not_handed_out() -> None:
    mem = hs.Memory("s", "a")
    mem.text("t").set("first")
    mem.buffer("kv", shape=(8,))
    mem.commit()
    with mem.transaction():
        mem.delete_region("t")
        mem.delete_region("kv")
        with pytest.raises(hs.ConfigError, match=r"in this transaction.*mem\.text\('t'\)"):
            mem.text("t")
        with pytest.raises(hs.ConfigError, match=r"in this transaction.*mem\.buffer\('kv'"):
            mem.buffer("kv", shape=(8,))
    assert mem.regions() == {}
    mem.text("t").set("after")
    mem.commit()
    assert mem.region_bytes() == [("text", "t", b"after")]


def test_an_aborted_transaction_drops_the_pending_deletion_and_the_handle_works_again() -> None:
    mem = hs.Memory("s", "a")
    mem.text("t").set("kept")
    mem.commit()
    with pytest.raises(RuntimeError), mem.transaction():
        mem.delete_region("t")
        raise RuntimeError("abort")
    assert mem.text("t").value == "kept"
