"""G6 with group commit: a write is durable once the cycle that commits it has returned.

A zygote process imports hybridsync once and forks one writer per run. The writer opens
``hs.Memory(..., path=db, group_commit=True)`` and loops: a batch of 1–30 autocommitted
field writes (pending, not yet durable), then a cycle (``commit()``, ``sync_to()`` or a
transaction, chosen at random), then one line to its report file ("every write of this run
below j has been committed"). The test SIGKILLs it at a random moment and checks, after
every kill, that the store opens cleanly with every write the report covers, and at the
end that the restarted replica converges with another one. ``HYBRIDSYNC_G6_SEED=N`` replays
the random choices (the exact moments of the kills also depend on the scheduler).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _zygote import Zygote

import hybridsync as hs
from hybridsync.testing import sync_pair

SPACE, WRITER = "g6-group", "writer"

WRITER_SOURCE = r"""
import os, random, sys
import hybridsync as hs

SPACE, WRITER = sys.argv[1], sys.argv[2]

def writer(db, report, run, quota, seed):
    run, quota, seed = int(run), int(quota), int(seed)
    rng = random.Random(seed)
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    mem = hs.Memory(SPACE, WRITER, path=db, group_commit=True)
    os.write(fd, b"open %d\n" % run)
    j = 0
    while j < quota:
        for _ in range(rng.randint(1, 30)):
            mem.fields["r%d.%d" % (run, j)] = j
            j += 1
        how = rng.random()
        if how < 0.5:
            mem.commit()
        elif how < 0.8:
            mem.sync_to("elsewhere")
        else:
            with mem.transaction(note="r%d.%d" % (run, j)):
                mem.fields["t%d" % run] = j
        assert mem.pending_writes == 0
        os.write(fd, b"c %d %d\n" % (run, j))
    mem.close()
    os.write(fd, b"done %d\n" % run)
"""


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(tmp_path, WRITER_SOURCE, SPACE, WRITER)
    try:
        yield z
    finally:
        z.close()


def _reported(report: Path) -> dict[int, int]:
    """Per run, how many of its writes the report says were committed."""
    covered: dict[int, int] = {}
    text = report.read_bytes() if report.exists() else b""
    for line in text.split(b"\n")[:-1]:  # a torn last line has no "\n"
        parts = line.decode().split()
        if parts[0] == "c":
            run, j = int(parts[1]), int(parts[2])
            covered[run] = max(covered.get(run, 0), j)
    return covered


def _check(mem: hs.Memory, covered: dict[int, int]) -> int:
    fields = mem.fields.to_dict()
    missing = [f"r{run}.{j}" for run, n in covered.items() for j in range(n)
               if fields.get(f"r{run}.{j}") != j]
    assert missing == [], f"committed writes lost: {missing[:10]} ({len(missing)} in all)"
    return sum(covered.values())


def _lines(report: Path) -> int:
    return report.read_bytes().count(b"\n") if report.exists() else 0


def test_sigkilled_group_commit_writers_keep_every_committed_batch(
    zygote: Zygote, tmp_path: Path
) -> None:
    seed = int(os.environ.get("HYBRIDSYNC_G6_SEED", random.randrange(1 << 30)))
    print(f"G6 group commit seed={seed} (replay with HYBRIDSYNC_G6_SEED={seed})")
    rng = random.Random(seed)
    db, report = tmp_path / "g.db", tmp_path / "g.report"
    kills = committed = 0
    for run in range(40):
        before = _lines(report)
        pid = int(zygote.ask(f"spawn {db} {report} {run} 3000 {rng.randrange(1 << 30)}"))
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0, 30) / 1000)
        else:  # after a few cycles (bounded wait), then a little more
            want, end = rng.randint(1, 15), time.monotonic() + 5
            while time.monotonic() < end and _lines(report) < before + want + 1:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 3) / 1000)
        os.kill(pid, signal.SIGKILL)
        status = zygote.ask(f"reap {pid}")
        assert status in {"signal 9", "exit 0"}, (
            f"writer failed (seed {seed}): {status}\n{zygote.stderr_path.read_text()[-3000:]}"
        )
        kills += status == "signal 9"
        mem = hs.Memory(SPACE, WRITER, path=str(db), group_commit=True)
        try:
            committed = _check(mem, _reported(report))
        finally:
            mem.close()
    assert kills >= 30 and committed > 0, (kills, committed)
    # the restarted writer converges with another replica, every committed write included
    restarted = hs.Memory(SPACE, WRITER, path=str(db), group_commit=True)
    other = hs.Memory(SPACE, "other")
    try:
        other.fields["from-other"] = seed
        restarted.fields["after-restart"] = seed
        sync_pair(restarted, other)
        assert restarted.state_digest() == other.state_digest()
        _check(other, _reported(report))
        assert other.fields["after-restart"] == seed
    finally:
        restarted.close()
        other.close()
