"""neo_numpy loads what transformers' GPTNeoForCausalLM loads, and computes the same numbers from it.

The configurations are the ones transformers' own GPT-Neo tests build (GPTNeoModelTester in
tests/models/gpt_neo/test_modeling_gpt_neo.py: vocab 99, hidden 32, 4 heads, window 7, 512 positions, bos = eos =
pad = vocab - 1), the same shapes with the special-token ids left at GPTNeoConfig's defaults (50256, outside the
vocabulary), and a config.json that leaves out every field but three sizes. Each folder is loaded by both libraries;
logits must agree to a relative error below 1e-5 and greedy generation must give the same ids. These vocabularies
are smaller than GPT-2's, so the folders carry no tokenizer and everything goes through token ids.
"""

import json
import logging

import numpy as np
import pytest
from checkpoints import require
from conftest import relative_error

import neo_numpy
from neo_numpy import CheckpointError
from neo_numpy.config import NeoConfig, expand_attention_types

require("torch", "transformers", "safetensors")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import GPTNeoConfig, GPTNeoForCausalLM  # noqa: E402

TOLERANCE = 1e-5
TESTER = dict(  # GPTNeoModelTester.get_config()
    vocab_size=99,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    max_position_embeddings=512,
    window_size=7,
    attention_types=[[["global", "local"], 1]],
    use_cache=True,
)
SPECIAL_IDS = dict(bos_token_id=98, eos_token_id=98, pad_token_id=98)  # the tester's vocab_size - 1
CONFIGS = {  # name -> GPTNeoConfig arguments
    "tester": dict(TESTER, **SPECIAL_IDS),
    "tester_4_layers": dict(TESTER, num_layers=4, attention_types=[[["global", "local"], 2]], **SPECIAL_IDS),
    "tester_pipeline": dict(TESTER, vocab_size=300, **SPECIAL_IDS),  # get_pipeline_config()
    "tester_default_special_ids": dict(TESTER),  # bos and eos left at 50256
}
LEFT_OUT = {"model_type": "gpt_neo", "vocab_size": 99, "hidden_size": 32, "num_heads": 4}  # the rest: defaults


def randomized(model):
    """Weights far from GPTNeoConfig's tiny initialisation, so that greedy choices are not near-ties."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def save(config: GPTNeoConfig, folder):
    randomized(GPTNeoForCausalLM(config)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> a checkpoint folder written by transformers' save_pretrained."""
    made = {name: save(GPTNeoConfig(**arguments), tmp_path_factory.mktemp(name)) for name, arguments in CONFIGS.items()}
    left_out = save(GPTNeoConfig(**LEFT_OUT), tmp_path_factory.mktemp("left_out"))
    (left_out / "config.json").write_text(json.dumps(LEFT_OUT))
    (left_out / "generation_config.json").unlink()
    made["every_optional_field_left_out"] = left_out
    return made


def reference(folder):
    return GPTNeoForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def assert_same_logits(neo, model, ids, label):
    ours = neo.forward(ids)
    with torch.no_grad():
        theirs = model(torch.as_tensor(ids)).logits.numpy()
    relative = relative_error(ours, theirs)
    print(f"\n[parity] {label}: rel {relative:.3e}")
    assert relative < TOLERANCE, f"{label}: relative error {relative:.3e}"


def assert_same_greedy_ids(neo, model, ids, new_tokens=12):
    for row in ids:  # one row at a time: rows that stop early are not padded differently
        ours = neo.generate(row[None, :], max_new_tokens=new_tokens)
        with torch.no_grad():
            theirs = model.generate(torch.as_tensor(row[None, :]), max_new_tokens=new_tokens, do_sample=False)
        np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("name", [*CONFIGS, "every_optional_field_left_out"])
def test_transformers_test_configs_load_and_match(name, folders):
    neo, model = neo_numpy.load_model(folders[name]), reference(folders[name])
    config = neo.config
    length = 2 * config.window_size + 3  # longer than the local window
    assert length <= config.max_position_embeddings
    ids = np.random.default_rng(1).integers(0, config.vocab_size, size=(2, length))
    assert_same_logits(neo, model, ids, name)
    assert_same_greedy_ids(neo, model, ids[:, :9])


def test_every_field_left_out_takes_transformers_defaults():
    """config.json holding only model_type gives GPTNeoConfig() itself, field by field."""
    ours, theirs = NeoConfig.from_dict({"model_type": "gpt_neo"}), GPTNeoConfig()
    for field in ("vocab_size", "max_position_embeddings", "hidden_size", "num_layers", "num_heads", "window_size"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.intermediate_size == 4 * theirs.hidden_size and theirs.intermediate_size is None
    assert ours.attention_layers == expand_attention_types(theirs.attention_types) == tuple(theirs.attention_layers)
    assert ours.layer_norm_epsilon == theirs.layer_norm_epsilon
    assert ours.activation_function == theirs.activation_function
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id) == (50256, 50256)
    assert ours.tie_word_embeddings is theirs.tie_word_embeddings is True


