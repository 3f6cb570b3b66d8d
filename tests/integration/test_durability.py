"""G6 durability: a replica killed at any moment (SIGKILL) restarts with every commit that returned.

A *zygote* process imports hybridsync once and forks one writer per run, so a kill costs a
fork, not an interpreter start (hundreds of kills stay within seconds). Each writer opens
``hs.Memory(..., path=db)`` and commits in a loop: single field writes (autocommit),
transactions that touch a field and the shared text, buffer rows committed with
``mem.commit()``. After each commit *returned* it writes one line to its report file (an
unbuffered ``os.write``: the line is in the kernel before the next commit starts). The test
SIGKILLs the writer at a random moment (during the open, between or inside commits), then
checks: the store opens cleanly, every reported commit is there (field values, text lines,
buffer rows at least as new as reported), and the restarted replica converges with another
replica. The seed of each run is printed; ``HYBRIDSYNC_G6_SEED=N`` replays its random choices
(the exact moments of the kills also depend on the scheduler).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from _zygote import Zygote

import hybridsync as hs
from hybridsync.store.sqlite import SQLiteStore
from hybridsync.testing import sync_pair

SPACE, WRITER = "g6-space", "writer"
ROWS, COLS = 16, 8
SOAK = os.environ.get("HYBRIDSYNC_SOAK") == "1"
soak = pytest.mark.skipif(not SOAK, reason="soak test: run with `make soak` (HYBRIDSYNC_SOAK=1)")

# The writer a zygote (``_zygote.py``) forks for each run: ``spawn DB REPORT RUN QUOTA``.
WRITER_SOURCE = r"""
import os, sys
import hybridsync as hs

SPACE, WRITER, ROWS, COLS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def writer(db, report, run, quota):
    run, quota = int(run), int(quota)
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    mem = hs.Memory(SPACE, WRITER, path=db)
    os.write(fd, b"open %d\n" % run)
    notes = mem.text("notes")
    buf = mem.buffer("rows", shape=(ROWS, COLS), dtype="float64")
    seq = int(buf.array.max())  # buffer values only grow: the next one is larger
    for j in range(quota):
        key = "r%d.%d" % (run, j)
        kind = j % 3
        if kind == 0:
            mem.fields[key] = [run, j]
            os.write(fd, b"f %d %d\n" % (run, j))
        elif kind == 1:
            with mem.transaction(note=key):
                mem.fields[key] = [run, j]
                notes.set(notes.value + key + "\n")
            os.write(fd, b"t %d %d\n" % (run, j))
        else:
            seq += 1
            row = (run * 7 + j) % ROWS
            buf.array[row] = seq
            mem.fields[key] = [run, j]
            mem.commit()
            os.write(fd, b"b %d %d %d %d\n" % (run, j, row, seq))
    mem.close()
    os.write(fd, b"done %d\n" % run)
