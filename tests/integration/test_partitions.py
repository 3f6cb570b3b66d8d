"""Real peers in network namespaces: partitions, random loss, heartbeats, heals (issue 4);
fields everywhere, and texts and a buffer across one cut.

Each test builds its own lab (``_netns.NetLab``: namespaces on a bridge, nftables faults;
DESIGN.md §5) and runs every peer as a process inside its namespace (``_peer_runner.py``
with ``hs.Peer`` and static peers). Runs as root; elsewhere every test here skips with the
reason (``scripts/ci-setup.sh`` installs ``iproute2``/``nftables`` for ``make test``).
No assertion is about timing: waits are bounded and only decide pass or fail by state.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from _cluster import Cluster, written_keys
from _netns import NetLab, unavailable_reason

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"network namespaces: {REASON}")

_SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 9000)); s.listen(); print('up', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
)


def _reaches(lab: NetLab, src: int, dst: int) -> bool:
    """Can node ``src`` open a TCP connection to node ``dst``'s port 9000 (1 s timeout)?"""
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    s = socket.create_connection(('{lab.address(dst)}', 9000), timeout=1.0)\n"
        "    sys.exit(0 if s.recv(2) == b'hi' else 2)\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    done = subprocess.run(lab.command(src, [sys.executable, "-c", code]), timeout=30)
    return done.returncode == 0


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split(" ", 1)[0] for line in out.stdout.splitlines()}


# ---- the harness itself -------------------------------------------------------------------


