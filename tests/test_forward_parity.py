"""neo_numpy's forward pass against transformers' GPTNeoForCausalLM, in float32.

Every comparison goes through `assert_parity`, which prints the max absolute and relative error (run pytest -s to see
them) and fails when the relative error (max |ours - reference| / max |reference|) reaches 1e-5.
"""

import copy
import dataclasses
import json

import numpy as np
import pytest
from checkpoints import CONFIGS, build_config, build_torch_model, require, save_checkpoint
from conftest import relative_error

import neo_numpy
from neo_numpy.config import NeoConfig, expand_attention_types
from neo_numpy.inputs import positions_from_mask

require("torch", "transformers", "safetensors")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GPTNeoConfig, GPTNeoForCausalLM  # noqa: E402

TOLERANCE = 1e-5
SEQUENCE = 64  # longer than every local window in CONFIGS


def assert_parity(label, ours, reference, where=None, tolerance=TOLERANCE):
    """Print max abs / relative error of ours vs reference (over `where` when given) and assert rel < tolerance."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape, f"{label}: shape {ours.shape} != reference {reference.shape}"
    assert np.isfinite(ours if where is None else ours[where]).all(), f"{label}: non-finite values"
    difference = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
    max_abs = float((difference if where is None else difference[where]).max())
    relative = relative_error(ours, reference, where)
    print(f"\n[parity] {label}: max abs {max_abs:.3e}, rel {relative:.3e}")
    assert relative < tolerance, f"{label}: relative error {relative:.3e} >= {tolerance:g} (max abs {max_abs:.3e})"
    return relative


def random_ids(batch, length, seed=0, vocab=50257):
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, length), dtype=np.int64)


def torch_forward(model, ids, attention_mask=None, position_ids=None, hidden_states=False):
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.as_tensor(attention_mask)
    if position_ids is not None:
        kwargs["position_ids"] = torch.as_tensor(position_ids)
    with torch.no_grad():
        out = model(torch.as_tensor(ids), output_hidden_states=hidden_states, **kwargs)
    logits = out.logits.float().numpy()
    if hidden_states:
        return logits, [h.float().numpy() for h in out.hidden_states]
    return logits


def logits_of(folder, torch_model, ids, label):
    """Load `folder` with neo_numpy and check its logits on ids against torch_model's."""
    neo = neo_numpy.load_model(folder)
    assert_parity(label, neo.forward(ids), torch_forward(torch_model, ids))
    return neo


# ---------------------------------------------------------------------------------------------- every config


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers(name, torch_models, neo_models):
    config = neo_models[name].config
    if "local" in config.attention_layers:
        assert config.window_size < SEQUENCE  # the local mask must actually cut something
    ids = random_ids(2, SEQUENCE, seed=1)
    ours = neo_models[name].forward(ids)
    assert ours.dtype == np.float32 and ours.shape == (2, SEQUENCE, 50257)
    assert_parity(f"logits {name}", ours, torch_forward(torch_models[name], ids))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_one_dimensional_ids_match(name, torch_models, neo_models):
    ids = random_ids(1, 20, seed=2)
    ours = neo_models[name].forward(ids[0])  # [T] is treated as a batch of one
    assert_parity(f"1-D ids {name}", ours, torch_forward(torch_models[name], ids))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hidden_states_match(name, torch_models, neo_models):
    ids = random_ids(2, SEQUENCE, seed=3)
    logits, hidden = neo_models[name].forward(ids, output_hidden_states=True)
    reference_logits, reference_hidden = torch_forward(torch_models[name], ids, hidden_states=True)
    num_layers = neo_models[name].config.num_layers
    assert len(hidden) == num_layers + 1 == len(reference_hidden)
    assert_parity(f"logits (with hidden states) {name}", logits, reference_logits)
    for index, (ours, reference) in enumerate(zip(hidden, reference_hidden)):
        what = "embeddings" if index == 0 else ("ln_f output" if index == num_layers else f"input of block {index}")
        assert_parity(f"hidden state {index} ({what}) {name}", ours, reference)


# ---------------------------------------------------------------------------------------------- left padding

PADDING = [0, 3, 21]  # rows with no padding, a little, and more than the longest window


@pytest.mark.parametrize("name", list(CONFIGS))
def test_left_padded_batch(name, torch_models, neo_models):
    neo, model = neo_models[name], torch_models[name]
    length = 40
    ids = random_ids(len(PADDING), length, seed=4)  # padded slots hold random ids: they must not leak anywhere
    mask = np.ones_like(ids)
    for row, pad in enumerate(PADDING):
        mask[row, :pad] = 0
    real = mask.astype(bool)[:, :, None] & np.ones((1, 1, 50257), dtype=bool)  # [B, T, vocab]

    ours = neo.forward(ids, attention_mask=mask)
    reference = torch_forward(model, ids, attention_mask=mask, position_ids=positions_from_mask(mask))
    assert_parity(f"left-padded batch {name}", ours, reference, where=real)

    for row, pad in enumerate(PADDING):  # each row on its own, without padding, gives the same logits
        alone = neo.forward(ids[row : row + 1, pad:])
        assert_parity(f"padded row {row} (pad {pad}) vs alone {name}", ours[row : row + 1, pad:], alone)
        assert_parity(f"row {row} alone vs transformers {name}", alone, torch_forward(model, ids[row : row + 1, pad:]))