"""


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(tmp_path, WRITER_SOURCE, SPACE, WRITER, str(ROWS), str(COLS))
    try:
        yield z
    finally:
        z.close()


@dataclass
class Reported:
    """What the writers of one database said had returned."""

    fields: set[tuple[int, int]] = field(default_factory=set)
    lines: set[str] = field(default_factory=set)
    rows: dict[int, int] = field(default_factory=dict)  # row -> newest reported value
    commits: int = 0

    def read(self, report: Path) -> None:
        self.__init__()  # type: ignore[misc]
        text = report.read_bytes() if report.exists() else b""  # killed before it opened it
        for line in text.split(b"\n")[:-1]:  # a torn last line has no "\n"
            parts = line.decode().split()
            if parts[0] in {"f", "t", "b"}:
                run, j = int(parts[1]), int(parts[2])
                self.fields.add((run, j))
                self.commits += 1
                if parts[0] == "t":
                    self.lines.add(f"r{run}.{j}")
                if parts[0] == "b":
                    row, seq = int(parts[3]), int(parts[4])
                    self.rows[row] = max(self.rows.get(row, 0), seq)


def check_all_reported_commits_are_there(mem: hs.Memory, rep: Reported) -> None:
    fields = mem.fields.to_dict()
    missing = [f"r{r}.{j}" for r, j in sorted(rep.fields) if fields.get(f"r{r}.{j}") != [r, j]]
    assert missing == [], f"reported commits lost: {missing[:10]} ({len(missing)} in all)"
    if rep.lines:
        lines = set(mem.text("notes").value.splitlines())
        assert rep.lines <= lines, f"text lines lost: {sorted(rep.lines - lines)[:10]}"
    if rep.rows:
        arr = mem.buffer("rows", shape=(ROWS, COLS), dtype="float64").array
        for row, seq in rep.rows.items():
            assert (arr[row] >= seq).all(), f"buffer row {row} older than reported {seq}"


@dataclass
class KillStats:
    kills: int = 0
    finished: int = 0
    killed_before_open: int = 0
    killed_before_first_commit: int = 0
    commits_reported: int = 0


def kill_rounds(
    zygote: Zygote,
    tmp: Path,
    *,
    seed: int,
    databases: int,
    kills_per_db: int,
    quota: int = 400,
    max_wait_ms: float = 40.0,
) -> KillStats:
    rng = random.Random(seed)
    stats = KillStats()
    print(f"G6 seed={seed} (replay with HYBRIDSYNC_G6_SEED={seed})")
    for d in range(databases):
        db, report = tmp / f"g6-{d}.db", tmp / f"g6-{d}.report"
        rep = Reported()
        for run in range(kills_per_db):
            offset = report.stat().st_size if report.exists() else 0
            pid = int(zygote.ask(f"spawn {db} {report} {run} {quota}"))
            how = rng.random()
            if how < 0.2:  # early: most of these land while the store is being opened
                time.sleep(rng.uniform(0, 30) / 1000)
            elif how < 0.6:  # anywhere in the first max_wait_ms
                time.sleep(rng.uniform(0, max_wait_ms) / 1000)
            else:  # after a few commits (bounded wait), then a little more
                want, end = rng.randint(1, 20), time.monotonic() + 5
                while time.monotonic() < end and _lines_since(report, offset) < want + 1:
                    time.sleep(0.001)
                time.sleep(rng.uniform(0, 3) / 1000)
            os.kill(pid, signal.SIGKILL)  # never fails: the child stays a zombie until reaped
            status = zygote.ask(f"reap {pid}")
            assert status in {"signal 9", "exit 0"}, (
                f"writer failed (seed {seed}): {status}\n{zygote.stderr_path.read_text()[-3000:]}"
            )
            text = report.read_bytes()[offset:] if report.exists() else b""
            stats.kills += status == "signal 9"
            stats.finished += status == "exit 0"
            stats.killed_before_open += not text.startswith(b"open ")
            stats.killed_before_first_commit += b"\nf %d 0\n" % run not in text
            rep.read(report)
            # The store opens cleanly (no error, nothing silently empty) with every commit.
            mem = hs.Memory(SPACE, WRITER, path=str(db))
            try:
                check_all_reported_commits_are_there(mem, rep)
            finally:
                mem.close()
        stats.commits_reported += rep.commits
        converge_with_another_replica(db, rep, seed + d)
    print(f"G6: {stats}")
    return stats


def converge_with_another_replica(db: Path, rep: Reported, seed: int) -> None:
    restarted = hs.Memory(SPACE, WRITER, path=str(db))
    other = hs.Memory(SPACE, "other")
    try:
        other.fields["from-other"] = seed
        other.text("notes").set("other was here\n")
        other.commit()
        sync_pair(restarted, other)
        assert restarted.state_digest() == other.state_digest()
        assert restarted.heads == other.heads
        check_all_reported_commits_are_there(other, rep)
        digest = restarted.state_digest()
    finally:
        restarted.close()
    again = hs.Memory(SPACE, WRITER, path=str(db))  # what it received survived too
    try:
        assert again.state_digest() == digest and again.fields["from-other"] == seed
    finally:
        again.close()


def _lines_since(report: Path, offset: int) -> int:
    if not report.exists():
        return 0
    with report.open("rb") as fh:
        fh.seek(offset)
        return fh.read().count(b"\n")


def _seed(default: int) -> int:
    return int(os.environ.get("HYBRIDSYNC_G6_SEED", default))


def test_sigkilled_writers_keep_every_reported_commit(zygote: Zygote, tmp_path: Path) -> None:
    stats = kill_rounds(
        zygote, tmp_path, seed=_seed(random.randrange(1 << 30)), databases=8, kills_per_db=25
    )
    assert stats.kills + stats.finished == 200
    assert stats.kills >= 150, stats  # the quota is far beyond what a writer reaches
    assert stats.commits_reported > stats.kills, stats  # kills landed among commits


def test_a_killed_writer_rejoins_over_the_network(zygote: Zygote, tmp_path: Path) -> None:
    """The Peer-based variant: after SIGKILLs, the restarted replica syncs over loopback TCP."""
    from hybridsync.peer import Peer

    seed = _seed(random.randrange(1 << 30))
    stats = kill_rounds(zygote, tmp_path, seed=seed, databases=1, kills_per_db=10)
    assert stats.kills + stats.finished == 10
    db, report = tmp_path / "g6-0.db", tmp_path / "g6-0.report"
    rep = Reported()
    rep.read(report)
    secret = b"durability-test-secret"

    async def main() -> None:
        restarted = hs.Memory(SPACE, WRITER, path=str(db))
        other = hs.Memory(SPACE, "far-away")
        other.fields["from-far-away"] = seed
        pa = await Peer.start(restarted, secret=secret)
        pb = await Peer.start(other, secret=secret, peers=[pa.url])
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 60
            while not (restarted.state_digest() == other.state_digest()
                       and restarted.heads == other.heads):
                assert loop.time() < end, "no convergence over TCP within 60 s"
                await asyncio.sleep(0.05)
            check_all_reported_commits_are_there(other, rep)
            assert restarted.fields["from-far-away"] == seed
        finally:
            await pb.stop()
            await pa.stop()
            restarted.close()

    asyncio.run(main())


@pytest.mark.soak
@soak
@pytest.mark.parametrize("chunk", range(12))
def test_soak_thousands_of_kills(zygote: Zygote, tmp_path: Path, chunk: int) -> None:
    """12 chunks × 250 kills = 3,000 kills, each chunk well within pytest's 300 s timeout."""
    stats = kill_rounds(zygote, tmp_path, seed=_seed(random.randrange(1 << 30)) + chunk,
                        databases=10, kills_per_db=25)
    assert stats.kills + stats.finished == 250
    assert stats.kills >= 200, stats


