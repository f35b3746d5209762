import os
import shutil
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", message=".*TypedStorage.*")

from checkpoints import CONFIGS, SOURCE, build_torch_model, save_checkpoint  # noqa: E402


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


@pytest.fixture
def folder(checkpoint_dirs, tmp_path):
    """A private, intact copy of the smallest checkpoint (2 layers, hidden 60, 512 positions), to damage."""
    return shutil.copytree(checkpoint_dirs[SOURCE], tmp_path / "checkpoint")


@pytest.fixture(scope="session")
def small_model(neo_models):
    """The smallest test model, loaded once (never modified by a test)."""
    return neo_models[SOURCE]


def relative_error(ours, reference, where=None):
    """max |ours - reference| / max |reference| (over `where` when given): the figure parity is judged by."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if where is not None:
        ours, reference = ours[where], reference[where]
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@contextmanager
def expect_error(exception_class, *needles):
    """pytest.raises for exactly `exception_class`, whose one-line message names every needle (file, tensor, value)."""
    with pytest.raises(exception_class) as caught:
        yield caught
    message = str(caught.value)
    print(f"\n[{type(caught.value).__name__}] {message}")
    assert type(caught.value) is exception_class, f"expected {exception_class.__name__}, got {caught.type.__name__}"
    for needle in needles:
        assert str(needle) in message, f"{needle!r} is not named in: {message}"
    assert "\n" not in message.strip(), f"message is not one line: {message!r}"
