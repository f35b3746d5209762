"""neo_numpy.training: the loss and every gradient equal transformers' and torch autograd's, central differences agree
in float64, AdamW matches torch.optim.AdamW step for step, clipping matches clip_grad_norm_, and updates reach the
engine's forward pass (nothing stale).

Each gradient comparison prints a per-tensor report (run with -s to see it), like llm.c's test_gpt2:
    transformer.h.0.attn.attention.q_proj.weight   max|ours - torch| 3.1e-08   max|torch| 1.2e-02   relative 2.6e-06
"""

import math

import numpy as np
import pytest
from checkpoints import build_config, require, save_checkpoint
from conftest import relative_error

import neo_numpy
from neo_numpy.checkpoint import load_weights
from neo_numpy.errors import InputError
from neo_numpy.reference import forward
from neo_numpy.training import AdamW, clip_grad_norm, learning_rate, loss_and_grads, named_parameters

require("torch", "transformers")

import torch  # noqa: E402
from transformers import GPTNeoConfig, GPTNeoForCausalLM  # noqa: E402

TOLERANCE = 1e-4  # fp32 gradient parity: max |ours - torch| / max |torch|, for every tensor


def batch(shape, vocab=50257, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=shape)  # int [B, T]


def torch_loss_and_grads(model, ids):
    """transformers' loss and every parameter's .grad after backward, by name."""
    model.zero_grad(set_to_none=True)
    loss = model(torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss
    loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def gradient_report(ours, theirs):
    """Print one line per tensor and return the worst relative error."""
    worst = 0.0
    for name, reference in theirs.items():
        difference = float(np.abs(ours[name].astype(np.float64) - reference).max())
        error = relative_error(ours[name], reference)
        worst = max(worst, error)
        flag = "OK" if error < TOLERANCE else "FAIL"
        print(
            f"{name:48s} max|ours - torch| {difference:.1e}   max|torch| {np.abs(reference).max():.1e}   "
            f"relative {error:.1e} {flag}"
        )
    return worst


def with_random_biases(model, seed):
    """Non-zero biases and LayerNorm parameters, so a gradient that ignored one would show (as checkpoints.py does)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """The "alternating" test model with its own lm_head.weight (tie_word_embeddings=False): (torch, neo) models."""
    config = build_config("alternating")
    config.tie_word_embeddings = False
    torch.manual_seed(3)
    model = with_random_biases(GPTNeoForCausalLM(config), seed=4)
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("untied"), with_tokenizer=False)
    return model, neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("local_first", (3, 20)),  # local layer first, window 5 < T, intermediate_size 200 (explicit)
        ("all_global", (2, 17)),  # no local layer, odd head size 12
        ("alternating", (2, 30)),  # global-first like the released models, window 8 < T
    ],
)
def test_gradients_equal_torch_autograd(name, shape, neo_models, torch_models):
    model = neo_models[name]
    ids = batch(shape, seed=len(name))
    loss, grads = loss_and_grads(ids, model.weights, model.config)
    torch_loss, torch_grads = torch_loss_and_grads(torch_models[name], ids)
    print(f"\n{name} {shape}: loss {loss:.7f}, transformers {torch_loss:.7f}")
    assert list(grads) == list(torch_grads)  # the same names, in named_parameters() order: no lm_head.weight
    assert all(grads[n].shape == torch_grads[n].shape and grads[n].dtype == np.float32 for n in grads)
    assert gradient_report(grads, torch_grads) < TOLERANCE
    assert abs(loss - torch_loss) / torch_loss < 1e-6


def test_untied_head_has_its_own_gradient(untied):
    torch_model, model = untied
    ids = batch((2, 24), seed=5)
    loss, grads = loss_and_grads(ids, model.weights, model.config)
    torch_loss, torch_grads = torch_loss_and_grads(torch_model, ids)
    assert "lm_head.weight" in grads and list(grads) == list(torch_grads)
    assert gradient_report(grads, torch_grads) < TOLERANCE
    assert abs(loss - torch_loss) / torch_loss < 1e-6


def test_loss_is_transformers_loss_for_one_sequence(neo_models, torch_models):
    """A 1-D input is one sequence; the loss is the mean over its T - 1 predictions, as transformers computes."""
    ids = batch(25, seed=6)
    loss, _ = loss_and_grads(ids, neo_models["alternating"].weights, neo_models["alternating"].config)
    with torch.no_grad():
        theirs = torch_models["alternating"](torch.from_numpy(ids[None]), labels=torch.from_numpy(ids[None])).loss
    assert isinstance(loss, float)
    assert abs(loss - theirs.item()) / theirs.item() < 1e-6


@pytest.fixture(scope="module")
def tiny_float64(tmp_path_factory):
    """A tiny GPT-Neo (vocab 13, hidden 8, 2 heads, [local window 2, global], untied head) loaded in float64."""
    config = GPTNeoConfig(
        vocab_size=13,
        max_position_embeddings=10,
        hidden_size=8,
        num_layers=2,
        num_heads=2,
        attention_types=[[["local", "global"], 1]],
        window_size=2,
        intermediate_size=12,
        initializer_range=0.5,  # large weights: attention far from uniform, so its gradient matters
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(7)
    model = with_random_biases(GPTNeoForCausalLM(config), 8)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("tiny"), with_tokenizer=False)
    model = neo_numpy.load_model(folder)
    weights = load_weights(folder, model.config, lambda array: array.astype(np.float64))
    return weights, model.config


def test_central_differences_in_float64(tiny_float64):
    """dL/dp from loss_and_grads equals (L(p + e) - L(p - e)) / 2e in float64, for elements of every tensor."""
    weights, config = tiny_float64
    ids = np.array([[1, 2, 3, 4, 1, 2, 3, 4], [5, 6, 7, 5, 6, 7, 5, 6]])  # repeated ids: wte rows add up
    loss, grads = loss_and_grads(ids, weights, config)
    params = named_parameters(weights)
    assert "lm_head.weight" in grads and all(g.dtype == np.float64 for g in grads.values())
    rng = np.random.default_rng(9)
    step = 1e-6
    for name, param in params.items():
        flat = param.reshape(-1)  # a view: changing it changes the weights the loss reads (q/k/v included)
        picks = rng.choice(flat.size, size=min(6, flat.size), replace=False)
        if name == "transformer.wte.weight":  # make sure a repeated id's row is among them
            picks = np.append(picks, 1 * config.hidden_size)
        for index in picks:
            original = flat[index]
            flat[index] = original + step
            above = loss_and_grads(ids, weights, config)[0]
            flat[index] = original - step
            below = loss_and_grads(ids, weights, config)[0]
            flat[index] = original
            numeric = (above - below) / (2 * step)
            analytic = grads[name].reshape(-1)[index]
            scale = max(np.abs(grads[name]).max(), 1e-3)
            assert abs(numeric - analytic) / scale < 1e-6, (name, index, numeric, analytic)


def test_adamw_matches_torch_step_for_step(untied):
    """Same starting weights, same gradients each step (from torch, so only the optimizers differ), 5 steps:
    decayed matrices and undecayed biases / LayerNorm weights both end equal to torch.optim.AdamW's."""
    torch_model, _ = untied
    rng = np.random.default_rng(10)
    ours = {name: p.detach().numpy().copy() for name, p in torch_model.named_parameters()}
    theirs = {name: torch.nn.Parameter(torch.from_numpy(array.copy())) for name, array in ours.items()}
    decayed = [p for name, p in theirs.items() if p.ndim >= 2]
    plain = [p for name, p in theirs.items() if p.ndim < 2]
    torch_optimizer = torch.optim.AdamW([{"params": decayed}, {"params": plain, "weight_decay": 0.0}], weight_decay=0.1)
    optimizer = AdamW(ours, weight_decay=0.1)
    for step in range(5):
        lr = learning_rate(step, 3e-3, warmup=2, total=5)
        grads = {name: rng.standard_normal(p.shape).astype(np.float32) * 0.01 for name, p in ours.items()}
        for name, p in theirs.items():
            p.grad = torch.from_numpy(grads[name].copy())
        for group in torch_optimizer.param_groups:
            group["lr"] = lr
        torch_optimizer.step()
        optimizer.step(grads, lr=lr)
    for name in ours:
        difference = np.abs(ours[name] - theirs[name].detach().numpy()).max()
        assert difference < 1e-6, (name, difference)
    assert np.abs(ours["transformer.wte.weight"] - torch_model.transformer.wte.weight.detach().numpy()).max() > 1e-3


def test_clipping_matches_torch():
    rng = np.random.default_rng(11)
    grads = {f"g{i}": rng.standard_normal(shape).astype(np.float32) for i, shape in enumerate([(5, 7), (7,), (3,)])}
    tensors = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.from_numpy(g.copy())
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 1.0).item()
    norm = clip_grad_norm(grads, 1.0)
    assert abs(norm - torch_norm) < 1e-5 * torch_norm
    for t, g in zip(tensors, grads.values()):
        assert np.abs(g - t.grad.numpy()).max() < 1e-6
    assert clip_grad_norm(grads, 100.0) == pytest.approx(1.0, rel=1e-5)  # below the limit: left as it is


