"""Hostile checkpoints and inputs (issue 14): each is built here, then run through the API and, where it applies,
the command line. Every one must end in one sentence (NeoNumpyError in the API, one `error:` line and a non-zero
exit in the CLI, a quiet exit on a broken pipe) or a correct result; nothing outside the checkpoint folder is read,
and nothing loads as a different model than the one named.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import safetensors
from checkpoints import save_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file
from test_loading_errors import SOURCE, edit_config, expect_error, write_raw_safetensors

import neo_numpy
from neo_numpy import BackendError, CheckpointError, InputError, ModelNotFoundError, hub
from neo_numpy.safetensors_reader import DTYPE_BITS, parse_header

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = b"root:x:0:0:secret-bytes-outside-the-folder\n"  # stands in for /etc/passwd: must never be read or shown


@pytest.fixture
def checkpoint(checkpoint_dirs, tmp_path):
    """A private copy of the smallest test checkpoint (2 layers, hidden 60, 512 positions), to make hostile."""
    return shutil.copytree(checkpoint_dirs[SOURCE], tmp_path / "checkpoint")


@pytest.fixture(scope="module")
def model(neo_models):
    return neo_models[SOURCE]


def read_safetensors(path):
    """(header dict, data bytes) of a .safetensors file."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def edit_header(path, edit):
    """Let `edit` change the header dict of `path` in place; the tensor bytes stay as they are."""
    header, data = read_safetensors(path)
    edit(header)
    write_raw_safetensors(path, header, data)


# ---------------------------------------------------------------------------------------------- shard paths


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


# ---------------------------------------------------------------------------------------------- hub names


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """An empty weights folder and Hugging Face cache, offline."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("NEO_NUMPY_WEIGHTS", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return folder


def test_another_owners_repo_never_gets_eleutherais_folder(weights, checkpoint_dirs):
    released = shutil.copytree(checkpoint_dirs[SOURCE], weights / "gpt-neo-125m")  # the released 125M's folder
    assert hub.resolve_model_dir("125M") == released
    assert hub.resolve_model_dir("EleutherAI/gpt-neo-125m") == released
    with expect_error(ModelNotFoundError, "someone-else/gpt-neo-125m", "HF_HUB_OFFLINE"):
        neo_numpy.load_model("someone-else/gpt-neo-125m")
    theirs = shutil.copytree(checkpoint_dirs[SOURCE], weights / "someone-else" / "gpt-neo-125m")
    assert hub.resolve_model_dir("someone-else/gpt-neo-125m") == theirs
    assert hub.download_folder("someone-else/gpt-neo-125m") == theirs
    assert hub.download_folder("EleutherAI/gpt-neo-125m") == released


@pytest.mark.parametrize("name", ["zz/..", "zz/../..", "EleutherAI/..", "a/b/../../..", "x/-y", "a--b/c"])
def test_names_that_escape_the_weights_folder_are_refused(weights, monkeypatch, tmp_path, name):
    monkeypatch.chdir(tmp_path)  # no folder "zz" here, so these are not existing paths
    (weights / "config.json").write_text("{}")  # what "zz/.." would have found
    with expect_error(ModelNotFoundError, name, "does not exist"):
        neo_numpy.load_model(name)


# ---------------------------------------------------------------------------------------------- safetensors headers


def test_overlapping_tensors_are_refused(checkpoint):
    """q_proj pointing at k_proj's bytes: the safetensors library refuses it, and so do we."""
    path = checkpoint / "model.safetensors"
    q, k = "transformer.h.0.attn.attention.q_proj.weight", "transformer.h.0.attn.attention.k_proj.weight"
    edit_header(path, lambda header: header[q].update(data_offsets=header[k]["data_offsets"]))
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(path.read_bytes())
    with expect_error(CheckpointError, path, "overlaps"):
        neo_numpy.load_model(checkpoint)


@pytest.mark.parametrize("shift", [4, -4])
def test_shifted_range_is_refused(checkpoint, shift):
    path = checkpoint / "model.safetensors"

    def shift_ln_f_bias(header):
        begin, end = header["transformer.ln_f.bias"]["data_offsets"]
        header["transformer.ln_f.bias"]["data_offsets"] = [begin + shift, end + shift]

    edit_header(path, shift_ln_f_bias)
    with expect_error(CheckpointError, path):
        neo_numpy.load_model(checkpoint)


