"""Backend selection: one clear sentence when CuPy or a GPU is missing, and the NumPy backend unaffected."""

import importlib.util

import numpy as np
import pytest
from conftest import expect_error

import neo_numpy
from neo_numpy import BackendError
from neo_numpy.backend import get_backend


@pytest.mark.skipif(
    importlib.util.find_spec("cupy") is not None,
    reason="CuPy is installed here; the missing-CuPy message cannot be seen",
)
def test_cupy_missing_gives_one_sentence(checkpoint_dirs):
    with pytest.raises(neo_numpy.BackendError, match=r"needs CuPy: pip install cupy-cuda12x"):
        neo_numpy.load_model(checkpoint_dirs["alternating"], backend="cupy")


def test_unknown_backend_and_dtype_are_refused():
    with pytest.raises(neo_numpy.BackendError, match="'torch' is unknown"):
        get_backend("torch")
    with pytest.raises(neo_numpy.BackendError, match="float32 only"):
        get_backend("numpy", "float16")
    with pytest.raises(neo_numpy.BackendError, match="'int8' is not supported"):
        get_backend("numpy", "int8")


def test_numpy_backend_is_float32_on_the_host(neo_models):
    model = neo_models["alternating"]
    assert model.backend.name == "numpy" and model.backend.xp is np
    assert model.weights.wte.dtype == np.float32
    assert all(layer.c_fc_weight.dtype == np.float32 for layer in model.weights.layers)


def test_float16_storage_path_on_the_host(checkpoint_dirs, neo_models):
    """The GPU's float16 mode, run by NumPy: half-precision weights and KV cache, float32 scores and residual stream.

    The public NumPy backend is float32 only; building the backend by hand checks the mixed-precision logic of the
    shared model code here, where no GPU is available.
    """
    from conftest import relative_error

    from neo_numpy.backend import Backend
    from neo_numpy.checkpoint import load_weights
    from neo_numpy.model import NeoModel

    folder = checkpoint_dirs["alternating"]
    reference = neo_models["alternating"]
    half = Backend("numpy", np, np.float16)
    model = NeoModel(reference.config, load_weights(folder, reference.config, half.asarray), half, folder)
    assert model.weights.layers[0].c_fc_weight.dtype == np.float16
    assert model.new_cache(1, 16).layers[0].keys.dtype == np.float16
    ids = np.random.default_rng(0).integers(0, 50257, (2, 40))
    logits = model.forward(ids)
    assert logits.dtype == np.float32
    assert relative_error(logits, reference.forward(ids)) < 2e-2
    settings = dict(max_new_tokens=30, eos_token_id=None)
    assert np.array_equal(model.generate(ids, **settings), reference.generate(ids, **settings))


# --------------------------------------------------------------------------------------------- hostile dtypes


def test_bfloat16_storage_is_refused_in_one_sentence(folder):
    with expect_error(BackendError, "bfloat16"):
        neo_numpy.load_model(folder, dtype="bfloat16")
