"""neo_numpy/reference.py, the one-file forward pass, equals NeoModel.forward and transformers on every test model.

The sequences are longer than the local window (8 and 5 tokens in the test models), and the "local_first" model
starts with a local layer, so a reference that assumed the released models' layer order or window would fail.
"""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from checkpoints import CONFIGS, require
from conftest import relative_error

import neo_numpy
from neo_numpy import reference

require("torch")

import torch  # noqa: E402

TOLERANCE = 1e-5  # fp32 parity: max |ours - theirs| / max |theirs|


def token_ids(length, seed=0):
    return np.random.default_rng(seed).integers(0, 50257, size=length)  # [T]


@pytest.mark.parametrize("name", CONFIGS)
def test_equals_the_engine(name, neo_models):
    model = neo_models[name]
    ids = token_ids(50)
    ours = reference.forward(ids, model.weights, model.config)
    assert ours.dtype == np.float32 and ours.shape == (len(ids), model.config.vocab_size)
    error = relative_error(ours, model.forward(ids)[0])
    print(f"{name}: reference vs NeoModel.forward, relative error {error:.1e}")
    assert error < TOLERANCE


@pytest.mark.parametrize("name", CONFIGS)
def test_equals_transformers(name, neo_models, torch_models):
    model = neo_models[name]
    ids = token_ids(37, seed=1)
    with torch.no_grad():
        theirs = torch_models[name](torch.from_numpy(ids[None])).logits[0].numpy()
    error = relative_error(reference.forward(ids.tolist(), model.weights, model.config), theirs)
    print(f"{name}: reference vs transformers, relative error {error:.1e}")
    assert error < TOLERANCE


def test_layer_kinds_come_from_the_config(neo_models):
    """Swapping the config's kinds (local <-> global) changes the logits: the order is read, not assumed."""
    model = neo_models["local_first"]
    swapped = {"global": "local", "local": "global"}
    config = dataclasses.replace(
        model.config, attention_layers=tuple(swapped[k] for k in model.config.attention_layers)
    )
    ids = token_ids(20, seed=2)
    assert relative_error(reference.forward(ids, model.weights, config), model.forward(ids)[0]) > 1e-3


def test_local_window_is_the_last_window_size_tokens():
    visible = reference.visible_keys("local", 6, 3)
    for i in range(6):
        assert np.flatnonzero(visible[i]).tolist() == list(range(max(0, i - 2), i + 1))
    assert np.array_equal(reference.visible_keys("global", 6, 3), np.tril(np.ones((6, 6), dtype=bool)))


@pytest.mark.parametrize("bad", [[[1, 2], [3, 4]], [1, 50257], list(range(513))])
def test_bad_ids_are_refused_in_one_sentence(bad, neo_models):
    model = neo_models["alternating"]  # 512 positions
    with pytest.raises(neo_numpy.NeoNumpyError):
        reference.forward(bad, model.weights, model.config)


def test_short_enough_to_read_in_one_sitting():
    source = Path(reference.__file__).read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    code = source.replace(docstring, "")
    lines = [line for line in code.splitlines() if line.strip() and not line.strip().startswith(("#", '"""'))]
    assert len(lines) <= 100, f"reference.py has {len(lines)} lines of code"


@pytest.mark.parametrize("name", ["local_first", "alternating"])
def test_record_holds_the_named_activations(name, neo_models, torch_models):
    """forward(record={}) fills TransformerLens names with what transformers computes, and changes nothing."""
    model = neo_models[name]
    config, ids = model.config, token_ids(20, seed=3)  # longer than both windows
    record = {}
    logits = reference.forward(ids, model.weights, config, record=record)
    assert np.array_equal(logits, reference.forward(ids, model.weights, config))
    L, T, H, D = config.num_layers, len(ids), config.num_heads, config.hidden_size
    expected = {
        f"blocks.{i}.{hook}" for i in range(L) for hook in ("hook_resid_pre", "attn.hook_pattern", "hook_resid_post")
    }
    assert set(record) == expected | {"ln_final.hook_normalized"}

    with torch.no_grad():
        output = torch_models[name](torch.from_numpy(ids[None]), output_attentions=True, output_hidden_states=True)
    for i, kind in enumerate(config.attention_layers):
        pattern = record[f"blocks.{i}.attn.hook_pattern"]
        assert pattern.shape == (H, T, T) and pattern.dtype == np.float32
        assert np.all(pattern[:, ~reference.visible_keys(kind, T, config.window_size)] == 0)
        assert relative_error(pattern, output.attentions[i][0].numpy()) < TOLERANCE
        assert relative_error(record[f"blocks.{i}.hook_resid_pre"], output.hidden_states[i][0].numpy()) < TOLERANCE
        if i + 1 < L:  # transformers' last hidden state is after ln_f
            assert np.array_equal(record[f"blocks.{i}.hook_resid_post"], record[f"blocks.{i + 1}.hook_resid_pre"])
    normalized = record["ln_final.hook_normalized"]  # [T, D], before ln_f's weight and bias
    assert normalized.shape == (T, D)
    np.testing.assert_allclose(normalized.mean(axis=-1), 0, atol=1e-5)
    ln_f = normalized * model.weights.ln_f_weight + model.weights.ln_f_bias
    assert relative_error(ln_f, output.hidden_states[-1][0].numpy()) < TOLERANCE
    assert np.array_equal(ln_f @ model.weights.lm_head_weight.T, logits)