def test_duplicate_tensor_name_in_a_header(checkpoint):
    path = checkpoint / "model.safetensors"
    header, data = read_safetensors(path)
    name = "transformer.ln_f.bias"
    text = json.dumps(header)
    duplicate = json.dumps({name: header[name]})[1:-1]
    text = text[:-1] + ", " + duplicate + "}"  # the same name again, same bytes
    encoded = text.encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    with expect_error(CheckpointError, path, f"{name!r} twice"):
        neo_numpy.load_model(checkpoint)


def test_trailing_bytes_and_space_padding(checkpoint):
    """Bytes after the last tensor are refused; spaces after the header's JSON (as writers pad it) are fine."""
    path = checkpoint / "model.safetensors"
    header, data = read_safetensors(path)
    encoded = json.dumps(header).encode() + b"     "
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    assert neo_numpy.load_model(checkpoint).config.num_layers == 2
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data + b"\0\0\0\0")
    with expect_error(CheckpointError, path, "4 bytes after the last tensor"):
        neo_numpy.load_model(checkpoint)


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}, "dtype"),
        ({"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}, "F99"),
        ({"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}, "data_offsets"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}, "data_offsets"),
        ({"dtype": "F32", "shape": [2**32, 2**32, 16], "data_offsets": [0, 4]}, "does not fit"),  # wraps to 0 in int64
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 10**4000]}, "does not fit"),
    ],
    ids=["dtype-list", "dtype-unknown", "shape-bool", "shape-float", "shape-negative", "three-offsets",
         "float-offsets", "shape-overflows-int64", "huge-offset"],
)  # fmt: skip
def test_malformed_entries(checkpoint, entry, needle):
    path = checkpoint / "model.safetensors"
    write_raw_safetensors(path, {"transformer.wte.weight": entry}, bytes(4))
    with expect_error(CheckpointError, path, "transformer.wte.weight", needle):
        neo_numpy.load_model(checkpoint)


@pytest.mark.parametrize(
    "header_text",
    [
        b'{"a": ' + b"[" * 100_000,
        b'{"a": 1e400}',
        b'{"a": ' + b"9" * 5000 + b"}",
        b'{"a": {"dtype": "F32"}}\xff',
        b"{\x00",
    ],
    ids=["deep-nesting", "1e400", "5000-digit-int", "not-utf8", "utf16-lookalike"],
)
def test_malformed_header_json(checkpoint, header_text):
    path = checkpoint / "model.safetensors"
    path.write_bytes(len(header_text).to_bytes(8, "little") + header_text)
    with expect_error(CheckpointError, path):
        neo_numpy.load_model(checkpoint)


def test_header_length_is_never_shown(checkpoint):
    """The length field is the file's first 8 bytes: a message quoting it would leak them."""
    path = checkpoint / "model.safetensors"
    path.write_bytes(SECRET)
    with expect_error(CheckpointError, path, "100 MB") as caught:
        neo_numpy.load_model(checkpoint)
    assert str(int.from_bytes(SECRET[:8], "little")) not in str(caught.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_nan_or_inf_weight_is_refused(checkpoint, bad, dtype):
    path = checkpoint / "model.safetensors"
    name = "transformer.h.1.mlp.c_fc.weight"
    tensors = {key: value.astype(dtype) for key, value in load_file(str(path)).items()}
    tensors[name][3, 7] = bad
    save_file(tensors, str(path))
    with expect_error(CheckpointError, name, "NaN or infinite"):
        neo_numpy.load_model(checkpoint)


def test_large_finite_weights_still_load(checkpoint):
    """Finite values whose float32 sum overflows are not NaN: the fast check falls back to the exact one."""
    path = checkpoint / "model.safetensors"
    tensors = load_file(str(path))
    tensors["transformer.h.0.ln_1.bias"][:] = 3e38
    save_file(tensors, str(path))
    assert np.all(neo_numpy.load_model(checkpoint).weights.layers[0].ln_1_bias == np.float32(3e38))


# ---------------------------------------------------------------------------------------------- header fuzzing

FUZZ_PATH = Path("fuzz.safetensors")
ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(sorted(DTYPE_BITS)), st.text(max_size=4), st.integers()),
        "shape": st.lists(st.one_of(st.integers(-2, 6), st.booleans(), st.floats(0, 4)), max_size=3),
        "data_offsets": st.lists(st.one_of(st.integers(-4, 80), st.floats(0, 80)), min_size=1, max_size=3),
    }
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)


