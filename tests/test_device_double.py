"""The CuPy backend's code, run on a strict stand-in for CuPy (tests/device_double.py), on a machine without a GPU.

The double is put in sys.modules["cupy"], so `load_model(..., backend="cupy")` takes the real backend path. Its
arrays refuse implicit conversion to NumPy, count every copy between host and device, return reductions as 0-d
device arrays, and answer a NumPy function or method only where CuPy has one of that name taking those keyword
arguments (names from the installed CuPy, else from tests/cupy_names.json). Every public path runs through it:
load, forward (padded batches, hidden states, last positions), step, generate (greedy, sampled, seeded), stream,
and the lm-eval model; each result must equal the NumPy backend's exactly, and a decode step may copy only the
chosen token ids to the host (and only the random numbers to the device when sampling).

What the double cannot catch, because it computes with NumPy on the host: bugs in CuPy's own kernels, float16
numerics on the GPU (CuPy may accumulate float16 products differently), GPU memory limits, asynchronous execution,
and speed. tests/test_cupy.py checks those on a real GPU (it skips without one).
"""

import importlib.util
import json
import sys

import numpy as np
import pytest
from checkpoints import CONFIGS, require
from conftest import expect_error, relative_error
from device_double import NAMES_FILE, DeviceArray, FakeCupy, StrictnessError, cupy_names

import neo_numpy
from neo_numpy import BackendError, InputError
from neo_numpy.backend import get_backend

PROMPTS = [[464, 3290, 318, 257, 922], [1532, 11, 995], [50256, 7, 8, 9, 10, 11, 12, 13, 14]]  # ragged: padded left
SAMPLING = dict(do_sample=True, seed=7, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3)


@pytest.fixture
def device():
    return FakeCupy()


