"""The docs site builds with warnings as errors, its quickstart runs, and its helpers work.

``make test`` also builds the site (``mkdocs build --strict``); this test does it into a
temporary folder so a broken link or docstring fails in pytest too, with the warnings shown.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    for page in ("index.html", "quickstart.html", "concepts.html", "wire.html",
                 "guarantees.html", "architecture.html", "simulations.html",
                 "api/memory.html", "api/sim.html"):
        assert (tmp_path / page).is_file(), page
    memory = (tmp_path / "api" / "memory.html").read_text()
    assert "sync_to" in memory and "receive" in memory  # the API reference has content
    assert ":class:`" not in memory  # roles became code spans


def test_every_quickstart_snippet_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "quickstart.md").read_text(), re.S)
    assert len(blocks) >= 5
    script = tmp_path / "quickstart.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ship v1" in done.stdout  # the real-peers snippet saw the write arrive


def test_benchmark_plots_draw_from_the_recorded_tables(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks import plot_results

    assert plot_results.main(["--out", str(tmp_path)]) == 0
    for name in plot_results.PLOTS:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name
        assert (DOCS / "img" / name).is_file(), f"docs/img/{name} is not committed"


def test_plot_tables_fail_clearly(tmp_path: Path) -> None:
    from benchmarks import plot_results

    with pytest.raises(plot_results.TableNotFound, match="no heading"):
        plot_results.find_table("# Title\n\nno tables\n", "## Fields")
    md = "## W\n\n| a | b |\n|---|---|\n| 1,234 | **5.5** (x) |\n"
    rows = plot_results.find_table(md, "## W")
    assert [plot_results.number(c) for c in rows[0].values()] == [1234.0, 5.5]
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n")
    assert plot_results.main(["--docs", str(tmp_path), "--out", str(tmp_path / "img")]) == 1


# ---- the hooks (docs/_gen/hooks.py) ----------------------------------------------------------

def _page(src_uri: str) -> SimpleNamespace:
    return SimpleNamespace(file=SimpleNamespace(src_uri=src_uri))


def _config() -> dict[str, str]:
    return {"config_file_path": str(ROOT / "mkdocs.yml"), "docs_dir": str(DOCS)}


def test_links_that_leave_docs_are_rewritten() -> None:
    hooks = _load(DOCS / "_gen" / "hooks.py")
    md = (
        "See [the map](../ARCHITECTURE.md#errors), [the simulator](../hybridsync/sim/), "
        "[`hybridsync/sim/`](../hybridsync/sim/), [home](../README.md), "
        "[wire](wire.md), [gone](../no/such/file.md) and [web](https://example.org).\n"
        "```\n[in code](../ARCHITECTURE.md)\n```\n"
    )
    out = hooks.on_page_markdown(md, _page("concepts.md"), _config(), None)
    assert "[the map](architecture.md#errors)" in out
    assert "the simulator (`hybridsync/sim/`)" in out
    assert ", `hybridsync/sim/`, " in out
    assert "[home](index.md)" in out
    assert "[wire](wire.md)" in out
    assert "[gone](../no/such/file.md)" in out  # broken: left for MkDocs to report
    assert "[web](https://example.org)" in out
    assert "[in code](../ARCHITECTURE.md)" in out  # fenced code is not touched


def test_links_in_generated_pages_resolve_from_their_source() -> None:
    hooks = _load(DOCS / "_gen" / "hooks.py")
    md = "[wire](../docs/wire.md) [arch](../ARCHITECTURE.md) [code](../hybridsync/sim/)\n"
    out = hooks.on_page_markdown(md, _page("testing.md"), _config(), None)  # tests/README.md
    assert out == "[wire](wire.md) [arch](architecture.md) code (`hybridsync/sim/`)\n"
    made = hooks.on_page_markdown("![plot](results/x.png)", _page("simulations.md"),
                                  _config(), None)
    assert made == "plot (`simulations/results/x.png`)"  # made output, not committed
    deeper = hooks.on_page_markdown("[a](../architecture.md)", _page("api/x.md"), _config(),
                                    None)
    assert deeper == "[a](../architecture.md)"  # a docs link stays as written


def test_pending_pages_leave_the_nav_only_while_missing() -> None:
    hooks = _load(DOCS / "_gen" / "hooks.py")
    nav = [{"Home": "index.md"}, {"Pending": "no-such-page.md"}, {"Group": [
        {"Wire": "wire.md"}, {"Pending too": "no-such-page.md"}]}]
    hooks.PENDING_PAGES = ("no-such-page.md", "wire.md")
    config = {**_config(), "nav": nav}
    out = hooks.on_config(config)["nav"]
    assert out == [{"Home": "index.md"}, {"Group": [{"Wire": "wire.md"}]}]


# ---- the docstring renderer (docs/_gen/griffe_rst.py) ----------------------------------------

def test_docstrings_become_markdown() -> None:
    pytest.importorskip("griffe")
    rst = _load(DOCS / "_gen" / "griffe_rst.py")
    text = (
        "Raises :class:`~hybridsync.errors.FrameError` or :func:`sync_all`.\n"
        "Replay it::\n\n    python -m hybridsync.sim --seed 1\n\n"
        ">>> 1 + 1\n2\n\nDone.\n\n::\n\n    tree\n"
    )
    out = rst.to_markdown(text)
    assert "`FrameError` or `sync_all`" in out
    assert "Replay it:\n" in out and "::" not in out
    assert "```pycon\n>>> 1 + 1\n2\n```" in out
    assert out.endswith("Done.\n\n\n\n    tree")  # the bare marker line is now empty