def test_positions_from_mask():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = positions_from_mask(mask)
    assert positions[0, 2:].tolist() == [0, 1, 2] and positions[1].tolist() == [0, 1, 2, 3, 4]
    # the same positions transformers' generate() derives: cumsum(mask) - 1, padding filled with 1
    expected = torch.as_tensor(mask).long().cumsum(-1) - 1
    expected.masked_fill_(torch.as_tensor(mask) == 0, 1)
    assert np.array_equal(positions, expected.numpy())


# ---------------------------------------------------------------------------------------------- file variants


def test_sharded_checkpoint(torch_models, tmp_path):
    folder = save_checkpoint(torch_models["alternating"], tmp_path / "sharded", max_shard_size="200KB")
    index = folder / "model.safetensors.index.json"
    assert index.is_file() and not (folder / "model.safetensors").exists()
    shards = set(json.loads(index.read_text())["weight_map"].values())
    assert len(shards) > 1, shards
    assert all((folder / shard).is_file() for shard in shards)
    logits_of(folder, torch_models["alternating"], random_ids(2, SEQUENCE, seed=5), "sharded checkpoint")


@pytest.mark.parametrize("dtype, code", [(torch.float16, "F16"), (torch.bfloat16, "BF16")], ids=["fp16", "bf16"])
def test_half_precision_files(dtype, code, torch_models, tmp_path):
    model = torch_models["alternating"]
    folder = save_checkpoint(model, tmp_path / code, dtype=dtype)
    with safe_open(str(folder / "model.safetensors"), framework="np" if code == "F16" else "pt") as file:
        assert file.get_slice("transformer.wte.weight").get_dtype() == code
    reference = copy.deepcopy(model).to(dtype).to(torch.float32)  # the very weights the file holds, run in fp32
    neo = logits_of(folder, reference, random_ids(2, SEQUENCE, seed=6), f"{code} file")
    assert neo.weights.wte.dtype == np.float32
    # the file really is lower precision: the original fp32 weights differ from what was loaded
    assert not np.array_equal(neo.weights.wte, model.transformer.wte.weight.detach().numpy())


def test_checkpoint_without_tokenizer(torch_models, tmp_path):
    folder = save_checkpoint(torch_models["local_first"], tmp_path / "bare", with_tokenizer=False)
    assert not any((folder / name).exists() for name in ("tokenizer.json", "vocab.json", "merges.txt"))
    logits_of(folder, torch_models["local_first"], random_ids(1, SEQUENCE, seed=7), "checkpoint without tokenizer")


def test_absent_lm_head_is_tied_to_wte(checkpoint_dirs, neo_models):
    with safe_open(str(checkpoint_dirs["alternating"] / "model.safetensors"), framework="np") as file:
        names = set(file.keys())
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    weights = neo_models["alternating"].weights
    assert weights.lm_head_weight is weights.wte


def test_separate_lm_head_is_used(tmp_path):
    config = build_config("all_global")
    config.tie_word_embeddings = False
    torch.manual_seed(11)
    model = GPTNeoForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.1)
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    folder = save_checkpoint(model, tmp_path / "untied", with_tokenizer=False)
    with safe_open(str(folder / "model.safetensors"), framework="np") as file:
        assert "lm_head.weight" in set(file.keys())
    neo = logits_of(folder, model, random_ids(1, 16, seed=8), "separate lm_head")
    assert neo.weights.lm_head_weight is not neo.weights.wte


