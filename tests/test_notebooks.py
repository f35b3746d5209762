"""The notebooks in notebooks/ run top to bottom on a small test checkpoint, and are committed without outputs.

Each notebook checks its own hand computation against neo_numpy (and transformers) with assertions, so executing
it is the test: any exception in any cell fails it. The checkpoint is the "alternating" test model (hidden 64,
4 layers, global/local, window 8), handed to the notebooks through $NEO_NUMPY_MODEL.
"""

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_the_walkthrough_is_there():
    assert len(NOTEBOOKS) >= 7, [path.name for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has stored outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_loads_the_model_named_by_the_environment(path):
    source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    assert 'neo_numpy.load_model(os.environ.get("NEO_NUMPY_MODEL", "125M"))' in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path, checkpoint_dirs):
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env = dict(os.environ, NEO_NUMPY_MODEL=str(checkpoint_dirs["alternating"]), MPLBACKEND="Agg", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute(env=env)  # raises CellExecutionError, with the failing cell and its traceback, on any error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs), f"{path.name} drew no picture"
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "✓ matches" in printed, f"{path.name} printed no passing check"