def test_lab_partitions_loses_and_heals_then_cleans_up() -> None:
    with NetLab(3) as lab:
        names = {lab.switch, *lab.nodes}
        assert names <= _namespaces()
        server = lab.popen(0, [sys.executable, "-c", _SERVER], stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline() == b"up\n"
        assert _reaches(lab, 1, 0) and _reaches(lab, 2, 0)

        lab.partition([[0, 1], [2]])
        assert _reaches(lab, 1, 0)
        assert not _reaches(lab, 2, 0)
        lab.partition([[0], [1, 2]])  # replaces the previous cut
        assert not _reaches(lab, 1, 0) and not _reaches(lab, 2, 0)
        lab.heal()
        assert _reaches(lab, 1, 0) and _reaches(lab, 2, 0)

        lab.loss(100, nodes=[2])
        assert not _reaches(lab, 2, 0)
        assert _reaches(lab, 1, 0)
        assert 'iifname "p2" drop' in lab.ruleset()
        lab.loss(50)
        assert "numgen random mod 100 < 50 drop" in lab.ruleset()
        lab.heal()
        assert _reaches(lab, 2, 0)
        assert "drop" not in lab.ruleset()
    assert not names & _namespaces()
    assert server.poll() is not None  # close() killed the lab's processes


def test_lab_cleans_up_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"), NetLab(2) as lab:
        names = {lab.switch, *lab.nodes}
        raise RuntimeError("boom")
    assert not names & _namespaces()


def test_lab_rejects_bad_fault_specs() -> None:
    with NetLab(2) as lab:
        with pytest.raises(ValueError, match="two groups"):
            lab.partition([[0, 1], [1]])
        with pytest.raises(ValueError, match="not in a lab"):
            lab.partition([[0], [5]])
        with pytest.raises(ValueError, match="percentage"):
            lab.loss(101)


# ---- peers --------------------------------------------------------------------------------


def _cluster(lab: NetLab, n: int) -> Cluster:
    return Cluster(n, wrap=lab.command, host=lab.address)


def _await_mesh(cluster: Cluster, n: int) -> None:
    """Every one of the ``n`` nodes holds a session with every other (30 s at most)."""
    ok, states, _ = cluster.wait(
        lambda ss: all(len(s["sessions"]) == n - 1 for s in ss), within_s=30
    )
    assert ok, [s["sessions"] for s in states]


def _digests(states: list[dict[str, object]]) -> list[object]:
    return [s["digest"] for s in states]


def test_partition_both_sides_write_then_heal_converges() -> None:
    writes = 25
    with NetLab(4) as lab:
        cluster = _cluster(lab, 4)
        try:
            _await_mesh(cluster, 4)

            lab.partition([[0, 1], [2, 3]])
            for p in cluster.peers:
                p.ask("stream", n=writes, interval_ms=20)
            for p in cluster.peers:
                assert p.ask("join", within_s=60)["written"] == writes

            # Each side converges on its own, and the two sides differ.
            ok, states, _ = cluster.wait(
                lambda ss: (
                    ss[0]["digest"] == ss[1]["digest"]
                    and ss[2]["digest"] == ss[3]["digest"]
                    and ss[0]["keys"] == ss[2]["keys"] == 2 * writes
                ),
                within_s=30,
            )
            assert ok, [(s["digest"], s["keys"]) for s in states]
            assert states[0]["digest"] != states[2]["digest"]
            # Heartbeats noticed the cut: no session crosses it.
            ok, states, _ = cluster.wait(
                lambda ss: ss[0]["sessions"] == ["p1"] and ss[3]["sessions"] == ["p2"],
                within_s=30,
            )
            assert ok, [s["sessions"] for s in states]

            lab.heal()
            ok, states, _ = cluster.wait_converged(keys=4 * writes, within_s=60)
            assert ok, [(s["digest"], s["keys"], s["sessions"]) for s in states]
            expected = set().union(*(written_keys(f"p{i}", writes) for i in range(4)))
            for p in cluster.peers:
                assert set(p.ask("keys")["keys"]) == expected
        finally:
            cluster.close()


def test_texts_and_a_buffer_written_on_both_sides_of_a_cut_converge_byte_for_byte() -> None:
    """Regions across a real cut: every node edits its own line of one shared text and fills
    its own row (one 4 KiB block) of one shared buffer while the network is split in two;
    p0 and p2 (on opposite sides) also overwrite the same block. After the heal every replica
    holds the same region bytes, every line edit, every row, and the same conflicts."""
    shape = [5, 1024]  # float32: one row is one 4,096-byte block
    filler = "".join(f"  filler {k}\n" for k in range(6))  # keeps the edits' contexts apart
    initial = "# notes\n" + "".join(f"p{i}: todo\n{filler}" for i in range(4))
    with NetLab(4) as lab:
        cluster = _cluster(lab, 4)
        try:
            _await_mesh(cluster, 4)
            p0 = cluster.peers[0]
            p0.ask("text", name="notes", value=initial)
            p0.ask("buffer", name="kv", shape=shape, row=4, value=-1.0)
            ok, states, _ = cluster.wait_converged(within_s=30)
            assert ok, [s["digest"] for s in states]

            lab.partition([[0, 1], [2, 3]])
            ok, states, _ = cluster.wait(  # heartbeats: no session crosses the cut any more
                lambda ss: ss[0]["sessions"] == ["p1"] and ss[3]["sessions"] == ["p2"],
                within_s=30,
            )
            assert ok, [s["sessions"] for s in states]
            for i, p in enumerate(cluster.peers):
                p.ask("text", name="notes", old=f"p{i}: todo", new=f"p{i}: done, apart")
                p.ask("buffer", name="kv", shape=shape, row=i, value=float(i + 1))
            cluster.peers[0].ask("buffer", name="kv", shape=shape, row=4, value=100.0)
            cluster.peers[2].ask("buffer", name="kv", shape=shape, row=4, value=200.0)
            ok, states, _ = cluster.wait(
                lambda ss: ss[0]["digest"] == ss[1]["digest"] and ss[2]["digest"] == ss[3][
                    "digest"] != ss[0]["digest"],
                within_s=30,
            )
            assert ok, [s["digest"] for s in states]
            side = cluster.peers[1].ask("regions", buffers={"kv": shape})
            assert "p0: done, apart" in side["texts"]["notes"]
            assert "p2: done, apart" not in side["texts"]["notes"]  # not across the cut

            lab.heal()
            ok, states, _ = cluster.wait_converged(within_s=60)
            assert ok, [(s["digest"], s["sessions"]) for s in states]
            views = [p.ask("regions", buffers={"kv": shape}) for p in cluster.peers]
            assert all(v["bytes"] == views[0]["bytes"] for v in views), views
            assert all(v == views[0] for v in views)  # texts, rows and conflicts too
            view = views[0]
            assert view["texts"]["notes"] == "# notes\n" + "".join(
                f"p{i}: done, apart\n{filler}" for i in range(4))
            rows = view["rows"]["kv"]
            assert rows[:4] == [1.0, 2.0, 3.0, 4.0]
            assert rows[4] in (100.0, 200.0)  # one of the concurrent overwrites, everywhere
            assert [c[:3] for c in view["conflicts"]] == [
                ["buffer", "block-overwritten", "kv"]], view["conflicts"]
        finally:
            cluster.close()


@pytest.mark.parametrize("loss_percent", [15])
def test_random_loss_still_converges(loss_percent: int) -> None:
    writes = 40
    with NetLab(3) as lab:
        cluster = _cluster(lab, 3)
        try:
            _await_mesh(cluster, 3)
            lab.loss(loss_percent)
            for p in cluster.peers:
                p.ask("stream", n=writes, interval_ms=10)
            for p in cluster.peers:
                assert p.ask("join", within_s=60)["written"] == writes
            # Converge with the loss still on.
            ok, states, _ = cluster.wait_converged(keys=3 * writes, within_s=90)
            assert ok, [(s["digest"], s["keys"], s["sessions"]) for s in states]
            expected = set().union(*(written_keys(f"p{i}", writes) for i in range(3)))
            for p in cluster.peers:
                assert set(p.ask("keys")["keys"]) == expected
            assert "numgen random" in lab.ruleset()
        finally:
            cluster.close()


def test_session_detects_the_partition_and_reconnects_after_heal() -> None:
    with NetLab(2) as lab:
        cluster = _cluster(lab, 2)
        try:
            a, b = cluster.peers
            ok, _, _ = cluster.wait(
                lambda ss: ss[0]["sessions"] == ["p1"] and ss[1]["sessions"] == ["p0"],
                within_s=30,
            )
            assert ok
            lab.partition([[0], [1]])
            # Nothing is sent, nothing closes the socket: only the heartbeat can notice.
            ok, states, _ = cluster.wait(
                lambda ss: ss[0]["sessions"] == [] and ss[1]["sessions"] == [], within_s=30
            )
            assert ok, [s["sessions"] for s in states]
            assert states[0]["stats"]["heartbeat_timeouts"] >= 1
            b.ask("write", key="during", value="the cut")

            lab.heal()
            ok, states, _ = cluster.wait(
                lambda ss: ss[0]["sessions"] == ["p1"] and ss[1]["sessions"] == ["p0"],
                within_s=30,
            )
            assert ok, [s["sessions"] for s in states]
            ok, states, _ = cluster.wait_converged(within_s=30)
            assert ok
            assert "during" in a.ask("keys")["keys"]
        finally:
            cluster.close()
