"""The command lines: ``hybridsync simulate`` and its usage errors, ``python -m hybridsync.sim``.

The real-network commands (``demo``, ``peer``, ``inspect``) run in
tests/integration/test_cli_peer.py; the named scenarios of ``hybridsync simulate NAME`` in
tests/sim/test_scenarios.py.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hybridsync import cli
from hybridsync.scenarios import Progress
from hybridsync.scenarios._partition import COLUMNS
from hybridsync.sim import __main__ as sim_main

ENV = {**os.environ, "PYTHONWARNINGS": "error"}


def test_simulate_writes_a_csv_and_a_plot(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out_csv, out_png = tmp_path / "run.csv", tmp_path / "run.png"
    rc = cli.main(["simulate", "--seed", "4", "--peers", "4", "--ticks", "60", "--no-rollbacks",
                   "--csv", str(out_csv), "--plot", str(out_png), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("seed=4 options: seed=4 peers=4 ticks=60")
    with out_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) >= 60
    assert {r["phase"] for r in rows} <= {"safety", "liveness"}
    assert any(r["partitioned"] == "1" for r in rows)
    assert any(int(r["distinct_states"]) > 1 for r in rows)
    assert rows[-1]["distinct_states"] == "1" and rows[-1]["max_divergence"] == "0"
    assert sum(int(r["messages"]) for r in rows) > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_same_seed_same_csv(tmp_path: Path) -> None:
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for p in paths:
        assert cli.main(["simulate", "--seed", "9", "--peers", "3", "--ticks", "40",
                         "--no-rollbacks", "--csv", str(p), "--no-progress"]) == 0
    assert paths[0].read_text() == paths[1].read_text()


def test_the_textual_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import fails: fall back to text
    stream = io.StringIO()
    bar = Progress(4, True, stream)
    for _ in range(6):
        bar.update("states=1")
    bar.close()
    text = stream.getvalue()
    assert "100%" in text and "tick 6" in text and text.endswith("\n")
    silent = io.StringIO()
    Progress(4, False, silent).update("x")
    assert silent.getvalue() == ""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        ([], 2),
        (["--help"], 0),
        (["simulate", "--help"], 0),
        (["demo", "--help"], 0),
        (["frobnicate"], 2),
        (["simulate", "--loss", "2"], 2),
        (["simulate", "--peers", "0"], 2),
        (["simulate", "--list"], 0),
        (["simulate", "nosuchscenario"], 2),
        (["simulate", "partition-heal", "--peers", "1"], 2),
        (["simulate", "routing", "--routings", "ring"], 2),
        (["demo", "--pace-s", "-1"], 2),
        (["demo", "--agents", "3"], 2),
        (["peer", "--help"], 0),
        (["inspect", "--help"], 0),
        (["peer"], 2),
        (["inspect"], 2),
    ],
)
def test_exit_codes(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    if code == 2 and argv:
        assert "error" in captured.err


def test_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "peer", "inspect", "simulate"):
        assert command in out
    cli.main(["demo", "--help"])
    assert "mDNS" in capsys.readouterr().out


def test_sim_module_prints_seed_and_options_first(capsys: pytest.CaptureFixture[str]) -> None:
    rc = sim_main.main(["--seed", "5", "--scale", "small", "--no-rollbacks"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.splitlines()[0].startswith("seed=5 options: seed=5 peers=")
    assert "ok:" in out


def test_sim_module_sweep_and_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main.main(["--seed", "20", "--count", "3", "--scale", "small", "--no-rollbacks",
                          "--no-crashes", "-q"]) == 0
    assert "3/3 seeds passed" in capsys.readouterr().out
    assert sim_main.main(["--seed", "1", "--scale", "small", "--no-rollbacks",
                          "--check-policies"]) == 0
    assert "G4 ok" in capsys.readouterr().out


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hybridsync.sim", *argv], capture_output=True,
                          text=True, env=ENV, timeout=120, check=False)


def test_replay_in_a_subprocess() -> None:
    first = _run(["--seed", "7", "--scale", "small", "--no-rollbacks"])
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("seed=7 options: ")
    # Every option written out (what a failure prints) replays the same run.
    from hybridsync.sim import SimOptions

    options = SimOptions.draw(7, scale="small", rollbacks=False)
    again = _run(options.to_argv())
    assert again.returncode == 0
    assert again.stdout.splitlines()[1].split("; ")[0] == first.stdout.splitlines()[1].split(
        "; ")[0]


def test_a_failing_run_prints_its_replay_command_and_exits_1() -> None:
    failing = ["--seed", "3", "--scale", "small", "--liveness-ticks", "1", "--write-rate", "2",
               "--partitions", "--no-rollbacks"]
    proc = _run(failing)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "G1 liveness" in proc.stdout
    replay = next(line for line in proc.stdout.splitlines() if line.startswith("replay: "))
    argv = shlex.split(replay.removeprefix("replay: "))
    assert argv[:3] == ["python", "-m", "hybridsync.sim"]
    again = _run(argv[3:])
    assert again.returncode == 1
    assert again.stdout.splitlines()[1:] == proc.stdout.splitlines()[1:]


def test_usage_errors_exit_2() -> None:
    proc = _run(["--seed", "1", "--loss", "3"])
    assert proc.returncode == 2 and "loss" in proc.stderr
    proc = _run([])
    assert proc.returncode == 2


def test_cli_module_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "hybridsync.cli", "--help"], capture_output=True,
                          text=True, env=ENV, timeout=60, check=False)
    assert proc.returncode == 0 and "simulate" in proc.stdout and "demo" in proc.stdout
