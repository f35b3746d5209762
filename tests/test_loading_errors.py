"""Every way a checkpoint folder or an input can be wrong gives neo_numpy's own exception, naming what is at fault."""

import json
import os
import shutil
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from checkpoints import SECRET, SOURCE, edit_config, require, save_checkpoint, write_raw_safetensors
from conftest import expect_error

import neo_numpy
from neo_numpy import CheckpointError, InputError, ModelNotFoundError, hub

require("safetensors")

from safetensors.numpy import load_file, save_file  # noqa: E402


def rewrite_tensors(folder, edit):
    """Read model.safetensors as {name: array}, let `edit` change the dict, write it back."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def test_intact_copy_loads(folder):
    """The damage below is the only thing wrong: the undamaged copy loads."""
    model = neo_numpy.load_model(folder)
    assert model.config.num_layers == 2


# ---------------------------------------------------------------------------------------------- folder and config


def test_missing_folder(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with expect_error(ModelNotFoundError, missing):
        neo_numpy.load_model(missing)


def test_file_instead_of_folder(folder):
    with expect_error(ModelNotFoundError, folder / "config.json", "folder"):
        neo_numpy.load_model(folder / "config.json")


def test_folder_without_config(folder):
    (folder / "config.json").unlink()
    with expect_error(CheckpointError, folder / "config.json"):
        neo_numpy.load_model(folder)


def test_config_is_not_json(folder):
    (folder / "config.json").write_text('{"model_type": "gpt_neo", "hidden_size": 60,,}')
    with expect_error(CheckpointError, folder / "config.json", "JSON"):
        neo_numpy.load_model(folder)


def test_config_is_not_an_object(folder):
    (folder / "config.json").write_text("[1, 2, 3]")
    with expect_error(CheckpointError, folder / "config.json", "list"):
        neo_numpy.load_model(folder)


def test_config_of_another_model_type(folder):
    path = edit_config(folder, model_type="gpt2")
    with expect_error(CheckpointError, path, "'gpt2'"):
        neo_numpy.load_model(folder)


def test_config_with_unsupported_activation(folder):
    path = edit_config(folder, activation_function="relu")
    with expect_error(CheckpointError, path, "'relu'", "activation_function"):
        neo_numpy.load_model(folder)


def test_attention_types_with_wrong_layer_count(folder):
    path = edit_config(folder, attention_types=[[["global", "local"], 2]])  # 4 layers, but num_layers is 2
    with expect_error(CheckpointError, path, "attention_types", "4", "2"):
        neo_numpy.load_model(folder)


def test_attention_types_with_unknown_kind(folder):
    path = edit_config(folder, attention_types=[[["global", "sparse"], 1]])
    with expect_error(CheckpointError, path, "sparse"):
        neo_numpy.load_model(folder)


def test_config_leaving_out_a_size_gets_transformers_default(folder):
    """A size left out takes GPTNeoConfig's default (2048 positions), as in transformers: here the weights disagree."""
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    del raw["max_position_embeddings"]
    path.write_text(json.dumps(raw))
    with expect_error(CheckpointError, "transformer.wpe.weight", "2048", "512"):
        neo_numpy.load_model(folder)


def test_hidden_size_not_divisible_by_heads(folder):
    path = edit_config(folder, num_heads=7)
    with expect_error(CheckpointError, path, "60", "7"):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "entry, value", [("num_heads", 0), ("intermediate_size", -5), ("window_size", 0), ("vocab_size", -1)]
)
def test_config_value_not_positive(folder, entry, value):
    path = edit_config(folder, **{entry: value})
    with expect_error(CheckpointError, path, entry, value):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "attention_types",
    [[["global", 2]], [[["global"]]], [[["global"], "two"]]],
    ids=["pattern-not-a-list", "no-repeat-count", "repeat-count-not-a-number"],
)
def test_attention_types_malformed(folder, attention_types):
    path = edit_config(folder, attention_types=attention_types)
    with expect_error(CheckpointError, path, "malformed"):
        neo_numpy.load_model(folder)