# ---- opening the wrong or a damaged database ------------------------------------------------
def _durable(tmp_path: Path, n: int = 200) -> Path:
    db = tmp_path / "a.db"
    mem = hs.Memory(SPACE, WRITER, path=str(db))
    for i in range(n):
        mem.fields[f"k{i}"] = "x" * 50 + str(i)
    mem.close()
    return db


def test_a_store_of_another_space_or_peer_is_refused(tmp_path: Path) -> None:
    db = _durable(tmp_path)
    with pytest.raises(hs.StoreError, match="belongs to space 'g6-space'"):
        hs.Memory("another-space", WRITER, path=str(db))
    with pytest.raises(hs.StoreError, match="belongs to peer 'writer'"):
        hs.Memory(SPACE, "someone-else", path=str(db))
    mem = hs.Memory(SPACE, WRITER, path=str(db))  # refusing changed nothing
    assert len(mem.history()) == 200
    mem.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite at all\n" * 400)
    with pytest.raises(hs.StoreError, match="not a usable hybridsync database"):
        hs.Memory(SPACE, WRITER, path=str(junk))
    assert junk.read_bytes() == b"this is not SQLite at all\n" * 400


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "foreign.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('schema', x'39')")
    con.commit()
    con.close()
    with pytest.raises(hs.StoreError, match="schema"):
        hs.Memory(SPACE, WRITER, path=str(db))


def _page_size(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("PRAGMA page_size").fetchone()[0])
    finally:
        con.close()


@pytest.mark.parametrize("where", ["btree-page", "cell-bytes"])
def test_a_corrupted_page_is_a_clear_error_never_an_empty_start(tmp_path: Path, where: str) -> None:
    db = _durable(tmp_path)
    size, page = db.stat().st_size, _page_size(db)
    assert size >= 4 * page
    data = bytearray(db.read_bytes())
    rng = random.Random(5)
    if where == "btree-page":  # smash the header of a b-tree page in the middle of the file
        start = (size // page // 2) * page
        data[start : start + 16] = bytes(rng.randrange(256) for _ in range(16))
    else:  # flip bytes inside stored values (the page structure stays valid)
        start = data.index(b"x" * 50, 2 * page)
        data[start : start + 8] = b"\xff" * 8
    db.write_bytes(bytes(data))
    with pytest.raises(hs.StoreError):
        hs.Memory(SPACE, WRITER, path=str(db))


def test_store_error_names_the_file(tmp_path: Path) -> None:
    db = _durable(tmp_path, 5)
    with pytest.raises(hs.StoreError, match=str(db).replace(".", r"\.")):
        SQLiteStore(db, space="x", peer=WRITER)


def test_buffer_rows_survive_exactly(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    mem = hs.Memory(SPACE, WRITER, path=str(db))
    buf = mem.buffer("rows", shape=(ROWS, COLS), dtype="float64")
    buf.array[:] = np.arange(ROWS * COLS, dtype="float64").reshape(ROWS, COLS)
    mem.commit()
    digest = mem.state_digest()
    mem.close()
    again = hs.Memory(SPACE, WRITER, path=str(db))
    assert again.state_digest() == digest
    again.close()


def test_a_second_writer_of_one_store_is_refused(tmp_path: Path) -> None:
    db = _durable(tmp_path, 3)
    first = hs.Memory(SPACE, WRITER, path=str(db))
    try:
        with pytest.raises(hs.StoreError, match="already open by another replica"):
            hs.Memory(SPACE, WRITER, path=str(db))
        reader = SQLiteStore(db, space=SPACE, peer=WRITER, exclusive=False)  # readers may
        assert len(list(reader.contributions())) == 3
        reader.close()
    finally:
        first.close()
    hs.Memory(SPACE, WRITER, path=str(db)).close()  # closing released the lock