def test_old_attention_mask_buffers_are_skipped(torch_models, checkpoint_dirs, tmp_path):
    model = torch_models["alternating"]
    positions = model.config.max_position_embeddings
    tensors = {name: tensor.contiguous() for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    for i in range(model.config.num_layers):  # the causal-mask buffers older GPT-Neo files carry
        tensors[f"transformer.h.{i}.attn.attention.bias"] = torch.tril(
            torch.ones(positions, positions, dtype=torch.bool)
        )[None, None]
        tensors[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    folder = tmp_path / "old"
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text((checkpoint_dirs["alternating"] / "config.json").read_text())
    with safe_open(str(folder / "model.safetensors"), framework="pt") as file:
        assert "transformer.h.0.attn.attention.masked_bias" in set(file.keys())
    logits_of(folder, model, random_ids(2, SEQUENCE, seed=9), "file with old mask buffers")


def test_file_without_transformer_prefix(torch_models, checkpoint_dirs, tmp_path):
    """GPTNeoModel (no LM head) saves its tensors as 'wte.weight', 'h.0.ln_1.weight', ..."""
    model = torch_models["all_global"]
    tensors = {
        name.removeprefix("transformer."): tensor.contiguous()
        for name, tensor in model.state_dict().items()
        if name != "lm_head.weight"
    }
    folder = tmp_path / "base"
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text((checkpoint_dirs["all_global"] / "config.json").read_text())
    logits_of(folder, model, random_ids(1, 32, seed=10), "file without 'transformer.' prefix")


def test_sequence_of_exactly_max_positions(tmp_path):
    model = build_torch_model("alternating", max_positions=80)
    folder = save_checkpoint(model, tmp_path / "short", with_tokenizer=False)
    neo = neo_numpy.load_model(folder)
    assert neo.config.max_position_embeddings == 80
    ids = random_ids(1, 80, seed=12)
    assert_parity("sequence of max_position_embeddings (80) tokens", neo.forward(ids), torch_forward(model, ids))
    with pytest.raises(neo_numpy.InputError, match="81"):
        neo.forward(random_ids(1, 81, seed=12))


# ---------------------------------------------------------------------------------------------- config parsing

MIXED_ORDERS = [
    [[["global", "local"], 6]],
    [[["local", "global"], 3]],
    [[["local"], 1], [["local", "global"], 1]],
    [[["global"], 2], [["local", "global"], 2], [["local"], 1]],
    [[["global", "global", "local"], 2]],
]


@pytest.mark.parametrize("attention_types", MIXED_ORDERS, ids=lambda types: json.dumps(types).replace(" ", ""))
def test_attention_types_expand_like_transformers(attention_types):
    expected = []
    for pattern, repeats in attention_types:
        expected += pattern * repeats
    ours = expand_attention_types(attention_types)
    assert ours == tuple(expected)
    transformers_config = GPTNeoConfig(attention_types=attention_types, num_layers=len(expected))
    assert list(ours) == list(transformers_config.attention_layers)


def test_attention_types_expansion_examples():
    assert expand_attention_types([[["global", "local"], 6]]) == ("global", "local") * 6
    assert expand_attention_types([[["local"], 1], [["local", "global"], 1]]) == ("local", "local", "global")
    assert expand_attention_types([[["global"], 2], [["local"], 1]]) == ("global", "global", "local")


def raw_config(**changes):
    raw = {
        "model_type": "gpt_neo",
        "vocab_size": 50257,
        "max_position_embeddings": 2048,
        "hidden_size": 768,
        "num_layers": 12,
        "num_heads": 12,
        "intermediate_size": None,
        "window_size": 256,
        "attention_types": [[["global", "local"], 6]],
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }
    raw.update(changes)
    return raw


def test_released_125m_config_parses():
    config = NeoConfig.from_dict(raw_config())
    assert config.intermediate_size == 4 * 768  # null means 4 * hidden
    assert config.head_dim == 64
    assert config.attention_layers == ("global", "local") * 6
    assert (config.vocab_size, config.max_position_embeddings, config.window_size) == (50257, 2048, 256)
    assert config.bos_token_id == config.eos_token_id == 50256


def test_intermediate_size_null_and_explicit(checkpoint_dirs, neo_models):
    assert NeoConfig.from_dict(raw_config(hidden_size=64, num_heads=4)).intermediate_size == 256
    assert NeoConfig.from_dict(raw_config(intermediate_size=1000)).intermediate_size == 1000
    raw = json.loads((checkpoint_dirs["alternating"] / "config.json").read_text())
    assert raw.get("intermediate_size") is None  # the file really says null
    assert neo_models["alternating"].config.intermediate_size == 4 * 64
    assert neo_models["alternating"].weights.layers[0].c_fc_weight.shape == (256, 64)
    assert neo_models["local_first"].config.intermediate_size == 200
    assert neo_models["local_first"].weights.layers[0].c_proj_weight.shape == (72, 200)


def test_config_dataclass_fields():
    names = {field.name for field in dataclasses.fields(NeoConfig)}
    assert names == {
        "vocab_size",
        "max_position_embeddings",
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermediate_size",
        "window_size",
        "attention_layers",
        "layer_norm_epsilon",
        "activation_function",
        "bos_token_id",
        "eos_token_id",
        "tie_word_embeddings",
    }
    config = NeoConfig.from_dict(raw_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 1
    assert NeoConfig.from_dict(raw_config(bos_token_id=[7], eos_token_id=[8])).eos_token_id == 8


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_file_matches_transformers_config(name, checkpoint_dirs, torch_models):
    ours = NeoConfig.from_file(checkpoint_dirs[name] / "config.json")
    theirs = torch_models[name].config
    assert ours.vocab_size == theirs.vocab_size
    assert ours.max_position_embeddings == theirs.max_position_embeddings
    assert ours.hidden_size == theirs.hidden_size
    assert ours.num_layers == theirs.num_layers
    assert ours.num_heads == theirs.num_heads
    assert ours.intermediate_size == (theirs.intermediate_size or 4 * theirs.hidden_size)
    assert ours.window_size == theirs.window_size
    assert list(ours.attention_layers) == list(theirs.attention_layers)
    assert ours.layer_norm_epsilon == theirs.layer_norm_epsilon
    assert ours.activation_function == theirs.activation_function == "gelu_new"
    assert ours.tie_word_embeddings == theirs.tie_word_embeddings