def test_null_attention_types_means_the_default(folder):
    """null is GPTNeoConfig's default [[["global", "local"], 12]]: 24 layers, not this checkpoint's 2."""
    path = edit_config(folder, attention_types=None)
    with expect_error(CheckpointError, path, "attention_types", "24 layers", "num_layers is 2"):
        neo_numpy.load_model(folder)


def test_attention_layers_that_disagree_with_attention_types(folder):
    """transformers keeps config.json's saved attention_layers (its blocks follow that list, not attention_types):
    a file where the two disagree would load there with other numbers than here, so it is refused."""
    path = edit_config(folder, attention_layers=["local", "global"])  # attention_types says global, global
    require("transformers")
    from transformers import GPTNeoConfig

    assert GPTNeoConfig.from_pretrained(folder).attention_layers == ["local", "global"]
    with expect_error(CheckpointError, path, "attention_layers", "['local', 'global']", "['global', 'global']"):
        neo_numpy.load_model(folder)


def test_attention_layers_that_agree_with_attention_types_load(folder):
    edit_config(folder, attention_layers=["global", "global"])
    assert neo_numpy.open_checkpoint(folder).config.attention_layers == ("global", "global")


# ---------------------------------------------------------------------------------------------- weight files


def test_only_pytorch_bin(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with expect_error(CheckpointError, folder, "safetensors"):
        neo_numpy.load_model(folder)


def test_no_weights_at_all(folder):
    (folder / "model.safetensors").unlink()
    with expect_error(CheckpointError, folder, "model.safetensors"):
        neo_numpy.load_model(folder)


def test_truncated_safetensors(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with expect_error(CheckpointError, path, "truncated"):
        neo_numpy.load_model(folder)


def test_truncated_inside_the_header(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    path.write_bytes(data[: 8 + header_length // 2])
    with expect_error(CheckpointError, path):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(0).bytes(4096),
        b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 526000000\n",  # a Git LFS pointer
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json here!!!" + bytes(64),  # a plausible length, but no JSON header
        b"tiny",
    ],
    ids=["random-bytes", "lfs-pointer-text", "header-not-json", "shorter-than-8-bytes"],
)
def test_not_a_safetensors_file(folder, content):
    path = folder / "model.safetensors"
    path.write_bytes(content)
    with expect_error(CheckpointError, path, "safetensors"):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},  # end before begin
        {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]},  # begins inside the header
        {"dtype": "F32", "shape": [2], "data_offsets": ["a", "b"]},
        {"dtype": "F32", "shape": [2]},
        [1, 2, 3],
    ],
    ids=["end-before-begin", "negative-offset", "offsets-not-numbers", "no-offsets", "entry-not-an-object"],
)
def test_malformed_header_entry(folder, entry):
    path = folder / "model.safetensors"
    write_raw_safetensors(path, {"transformer.wte.weight": entry}, bytes(64))
    with expect_error(CheckpointError, path, "transformer.wte.weight"):
        neo_numpy.load_model(folder)


def test_header_is_not_an_object(folder):
    path = folder / "model.safetensors"
    write_raw_safetensors(path, ["transformer.wte.weight"])
    with expect_error(CheckpointError, path, "JSON object"):
        neo_numpy.load_model(folder)