def parse_or_refuse(header_bytes, data_length):
    """parse_header's answer, or None when it refused with CheckpointError; any other exception fails the test."""
    try:
        return parse_header(header_bytes, data_length, FUZZ_PATH)
    except CheckpointError as error:
        assert "\n" not in str(error)
        return None


def library_reads(header_bytes, data):
    """{name: {"dtype", "shape", "data"}} as the safetensors library reads the file, or None when it refuses it."""
    try:
        return dict(safetensors.deserialize(struct.pack("<Q", len(header_bytes)) + header_bytes + data))
    except safetensors.SafetensorError:
        return None


def check_accepted(entries, header_bytes, data):
    """An accepted header tiles the data exactly, and the safetensors library reads the same tensors from it."""
    start = 8 + len(header_bytes)
    spans = sorted((entry.start, entry.end) for entry in entries.values())
    ends = [start] + [end for _, end in spans]  # each range begins where the previous ended, the first at the data
    assert [begin for begin, _ in spans] == ends[:-1]
    assert ends[-1] == start + len(data)
    theirs = library_reads(header_bytes, data)
    assert theirs is not None and set(theirs) == set(entries)
    for name, entry in entries.items():
        assert (theirs[name]["dtype"], tuple(theirs[name]["shape"])) == (entry.dtype, entry.shape)
        assert bytes(theirs[name]["data"]) == data[entry.start - start : entry.end - start]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_bytes=st.binary(max_size=200), data_length=st.integers(0, 64))
def test_fuzz_any_bytes_parse_or_refuse(header_bytes, data_length):
    entries = parse_or_refuse(header_bytes, data_length)
    if entries is not None:
        check_accepted(entries, header_bytes, bytes(data_length))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.dictionaries(st.text(max_size=4), st.one_of(ENTRY, JSON_VALUES), max_size=4),
    data_length=st.integers(0, 64),
    padding=st.integers(0, 3),
)
def test_fuzz_json_headers_parse_or_refuse(header, data_length, padding):
    header_bytes = json.dumps(header).encode() + b" " * padding
    data = bytes(range(data_length))
    entries = parse_or_refuse(header_bytes, data_length)
    if entries is not None:
        check_accepted(entries, header_bytes, data)


@st.composite
def tiled_headers(draw):
    """(header, data length, mutation): tensors that tile their data exactly, as writers lay them out, in any order,
    then at most one thing changed: an offset, a shape, a dtype or the data's length."""
    header, offset = {}, 0
    for name in draw(st.lists(st.text(min_size=1, max_size=3), unique=True, max_size=4)):
        dtype = draw(st.sampled_from(["F32", "F16", "BF16", "U8", "I64", "BOOL"]))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = int(np.prod(shape)) * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    mutation = draw(st.sampled_from(["none", "offset", "shape", "dtype", "length"])) if header else "none"
    name, delta = draw(st.sampled_from(sorted(header) or [None])), draw(st.integers(-3, 3))
    if mutation == "offset":
        header[name]["data_offsets"][draw(st.integers(0, 1))] += delta
    elif mutation == "shape":
        header[name]["shape"] = header[name]["shape"] + [draw(st.integers(0, 3))]
    elif mutation == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(sorted(DTYPE_BITS)))
    elif mutation == "length":
        offset = max(0, offset + delta)
    return dict(header, __metadata__={"format": "pt"}), offset, mutation


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tiled_headers(), padding=st.integers(0, 7))
def test_fuzz_near_valid_headers(case, padding):
    """What a writer produces is accepted; after any change, we accept exactly what the safetensors library accepts
    (a shape [2, 0] -> [2, 0, 3] is still exact), and read the same tensors from it."""
    header, data_length, mutation = case
    header_bytes = json.dumps(header).encode() + b" " * padding
    data = bytes(i % 251 for i in range(data_length))
    entries = parse_or_refuse(header_bytes, data_length)
    if mutation == "none":
        assert entries is not None, header
    assert (entries is not None) == (library_reads(header_bytes, data) is not None), header
    if entries is not None:
        check_accepted(entries, header_bytes, data)


def test_fuzz_finds_valid_headers_too():
    """The parser does accept what it should: a well-formed two-tensor header with padding."""
    header = {
        "b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "__metadata__": {"format": "pt"},
    }
    header_bytes = json.dumps(header).encode() + b"  "
    entries = parse_or_refuse(header_bytes, 12)
    assert entries is not None and sorted(entries) == ["a", "b"]
    check_accepted(entries, header_bytes, bytes(range(12)))


