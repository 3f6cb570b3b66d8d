"""Load: 16 peers on one machine, sustained writes, everything converges (issue 4).

Each peer is its own process (``_peer_runner.py``: ``hs.Memory`` + ``hs.Peer`` over
loopback TCP, authenticated and encrypted), not one event loop with 16 peers: separate
processes are what a deployment looks like, give each peer its own RSS to report, and keep
one slow peer from stalling the others' event loop. The cost is ~1 s of interpreter start-up
per peer. The peers form a sparse mesh (peer i dials i-1 and i-4), so most writes reach most
peers through relays: anti-entropy forwards whatever a neighbour lacks.

Assertions are about correctness only: every replica ends with the same state digest and
every key every peer wrote. Throughput, RSS and convergence lag are printed (and written as
JSON where ``HYBRIDSYNC_LOAD_REPORT`` points); docs/benchmarks.md records a run.
The default run is short; ``@pytest.mark.soak`` runs a longer, faster one (``make soak``).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

import pytest
from _cluster import Cluster, written_keys

PEERS = 16


def _dials(i: int) -> list[int]:
    return [j for j in (i - 1, i - 4) if j >= 0]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _run_load(writes: int, interval_ms: float, *, within_s: float) -> dict[str, Any]:
    cluster = Cluster(PEERS, dials=_dials)
    try:
        ok, states, _ = cluster.wait(
            lambda ss: all(len(s["sessions"]) >= 1 for s in ss), within_s=60
        )
        assert ok, [s["sessions"] for s in states]
        rss_before = [s["rss_kib"] for s in states]

        start = time.monotonic()
        for p in cluster.peers:
            p.ask("stream", n=writes, interval_ms=interval_ms)
        for p in cluster.peers:
            assert p.ask("join", within_s=within_s)["written"] == writes
        writing_s = time.monotonic() - start
        total = PEERS * writes
        ok, states, waited_s = cluster.wait_converged(keys=total, within_s=within_s)
        converged_s = time.monotonic() - start
        assert ok, [(s["keys"], s["digest"][:8], s["sessions"]) for s in states]

        expected = set().union(*(written_keys(f"p{i}", writes) for i in range(PEERS)))
        for p in cluster.peers:
            assert set(p.ask("keys")["keys"]) == expected, p.name
        assert len({tuple(s["heads"]) for s in states}) == 1

        lags = [lag for p in cluster.peers for lag in p.ask("lags")["lags_ms"]]
        # Every peer saw every other peer's writes arrive (a local write is not a lag).
        assert len(lags) == PEERS * (PEERS - 1) * writes
        rss = [s["rss_kib"] / 1024 for s in states]
        return {
            "peers": PEERS,
            "writes_per_peer": writes,
            "interval_ms": interval_ms,
            "writes_total": total,
            "offered_writes_per_s": total / writing_s,
            "writes_converged_per_s": total / converged_s,
            "writing_s": writing_s,
            "converged_after_last_write_s": waited_s,
            "lag_ms": {
                "median": statistics.median(lags),
                "p99": _quantile(lags, 0.99),
                "max": max(lags),
            },
            "rss_mib": {
                "before_median": statistics.median(rss_before) / 1024,
                "median": statistics.median(rss),
                "max": max(rss),
                "total": sum(rss),
            },
        }
    finally:
        cluster.close()


def _report(result: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    lag, rss = result["lag_ms"], result["rss_mib"]
    line = (
        f"load: {result['peers']} peers × {result['writes_per_peer']} writes every "
        f"{result['interval_ms']:g} ms = {result['writes_total']} writes; offered "
        f"{result['offered_writes_per_s']:.0f} writes/s, all converged at "
        f"{result['writes_converged_per_s']:.0f} writes/s, "
        f"{result['converged_after_last_write_s']:.1f} s after the last write; "
        f"lag median {lag['median']:.1f} ms, p99 {lag['p99']:.1f} ms, max {lag['max']:.0f} ms; "
        f"RSS per peer median {rss['median']:.1f} MiB (start {rss['before_median']:.1f}), "
        f"max {rss['max']:.1f} MiB, total {rss['total']:.0f} MiB"
    )
    with capsys.disabled():
        print(f"\n{line}")
    path = os.environ.get("HYBRIDSYNC_LOAD_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(result) + "\n")


def test_sixteen_peers_sustained_writes_converge(capsys: pytest.CaptureFixture[str]) -> None:
    _report(_run_load(writes=40, interval_ms=50, within_s=120), capsys)


@pytest.mark.soak
@pytest.mark.skipif(os.environ.get("HYBRIDSYNC_SOAK") != "1", reason="soak: `make soak`")
def test_sixteen_peers_long_sustained_writes_converge(capsys: pytest.CaptureFixture[str]) -> None:
    _report(_run_load(writes=1_500, interval_ms=20, within_s=600), capsys)