def test_tensor_bytes_do_not_fit_shape(folder):
    """Header shape and byte range disagree (the config's shape is right, the bytes are one float short)."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    header, data = {}, b""
    for name, array in tensors.items():
        raw = array.tobytes()[:-4] if name == "transformer.ln_f.bias" else array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    write_raw_safetensors(path, header, data)
    with expect_error(CheckpointError, path, "transformer.ln_f.bias", "[60]"):
        neo_numpy.load_model(folder)


def test_tensor_with_wrong_shape(folder):
    name = "transformer.h.1.mlp.c_fc.weight"

    def shrink(tensors):
        tensors[name] = tensors[name][:-1]  # [240, 60] -> [239, 60]

    rewrite_tensors(folder, shrink)
    with expect_error(CheckpointError, name, "[239, 60]", "[240, 60]"):
        neo_numpy.load_model(folder)


def test_config_hidden_size_disagrees_with_file(folder):
    edit_config(folder, hidden_size=64, num_heads=4)
    with expect_error(CheckpointError, "transformer.", "64", "60"):
        neo_numpy.load_model(folder)


def test_missing_tensor(folder):
    name = "transformer.h.1.attn.attention.v_proj.weight"
    rewrite_tensors(folder, lambda tensors: tensors.pop(name))
    with expect_error(CheckpointError, name, "missing"):
        neo_numpy.load_model(folder)


def test_foreign_tensor_is_ignored_with_one_warning(folder, caplog):
    """transformers ignores a tensor its model has no place for (it reports it as UNEXPECTED); so does neo_numpy."""
    name = "transformer.h.0.attn.c_attn.weight"  # GPT-2's fused qkv projection
    ids = np.array([[464, 3290, 318]])
    expected = neo_numpy.load_model(folder).forward(ids)

    def add(tensors):
        tensors[name] = np.zeros((60, 180), dtype=np.float32)
        tensors["score.weight"] = np.zeros((2, 60), dtype=np.int64)

    rewrite_tensors(folder, add)
    caplog.clear()
    np.testing.assert_array_equal(neo_numpy.load_model(folder).forward(ids), expected)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "score.weight" in warnings[0] and "1 more" in warnings[0], warnings


def test_gpt2_style_file(folder):
    """A GPT-2 checkpoint's tensor names: GPT-Neo's are missing, so the first missing one is named."""

    def rename(tensors):
        tensors["transformer.h.0.attn.c_attn.weight"] = np.zeros((60, 180), dtype=np.float32)
        for name in [name for name in tensors if ".attn.attention." in name]:
            del tensors[name]

    rewrite_tensors(folder, rename)
    with expect_error(CheckpointError, "transformer.h.0.attn.attention."):
        neo_numpy.load_model(folder)


def test_unsupported_tensor_dtype(folder):
    """Integer weights are refused: neo_numpy reads floating-point dtypes (F64 is cast: test_transformers_configs)."""
    name = "transformer.ln_f.bias"

    def to_int64(tensors):
        tensors[name] = tensors[name].astype(np.int64)

    rewrite_tensors(folder, to_int64)
    with expect_error(CheckpointError, name, "I64", "F64"):
        neo_numpy.load_model(folder)


def test_sharded_index_lists_missing_shard(torch_models, tmp_path):
    folder = save_checkpoint(torch_models[SOURCE], tmp_path / "sharded", max_shard_size="200KB", with_tokenizer=False)
    shards = sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) > 1
    (folder / shards[-1]).unlink()
    with expect_error(CheckpointError, shards[-1], "model.safetensors.index.json"):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "index_text", ["{ not json", "[1]", '{"metadata": {}}', '{"weight_map": ["a"]}', '{"weight_map": {"a": 1}}']
)
def test_sharded_index_unreadable(torch_models, tmp_path, index_text):
    folder = save_checkpoint(torch_models[SOURCE], tmp_path / "sharded", max_shard_size="200KB", with_tokenizer=False)
    index = folder / "model.safetensors.index.json"
    index.write_text(index_text)
    with expect_error(CheckpointError, index, "index"):
        neo_numpy.load_model(folder)


def test_sharded_index_names_a_tensor_its_shard_lacks(torch_models, tmp_path):
    folder = save_checkpoint(torch_models[SOURCE], tmp_path / "sharded", max_shard_size="200KB", with_tokenizer=False)
    index = folder / "model.safetensors.index.json"
    raw = json.loads(index.read_text())
    shard = raw["weight_map"]["transformer.ln_f.bias"]
    raw["weight_map"]["transformer.h.0.ln_9.weight"] = shard
    index.write_text(json.dumps(raw))
    with expect_error(CheckpointError, "transformer.h.0.ln_9.weight", shard):
        neo_numpy.load_model(folder)


# ---------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("bad_id", [-1, 50257])
def test_token_id_outside_vocabulary(neo_models, bad_id):
    ids = np.array([[464, 3290, bad_id, 11]])
    with expect_error(InputError, bad_id, "50256"):
        neo_models[SOURCE].forward(ids)


def test_float_token_ids(neo_models):
    with expect_error(InputError, "float"):
        neo_models[SOURCE].forward(np.array([[1.0, 2.0]]))


def test_empty_input(neo_models):
    with expect_error(InputError, "[1, 0]"):
        neo_models[SOURCE].forward(np.zeros((1, 0), dtype=np.int64))


def test_sequence_longer_than_positions(neo_models):
    limit = neo_models[SOURCE].config.max_position_embeddings  # 512
    ids = np.zeros((1, limit + 1), dtype=np.int64)
    with expect_error(InputError, limit + 1, limit):
        neo_models[SOURCE].forward(ids)


def test_attention_mask_with_wrong_shape(neo_models):
    ids = np.zeros((2, 5), dtype=np.int64)
    with expect_error(InputError, "attention_mask", "[2, 4]", "[2, 5]"):
        neo_models[SOURCE].forward(ids, attention_mask=np.ones((2, 4), dtype=np.int64))


@pytest.mark.parametrize("bad_value", [2, -1])
def test_attention_mask_with_values_other_than_0_1(neo_models, bad_value):
    ids = np.zeros((2, 5), dtype=np.int64)
    mask = np.ones((2, 5), dtype=np.int64)
    mask[1, 0] = bad_value
    with expect_error(InputError, "attention_mask", "0", "1"):
        neo_models[SOURCE].forward(ids, attention_mask=mask)


def test_attention_mask_with_all_zero_row(neo_models):
    ids = np.zeros((2, 5), dtype=np.int64)
    mask = np.ones((2, 5), dtype=np.int64)
    mask[1] = 0
    with expect_error(InputError, "attention_mask"):
        neo_models[SOURCE].forward(ids, attention_mask=mask)


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError) and issubclass(InputError, neo_numpy.NeoNumpyError)
    assert issubclass(ModelNotFoundError, CheckpointError)


# ---------------------------------------------------------------------------------------------- the front door


def test_open_checkpoint_reads_the_config_once_and_the_tokenizer_on_first_use(folder):
    (folder / "tokenizer.json").write_text("not a tokenizer")
    checkpoint = neo_numpy.open_checkpoint(folder)  # the broken tokenizer is not read yet
    assert checkpoint.folder == folder and checkpoint.config.num_layers == 2
    (folder / "config.json").unlink()  # load_model(checkpoint) does not read it again
    model = neo_numpy.load_model(checkpoint)
    assert model.config is checkpoint.config and neo_numpy.open_checkpoint(checkpoint) is checkpoint
    with expect_error(CheckpointError, "tokenizer.json"):
        checkpoint.tokenizer  # noqa: B018


def test_checkpoint_tokenizer_is_kept_and_shared_with_load_tokenizer(folder):
    checkpoint = neo_numpy.open_checkpoint(folder)
    assert checkpoint.tokenizer is checkpoint.tokenizer is neo_numpy.load_tokenizer(checkpoint)
    assert checkpoint.tokenizer.encode("Hello world") == [15496, 995]


def test_load_tokenizer_checks_the_tokenizer_against_the_config(folder):
    """load_tokenizer and NeoModel.tokenizer make the same check: ids beyond the model's vocabulary are refused."""
    edit_config(folder, vocab_size=50000)
    with expect_error(CheckpointError, folder, "50256", "49999"):
        neo_numpy.load_tokenizer(folder)