# ---------------------------------------------------------------------------------------------- config values


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
def test_config_values_are_checked_by_type(checkpoint, entry, value):
    path = edit_config(checkpoint, **{entry: value})
    with expect_error(CheckpointError, path, entry):
        neo_numpy.load_model(checkpoint)


@pytest.mark.parametrize(
    "text",
    ['{"hidden_size": 1e400}', '{"hidden_size": ' + "9" * 5000 + "}", "[" * 100_000, '{"a": 1, "a": 2}'],
    ids=["1e400", "5000-digit-int", "deep-nesting", "duplicate-key"],
)
def test_malformed_config_json(checkpoint, text):
    path = checkpoint / "config.json"
    path.write_text(text)
    with expect_error(CheckpointError, path):
        neo_numpy.load_model(checkpoint)


@pytest.mark.parametrize(
    "attention_types", [[[["global", "local"], 100_000_000]], [[["global"], 10**100]]], ids=["1e8", "1e100"]
)
def test_huge_attention_types_are_refused_before_expanding(checkpoint, attention_types):
    path = edit_config(checkpoint, attention_types=attention_types)
    tracemalloc.start()
    with expect_error(CheckpointError, path, "attention_types", "num_layers is 2"):
        neo_numpy.NeoConfig.from_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10_000_000, f"checking attention_types took {peak} bytes"


def test_unreadable_folder(checkpoint, monkeypatch):
    """A folder the user may not list: Path.is_file() itself raises PermissionError (simulated; tests run as root)."""
    stat = Path.stat

    def refuse_inside(path, *args, **kwargs):
        if checkpoint in Path(path).parents:
            raise PermissionError(13, "Permission denied", str(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", refuse_inside)
    with expect_error(CheckpointError, checkpoint, "Permission denied"):
        neo_numpy.load_model(checkpoint)
    with expect_error(CheckpointError, checkpoint, "Permission denied"):
        neo_numpy.load_tokenizer(checkpoint)


# ---------------------------------------------------------------------------------------------- tokenizer


def write_word_tokenizer(folder, vocab):
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(folder / "tokenizer.json"))


@pytest.mark.parametrize(
    "vocab, needle",
    [({"a": 0, "b": 1, "<unk>": 2}, "50256"), ({"a": 0, "<unk>": 60000, "<|endoftext|>": 50256}, "60000")],
    ids=["three-words-no-eos", "ids-beyond-the-model"],
)
def test_tokenizer_that_does_not_fit_the_model(checkpoint, vocab, needle):
    write_word_tokenizer(checkpoint, vocab)
    loaded = neo_numpy.load_model(checkpoint)
    with expect_error(CheckpointError, checkpoint, needle):
        loaded.tokenizer  # noqa: B018
    with expect_error(CheckpointError, needle):
        list(loaded.stream("a b", max_new_tokens=2))


@pytest.mark.parametrize("ids", [[-1], [10**10], [1.5], ["7"], [None]])
def test_decode_of_ids_outside_the_vocabulary(model, ids):
    with expect_error(InputError, "token id"):
        model.tokenizer.decode(ids)


@pytest.mark.parametrize("texts", [[], "one prompt", None])
def test_encode_batch_needs_a_list_of_prompts(model, texts):
    with expect_error(InputError, "encode_batch"):
        model.tokenizer.encode_batch(texts)


@pytest.mark.parametrize("text", ["caf\udce9", "\ud800", b"bytes", None])
def test_prompt_that_is_not_utf8_text(model, text):
    with expect_error(InputError, "prompt"):
        model.tokenizer.encode(text)
    with expect_error(InputError, "prompt"):
        list(model.stream(text, max_new_tokens=2))


# ---------------------------------------------------------------------------------------------- API inputs


def test_ragged_input_ids(model):
    with expect_error(InputError, "input_ids"):
        model.forward([[1, 2], [3]])


@pytest.mark.parametrize("threads", ["abc", 1.5, True, 0])
def test_threads_must_be_a_count(checkpoint, threads):
    with expect_error(InputError, "threads", repr(threads)):
        neo_numpy.load_model(checkpoint, threads=threads)


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, True])
@pytest.mark.parametrize("do_sample", [False, True])
def test_seed_is_checked_even_when_greedy(model, seed, do_sample):
    with expect_error(InputError, "seed"):
        model.generate([[464, 3290]], max_new_tokens=2, do_sample=do_sample, seed=seed)


