"""The scenarios of ``hybridsync simulate NAME`` (hybridsync/scenarios, simulations/): each runs
through the CLI entry function at a tiny size into tmp_path, and its CSV and PNG are checked;
bigger sizes are soak tests. The measurement helpers are checked on hand-made cases.
"""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hybridsync import cli
from hybridsync.scenarios import SCENARIOS, _conflicts, _routing
from hybridsync.scenarios._common import PNG_MAGIC

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONWARNINGS": "error"}
SCRIPTS = {"partition-heal": "partition_heal.py", "metadata-growth": "metadata_growth.py",
           "routing": "routing.py", "lossy-links": "lossy_links.py",
           "conflicts": "conflicts.py"}


def _run(name: str, tmp_path: Path, *argv: str) -> list[dict[str, str]]:
    """Run scenario ``name`` through ``hybridsync simulate``; its CSV rows (PNG checked)."""
    out = tmp_path / name
    rc = cli.main(["simulate", name, "--out", str(out), "--no-progress", *argv])
    assert rc == 0
    png = (out / f"{name}.png").read_bytes()
    assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 300
    with (out / f"{name}.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    module = sys.modules[SCENARIOS[name].run.__module__]
    assert rows and list(rows[0]) == list(module.COLUMNS)
    return rows


def _int(row: dict[str, str], key: str) -> int:
    return int(row[key])


def test_partition_heal(tmp_path: Path) -> None:
    rows = _run("partition-heal", tmp_path, "--peers", "2,3", "--partition-ticks", "5,20",
                "--seeds", "1", "--warmup-ticks", "5")
    assert [(r["peers"], r["partition_ticks"]) for r in rows] == [
        ("2", "5"), ("2", "20"), ("3", "5"), ("3", "20")]
    for r in rows:
        assert _int(r, "behind_at_heal") > 0 and _int(r, "states_at_heal") >= 2
        assert _int(r, "converge_ticks") > 0
        assert _int(r, "converge_ms") == 10 * _int(r, "converge_ticks")
        assert 0 < _int(r, "bytes_after_heal") < _int(r, "bytes_total")
        assert _int(r, "messages_after_heal") > 0
    # the same seed writes the same stream: a longer split leaves the halves further apart
    for p in ("2", "3"):
        short, long_ = (r for r in rows if r["peers"] == p)
        assert _int(long_, "behind_at_heal") > _int(short, "behind_at_heal")


def test_metadata_growth(tmp_path: Path) -> None:
    rows = _run("metadata-growth", tmp_path, "--ticks", "60", "--samples", "3",
                "--text-chars", "600", "--gc-min-entries", "8")
    assert [_int(r, "tick") for r in rows] == [0, 20, 40, 60]
    first, last = rows[0], rows[-1]
    edits = _int(last, "edits")
    assert edits > 60  # 2 edits per tick on average
    # no GC: one contribution per text at the start, then one per edit, nothing dropped
    assert _int(last, "hs_log_length") == edits + 3
    assert _int(first, "gc_compacted") == 0 < _int(last, "gc_compacted")
    assert _int(last, "gc_log_length") < _int(last, "hs_log_length")
    assert _int(last, "gc_at_rest_bytes") < _int(last, "hs_at_rest_bytes")
    # pycrdt keeps every edit's tombstones: its metadata grows with the edits
    assert _int(last, "pycrdt_metadata_bytes") > 2 * _int(rows[1], "pycrdt_metadata_bytes") > 0
    for r in rows:
        content = _int(r, "content_bytes")
        assert content > 3 * 400
        assert _int(r, "pycrdt_state_bytes") == content + _int(r, "pycrdt_metadata_bytes")
        assert _int(r, "gc_metadata_peak_bytes") >= _int(r, "gc_metadata_bytes")
        assert _int(r, "gc_at_rest_peak_bytes") >= _int(r, "gc_at_rest_bytes")
        assert float(r["pycrdt_ratio"]) == pytest.approx(
            _int(r, "pycrdt_metadata_bytes") / content, rel=1e-4)


def test_routing_holds_g4(tmp_path: Path) -> None:
    rows = _run("routing", tmp_path, "--peers", "3", "--epochs", "1", "--burst-ops", "6")
    assert [r["routing"] for r in rows] == ["mesh", "star", "gossip"]
    assert {r["identical"] for r in rows} == {"1"}
    assert len({(r["history_digest"], r["state_digest"]) for r in rows}) == 1
    assert len({r["messages"] for r in rows}) > 1  # the policies really routed differently
    for r in rows:
        assert _int(r, "history_length") > 6 and _int(r, "bytes") > 0
        assert _int(r, "converge_ticks_max") >= 1


def test_routing_fails_loudly_when_policies_disagree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = _routing._run_policy

    def tampered(base: _routing.SimOptions, routing: str, batch: int) -> tuple[object, str]:
        result, digest = real(base, routing, batch)
        return result, ("0" * 32 if routing == "star" else digest)

    monkeypatch.setattr(_routing, "_run_policy", tampered)
    out = tmp_path / "g4"
    rc = cli.main(["simulate", "routing", "--out", str(out), "--no-progress", "--peers", "3",
                   "--epochs", "1", "--burst-ops", "4", "--no-plot"])
    assert rc == 1
    assert "G4 policy independence: star/batch=512" in capsys.readouterr().err
    with (out / "routing.csv").open(newline="") as fh:  # written before failing
        rows = list(csv.DictReader(fh))
    assert [r["identical"] for r in rows] == ["1", "0", "1"]


def test_lossy_links(tmp_path: Path) -> None:
    rows = _run("lossy-links", tmp_path, "--loss", "0,0.3", "--duplicate", "0.3",
                "--max-delay-ticks", "1,4", "--seeds", "1", "--epochs", "2", "--burst-ops", "6")
    assert [r["sweep"] for r in rows] == ["loss"] * 2 + ["duplicate"] + ["reorder"] * 4
    for r in rows:
        assert _int(r, "bursts") == 2 and float(r["converge_ticks_mean"]) >= 1
        assert (_int(r, "dropped_loss") > 0) == (float(r["loss"]) > 0)
        assert (_int(r, "duplicated") > 0) == (float(r["duplicate"]) > 0)
    fifo, reordered = rows[5], rows[6]  # delay 1..4
    assert (fifo["reorder"], reordered["reorder"]) == ("0", "1")


def test_conflicts(tmp_path: Path) -> None:
    rows = _run("conflicts", tmp_path, "--edit-rates", "1", "--sync-intervals", "1,8",
                "--ticks", "24", "--text-chars", "1500")
    assert [r["sync_interval"] for r in rows] == ["1", "8"]
    for r in rows:
        edits = _int(r, "edits")
        assert edits + _int(r, "skipped") >= 10
        assert _int(r, "reported") + _int(r, "damaged") + _int(r, "intact") == edits
        assert _int(r, "conflicts") >= _int(r, "reported")
        assert 0 <= float(r["concurrent_pct"]) <= 100
    assert float(rows[1]["concurrent_pct"]) > 50  # eight ticks between rounds


def test_partition_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _run("partition", tmp_path, "--peers", "3", "--ticks", "40", "--no-rollbacks")
    assert any(r["partitioned"] == "1" for r in rows)
    assert rows[-1]["distinct_states"] == "1"
    assert "ok:" in capsys.readouterr().out


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(SCENARIOS)
    assert set(SCRIPTS) | {"partition"} == set(SCENARIOS)


def test_no_plot_writes_only_the_csv(tmp_path: Path) -> None:
    out = tmp_path / "csv-only"
    assert cli.main(["simulate", "routing", "--out", str(out), "--no-progress", "--no-plot",
                     "--peers", "2", "--epochs", "1", "--burst-ops", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["routing.csv"]


@pytest.mark.parametrize("argv", [
    ["partition-heal", "--peers", "2,65"],
    ["partition-heal", "--peers", "two"],
    ["metadata-growth", "--text-chars", "10"],
    ["lossy-links", "--loss", "0.97"],
    ["conflicts", "--sync-intervals", "0"],
    ["routing", "--batch-sizes", "0"],
])
def test_bad_options_exit_2(argv: list[str], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", *argv, "--out", str(tmp_path), "--no-progress"]) == 2
    assert "error" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_scripts_are_wired(tmp_path: Path) -> None:
    for name, script in SCRIPTS.items():
        proc = subprocess.run([sys.executable, str(ROOT / "simulations" / script), "--help"],
                              capture_output=True, text=True, env=ENV, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        assert f"hybridsync simulate {name}" in proc.stdout
    proc = subprocess.run([sys.executable, str(ROOT / "simulations" / "routing.py"), "--peers",
                           "2", "--epochs", "1", "--burst-ops", "3", "--no-plot"],
                          capture_output=True, text=True, env=ENV, timeout=120, check=False,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "results" / "routing" / "routing.csv").is_file()


# ---- the measurement helpers on hand-made cases ---------------------------------------------
def test_collateral_counts_damage_outside_the_edits() -> None:
    edit = _conflicts._Edit("<e0 new words>", "p0", (6, 11), "aa")
    base = "Alpha bravo charlie delta"
    ideal = "Alpha <e0 new words> charlie delta"
    assert _conflicts._collateral(base, ideal, [edit], set()) == 0
    assert _conflicts._collateral(base, "Alpha <e0 new words> charlie", [edit], set()) == 6
    # a reported edit's span is not expected to be gone
    assert _conflicts._collateral(base, base, [edit], {"aa"}) == 0
    assert _conflicts._collateral(base, base, [edit], set()) == 5


def test_concurrency_comes_from_the_version_vectors() -> None:
    def edit(peer: str, seq: int, **past: int) -> _conflicts._Edit:
        return _conflicts._Edit(f"<{peer}{seq}>", peer, (0, 1), f"{peer}{seq}", seq,
                                tuple(sorted({peer: seq, **past}.items())))

    a1, b1 = edit("a", 1), edit("b", 1)  # neither saw the other
    b2 = edit("b", 2, a=1)  # after both
    assert b2.saw(a1) and b2.saw(b1) and not a1.saw(b1) and not b1.saw(a1)
    assert _conflicts._concurrent([a1, b1, b2]) == 2
    assert _conflicts._concurrent([b1, b2]) == 0
    assert _conflicts._concurrent([a1, b1, b2, edit("c", 1, a=1)]) == 4


# ---- bigger sizes ----------------------------------------------------------------------------
@pytest.mark.soak
def test_soak_partition_heal_up_to_64_peers(tmp_path: Path) -> None:
    rows = _run("partition-heal", tmp_path, "--peers", "2,16,64", "--partition-ticks",
                "10,80", "--seeds", "1")
    assert len(rows) == 6
    assert all(_int(r, "converge_ticks") > 0 for r in rows)


@pytest.mark.soak
def test_soak_metadata_stays_bounded_with_gc(tmp_path: Path) -> None:
    rows = _run("metadata-growth", tmp_path, "--ticks", "3000", "--samples", "30")
    half = len(rows) // 2
    gc_first = max(float(r["gc_ratio_peak"]) for r in rows[1:half])
    gc_second = max(float(r["gc_ratio_peak"]) for r in rows[half:])
    assert gc_second <= 1.2 * gc_first  # flat: the peak does not grow with the edits
    # pycrdt grows with the edits (linearly: twice the edits, about twice the metadata)
    assert float(rows[-1]["pycrdt_ratio"]) > 1.5 * float(rows[half]["pycrdt_ratio"])
    assert float(rows[-1]["gc_ratio_peak"]) < float(rows[-1]["pycrdt_ratio"])


@pytest.mark.soak
@pytest.mark.parametrize("name, argv", [
    ("routing", ["--peers", "4,8,16,32", "--batch-sizes", "512,1", "--loss", "0.1",
                 "--fault-ticks", "20"]),
    ("lossy-links", ["--seeds", "10", "--loss", "0,0.2,0.4,0.6,0.8"]),
    ("conflicts", ["--edit-rates", "0.3,1,3", "--sync-intervals", "1,4,16,64", "--seeds", "3"]),
])
def test_soak_bigger_sizes(name: str, argv: list[str], tmp_path: Path) -> None:
    rows = _run(name, tmp_path, *argv)
    assert rows
