"""The notebooks in notebooks/ run top to bottom, and what is committed is what they compute.

Each notebook ends with a "Checks" section that asserts its hand computations against neo_numpy (and transformers),
so executing it is the test: any exception in any cell fails it. Notebooks 00-07 need a model's weights: they are
committed without outputs, and run here on the "local_first" test model (its first layer is local, and its window
of 5 is shorter than the prompt), those that go layer by layer also on the "alternating" one (global first, window
8), so nothing in them may assume a layer order, a window or a size. Notebooks 08 and 09 use the tiny model the
project trains itself: they are committed WITH their outputs, and are rerun here and compared with them (structural
results exactly, numbers within a tolerance); 09's last section, which measures the model named by
$NEO_NUMPY_MODEL, also runs on the local-first test model.
"""

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from checkpoints import require

require("nbformat")

import nbformat  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WITH_OUTPUTS = [path for path in NOTEBOOKS if path.stem in ("08_training", "09_interpretability")]
WITHOUT_OUTPUTS = [path for path in NOTEBOOKS if path not in WITH_OUTPUTS]
# 00-07 on the local-first model, those that walk the layers also on the global-first one; 09's released-model
# section on the local-first one (08 needs no checkpoint: test_committed_outputs_are_current runs it).
RUNS = [(path, "local_first") for path in WITHOUT_OUTPUTS] + [
    (path, "alternating")
    for path in NOTEBOOKS
    if path.stem in ("03_attention", "05_block_and_forward", "06_generation")
]
RUNS += [(path, "local_first") for path in WITH_OUTPUTS if path.stem == "09_interpretability"]
KEY = "application/vnd.neo-numpy.key+json"  # analysis.show_key's results, compared on every run


def cells(path, kind):
    return [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == kind]


def test_the_walkthrough_is_there():
    names = [path.stem for path in NOTEBOOKS]
    assert names[0] == "00_overview" and names[-2:] == ["08_training", "09_interpretability"], names
    assert len(names) == 10, names


def test_runs_as_committed_matches_run_all():
    sys.path.insert(0, str(NOTEBOOK_DIR))
    from run_all import COMMITTED_WITH_OUTPUTS

    assert tuple(path.stem for path in WITH_OUTPUTS) == COMMITTED_WITH_OUTPUTS


