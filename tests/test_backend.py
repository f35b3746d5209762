"""Backend selection: one clear sentence when CuPy or a GPU is missing, and the NumPy backend unaffected."""

import importlib.util

import numpy as np
import pytest

import neo_numpy
from neo_numpy.backend import get_backend


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here; the missing-CuPy message cannot be seen")
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