# -------------------------------------------------------------------------------------- hostile shard indexes


def sharded(torch_models, tmp_path):
    """A sharded copy of the test checkpoint: (folder, index path, index dict)."""
    folder = save_checkpoint(torch_models[SOURCE], tmp_path / "sharded", max_shard_size="200KB")
    index = folder / "model.safetensors.index.json"
    return folder, index, json.loads(index.read_text())


def point_index_at(index, raw, shard_name):
    """Map every tensor of the first shard to `shard_name` instead."""
    first = sorted(set(raw["weight_map"].values()))[0]
    raw["weight_map"] = {name: shard_name if shard == first else shard for name, shard in raw["weight_map"].items()}
    index.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "shard_name",
    ["SECRET_ABSOLUTE", "../../../../../../SECRET_RELATIVE", "../outside/model.safetensors", "sub/x.safetensors", ".."],
)
def test_index_shard_names_must_be_plain_file_names(torch_models, tmp_path, shard_name):
    folder, index, raw = sharded(torch_models, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    outside = tmp_path / "outside"  # a valid shard outside the folder must not load either
    outside.mkdir()
    first = sorted(set(raw["weight_map"].values()))[0]
    shutil.copy(folder / first, outside / "model.safetensors")
    relative_secret = "../" * len(secret.parent.parts) + str(secret).lstrip("/")
    shard_name = {"SECRET_ABSOLUTE": str(secret), "../../../../../../SECRET_RELATIVE": relative_secret}.get(
        shard_name, shard_name
    )
    point_index_at(index, raw, shard_name)
    with expect_error(CheckpointError, index, "plain file name") as caught:
        neo_numpy.load_model(folder)
    assert "root:" not in str(caught.value) and str(int.from_bytes(SECRET[:8], "little")) not in str(caught.value)
    assert not hub.is_complete_checkpoint(folder)


def test_index_shard_that_links_outside_the_folder(torch_models, tmp_path):
    folder, index, raw = sharded(torch_models, tmp_path)
    first = sorted(set(raw["weight_map"].values()))[0]
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(folder / first, outside)
    (folder / first).symlink_to(outside)
    with expect_error(CheckpointError, first, "outside"):
        neo_numpy.load_model(folder)
    (folder / first).unlink()  # a link that stays inside the folder is fine
    shutil.move(outside, folder / "real.bin")
    (folder / first).symlink_to(folder / "real.bin")
    assert neo_numpy.load_model(folder).config.num_layers == 2


def test_hf_cache_snapshot_links_into_blobs_load(torch_models, tmp_path):
    """The Hugging Face cache keeps files in blobs/ and links them from snapshots/<revision>/: that is allowed."""
    folder, index, raw = sharded(torch_models, tmp_path)
    snapshot = tmp_path / "models--someone--neo" / "snapshots" / "0123abcd"
    blobs = tmp_path / "models--someone--neo" / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for item in folder.iterdir():
        shutil.move(item, blobs / item.name)
        (snapshot / item.name).symlink_to(Path("../../blobs") / item.name)
    assert neo_numpy.load_model(snapshot).config.num_layers == 2


def test_tensor_in_a_shard_the_index_does_not_map_there(torch_models, tmp_path):
    """Two shards both holding ln_f.bias: the index names one, so the other copy must not silently win."""
    folder, index, raw = sharded(torch_models, tmp_path)
    shards = sorted(set(raw["weight_map"].values()))
    owner = raw["weight_map"]["transformer.ln_f.bias"]
    other = next(shard for shard in shards if shard != owner)
    tensors = load_file(str(folder / other))
    tensors["transformer.ln_f.bias"] = np.zeros(60, dtype=np.float32)
    save_file(tensors, str(folder / other))
    with expect_error(CheckpointError, other, "transformer.ln_f.bias", index.name):
        neo_numpy.load_model(folder)


def test_duplicate_name_in_the_index(torch_models, tmp_path):
    folder, index, raw = sharded(torch_models, tmp_path)
    text = json.dumps(raw)
    index.write_text(text.replace('"weight_map": {', '"weight_map": {"transformer.ln_f.bias": "x.safetensors", ', 1))
    with expect_error(CheckpointError, index, "'transformer.ln_f.bias' twice"):
        neo_numpy.load_model(folder)


# -------------------------------------------------------------------------------------- hostile config values


@pytest.mark.parametrize(
    "entry, value",
    [
        ("layer_norm_epsilon", float("nan")),
        ("layer_norm_epsilon", -10),
        ("layer_norm_epsilon", float("inf")),
        ("layer_norm_epsilon", "1e-5"),
        ("hidden_size", 60.7),
        ("num_heads", 4.9),
        ("num_heads", True),
        ("window_size", True),
        ("window_size", 0),
        ("num_layers", 10**6),
        ("vocab_size", 10**30),
        ("eos_token_id", [50256, 13]),  # transformers stops at either; neo_numpy stops at one, so it refuses
        ("eos_token_id", "50256"),  # (ids outside the vocabulary and null load, as in transformers)
        ("hidden_size", float("inf")),
        ("attention_types", [[[1, "x"], 2]]),
        ("attention_types", [[["global"], True]]),
        ("attention_types", [[["global"], -2], [["global"], 4]]),
        ("activation_function", ["gelu_new"]),
    ],
)
def test_config_values_are_checked_by_type(folder, entry, value):
    path = edit_config(folder, **{entry: value})
    with expect_error(CheckpointError, path, entry):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "text",
    ['{"hidden_size": 1e400}', '{"hidden_size": ' + "9" * 5000 + "}", "[" * 100_000, '{"a": 1, "a": 2}'],
    ids=["1e400", "5000-digit-int", "deep-nesting", "duplicate-key"],
)
def test_malformed_config_json(folder, text):
    path = folder / "config.json"
    path.write_text(text)
    with expect_error(CheckpointError, path):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize(
    "attention_types", [[[["global", "local"], 100_000_000]], [[["global"], 10**100]]], ids=["1e8", "1e100"]
)
def test_huge_attention_types_are_refused_before_expanding(folder, attention_types):
    path = edit_config(folder, attention_types=attention_types)
    tracemalloc.start()
    with expect_error(CheckpointError, path, "attention_types", "num_layers is 2"):
        neo_numpy.NeoConfig.from_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10_000_000, f"checking attention_types took {peak} bytes"