@pytest.mark.parametrize("path", WITHOUT_OUTPUTS, ids=lambda path: path.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has stored outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_shared_setup_is_one_import(path):
    """The model named by the environment (default: the released 125M) or the tiny trained one, the rest from
    notebooks/nb_setup.py."""
    first = cells(path, "code")[0]
    if path in WITH_OUTPUTS:
        assert "tiny." in first
    else:
        assert 'neo_numpy.load_model(os.environ.get("NEO_NUMPY_MODEL", "125M"))' in first
    assert len(re.findall(r"^from nb_setup import .+$", first, flags=re.M)) == 1
    assert not any("def check(" in source or "GPTNeoForCausalLM" in source for source in cells(path, "code"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_exercises_then_checks_at_the_end(path):
    markdown = cells(path, "markdown")
    headings = [line for source in markdown for line in source.splitlines() if line.startswith("## ")]
    assert headings[-2:] == ["## Try it", "## Checks"], headings
    text = "\n".join(markdown)
    exercises = text.split("## Try it", 1)[1].split("## Checks", 1)[0]
    assert 2 <= len(re.findall(r"^\d\. ", exercises, flags=re.M)) <= 3
    if path.stem != "09_interpretability":  # 09 says what its last section shows when the tests run it
        text = text.lower()
        for phrase in ("test checkpoint", "random weights", "random test", "test weights"):
            assert phrase not in text, f"{path.name}: the lesson talks about {phrase!r}"


def test_the_local_first_window_is_shorter_than_the_prompt(neo_models):
    sys.path.insert(0, str(NOTEBOOK_DIR))
    from nb_setup import PROMPT

    model = neo_models["local_first"]
    assert model.config.attention_layers[0] == "local"
    assert model.config.window_size < len(model.tokenizer.encode(PROMPT))


def execute(path, model_folder=None):
    """Run a notebook in a fresh kernel, with $NEO_NUMPY_MODEL set to model_folder (or unset); returns it run."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env = dict(os.environ, MPLBACKEND="Agg", HF_HUB_OFFLINE="1")
    env.pop("NEO_NUMPY_MODEL", None)
    if model_folder is not None:
        env["NEO_NUMPY_MODEL"] = str(model_folder)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute(env=env)  # raises CellExecutionError, with the failing cell and its traceback, on any error
    return notebook


@pytest.mark.slow  # each notebook executed in a kernel of its own
@pytest.mark.parametrize("path, checkpoint", RUNS, ids=[f"{path.stem}-{checkpoint}" for path, checkpoint in RUNS])
def test_notebook_runs(path, checkpoint, checkpoint_dirs):
    notebook = execute(path, checkpoint_dirs[checkpoint])
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    drew = any("image/png" in output.get("data", {}) for output in outputs)
    embeds = any("](figures/" in source for source in cells(path, "markdown"))
    assert drew or embeds, f"{path.name} shows no picture"
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "✓ matches" in printed, f"{path.name} printed no passing check"


def block_without_residual(h, layer, visible, config, record=None, name=""):  # 05's Try it 2
    from neo_numpy.reference import attn, layer_norm, mlp

    eps = config.layer_norm_epsilon
    h = attn(layer_norm(h, layer.ln_1_weight, layer.ln_1_bias, eps), layer, visible, config.num_heads)
    return mlp(layer_norm(h, layer.ln_2_weight, layer.ln_2_bias, eps), layer)


def swaps(config):
    """(notebook, function of reference.py, what its Try it puts in its place) for every exercise that swaps one."""
    from neo_numpy.reference import softmax

    def no_mask(kind, T, window_size):
        return np.ones((T, T), dtype=bool)

    def scaled_softmax(scores):
        return softmax(scores / np.sqrt(config.head_dim))

    def relu(x):
        return np.maximum(x, 0)

    return [
        ("03_attention", "visible_keys", no_mask),
        ("03_attention", "softmax", scaled_softmax),
        ("04_mlp", "gelu_new", relu),
        ("05_block_and_forward", "block", block_without_residual),
        ("05_block_and_forward", "softmax", scaled_softmax),
    ]


def test_try_it_swaps_reach_reference_forward_and_are_undone(neo_models):
    """03, 04 and 05's exercises replace one function of reference.py inside `with patch.object(reference, ...)`:
    each replacement changes what reference.forward computes, and leaving the block restores it exactly."""
    from unittest.mock import patch

    from neo_numpy import reference

    sys.path.insert(0, str(NOTEBOOK_DIR))
    from nb_setup import PROMPT

    model = neo_models["local_first"]
    ids = np.array(model.tokenizer.encode(PROMPT))
    logits = reference.forward(ids, model.weights, model.config)
    for notebook, name, replacement in swaps(model.config):
        assert f'patch.object(reference, "{name}"' in "\n".join(cells(NOTEBOOK_DIR / f"{notebook}.ipynb", "markdown"))
        with patch.object(reference, name, replacement):
            swapped = reference.forward(ids, model.weights, model.config)
        assert np.abs(swapped - logits).max() > 1e-3 * np.abs(logits).max(), f"{notebook}: swapping {name} did nothing"
        assert np.array_equal(reference.forward(ids, model.weights, model.config), logits)

    changed = np.r_[ids[:-1], (ids[-1] + 1) % model.config.vocab_size]  # 03's prefix test, without the causal mask
    with patch.object(reference, "visible_keys", swaps(model.config)[0][2]):
        moved = np.abs(
            reference.forward(ids, model.weights, model.config)
            - reference.forward(changed, model.weights, model.config)
        )
    assert (moved[:-1].max(axis=-1) > 0).all(), "without the mask, every earlier row should see the last token"


def code_outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def keys(notebook):
    """name -> value of every analysis.show_key result, in order."""
    found = {}
    for output in code_outputs(notebook):
        found.update(output.get("data", {}).get(KEY, {}))
    return found


def image_shapes(notebook):
    import base64
    import io

    import matplotlib.image

    return [
        matplotlib.image.imread(io.BytesIO(base64.b64decode(output["data"]["image/png"]))).shape
        for output in code_outputs(notebook)
        if "image/png" in output.get("data", {})
    ]


def test_committed_outputs_show_at_least_four_pictures():
    committed = [nbformat.read(path, as_version=4) for path in WITH_OUTPUTS]
    assert sum(len(image_shapes(notebook)) for notebook in committed) >= 4
    for path, notebook in zip(WITH_OUTPUTS, committed):
        assert all(output.output_type != "error" for output in code_outputs(notebook)), path.name
        assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code"), (
            f"{path.name} is committed partly run: python notebooks/run_all.py --update"
        )


@pytest.mark.parametrize("path", WITH_OUTPUTS, ids=lambda path: path.stem)
def test_committed_outputs_are_current(path):
    """Rerun (without $NEO_NUMPY_MODEL, as committed) and compare: the same pictures (count and size), the same
    checks, and the same key results: strings and integers exactly (which head, which layer, shapes), numbers within
    a tolerance that BLAS rounding and a retrained model's small differences stay inside."""
    committed = nbformat.read(path, as_version=4)
    fresh = execute(path)
    assert image_shapes(fresh) == image_shapes(committed), f"{path.name}: rerun python notebooks/run_all.py --update"
    ours, theirs = keys(fresh), keys(committed)
    assert list(ours) == list(theirs) and ours, f"{path.name}: the key results changed: {list(theirs)} -> {list(ours)}"
    for name, value in theirs.items():
        if isinstance(value, float):
            assert abs(ours[name] - value) <= 0.05 + 0.1 * abs(value), f"{path.name}, {name}: {value} -> {ours[name]}"
        else:
            assert ours[name] == value, f"{path.name}, {name}: {value!r} committed, {ours[name]!r} now"
    printed = ["".join(output.get("text", "") for output in code_outputs(notebook)) for notebook in (fresh, committed)]
    checks = [[line.split("(")[0] for line in text.splitlines() if line.startswith("✓")] for text in printed]
    assert checks[0] == checks[1] and checks[0], f"{path.name}: the checks differ from the committed ones"
