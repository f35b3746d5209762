import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", message=".*TypedStorage.*")

from checkpoints import CONFIGS, build_torch_model, save_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def torch_models():
    """name -> random-weight GPTNeoForCausalLM for every config in checkpoints.CONFIGS (built once per run)."""
    return {name: build_torch_model(name) for name in CONFIGS}


@pytest.fixture(scope="session")
def checkpoint_dirs(torch_models, tmp_path_factory):
    """name -> a folder with config.json, model.safetensors and tokenizer.json for each test model."""
    return {name: save_checkpoint(model, tmp_path_factory.mktemp(name)) for name, model in torch_models.items()}


@pytest.fixture(scope="session")
def neo_models(checkpoint_dirs):
    import neo_numpy

    return {name: neo_numpy.load_model(folder) for name, folder in checkpoint_dirs.items()}


def relative_error(ours, reference, where=None):
    """max |ours - reference| / max |reference| (over `where` when given): the figure parity is judged by."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if where is not None:
        ours, reference = ours[where], reference[where]
    return float(np.abs(ours - reference).max() / np.abs(reference).max())