def test_learning_rate_warms_up_then_decays():
    rates = [learning_rate(step, 1.0, warmup=4, total=20) for step in range(24)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]  # linear warm-up reaching the peak
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))  # then never rising
    assert math.isclose(rates[12], 0.55)  # half-way through the cosine: half-way from the peak to the floor
    assert rates[20] == rates[23] == pytest.approx(0.1)  # a tenth of the peak at the end, and after it


def test_updates_reach_the_forward_pass(checkpoint_dirs, torch_models):
    """One step of loss_and_grads + AdamW on a loaded model; then model.forward equals transformers with the same
    updated values loaded, so every tensor the engine reads (the fused q/k/v included) was updated, none stale."""
    model = neo_numpy.load_model(checkpoint_dirs["local_first"])
    ids = batch((2, 12), seed=12)
    before = model.forward(ids)
    params = named_parameters(model.weights)
    optimizer = AdamW(params, lr=1e-2)
    _, grads = loss_and_grads(ids, model.weights, model.config)
    optimizer.step(grads)
    after = model.forward(ids)
    assert relative_error(after, before) > 1e-3
    updated = GPTNeoForCausalLM(torch_models["local_first"].config).eval()
    updated.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in params.items()}, strict=False)
    updated.tie_weights()
    with torch.no_grad():
        theirs = updated(torch.from_numpy(ids)).logits.numpy()
    assert relative_error(after, theirs) < 1e-5
    assert relative_error(forward(ids[0], model.weights, model.config), theirs[0]) < 1e-5
    layer = model.weights.layers[0]
    assert np.shares_memory(params["transformer.h.0.attn.attention.k_proj.weight"], layer.qkv_proj_weight)


@pytest.mark.parametrize(
    "ids, message",
    [
        (np.array([[5]]), "at least 2 tokens"),
        (np.array([[5, 50257]]), "outside the vocabulary"),
        (np.zeros((2, 600), dtype=np.int64), "context"),
    ],
)
def test_bad_input_is_one_error(ids, message, neo_models):
    model = neo_models["all_global"]
    with pytest.raises(InputError, match=message):
        loss_and_grads(ids, model.weights, model.config)


@pytest.mark.parametrize("which", ["weights", "config"])
@pytest.mark.parametrize("bad", [None, {"wte": 0}, "model"])
def test_weights_or_config_of_the_wrong_type_is_one_error(which, bad, neo_models):
    model = neo_models["all_global"]
    arguments = {"weights": model.weights, "config": model.config, which: bad}
    with pytest.raises(InputError, match=rf"^{which} must be a model's Neo\w+ \(model\.{which}\), got \w+\.$"):
        loss_and_grads(np.array([[1, 2, 3]]), arguments["weights"], arguments["config"])
