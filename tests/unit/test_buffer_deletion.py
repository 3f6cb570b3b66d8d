"""A buffer write made without seeing the region's deletion is never applied, even when the
region was re-created in between in the order (G2: otherwise its author's later writes,
made on a value without it, overwrite it silently). Found by the simulator's richer region
workload (``tests/sim/test_sim_regions.py``, seed 19 of the small scale)."""

from __future__ import annotations

import numpy as np
import pytest

import hybridsync as hs
from hybridsync.testing import assert_converged, sync_all, sync_pair

SHAPE = (4096,)  # four 4 KiB blocks of float32


def _send(src: hs.Memory, dst: hs.Memory) -> None:
    """One way only: ``dst`` learns what ``src`` holds, ``src`` learns nothing."""
    for frame in src.sync_to(dst.peer):
        dst.receive(src.peer, frame)


def test_a_write_concurrent_with_a_deletion_stays_out_after_a_re_creation() -> None:
    a, b = hs.Memory("s", "a"), hs.Memory("s", "b")
    a.buffer("kv", shape=SHAPE).write(0, np.ones(1024, dtype=np.float32))
    a.commit()
    sync_pair(a, b)
    a.delete_region("kv")  # D
    a.commit()
    for i in range(4):  # b's Lamport clock runs ahead, so its write sorts after a's
        b.fields[f"f{i}"] = i
    b.buffer("kv", shape=SHAPE).write(0, np.full(10, 7.0, dtype=np.float32))  # X: not seen D
    b.commit()
    x = b.history()[-1].hex_id
    _send(a, b)  # b folds D: X is wiped on b, and b knows it
    assert "kv" not in b.regions()
    b.buffer("kv", shape=SHAPE).write(500, np.full(10, 3.0, dtype=np.float32))  # Y: saw D
    b.commit()
    a.buffer("kv", shape=SHAPE).write(2048, np.full(10, 5.0, dtype=np.float32))  # R: re-creates
    a.commit()
    sync_all([a, b])
    assert_converged([a, b])
    # The order is D, R, X, Y: X is either in the value or reported.
    values = np.frombuffer({(k, n): v for k, n, v in a.region_bytes()}[("buffer", "kv")],
                           dtype=np.float32)
    reported = [c for c in a.conflicts() if x in c.contributions]
    assert not np.array_equal(values[:10], np.full(10, 7.0, dtype=np.float32))
    assert [c.kind for c in reported] == ["edit-of-deleted-region"]
    assert values[500] == 3.0 and values[2048] == 5.0


def _deleted_and_recreated_base() -> list[object]:
    from hybridsync.regions import RegionsPlane

    mem = hs.Memory("s", "a", clock=lambda: 0, incarnation=1, gc_min_entries=None)
    mem.buffer("kv", shape=(8,)).write(0, np.ones(8, dtype=np.float32))
    mem.commit()
    mem.delete_region("kv")
    mem.buffer("kv", shape=(8,)).write(0, np.full(8, 2.0, dtype=np.float32))
    mem.commit()
    assert mem.collect() == 3
    bases = mem._regions.bases()
    (base,) = bases
    deletion = mem._log.gone_dots()  # the deletion's dot stays known for happened-before
    assert base[-1] is not None and base[-1] in deletion  # [buffer, name, ..., last_delete]
    plane = RegionsPlane(mem._log.happened_before)
    plane.restore_bases(bases)
    assert plane.buffers["kv"].fold._last_delete == base[-1]
    return base


def test_the_buffer_base_keeps_its_last_deletion_on_the_wire() -> None:
    """A write held when its region's deletion is compacted, made without seeing it, must
    stay out as it does on a replica that never compacted (coverage soak seed 820085,
    tests/sim/test_sim_coverage.py): the base keeps that deletion, also through a
    checkpoint; a base written before it existed (five elements) still loads."""
    from hybridsync.errors import PayloadError
    from hybridsync.regions import RegionsPlane

    base = _deleted_and_recreated_base()
    plane = RegionsPlane(lambda a, b: False)
    plane.restore_bases([base[:-1]])  # an older checkpoint: no last deletion
    assert plane.buffers["kv"].fold._last_delete is None
    for bad in ("not bytes", 7):
        with pytest.raises(PayloadError):
            RegionsPlane(lambda a, b: False).restore_bases([[*base[:-1], bad]])
    with pytest.raises(PayloadError):
        RegionsPlane(lambda a, b: False).restore_bases([[*base, None]])