def left_padded(rows):
    """ids and attention mask [B, T] of rows padded on the left with token 0."""
    width = max(map(len, rows))
    ids = np.array([[0] * (width - len(row)) + row for row in rows])
    mask = np.array([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return ids, mask


# ---------------------------------------------------------------------------------------------- the double itself


def test_names_come_from_cupy():
    """Without CuPy the committed list is used; with it, the installed package, and the list matches its version."""
    device = FakeCupy()
    committed = json.loads(NAMES_FILE.read_text())
    if importlib.util.find_spec("cupy") is None:
        assert device.names_source.startswith("tests/cupy_names.json")
        assert device.names == committed
        return
    import cupy

    assert device.names_source == f"the installed CuPy {cupy.__version__}"
    if cupy.__version__ != committed["version"]:
        pytest.skip(f"the committed list is from CuPy {committed['version']}, the installed one is {cupy.__version__}")
    assert cupy_names(cupy) == committed, "regenerate it: python tests/device_double.py > tests/cupy_names.json"


def test_implicit_conversion_and_host_operands_are_refused(device):
    x = device.asarray(np.arange(6, dtype=np.float32))
    for convert in (np.asarray, np.array, np.ascontiguousarray):
        with pytest.raises(TypeError, match="Implicit conversion"):
            convert(x)
    with pytest.raises(TypeError, match="host"):
        x + np.ones(6, dtype=np.float32)
    with pytest.raises(TypeError, match="host"):
        np.ones(6, dtype=np.float32) * x
    with pytest.raises(TypeError, match="host"):
        device.where(np.ones(6, dtype=bool), x, 0)


def test_every_copy_to_the_host_is_counted(device):
    x = device.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    total = x.sum()
    assert isinstance(total, DeviceArray) and total.shape == ()  # a reduction stays on the device, as in CuPy
    float(total), int(total), bool(total), total.item(), x.tolist(), x.get(), device.asnumpy(x)  # noqa: B018
    assert [how for _, how, _ in device.transfers.to_host()] == ["float", "int", "bool", "item", "tolist", "get", "get"]
    assert device.transfers.to_device() == [("to device", "cupy.asarray", (2, 3))]


def test_names_cupy_lacks_are_refused(device):
    x = device.asarray(np.linspace(0, 1, 6, dtype=np.float32))
    for numpy_only in (
        lambda: np.nanquantile(x, 0.5),  # a NumPy function CuPy does not have
        lambda: np.spacing(x),  # a NumPy ufunc CuPy does not have
        lambda: np.add(x, 1, where=x > 0.5),  # CuPy's ufuncs take no where=
        lambda: np.maximum.reduce(x),  # CuPy implements reduce for add and multiply only
        lambda: x.sum(where=x > 0.5),  # nor its sum
        lambda: x.resize(3),  # an ndarray method CuPy does not have
        lambda: device.geomspace(1, 2, 3),  # nor this function
    ):
        with pytest.raises((StrictnessError, AttributeError)):
            numpy_only()
    assert float(np.tanh(x).sum()) == pytest.approx(float(np.tanh(np.linspace(0, 1, 6)).sum()), rel=1e-6)


# ---------------------------------------------------------------------------------------------- the model on it


@pytest.fixture(scope="module")
def on_device(checkpoint_dirs):
    """(the double, name -> model loaded with backend="cupy" on it). One BLAS thread, as for `on_host`, so that
    both sum in the same order and the results can be compared exactly."""
    device = FakeCupy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "cupy", device)
        models = {
            name: neo_numpy.load_model(folder, backend="cupy", threads=1) for name, folder in checkpoint_dirs.items()
        }
    return device, models


@pytest.fixture(scope="module")
def on_host(checkpoint_dirs):
    return {name: neo_numpy.load_model(folder, threads=1) for name, folder in checkpoint_dirs.items()}


def test_weights_live_on_the_device(on_device):
    device, models = on_device
    for model in models.values():
        weights = model.weights
        arrays = [weights.wte, weights.wpe, weights.ln_f_weight, weights.ln_f_bias, weights.lm_head_weight]
        for layer in weights.layers:
            arrays += [value for name, value in vars(layer).items() if name != "kind"]
        assert all(isinstance(array, DeviceArray) for array in arrays)
        assert model.backend.name == "cupy" and model.backend.xp is device


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_equals_the_numpy_backend(name, on_device, on_host):
    device, models = on_device
    ids, mask = left_padded(PROMPTS)
    device.transfers.clear()
    logits = models[name].forward(ids, mask)
    assert device.transfers.to_host() == [("to host", "get", logits.shape)]  # the logits, once
    assert isinstance(logits, np.ndarray)
    np.testing.assert_array_equal(logits, on_host[name].forward(ids, mask))
    tail = models[name].forward(ids, mask, last_positions=2)
    np.testing.assert_array_equal(tail, on_host[name].forward(ids, mask, last_positions=2))
    logits, hidden = models[name].forward(ids, mask, output_hidden_states=True)
    _, host_hidden = on_host[name].forward(ids, mask, output_hidden_states=True)
    assert len(hidden) == len(host_hidden)
    for ours, theirs in zip(hidden, host_hidden):
        np.testing.assert_array_equal(ours, theirs)


def test_step_through_the_cache_equals_the_numpy_backend(on_device, on_host):
    """The step API by hand: a prompt, then two single tokens, on device arrays from the model's own backend."""
    device, models = on_device
    results = []
    for model in (models["alternating"], on_host["alternating"]):
        xp = model.backend.xp
        cache = model.new_cache(1, 12)
        prompt = np.array([[464, 3290, 318, 257]])
        logits = [model.step(xp.asarray(prompt), xp.asarray(np.arange(4)[None]), xp.ones((1, 4), dtype=bool), cache)]
        for position, token in ((4, 922), (5, 11)):
            step_ids, step_position = xp.asarray(np.array([[token]])), xp.asarray(np.array([[position]]))
            logits.append(model.step(step_ids, step_position, xp.ones((1, 1), dtype=bool), cache))
        results.append([model.backend.to_host(item) for item in logits])
    assert isinstance(logits[0], np.ndarray)  # the last loop ran on the host
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("settings", [{}, SAMPLING], ids=["greedy", "sampled"])
@pytest.mark.parametrize("name", CONFIGS)
def test_generate_equals_the_numpy_backend(name, settings, on_device, on_host):
    _, models = on_device
    ids, mask = left_padded(PROMPTS)
    ours = models[name].generate(ids, mask, max_new_tokens=12, **settings)
    np.testing.assert_array_equal(ours, on_host[name].generate(ids, mask, max_new_tokens=12, **settings))
    if settings:  # seeded: the same seed gives the same text again
        np.testing.assert_array_equal(ours, models[name].generate(ids, mask, max_new_tokens=12, **settings))


@pytest.mark.parametrize("settings", [{}, SAMPLING], ids=["greedy", "sampled"])
def test_a_decode_step_copies_only_the_token_ids(settings, on_device):
    """Per decode step: to the host, the chosen ids [B] once; to the device, nothing when greedy and the
    uniforms [B] when sampling. The prompt copies its ids, positions and mask once, and nothing comes back but
    the first tokens."""
    device, models = on_device
    ids, mask = left_padded(PROMPTS)
    batch = len(PROMPTS)
    device.transfers.clear()
    steps = models["local_first"].generate_tokens(ids, mask, max_new_tokens=10, eos_token_id=None, **settings)
    next(steps)  # the prompt and the first token
    assert device.transfers.to_host() == [("to host", "get", (batch,))]
    prompt_copies = device.transfers.to_device()
    assert all(shape in ((batch, ids.shape[1]), (batch, 1), (batch,)) for _, _, shape in prompt_copies)
    for _ in range(9):
        device.transfers.clear()
        next(steps)
        assert device.transfers.to_host() == [("to host", "get", (batch,))]
        expected_to_device = [("to device", "cupy.asarray", (batch,))] if settings else []
        assert device.transfers.to_device() == expected_to_device
    assert next(steps, None) is None


def test_device_arrays_as_input_ids_are_refused_in_one_sentence(on_device):
    """Token ids are checked on the host: a device array is not copied behind the user's back."""
    device, models = on_device
    ids, mask = left_padded(PROMPTS)
    with expect_error(InputError, "input_ids", "on the host", ".get()"):
        models["all_global"].forward(device.asarray(ids))
    with expect_error(InputError, "attention_mask", "on the host"):
        models["all_global"].generate(ids, device.asarray(mask), max_new_tokens=2)
    with expect_error(InputError, "one sequence"):
        next(models["all_global"].stream(device.asarray(ids[0])))


def test_training_on_device_weights_is_refused_in_one_sentence(on_device):
    """Training (neo_numpy.training, the finetune command) runs on NumPy weights only: one sentence, no host copy."""
    from neo_numpy.training import loss_and_grads

    device, models = on_device
    model = models["all_global"]
    with expect_error(InputError, "NumPy weights only", "backend='numpy'"):
        loss_and_grads(np.arange(8)[None], model.weights, model.config)


def test_float16_weights_run_on_the_device(on_device, checkpoint_dirs):
    """float16 storage (the GPU's option) through the same code: arrays stay float16 on the device, logits come back
    float32 and close to float32's. The double computes float16 as NumPy does, not as CuPy's kernels do."""
    device, models = on_device
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "cupy", device)
        half = neo_numpy.load_model(checkpoint_dirs["alternating"], backend="cupy", dtype="float16", threads=1)
    assert half.weights.wte.dtype == np.float16 and half.weights.layers[0].qkv_proj_weight.dtype == np.float16
    ids, mask = left_padded(PROMPTS)
    logits, full = half.forward(ids, mask), models["alternating"].forward(ids, mask)
    assert logits.dtype == np.float32
    assert relative_error(logits, full, where=mask.astype(bool)) < 2e-2
    generated = half.generate(ids, mask, max_new_tokens=4)
    assert generated.shape == (len(PROMPTS), ids.shape[1] + 4)


