"""A handle asked for between ``delete_region`` and the cycle that commits the deletion is
refused with a clear ``ConfigError``: before, it was handed out, took edits, and the cycle then
dropped them without a trace (the deletion superseded them). Found by the simulator's richer
region workload with edits deferred to the poll timer."""

from __future__ import annotations

import numpy as np
import pytest

import hybridsync as hs


def test_a_text_handle_is_refused_while_its_deletion_is_pending() -> None:
    mem = hs.Memory("s", "a")
    mem.text("t").set("first")
    mem.commit()
    mem.delete_region("t")
    with pytest.raises(hs.ConfigError, match=r"not yet committed.*commit, then mem\.text"):
        mem.text("t")
    mem.commit()
    mem.text("t").set("second")
    mem.commit()
    assert mem.region_bytes() == [("text", "t", b"second")]


def test_a_buffer_handle_is_refused_while_its_deletion_is_pending() -> None:
    mem = hs.Memory("s", "a")
    mem.buffer("kv", shape=(8,)).write(0, np.ones(8, dtype=np.float32))
    mem.commit()
    mem.delete_region("kv")
    with pytest.raises(hs.ConfigError, match=r"not yet committed.*mem\.buffer\('kv'"):
        mem.buffer("kv", shape=(8,))
    mem.commit()
    mem.buffer("kv", shape=(8,)).write(0, np.full(8, 2.0, dtype=np.float32))
    mem.commit()
    (kind, name, data), = mem.region_bytes()
    assert (kind, name) == ("buffer", "kv")
    assert np.frombuffer(data, dtype=np.float32).tolist() == [2.0] * 8


def test_an_aborted_transaction_drops_the_pending_deletion_and_the_handle_works_again() -> None:
    mem = hs.Memory("s", "a")
    mem.text("t").set("kept")
    mem.commit()
    with pytest.raises(RuntimeError), mem.transaction():
        mem.delete_region("t")
        raise RuntimeError("abort")
    assert mem.text("t").value == "kept"
