"""The CuPy backend on an NVIDIA GPU: same code, same logits. Skips with its reason where CuPy or a GPU is missing."""

import numpy as np
import pytest
from checkpoints import require
from conftest import relative_error

import neo_numpy

require("torch")

import torch  # noqa: E402


def gpu_missing_reason():
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda12x) — the GPU backend is not exercised on this machine"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy finds no CUDA device — the GPU backend is not exercised on this machine"
    except Exception as error:  # CUDA driver missing or unusable
        return f"CuPy cannot reach a GPU ({type(error).__name__}) — the GPU backend is not exercised on this machine"
    return None


REASON = gpu_missing_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

FP16_RELATIVE_TOLERANCE = 2e-2  # float16 weights: relative logit error stays below this on the test checkpoints


@pytest.fixture(scope="module")
def gpu_models(checkpoint_dirs):
    return {name: neo_numpy.load_model(folder, backend="cupy") for name, folder in checkpoint_dirs.items()}


def reference_logits(torch_model, ids, mask):
    from neo_numpy.inputs import positions_from_mask

    with torch.no_grad():
        return torch_model(
            torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions_from_mask(mask))
        ).logits.numpy()


@pytest.mark.parametrize("name", ["alternating", "local_first", "all_global"])
def test_fp32_logits_match_numpy_and_transformers(name, gpu_models, neo_models, torch_models):
    ids = np.random.default_rng(0).integers(0, 50257, (2, 64))
    mask = np.ones_like(ids)
    mask[1, :9] = 0
    gpu = gpu_models[name].forward(ids, mask)
    assert isinstance(gpu, np.ndarray) and gpu.dtype == np.float32
    real = mask.astype(bool)
    cpu = neo_models[name].forward(ids, mask)
    reference = reference_logits(torch_models[name], ids, mask)
    assert relative_error(gpu, cpu, real) < 1e-5
    assert relative_error(gpu, reference, real) < 1e-5


def test_forward_can_return_device_arrays(gpu_models):
    import cupy

    logits = gpu_models["alternating"].forward(np.arange(10)[None], return_backend_array=True)
    assert isinstance(logits, cupy.ndarray)


@pytest.mark.parametrize("name", ["alternating", "local_first"])
def test_greedy_ids_identical_to_cpu(name, gpu_models, neo_models):
    ids = np.random.default_rng(1).integers(0, 50257, (3, 12))
    mask = np.ones_like(ids)
    mask[0, :5] = 0
    settings = dict(max_new_tokens=100, eos_token_id=None)
    assert np.array_equal(
        gpu_models[name].generate(ids, mask, **settings), neo_models[name].generate(ids, mask, **settings)
    )


def test_sampling_is_seeded_and_agrees_with_the_cpu(gpu_models, neo_models):
    settings = dict(
        max_new_tokens=30, do_sample=True, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.2, seed=7
    )
    ids = np.arange(5)[None]
    gpu_once = gpu_models["alternating"].generate(ids, **settings)
    assert np.array_equal(gpu_once, gpu_models["alternating"].generate(ids, **settings))
    # the CPU, given the same uniforms, draws from the same distribution: most tokens agree (float noise may flip a few)
    cpu = neo_models["alternating"].generate(ids, **settings)
    assert np.mean(gpu_once == cpu) > 0.8


@pytest.mark.parametrize("name", ["alternating", "local_first", "all_global"])
def test_fp16_within_tolerance_and_same_greedy_ids(name, checkpoint_dirs, neo_models):
    half = neo_numpy.load_model(checkpoint_dirs[name], backend="cupy", dtype="float16")
    assert half.weights.wte.dtype == np.float16
    ids = np.random.default_rng(2).integers(0, 50257, (1, 48))
    error = relative_error(half.forward(ids), neo_models[name].forward(ids))
    print(f"{name}: fp16 relative logit error {error:.2e}")
    assert error < FP16_RELATIVE_TOLERANCE
    assert np.array_equal(
        half.generate(ids, max_new_tokens=40, eos_token_id=None),
        neo_models[name].generate(ids, max_new_tokens=40, eos_token_id=None),
    )


def test_stream_on_gpu(gpu_models, neo_models):
    pieces = list(gpu_models["alternating"].stream("Once upon a time", max_new_tokens=20))
    assert "".join(pieces) == "".join(neo_models["alternating"].stream("Once upon a time", max_new_tokens=20))