def test_installed_cupy_without_a_gpu_gives_one_sentence(monkeypatch):
    """The real selection path with CuPy present but no usable GPU (the double's device count set to 0)."""
    device = FakeCupy()
    device.cuda.runtime.getDeviceCount = lambda: 0
    monkeypatch.setitem(sys.modules, "cupy", device)
    with expect_error(BackendError, "needs an NVIDIA GPU"):
        get_backend("cupy")


def test_the_real_cupy_without_a_gpu_gives_one_sentence():
    """Where CuPy is installed but no GPU answers (as in CI), asking for the backend is one BackendError."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x)")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        with expect_error(BackendError, "cannot reach a GPU"):
            get_backend("cupy")
    else:
        pytest.skip("a GPU answers here: tests/test_cupy.py runs instead")


def test_stream_equals_the_numpy_backend(on_device, on_host):
    _, models = on_device
    prompt = "The dog chased"
    ours = list(models["all_global"].stream(prompt, max_new_tokens=16, **SAMPLING))
    assert ours == list(on_host["all_global"].stream(prompt, max_new_tokens=16, **SAMPLING))
    assert "".join(ours)


def test_the_lm_eval_model_equals_the_numpy_backend(on_device, checkpoint_dirs):
    """loglikelihood (batched, padded) and generate_until through neo_numpy's lm-eval model on backend="cupy"."""
    require("lm_eval")
    from lm_eval.api.instance import Instance

    from neo_numpy.lm_eval_model import NeoNumpyLM

    device, _ = on_device
    folder = str(checkpoint_dirs["alternating"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "cupy", device)
        on_gpu = NeoNumpyLM(pretrained=folder, backend="cupy", device="cuda", batch_size=2, threads=1)
    on_cpu = NeoNumpyLM(pretrained=folder, batch_size=2, threads=1)
    pairs = [("The dog", " barked"), ("EleutherAI has a long", " history of models"), ("Hello", " world, again")]
    scoring = [Instance("loglikelihood", {}, pair, index) for index, pair in enumerate(pairs)]
    settings = {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False}
    generating = [Instance("generate_until", {}, (context, settings), i) for i, (context, _) in enumerate(pairs)]
    assert on_gpu.loglikelihood(scoring, disable_tqdm=True) == on_cpu.loglikelihood(scoring, disable_tqdm=True)
    assert on_gpu.generate_until(generating, disable_tqdm=True) == on_cpu.generate_until(generating, disable_tqdm=True)
    assert on_gpu.model.backend.xp is device
