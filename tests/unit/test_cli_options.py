"""CLI options checked in-process (no peer runs, no network): ``hybridsync peer
--retire-after`` reaches the Memory and is validated before the store is created; ``hybridsync
simulate`` refuses a bad ``--loss``/``--duplicate`` before printing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hybridsync import cli
from hybridsync.replica import Memory


def _peer_argv(tmp_path: Path, *extra: str) -> list[str]:
    key = tmp_path / "group.key"
    key.write_text("0123456789abcdef\n")
    return ["peer", "--space", "s", "--secret-file", str(key), "--path",
            str(tmp_path / "a.db"), "--name", "a", *extra]


def _record_run(monkeypatch: pytest.MonkeyPatch) -> list[Memory]:
    """Replace the network part of ``hybridsync peer`` with one that records its Memory."""
    seen: list[Memory] = []

    async def fake_run(mem: Memory, **_kw: Any) -> int:
        seen.append(mem)
        return cli.EXIT_OK

    monkeypatch.setattr(cli, "_run_peer", fake_run)
    return seen


def test_retire_after_reaches_the_memory_in_milliseconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _record_run(monkeypatch)
    assert cli.main(_peer_argv(tmp_path, "--member", "ghost", "--retire-after", "2.5")) == 0
    assert cli.main(_peer_argv(tmp_path)) == 0
    assert [m._stability.retire_after_ms for m in seen] == [2500, None]


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "1e12", "0.0001"])
def test_a_bad_retire_after_is_a_usage_error_before_the_store_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    seen = _record_run(monkeypatch)
    assert cli.main(_peer_argv(tmp_path, "--retire-after", value)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "hybridsync peer: error: --retire-after must be a number of seconds" in err
    assert seen == [] and not (tmp_path / "a.db").exists()


def test_retire_after_is_in_the_peer_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["peer", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--retire-after SECONDS" in out and "docs/gc.md, Retirement" in out


@pytest.mark.parametrize("argv", [
    ["simulate", "partition-heal", "--loss", "5"],
    ["simulate", "--loss", "5"],
    ["simulate", "lossy-links", "--loss", "0.1,2"],
    ["simulate", "routing", "--duplicate", "-1"],
])
def test_simulate_checks_probabilities_before_printing(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, but never into the repository
    assert cli.main(argv) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert "must be a probability in [0, 1]" in err
    assert list(tmp_path.iterdir()) == []