def refuse_stat_inside(locked: Path, monkeypatch) -> None:
    """Make stat() of anything inside `locked` raise PermissionError, as for a folder without search (x) permission
    (simulated: the tests run as root, which permissions do not stop)."""
    stat = Path.stat

    def refuse_inside(path, *args, **kwargs):
        if locked in Path(path).parents:
            raise PermissionError(13, "Permission denied", str(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", refuse_inside)


def test_unreadable_folder(folder, monkeypatch):
    """A folder the user may not list: Path.is_file() itself raises PermissionError (simulated; tests run as root)."""
    refuse_stat_inside(folder, monkeypatch)
    with expect_error(CheckpointError, folder, "Permission denied"):
        neo_numpy.load_model(folder)
    with expect_error(CheckpointError, folder, "Permission denied"):
        neo_numpy.load_tokenizer(folder)


# --------------------------------------------------------------------------------------------- hostile inputs


def test_ragged_input_ids(small_model):
    with expect_error(InputError, "input_ids"):
        small_model.forward([[1, 2], [3]])


# ---------------------------------------------------------------------------------------------- paths and files

SECRET_VALUE = "SECRET_VALUE-7f3a"  # a value in a file outside the checkpoint folder: no message may show it


@pytest.mark.parametrize("load", [neo_numpy.load_model, neo_numpy.load_tokenizer, neo_numpy.open_checkpoint])
def test_over_long_name(load, tmp_path):
    """Path.exists() raises OSError (errno 36) for a name this long on Python 3.11."""
    with expect_error(CheckpointError, "File name too long"):
        load(str(tmp_path / ("a" * 300)))


@pytest.mark.parametrize("load", [neo_numpy.load_model, neo_numpy.load_tokenizer, neo_numpy.open_checkpoint])
@pytest.mark.parametrize("name", ["\0", "a\0b", "{folder}/\0"], ids=["nul", "nul-inside", "nul-in-folder"])
def test_name_with_a_nul_character(load, name, folder):
    """os.stat raises ValueError ("embedded null byte") for such a name; it is one sentence here, shown escaped."""
    with expect_error(CheckpointError, "NUL character", repr(name.format(folder=folder))):
        load(name.format(folder=folder))


@pytest.mark.parametrize("load", [neo_numpy.load_model, neo_numpy.load_tokenizer, neo_numpy.open_checkpoint])
def test_folder_inside_a_folder_without_search_permission(load, folder, monkeypatch):
    """stat() of anything inside a folder without search (x) permission raises PermissionError (simulated: the
    tests run as root, which permissions do not stop)."""
    refuse_stat_inside(folder.parent, monkeypatch)
    with expect_error(CheckpointError, folder, "Permission denied"):
        load(folder)


def outside_file(tmp_path, name, text):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / name).write_text(text)
    return elsewhere / name


LINKED_FILES = {  # file -> what it holds outside the folder (each would be read, and its value shown, if followed)
    "config.json": json.dumps({"model_type": SECRET_VALUE}),
    "tokenizer.json": json.dumps({"model": SECRET_VALUE}),
    "tokenizer_config.json": json.dumps({"tokenizer_class": SECRET_VALUE}),
    "special_tokens_map.json": json.dumps({"eos_token": [SECRET_VALUE]}),
}


@pytest.mark.parametrize("name", list(LINKED_FILES))
def test_file_linked_from_outside_the_folder(name, folder, tmp_path):
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(outside_file(tmp_path, name, LINKED_FILES[name]))
    with expect_error(CheckpointError, folder / name, "outside") as caught:
        neo_numpy.load_tokenizer(folder)
    assert SECRET_VALUE not in str(caught.value) and "elsewhere" not in str(caught.value)


def test_shard_index_linked_from_outside_the_folder(torch_models, tmp_path):
    folder = save_checkpoint(torch_models[SOURCE], tmp_path / "sharded", max_shard_size="200KB", with_tokenizer=False)
    index = folder / "model.safetensors.index.json"
    target = outside_file(tmp_path, "index.json", index.read_text().replace("weight_map", SECRET_VALUE))
    index.unlink()
    index.symlink_to(target)
    with expect_error(CheckpointError, index, "outside") as caught:
        neo_numpy.load_model(folder)
    assert SECRET_VALUE not in str(caught.value)


def test_weights_file_may_be_a_link_anywhere(folder, tmp_path):
    """model.safetensors is the one file that may lead outside (a big file kept on another disk, the HF cache)."""
    elsewhere = tmp_path / "big-disk"
    elsewhere.mkdir()
    (folder / "model.safetensors").rename(elsewhere / "model.safetensors")
    (folder / "model.safetensors").symlink_to(elsewhere / "model.safetensors")
    assert neo_numpy.load_model(folder).config.num_layers == 2


def test_hf_cache_snapshot_whose_files_all_link_into_blobs(folder, tmp_path):
    repo = tmp_path / "models--someone--tiny"
    snapshot, blobs = repo / "snapshots" / "0123abcd", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for index, path in enumerate(sorted(folder.iterdir())):
        path.rename(blobs / f"blob{index}")
        (snapshot / path.name).symlink_to(Path("../../blobs") / f"blob{index}")
    model = neo_numpy.load_model(snapshot)
    assert model.tokenizer.encode("Hello world") == [15496, 995]


@pytest.mark.parametrize("kind", ["folder", "FIFO"])
def test_config_that_is_not_a_file(kind, folder):
    """A FIFO is never opened (opening one for reading blocks until someone writes)."""
    config = folder / "config.json"
    config.unlink()
    config.mkdir() if kind == "folder" else os.mkfifo(config)
    outcome = {}

    def load():
        try:
            neo_numpy.load_model(folder)
        except CheckpointError as error:
            outcome["message"] = str(error)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "loading blocked on the FIFO"
    assert outcome["message"] == f"{config} is a {kind}, not a file: a GPT-Neo checkpoint folder needs a config.json."


@pytest.mark.parametrize(
    "name, limit", [("config.json", "1 MB"), ("model.safetensors.index.json", "20 MB"), ("vocab.json", "50 MB")]
)
def test_oversized_json_is_refused_before_it_is_read(name, limit, folder):
    """A sparse file of 100 MB costs nothing on disk; refusing it must not read it either."""
    (folder / "tokenizer.json").unlink()
    (folder / "merges.txt").write_text("#version: 0.2\n")
    if name == "model.safetensors.index.json":
        (folder / "model.safetensors").unlink()
    with open(folder / name, "wb") as file:
        file.truncate(100_000_000)
    tracemalloc.start()
    with expect_error(CheckpointError, folder / name, f"larger than {limit}"):
        if name == "vocab.json":
            neo_numpy.load_tokenizer(folder)
        else:
            neo_numpy.load_model(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, f"refusing took {peak} bytes"