@pytest.mark.parametrize("eos", [-1, 50257, 10**20, 1.5, "50256"])
def test_eos_outside_the_vocabulary_with_min_new_tokens(model, eos):
    with expect_error(InputError, "eos_token_id"):
        model.generate([[464, 3290]], max_new_tokens=3, min_new_tokens=2, eos_token_id=eos)


def test_tiny_temperature_is_refused_not_nan(model):
    with expect_error(InputError, "temperature"):
        model.generate([[464, 3290]], max_new_tokens=3, do_sample=True, temperature=1e-45, seed=0)
    small = model.generate([[464, 3290]], max_new_tokens=3, do_sample=True, temperature=1e-6, seed=0)
    greedy = model.generate([[464, 3290]], max_new_tokens=3)
    assert small.tolist() == greedy.tolist()  # a small but safe temperature is (near) greedy, not garbage


# ---------------------------------------------------------------------------------------------- command line


def run_cli(args, stdin=b"", stdout=subprocess.PIPE, shell_suffix=None):
    """(exit status, stdout bytes, stderr text) of `python -m neo_numpy <args>`, offline, from the repo root.

    stdin: bytes to send, or a path to open; shell_suffix: run through bash with this redirection appended.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", NEO_NUMPY_WEIGHTS=str(REPO_ROOT / "no-weights-here"))
    command = [sys.executable, "-m", "neo_numpy", *args]
    if shell_suffix is not None:
        quoted = " ".join("'" + os.fsdecode(arg).replace("'", "'\\''") + "'" for arg in command)
        command = ["bash", "-c", f"{quoted} {shell_suffix}"]
    with open(stdin, "rb") if isinstance(stdin, Path) else nullcontext() as stdin_file:
        source = dict(stdin=stdin_file) if stdin_file is not None else dict(input=stdin)
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE, timeout=120, **source
        )
    return result.returncode, result.stdout or b"", result.stderr.decode("utf-8", "replace")


def run_with_stdout_reader_gone(args):
    """stdout is a pipe whose reading end is already closed (`| head -c0`): every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run_cli(args, stdout=write_end)
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def hostile_cli(checkpoint_dirs, tmp_path_factory):
    """name -> (exit status, stdout, stderr) for every hostile command line, a few at a time."""
    root = tmp_path_factory.mktemp("hostile_cli")
    model_dir = str(checkpoint_dirs[SOURCE])
    bad_file = root / "latin1.txt"
    bad_file.write_bytes(b"caf\xe9 au lait")
    escaping = shutil.copytree(checkpoint_dirs[SOURCE], root / "escaping", ignore=lambda *_: ["model.safetensors"])
    secret = root / "secret.txt"
    secret.write_bytes(SECRET)
    (escaping / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": str(secret)}}))
    mismatched = shutil.copytree(checkpoint_dirs[SOURCE], root / "mismatched")
    write_word_tokenizer(mismatched, {"a": 0, "b": 1, "<unk>": 2})
    base = ["generate", "-m", model_dir, "-n", "40", "--ignore-eos"]
    runs = {
        "argv_not_utf8": lambda: run_cli(["generate", b"caf\xe9", "-m", model_dir]),
        "stdin_not_utf8": lambda: run_cli(["generate", "-m", model_dir], stdin=b"caf\xe9 au lait"),
        "file_not_utf8": lambda: run_cli(["generate", "-f", str(bad_file), "-m", model_dir]),
        "file_dev_zero": lambda: run_cli(["generate", "-f", "/dev/zero", "-m", model_dir]),
        "stdin_dev_zero": lambda: run_cli(["generate", "-m", model_dir], stdin=Path("/dev/zero")),
        "seed_negative": lambda: run_cli([*base, "The dog", "--do-sample", "--seed", "-1"]),
        "tiny_temperature": lambda: run_cli([*base, "The dog", "--do-sample", "--temperature", "1e-45"]),
        "escaping_index": lambda: run_cli(["generate", "The dog", "-m", str(escaping)]),
        "mismatched_tokenizer": lambda: run_cli(["generate", "The dog", "-m", str(mismatched)]),
        "dot_dot_name": lambda: run_cli(["generate", "The dog", "-m", "zz/.."]),
        "stdout_closed": lambda: run_cli([*base, "The dog"], shell_suffix=">&-"),
        "stdout_full": lambda: run_cli([*base, "The dog"], shell_suffix=">/dev/full"),
        "stdout_reader_gone": lambda: run_with_stdout_reader_gone([*base, "The dog"]),
        "stdout_head_c1": lambda: run_cli([*base, "The dog"], shell_suffix="| head -c1; exit ${PIPESTATUS[0]}"),
        "stderr_closed": lambda: run_cli([*base, "The dog"], shell_suffix="2>&-"),
        "stderr_closed_error": lambda: run_cli(
            ["generate", "The dog", "-m", str(root / "nowhere")], shell_suffix="2>&-"
        ),
        "download_not_a_checkpoint": lambda: run_cli(["download", str(root)]),
        "threads_beyond_cores": lambda: run_cli([*base, "The dog", "--threads", "100000"]),
        "usage_error": lambda: run_cli(["generate", "The dog", "-n", "abc"]),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run) for name, run in runs.items()}
        return {name: future.result() for name, future in futures.items()}


