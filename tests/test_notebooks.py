"""The notebooks: each runs from its reviewed .py source, and its committed .ipynb is that
source executed, with figures.

Every notebook is a jupytext percent script ``notebooks/NAME.py`` (the source of truth)
paired with ``notebooks/NAME.ipynb`` (the same cells, executed at full size, outputs kept).
The tests run each .py in smoke mode (``NRI_PYRO_SMOKE=1``: tiny data, a minute or so), so
a stale .ipynb cannot hide a broken source, and check that each .ipynb has the .py's
cells, ran without errors at full size and shows at least one figure.

Regenerate a committed notebook (full size, one torch thread) with::

    python tests/test_notebooks.py notebooks/quickstart.py [notebooks/priors.py ...]

which is ``jupytext --to ipynb --execute`` done with nbclient (no nbconvert needed).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.py"))
CELL_TIMEOUT = 900  # seconds for one cell; a smoke cell takes seconds
KERNEL = "python3"


def execute(
    source: Path, *, smoke: bool, tmpdir: Path | None = None, timeout: int = CELL_TIMEOUT
) -> Any:
    """The notebook of a jupytext script, executed in a fresh kernel in the script's folder.

    ``smoke`` sets NRI_PYRO_SMOKE=1 for the kernel; torch and BLAS get one thread either way.
    ``tmpdir`` becomes the kernel's TMPDIR, where the notebooks' ``tempfile.mkdtemp()``
    folders go. Raises nbclient's CellExecutionError on the first cell that fails.
    """
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": KERNEL,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("NRI_PYRO_SMOKE", None)
    if smoke:
        env["NRI_PYRO_SMOKE"] = "1"
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=KERNEL,
        record_timing=False,
        resources={"metadata": {"path": str(source.parent)}},
    )
    client.execute(env=env)
    return notebook


def _cells(notebook: Any) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def _outputs(notebook: Any) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def test_every_notebook_has_a_source_and_a_committed_notebook():
    names = {p.stem for p in SOURCES}
    assert names >= {"quickstart", "priors", "your_own_data", "custom_prior"}
    executed = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert executed == names, f"unpaired: {sorted(executed ^ names)}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_has_the_cells_of_its_source(source):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert _cells(committed) == _cells(jupytext.read(source)), (
        f"{source.name} and its .ipynb differ: regenerate it with "
        f"`python tests/test_notebooks.py notebooks/{source.name}`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_ran_at_full_size_without_errors_and_shows_figures(source):
    nbformat = pytest.importorskip("nbformat")
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "not every cell was run"
    outputs = _outputs(committed)
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{source.stem}.ipynb holds an error: {errors[0].get('ename')}"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "full size" in text and "smoke mode" not in text, "not executed at full size"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{source.stem}.ipynb shows no figure"


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_source_runs_in_smoke_mode(source, tmp_path):
    pytest.importorskip("jupytext")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = execute(source, smoke=True, tmpdir=tmp_path)
    text = "".join(o.get("text", "") for o in _outputs(notebook) if o.output_type == "stream")
    assert "smoke mode" in text
    assert any("image/png" in o.get("data", {}) for o in _outputs(notebook))


def main(argv: list[str]) -> int:
    """Execute each given notebook source and write its paired .ipynb beside it."""
    import nbformat

    if not argv:
        print(__doc__)
        return 2
    smoke = os.environ.get("NRI_PYRO_SMOKE") == "1"
    for name in argv:
        source = Path(name).resolve()
        start = time.perf_counter()
        notebook = execute(source, smoke=smoke)
        target = source.with_suffix(".ipynb")
        nbformat.write(notebook, target)
        mode = "smoke mode" if smoke else "full size"
        print(f"{target}: executed ({mode}) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
