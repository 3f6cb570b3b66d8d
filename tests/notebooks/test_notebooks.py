"""Every notebook in ``notebooks/`` runs top to bottom at a small size, and is stored clean.

Each notebook has one code cell tagged ``parameters`` (papermill's convention). The test runs
the notebook with an extra cell right after it that assigns the small sizes below, in a
kernel of this very interpreter (``ipykernel`` from the .venv, found through a kernelspec the
test writes into a temporary ``JUPYTER_PATH``), and fails on any error output and on anything
written to stderr (warnings included). Stored notebooks carry no outputs and no execution
counts: strip them with ``python tests/notebooks/strip_outputs.py notebooks/*.ipynb``.
"""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = [
    "01_quickstart.ipynb",
    "02_partitions.ipynb",
    "03_regions_and_conflicts.ipynb",
    "04_cache_regions.ipynb",
]

# The sizes the tests run at: every name must be a parameter of the notebook.
SMALL: dict[str, dict[str, Any]] = {
    "01_quickstart.ipynb": {"TEXT_LINES": 120, "BUFFER_ROWS": 64},
    "02_partitions.ipynb": {
        "PEERS": 4,
        "WARMUP_TICKS": 10,
        "PARTITION_TICKS": 40,
        "MAX_CONVERGE_TICKS": 1_000,
        "SWEEP_PARTITION_TICKS": [0, 30],
    },
    "03_regions_and_conflicts.ipynb": {"TRIALS": 12, "ORDERS": 4},
    "04_cache_regions.ipynb": {"TOKENS": 256, "HEAD_DIM": 64, "APPEND_STEPS": 4},
}

CELL_TIMEOUT_S = 120
KERNEL_NAME = "hybridsync-notebook-test"


def _read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)


def _parameters_cell(nb: Any, name: str) -> int:
    tagged = [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(tagged) == 1, f"{name}: exactly one code cell must be tagged 'parameters'"
    return tagged[0]


def _assigned_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec that starts ``ipykernel`` in this interpreter, whatever else is installed."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hybridsync tests",
        "language": "python",
    }))
    (root / "ipython").mkdir()
    return root


def test_the_notebooks_are_there() -> None:
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_stored_notebook_is_clean(name: str) -> None:
    nb = _read(NOTEBOOKS_DIR / name)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name}: cell {i} has stored outputs (strip them)"
        assert cell.execution_count is None, f"{name}: cell {i} has an execution count"
    params = nb.cells[_parameters_cell(nb, name)].source
    missing = set(SMALL[name]) - _assigned_names(params)
    assert not missing, f"{name}: the parameters cell does not define {sorted(missing)}"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs(name: str, kernel_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's migration warning
    monkeypatch.setenv("IPYTHONDIR", str(kernel_env / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = _read(NOTEBOOKS_DIR / name)
    at = _parameters_cell(nb, name)
    overrides = "\n".join(f"{k} = {v!r}" for k, v in SMALL[name].items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("# test sizes\n" + overrides))

    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.monotonic() - started

    problems = []
    images = 0
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                problems.append(f"cell {i} wrote to stderr: {out.text[:500]}")
            elif out.output_type in ("display_data", "execute_result"):
                images += "image/png" in out.get("data", {})
    assert not problems, f"{name}:\n" + "\n".join(problems)
    if name != "01_quickstart.ipynb":
        assert images >= 1, f"{name} drew no plot"
    print(f"{name}: executed in {elapsed:.1f} s")
