"""The real-network commands as a user runs them: ``hybridsync peer``, ``inspect`` and ``demo``,
as separate processes on loopback (127.0.0.1 only; mDNS with interfaces=["127.0.0.1"])."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hybridsync as hs
from hybridsync._inspect import inspect_store
from hybridsync.testing import sync_pair

ENV = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "hybridsync.cli"]
DEADLINE_S = 60.0  # a bound on every wait (the machine may be busy); timing is never asserted


def _secret(tmp: Path) -> Path:
    f = tmp / "group.key"
    f.write_text("3c4b9d2e0f1a6b7c8d9e0f1a2b3c4d5e\n")
    return f


class PeerProc:
    """A ``hybridsync peer`` process; ``url`` is read from its first line."""

    def __init__(self, tmp: Path, name: str, *args: str, space: str = "cli-space") -> None:
        self.db = tmp / f"{name}.db"
        self.err_path = tmp / f"{name}.err"
        self._err = self.err_path.open("w")
        self.proc = subprocess.Popen(
            [
                *CLI,
                "peer",
                "--space",
                space,
                "--secret-file",
                str(_secret(tmp)),
                "--path",
                str(self.db),
                "--name",
                name,
                "--status-interval",
                "1",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=ENV,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        m = re.search(r"listening on (tcp://\S+)", first)
        assert m, f"no listening line: {first!r}\n{self.err_path.read_text()}"
        self.url = m.group(1)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=10)
        self._err.close()
        return self.proc.returncode, out

    @property
    def log(self) -> str:
        return self.err_path.read_text()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Callable[..., PeerProc]]:
    started: list[PeerProc] = []

    def start(name: str, *args: str, **kw: Any) -> PeerProc:
        p = PeerProc(tmp_path, name, *args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.stop(signal.SIGKILL)


def _until(cond: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < end, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.1)


def _fields(db: Path) -> dict[str, Any]:
    try:
        return inspect_store(str(db), history=0)["fields"]  # type: ignore[no-any-return]
    except hs.StoreError:  # not created yet
        return {}


def _populate(db: Path, name: str, space: str = "cli-space", n: int = 5) -> str:
    mem = hs.Memory(space, name, path=str(db))
    with mem.transaction(note="seed"):
        for i in range(n):
            mem.fields[f"{name}-{i}"] = i
        mem.text("notes").set(f"{name} was here\n")
    digest = mem.state_digest()
    mem.close()
    return digest


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=ENV, timeout=timeout, check=False
    )


# ---- peer ---------------------------------------------------------------------------------
def test_two_peers_sync_by_url_log_sessions_and_stop_cleanly(
    tmp_path: Path, peers: Callable[..., PeerProc]
) -> None:
    _populate(tmp_path / "a.db", "a")
    a = peers("a")
    b = peers("b", "--peer", a.url)
    want = {f"a-{i}": i for i in range(5)}
    _until(lambda: _fields(b.db) == want, "b receives a's fields")
    _until(
        lambda: "session with a opened" in b.log and "session with b opened" in a.log,
        "both log the session",
    )
    rc_b, out_b = b.stop()
    rc_a, out_a = a.stop()
    assert (rc_a, rc_b) == (0, 0), a.log + b.log
    assert out_a.startswith("stopped:") and out_b.startswith("stopped:")
    assert "stopping: flushing and saying goodbye" in b.log
    # Both stored replicas agree (inspect through the CLI, as JSON).
    reports = [json.loads(run_cli("inspect", "--json", str(p.db)).stdout) for p in (a, b)]
    assert reports[0]["state_digest"] == reports[1]["state_digest"]
    assert reports[1]["fields"] == want and reports[1]["peer"] == "b"


def test_peers_find_each_other_by_mdns(tmp_path: Path, peers: Callable[..., PeerProc]) -> None:
    _populate(tmp_path / "a.db", "a")
    _populate(tmp_path / "b.db", "b")
    a = peers("a", "--mdns", "--interface", "127.0.0.1")
    b = peers("b", "--mdns")
    both = {**{f"a-{i}": i for i in range(5)}, **{f"b-{i}": i for i in range(5)}}
    _until(lambda: _fields(a.db) == both and _fields(b.db) == both, "a and b exchange fields")
    assert (a.stop()[0], b.stop()[0]) == (0, 0)


def test_a_peer_killed_with_sigkill_restarts_and_rejoins(
    tmp_path: Path, peers: Callable[..., PeerProc]
) -> None:
    _populate(tmp_path / "a.db", "a", n=50)
    a = peers("a")
    b = peers("b", "--peer", a.url)
    _until(lambda: len(_fields(b.db)) >= 1, "b starts receiving")
    rc, _ = b.stop(signal.SIGKILL)  # mid-sync or after: nothing half-written may show
    assert rc == -signal.SIGKILL
    b2 = peers("b", "--peer", a.url)  # the same store: opens cleanly, rejoins
    want = {f"a-{i}": i for i in range(50)}
    _until(lambda: _fields(b2.db) == want, "the restarted b catches up")
    assert b2.stop()[0] == 0 and a.stop()[0] == 0
    digests = {inspect_store(str(db))["state_digest"] for db in (a.db, b2.db)}
    assert len(digests) == 1


def test_a_second_peer_on_the_same_store_is_refused(
        tmp_path: Path, peers: Callable[..., PeerProc]) -> None:
    a = peers("a")
    proc = run_cli("peer", "--space", "cli-space", "--secret-file", str(_secret(tmp_path)),
                   "--path", str(a.db), "--name", "a")
    assert proc.returncode == 1 and "already open by another replica" in proc.stderr
    assert inspect_store(str(a.db))["peer"] == "a"  # readers still may
    assert a.stop()[0] == 0


def test_sigint_stops_cleanly_too(tmp_path: Path, peers: Callable[..., PeerProc]) -> None:
    a = peers("a")
    rc, out = a.stop(signal.SIGINT)
    assert rc == 0 and out.startswith("stopped:"), a.log


# ---- errors and exit codes ----------------------------------------------------------------
def test_a_store_of_another_space_is_refused_with_exit_1(tmp_path: Path) -> None:
    _populate(tmp_path / "a.db", "a", space="other-space")
    proc = run_cli(
        "peer",
        "--space",
        "cli-space",
        "--secret-file",
        str(_secret(tmp_path)),
        "--path",
        str(tmp_path / "a.db"),
    )
    assert proc.returncode == 1
    assert "belongs to space 'other-space'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _fields(tmp_path / "a.db")  # untouched, not emptied


def test_a_corrupted_store_is_refused_with_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    _populate(db, "a", n=300)
    data = bytearray(db.read_bytes())
    data[4096 * 2 : 4096 * 2 + 64] = b"\x00\xff" * 32
    db.write_bytes(bytes(data))
    for argv in (
        [
            "peer",
            "--space",
            "cli-space",
            "--secret-file",
            str(_secret(tmp_path)),
            "--path",
            str(db),
        ],
        ["inspect", str(db)],
    ):
        proc = run_cli(*argv)
        assert proc.returncode == 1, proc.stderr
        assert "error:" in proc.stderr and str(db) in proc.stderr
        assert "Traceback" not in proc.stderr


def test_port_in_use_is_exit_1(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_cli(
            "peer",
            "--space",
            "cli-space",
            "--secret-file",
            str(_secret(tmp_path)),
            "--path",
            str(tmp_path / "a.db"),
            "--listen",
            f"127.0.0.1:{port}",
        )
    assert proc.returncode == 1 and "cannot listen" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--secret-file", "/nonexistent/key"], "cannot read the secret file"),
        (["--listen", "nowhere"], "--listen must look like HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "--listen must look like HOST:PORT"),
        (["--peer", "http://x:1"], "tcp://host:port"),
        (["--interface", "127.0.0.1"], "--interface only makes sense with --mdns"),
        (["--mdns", "--interface", "0.0.0.0"], "host address"),
        (["--mdns", "--interface", "all"], "IPv4"),
        (["--status-interval", "-1"], "--status-interval"),
        (["--member", ""], "a member must be a non-empty str"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    secret = ["--secret-file", str(_secret(tmp_path))]
    if "--secret-file" in extra:
        secret = []
    proc = run_cli(
        "peer", "--space", "cli-space", *secret, "--path", str(tmp_path / "a.db"), *extra
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "a.db").exists()  # usage errors are found before the store opens


def test_a_short_secret_is_a_usage_error(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    proc = run_cli(
        "peer", "--space", "s", "--secret-file", str(short), "--path", str(tmp_path / "a.db")
    )
    assert proc.returncode == 2 and "shorter than 8 bytes" in proc.stderr
    assert not (tmp_path / "a.db").exists()  # nothing created on a usage error


# ---- inspect ------------------------------------------------------------------------------
def test_inspect_shows_fields_regions_history_and_conflicts(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    a = hs.Memory("s", "a", path=str(db))
    b = hs.Memory("s", "b")
    a.fields["goal"] = "ship v1"
    sync_pair(a, b)
    a.fields["goal"] = "ship v2"  # concurrent writes of one key: a conflict on both
    b.fields["goal"] = "ship v3"
    with b.transaction(note="notes and a buffer"):
        b.text("scratchpad").set("first line\nsecond line\n")
        b.buffer("kv/b", shape=(4, 4), dtype="float32").array[1] = 2.0
    sync_pair(a, b)
    digest = a.state_digest()
    a.close()
    proc = run_cli("inspect", str(db))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "space 's', peer 'a'" in out and digest in out
    assert '"goal": "ship v' in out
    assert re.search(r"scratchpad\s+text\s+23 B, 2 lines", out)
    assert re.search(r"kv/b\s+buffer\s+64 B", out)
    assert "history (last 4 of 4; by author: a 2, b 2)" in out
    assert "'notes and a buffer'" in out
    assert "conflicts (1)" in out and "concurrently with" in out
    report = json.loads(run_cli("inspect", "--json", "--history", "1", str(db)).stdout)
    assert report["state_digest"] == digest
    assert len(report["history"]["shown"]) == 1 and report["history"]["length"] == 4
    assert report["conflicts"][0]["location"] == "goal"
    assert {r["name"] for r in report["regions"]} == {"scratchpad", "kv/b"}


def test_inspect_of_a_missing_or_foreign_file_is_exit_1(tmp_path: Path) -> None:
    missing = run_cli("inspect", str(tmp_path / "nope.db"))
    assert missing.returncode == 1 and "no such store" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    proc = run_cli("inspect", str(junk))
    assert proc.returncode == 1 and "not a usable hybridsync database" in proc.stderr


# ---- demo ---------------------------------------------------------------------------------
def _per_agent(summary: str, label: str) -> dict[str, int]:
    """``label planner 1, researcher 1, critic 2`` in the summary, as a dict."""
    m = re.search(label + r" ((?:(?:planner|researcher|critic) \d+(?:, )?){3})", summary)
    assert m is not None, f"no {label!r} line in the summary:\n{summary}"
    return {n: int(c) for n, c in re.findall(r"(planner|researcher|critic) (\d+)", m[1])}


def test_the_demo_runs_three_processes_to_convergence(tmp_path: Path) -> None:
    proc = run_cli(
        "demo",
        "--pace-s",
        "0.5",
        "--step-timeout-s",
        "60",
        "--keep",
        str(tmp_path / "demo"),
        timeout=280,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "every agent has a session with the two others" in out
    assert "critic's network link is cut" in out and "the link comes back" in out
    # The live view shows the silent cut as it happens: the critic's link is CUT while the
    # others still list a session with it, until their heartbeats close them all.
    cut_rows = re.findall(r"^  critic +CUT .*$", out, re.M)
    assert cut_rows, out
    assert re.search(r"^  planner +up +critic,researcher .*$", out[out.index("CUT"):], re.M)
    assert "heartbeats closed every session with critic" in out
    assert "2 different states" in out  # the critic was apart while editing
    summary = out[out.index("== summary ==") :]
    digests = re.findall(r"(planner|researcher|critic) ([0-9a-f]{12})", summary)
    assert len(digests) == 3 and len({d for _, d in digests}) == 1, summary
    assert "conflict (reported identically by all 3): fields 'tasks/t1/status'" in summary
    # Heartbeats (not a goodbye) ended the sessions with the critic, on both sides of the
    # cut, and every agent asked mDNS again afterwards.
    timeouts = _per_agent(summary, "heartbeat timeouts")
    assert timeouts["planner"] >= 1 and timeouts["researcher"] >= 1, summary
    assert timeouts["critic"] >= 2, summary
    assert all(n >= 1 for n in _per_agent(summary, "mDNS re-queries").values()), summary
    assert "retirement: a member silent for 300 s stops blocking compaction" in summary
    # The three stored replicas agree byte for byte with what the processes reported.
    stored = {
        inspect_store(str(tmp_path / "demo" / f"{n}.db"))["state_digest"]
        for n in ("planner", "researcher", "critic")
    }
    assert len(stored) == 1 and next(iter(stored)).startswith(digests[0][1])


def test_a_demo_step_that_times_out_fails_cleanly_with_the_agents_logs(tmp_path: Path) -> None:
    proc = run_cli("demo", "--pace-s", "0", "--step-timeout-s", "0.2", "--keep",
                   str(tmp_path / "demo"), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "demo failed: no agents started within 0.2 s" in proc.stdout
    assert "--- critic log" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    # The agents were stopped, not orphaned: each closed its store (the lock is free again).
    for name in ("planner", "researcher", "critic"):
        db = tmp_path / "demo" / f"{name}.db"
        if db.exists():
            hs.Memory("demo", name, path=str(db)).close()


def test_a_demo_agent_retires_members_that_never_show_up(tmp_path: Path) -> None:
    """``--retire-after-s`` reaches the agent's Memory: alone, the planner retires the two
    declared members it never heard of (the demo passes 300 s; here 0.3 s)."""
    key = _secret(tmp_path)
    err = (tmp_path / "planner.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridsync._demo", "agent", "--name", "planner",
         "--secret-file", str(key), "--path", str(tmp_path / "planner.db"),
         "--retire-after-s", "0.3", "--status-interval-s", "0.05"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=ENV,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps({"op": "write", "id": 1, "set": [[["goal"], "alone"]]})
                         + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + DEADLINE_S
        retired: list[str] = []
        statuses = 0
        while retired != ["critic", "researcher"]:
            assert time.monotonic() < deadline, f"not retired after {statuses} statuses"
            line = proc.stdout.readline()
            assert line, "the agent exited"
            msg = json.loads(line)
            if msg["type"] == "status":
                statuses += 1
                assert msg["retire_after_s"] == 0.3
                retired = msg["retired"]
    finally:
        proc.stdin.close()  # end of commands: the agent stops
        proc.wait(timeout=DEADLINE_S)
        proc.stdout.close()
        err.close()
    assert proc.returncode == 0, (tmp_path / "planner.err").read_text()


def test_a_bad_demo_retire_after_is_a_usage_error() -> None:
    proc = run_cli("demo", "--retire-after", "0", timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--retire-after must be a number of seconds" in proc.stderr
    assert "hybridsync demo:" not in proc.stdout  # nothing was started