def config_with(**changes):
    return NeoConfig.from_dict({"model_type": "gpt_neo", **TESTER, **changes}, "config.json")


def warnings_of(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_special_ids_outside_the_vocabulary_give_one_warning_and_never_stop(caplog, folders):
    caplog.clear()
    neo = neo_numpy.load_model(folders["tester_default_special_ids"])
    (warning,) = warnings_of(caplog)
    assert "bos_token_id 50256" in warning and "eos_token_id 50256" in warning and "\n" not in warning
    assert neo.config.eos_token_id is None and neo.config.bos_token_id is None
    ids = neo.generate(np.array([[1, 2, 3]]), max_new_tokens=30)
    assert ids.shape == (1, 33)  # no token ever ends it


@pytest.mark.parametrize("eos", [-1, 99, 10**6, []])
def test_eos_ids_transformers_accepts(caplog, eos):
    caplog.clear()
    assert config_with(eos_token_id=eos, bos_token_id=0).eos_token_id is None
    assert len(warnings_of(caplog)) == (0 if eos == [] else 1)


@pytest.mark.parametrize("entry", ["bos_token_id", "eos_token_id"])
def test_null_special_ids_load(caplog, entry):
    caplog.clear()
    config = config_with(**{**SPECIAL_IDS, entry: None})
    assert getattr(config, entry) is None and warnings_of(caplog) == []


def test_eos_as_a_one_element_list():
    assert config_with(eos_token_id=[5]).eos_token_id == 5


def test_transformers_alternative_names_for_heads_and_layers():
    raw = {"model_type": "gpt_neo", **TESTER}
    raw["num_attention_heads"], raw["num_hidden_layers"] = raw.pop("num_heads"), raw.pop("num_layers")
    config = NeoConfig.from_dict(raw)
    assert (config.num_heads, config.num_layers) == (4, 2)
    with pytest.raises(CheckpointError, match="num_heads 4 and num_attention_heads 8"):
        NeoConfig.from_dict({"model_type": "gpt_neo", **TESTER, "num_attention_heads": 8})


# ---------------------------------------------------------------------------------------------- weight files


def rewritten(source, folder, edit):
    """A copy of checkpoint `source` in `folder`, its tensors (a torch state dict) passed through `edit`."""
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    save_file(edit(load_file(source / "model.safetensors")), folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def strip_prefix(tensors, which):
    return {name.removeprefix("transformer.") if which(name) else name: t for name, t in tensors.items()}


WEIGHT_EDITS = {
    "float64": lambda tensors: {name: t.double() for name, t in tensors.items()},
    "one_float64": lambda tensors: {name: t.double() if "ln_f" in name else t for name, t in tensors.items()},
    "one_layer_without_prefix": lambda tensors: strip_prefix(tensors, lambda name: name.startswith("transformer.h.1.")),
    "no_prefix": lambda tensors: strip_prefix(tensors, lambda name: True),
    "extra_score_weight": lambda tensors: {**tensors, "score.weight": torch.ones(3, 32)},
}


@pytest.mark.parametrize("edit", list(WEIGHT_EDITS))
def test_weight_files_transformers_loads(edit, folders, tmp_path):
    folder = rewritten(folders["tester"], tmp_path / edit, WEIGHT_EDITS[edit])
    ids = np.random.default_rng(2).integers(0, 99, size=(2, 20))
    assert_same_logits(neo_numpy.load_model(folder), reference(folder), ids, edit)
    assert_same_logits(neo_numpy.load_model(folder), reference(folders["tester"]), ids, f"{edit} vs the original")


def test_one_tensor_with_and_without_prefix_is_refused(folders, tmp_path):
    def twice(tensors):
        return {**tensors, "ln_f.bias": tensors["transformer.ln_f.bias"] + 1}

    folder = rewritten(folders["tester"], tmp_path / "twice", twice)
    with pytest.raises(CheckpointError, match="transformer.ln_f.bias' twice"):
        neo_numpy.load_model(folder)


def test_untied_output_head(folders, tmp_path):
    """tie_word_embeddings false: the file's lm_head.weight is the head; without one transformers would use random
    numbers, so neo_numpy refuses the folder."""

    def with_head(tensors):
        return {**tensors, "lm_head.weight": torch.randn(99, 32)}

    folder = rewritten(folders["tester"], tmp_path / "untied", with_head)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "tie_word_embeddings": False}))
    ids = np.random.default_rng(3).integers(0, 99, size=(1, 12))
    assert_same_logits(neo_numpy.load_model(folder), reference(folder), ids, "untied head")

    save_file(load_file(folders["tester"] / "model.safetensors"), folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        neo_numpy.load_model(folder)
