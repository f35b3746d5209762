"""The safetensors reader: parse_header on its own (malformed and fuzzed headers), then hostile headers and weights in
a checkpoint folder. Every bad file ends in one CheckpointError sentence that names it; whatever the reader accepts,
the safetensors library reads the same way; nothing after the header is trusted before it is checked.
"""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from checkpoints import SECRET, edit_header, read_safetensors, require, write_raw_safetensors
from conftest import expect_error

import neo_numpy
from neo_numpy import CheckpointError
from neo_numpy.safetensors_reader import DTYPE_BITS, parse_header

require("safetensors", "hypothesis")

import safetensors  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

FUZZ_PATH = Path("fuzz.safetensors")


# ---------------------------------------------------------------------------------------------- parse_header

MALFORMED_ENTRIES = [  # (one tensor's header entry, a word its message must contain); the data is 4 bytes
    ({"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}, "dtype"),
    ({"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}, "F99"),
    ({"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}, "shape"),
    ({"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}, "shape"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "shape"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}, "data_offsets"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [2**32, 2**32, 16], "data_offsets": [0, 4]}, "does not fit"),  # wraps to 0 in int64
    ({"dtype": "F32", "shape": [1], "data_offsets": [0, 10**4000]}, "does not fit"),
]
MALFORMED_ENTRY_IDS = ["dtype-list", "dtype-unknown", "shape-bool", "shape-float", "shape-negative", "three-offsets",
                       "float-offsets", "shape-overflows-int64", "huge-offset"]  # fmt: skip
MALFORMED_HEADERS = [
    b'{"a": ' + b"[" * 100_000,
    b'{"a": 1e400}',
    b'{"a": ' + b"9" * 5000 + b"}",
    b'{"a": {"dtype": "F32"}}\xff',
    b"{\x00",
]
MALFORMED_HEADER_IDS = ["deep-nesting", "1e400", "5000-digit-int", "not-utf8", "utf16-lookalike"]


def test_parse_header_reads_offsets_from_the_end_of_the_header():
    """Offsets count from the first data byte; entries come back with absolute file positions, dtype and shape."""
    header = {
        "b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]},
        "a": {"dtype": "F32", "shape": [2, 1], "data_offsets": [0, 8]},
        "__metadata__": {"format": "pt"},
    }
    header_bytes = json.dumps(header).encode()
    entries = parse_header(header_bytes, 12, FUZZ_PATH)
    start = 8 + len(header_bytes)
    assert sorted(entries) == ["a", "b"]
    a, b = entries["a"], entries["b"]
    assert (a.path, a.dtype, a.shape, a.start, a.end) == (FUZZ_PATH, "F32", (2, 1), start, start + 8)
    assert (b.path, b.dtype, b.shape, b.start, b.end) == (FUZZ_PATH, "F16", (2,), start + 8, start + 12)


@pytest.mark.parametrize("entry, needle", MALFORMED_ENTRIES, ids=MALFORMED_ENTRY_IDS)
def test_parse_header_refuses_a_malformed_entry(entry, needle):
    header_bytes = json.dumps({"transformer.wte.weight": entry}).encode()
    with expect_error(CheckpointError, FUZZ_PATH, "transformer.wte.weight", needle):
        parse_header(header_bytes, 4, FUZZ_PATH)


@pytest.mark.parametrize("header_text", MALFORMED_HEADERS, ids=MALFORMED_HEADER_IDS)
def test_parse_header_refuses_malformed_json(header_text):
    with expect_error(CheckpointError, FUZZ_PATH):
        parse_header(header_text, 0, FUZZ_PATH)


# ------------------------------------------------------------------------------------ headers in a checkpoint


def test_overlapping_tensors_are_refused(folder):
    """q_proj pointing at k_proj's bytes: the safetensors library refuses it, and so do we."""
    path = folder / "model.safetensors"
    q, k = "transformer.h.0.attn.attention.q_proj.weight", "transformer.h.0.attn.attention.k_proj.weight"
    edit_header(path, lambda header: header[q].update(data_offsets=header[k]["data_offsets"]))
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(path.read_bytes())
    with expect_error(CheckpointError, path, "overlaps"):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize("shift", [4, -4])
def test_shifted_range_is_refused(folder, shift):
    path = folder / "model.safetensors"

    def shift_ln_f_bias(header):
        begin, end = header["transformer.ln_f.bias"]["data_offsets"]
        header["transformer.ln_f.bias"]["data_offsets"] = [begin + shift, end + shift]

    edit_header(path, shift_ln_f_bias)
    with expect_error(CheckpointError, path):
        neo_numpy.load_model(folder)


def test_duplicate_tensor_name_in_a_header(folder):
    path = folder / "model.safetensors"
    header, data = read_safetensors(path)
    name = "transformer.ln_f.bias"
    text = json.dumps(header)
    duplicate = json.dumps({name: header[name]})[1:-1]
    text = text[:-1] + ", " + duplicate + "}"  # the same name again, same bytes
    encoded = text.encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    with expect_error(CheckpointError, path, f"{name!r} twice"):
        neo_numpy.load_model(folder)


def test_trailing_bytes_and_space_padding(folder):
    """Bytes after the last tensor are refused; spaces after the header's JSON (as writers pad it) are fine."""
    path = folder / "model.safetensors"
    header, data = read_safetensors(path)
    encoded = json.dumps(header).encode() + b"     "
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    assert neo_numpy.load_model(folder).config.num_layers == 2
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data + b"\0\0\0\0")
    with expect_error(CheckpointError, path, "4 bytes after the last tensor"):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize("entry, needle", MALFORMED_ENTRIES, ids=MALFORMED_ENTRY_IDS)
def test_malformed_entries(folder, entry, needle):
    path = folder / "model.safetensors"
    write_raw_safetensors(path, {"transformer.wte.weight": entry}, bytes(4))
    with expect_error(CheckpointError, path, "transformer.wte.weight", needle):
        neo_numpy.load_model(folder)


@pytest.mark.parametrize("header_text", MALFORMED_HEADERS, ids=MALFORMED_HEADER_IDS)
def test_malformed_header_json(folder, header_text):
    path = folder / "model.safetensors"
    path.write_bytes(len(header_text).to_bytes(8, "little") + header_text)
    with expect_error(CheckpointError, path):
        neo_numpy.load_model(folder)


def test_header_length_is_never_shown(folder):
    """The length field is the file's first 8 bytes: a message quoting it would leak them."""
    path = folder / "model.safetensors"
    path.write_bytes(SECRET)
    with expect_error(CheckpointError, path, "100 MB") as caught:
        neo_numpy.load_model(folder)
    assert str(int.from_bytes(SECRET[:8], "little")) not in str(caught.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_nan_or_inf_weight_is_refused(folder, bad, dtype):
    path = folder / "model.safetensors"
    name = "transformer.h.1.mlp.c_fc.weight"
    tensors = {key: value.astype(dtype) for key, value in load_file(str(path)).items()}
    tensors[name][3, 7] = bad
    save_file(tensors, str(path))
    with expect_error(CheckpointError, name, "NaN or infinite"):
        neo_numpy.load_model(folder)


def test_large_finite_weights_still_load(folder):
    """Finite values whose float32 sum overflows are not NaN: the fast check falls back to the exact one."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    tensors["transformer.h.0.ln_1.bias"][:] = 3e38
    save_file(tensors, str(path))
    assert np.all(neo_numpy.load_model(folder).weights.layers[0].ln_1_bias == np.float32(3e38))


# --------------------------------------------------------------------------------------------- header fuzzing


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