CLI_ERRORS = {  # run name: words its one `error:` line must contain
    "argv_not_utf8": ["UTF-8"],
    "stdin_not_utf8": ["UTF-8", "byte 3"],
    "file_not_utf8": ["latin1.txt", "UTF-8"],
    "file_dev_zero": ["/dev/zero", "512-position context"],
    "stdin_dev_zero": ["512-position context"],
    "seed_negative": ["seed", "-1"],
    "tiny_temperature": ["temperature"],
    "escaping_index": ["plain file name"],
    "mismatched_tokenizer": ["tokenizer", "50256"],
    "dot_dot_name": ["zz/.."],
    "stdout_closed": ["standard output"],
    "stdout_full": ["standard output", "No space left"],
    "download_not_a_checkpoint": ["not a checkpoint folder"],
    "threads_beyond_cores": ["--threads", "100000"],
}


@pytest.mark.parametrize("name", list(CLI_ERRORS))
def test_cli_refuses_in_one_line(hostile_cli, name):
    code, stdout, stderr = hostile_cli[name]
    assert code == 1, (code, stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{stderr}"
    for word in CLI_ERRORS[name]:
        assert word in lines[0], f"the message should name {word!r}: {lines[0]}"
    assert SECRET[:8] not in stdout and "root:" not in stderr


def test_cli_refuses_bad_settings_before_printing_anything(hostile_cli):
    assert hostile_cli["seed_negative"][1] == b""


def test_cli_stops_quietly_when_the_reader_is_gone(hostile_cli):
    code, stdout, stderr = hostile_cli["stdout_reader_gone"]
    assert code == 141 and stderr == "", (code, stderr)


def test_cli_piped_into_head(hostile_cli):
    """`| head -c1`: one byte comes through; whether the rest fits the pipe before head exits or not, no traceback."""
    code, stdout, stderr = hostile_cli["stdout_head_c1"]
    assert stdout == b"T"
    assert code in (0, 141) and "Traceback" not in stderr and "Exception ignored" not in stderr, (code, stderr)


def test_cli_with_stderr_closed_writes_nothing_but_the_text(hostile_cli):
    """`2>&-`: the summary and any error line are dropped, never written into the text on stdout."""
    code, stdout, _ = hostile_cli["stderr_closed"]
    assert code == 0 and stdout.startswith(b"The dog") and b"tok/s" not in stdout
    code, stdout, _ = hostile_cli["stderr_closed_error"]
    assert code == 1 and stdout == b""


def test_cli_usage_error_is_one_line(hostile_cli):
    code, _, stderr = hostile_cli["usage_error"]
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "-n" in lines[0], stderr


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_model_name(name):
    with expect_error(ModelNotFoundError, "empty"):
        neo_numpy.load_model(name)


def test_bfloat16_storage_is_refused_in_one_sentence(checkpoint):
    with expect_error(BackendError, "bfloat16"):
        neo_numpy.load_model(checkpoint, dtype="bfloat16")


@pytest.mark.parametrize("prompt", [[[464, 3290], [1, 2]], [[1, 2], [3]], 3.5], ids=["2-D", "ragged", "float"])
def test_stream_needs_one_sequence(model, prompt):
    with expect_error(InputError, "one sequence"):
        next(model.stream(prompt, max_new_tokens=2))


def test_stream_needs_a_tokenizer(model):
    with expect_error(InputError, "tokenizer"):
        next(model.stream("The dog", tokenizer="abc", max_new_tokens=2))
