"""A small, strict reader for the safetensors format, one tensor at a time.

A .safetensors file is:  [8 bytes: header length N, little-endian u64] [N bytes: JSON header] [raw tensor bytes]
The header maps each tensor name to {"dtype": "F32", "shape": [768, 768], "data_offsets": [begin, end]}, offsets
counted from the first byte after the header. We read each tensor straight from the file into a fresh array, so
loading never holds more than the model plus one tensor in memory (no pickle, no whole-file copy). bfloat16 is
widened to float32 by hand because NumPy has no bfloat16 type; float16 and float64 are cast to float32.

A checkpoint is untrusted input, so the header is checked as strictly as the `safetensors` library's own parser
does: a header of at most 100 MB that is a JSON object (starting with '{', possibly padded with spaces), unique
names, a known dtype, a shape of non-negative ints, and byte ranges that, sorted, tile the data exactly: each
begins where the previous one ends, the first at 0, the last at the end of the file, and each holds exactly
prod(shape) * dtype size bytes. Two tensors can therefore never share bytes, and no byte is left unexplained.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .paths import check_is_file
from .untrusted_json import parse_json, quoted
from .values import is_int

FILE_DTYPES = {  # the floating-point dtypes neo_numpy reads, each cast to float32 as transformers casts them
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # read as raw bits: NumPy has no bfloat16
    "F64": np.dtype("<f8"),
}
DTYPE_BITS = {  # every dtype the safetensors format defines, with its size in bits
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64,
    "C64": 64,
}  # fmt: skip
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's limit


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, its dtype code and shape, and its absolute byte range."""

    path: Path
    dtype: str  # "F32", "F16", "BF16", "F64", or another safetensors dtype that read_tensor refuses
    shape: tuple
    start: int
    end: int


def read_header(path: Path) -> dict:
    """Return {tensor name: TensorEntry} for one .safetensors file, after every check described above."""
    check_is_file(path, "the weights must be a safetensors file")
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as file:
            header_length = _read_header_length(file, path, file_size)
            header_bytes = file.read(header_length)
    except OSError as error:
        raise CheckpointError(f"{path} could not be read ({error.strerror or error}).") from None
    return parse_header(header_bytes, file_size - 8 - header_length, path)


def _read_header_length(file, path: Path, file_size: int) -> int:
    """The first 8 bytes: the header's length. Its value is never shown, since it is the file's own bytes."""
    prefix = file.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"{path} is not a safetensors file: it is only {file_size} bytes long.")
    (header_length,) = struct.unpack("<Q", prefix)
    if header_length > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{path} is not a valid safetensors file: its header length field exceeds the 100 MB limit."
        )
    if header_length > file_size - 8:
        raise CheckpointError(f"{path} is truncated: its header length field points past the end of the file.")
    return header_length


def parse_header(header_bytes: bytes, data_length: int, path: Path) -> dict:
    """{tensor name: TensorEntry} from a header's bytes, given how many data bytes follow it in the file at `path`."""
    invalid = f"{path} is not a valid safetensors file"
    if not header_bytes.startswith(b"{"):
        raise CheckpointError(f"{invalid}: its header is not a JSON object (it does not start with '{{').")
    try:
        text = header_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{invalid}: its header is not UTF-8 text.") from None
    header = parse_json(text, f"the safetensors header of {path}")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{invalid}: its __metadata__ is not a map from strings to strings.")
    tensors = {name: _tensor_info(name, info, invalid) for name, info in header.items()}
    _check_byte_ranges_tile_the_data(tensors, data_length, path, invalid)
    data_start = 8 + len(header_bytes)
    return {
        name: TensorEntry(path, dtype, shape, data_start + begin, data_start + end)
        for name, (dtype, shape, begin, end) in tensors.items()
    }


def _tensor_info(name: str, info, invalid: str) -> tuple:
    """(dtype, shape, begin, end) of one header entry, its types and its byte count checked."""
    where = f"{invalid}: the entry for tensor {quoted(name)}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise CheckpointError(f"{where} is malformed (it needs dtype, shape and data_offsets).")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CheckpointError(f"{where} has dtype {quoted(dtype)}, which is not a safetensors dtype.")
    if not isinstance(shape, list) or not all(is_int(n) and n >= 0 for n in shape):
        raise CheckpointError(f"{where} has shape {quoted(shape)}, which is not a list of non-negative integers.")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(n) for n in offsets)):
        raise CheckpointError(f"{where} has data_offsets {quoted(offsets)}, which are not two integers (malformed).")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise CheckpointError(f"{where} has data_offsets {quoted(offsets)}: they must satisfy 0 <= begin <= end.")
    if not _holds_exactly(shape, DTYPE_BITS[dtype], end - begin):
        raise CheckpointError(
            f"{where} has {quoted(end - begin)} bytes, which does not fit shape {quoted(shape)} of dtype {dtype}."
        )
    return dtype, tuple(shape), begin, end


def _holds_exactly(shape: list, bits: int, byte_count: int) -> bool:
    """prod(shape) * bits == 8 * byte_count, in Python integers (no int64 wrap-around) and stopping once too big."""
    elements = 0 if 0 in shape else 1
    for n in shape:
        elements *= n
        if elements * bits > 8 * byte_count:
            return False
    return elements * bits == 8 * byte_count


def _check_byte_ranges_tile_the_data(tensors: dict, data_length: int, path: Path, invalid: str) -> None:
    """Sorted by offsets, each range begins where the previous ends (the first at 0); the last ends the file."""
    expected_begin, last = 0, None
    for begin, end, name in sorted((begin, end, name) for name, (_, _, begin, end) in tensors.items()):
        if begin < expected_begin:
            raise CheckpointError(f"{invalid}: tensor {quoted(name)} overlaps the bytes of tensor {quoted(last)}.")
        if begin > expected_begin:
            raise CheckpointError(
                f"{invalid}: {quoted(begin - expected_begin)} bytes before tensor {quoted(name)} belong to no tensor."
            )
        expected_begin, last = end, name
    if expected_begin > data_length:
        raise CheckpointError(
            f"{path} is truncated: tensor {quoted(last)} needs {quoted(expected_begin)} bytes of data "
            f"but the file has {data_length} after its header."
        )
    if expected_begin < data_length:
        raise CheckpointError(f"{invalid}: {data_length - expected_begin} bytes after the last tensor belong to none.")


def read_tensor(entry: TensorEntry, name: str) -> np.ndarray:
    """Read one tensor from disk as a float32 NumPy array of its shape, refusing NaN and infinite values."""
    if entry.dtype not in FILE_DTYPES:
        raise CheckpointError(
            f"tensor {name!r} in {entry.path} has dtype {entry.dtype}; neo_numpy reads F32, F16, BF16 and F64."
        )
    raw = np.empty(entry.shape, dtype=FILE_DTYPES[entry.dtype])
    with open(entry.path, "rb") as file:
        file.seek(entry.start)
        if file.readinto(memoryview(raw).cast("B")) != raw.nbytes:
            raise CheckpointError(f"{entry.path} is truncated inside tensor {name!r}.")
    tensor = _as_float32(raw, entry.dtype)
    if not all_finite(tensor):
        bad = int(tensor.size - np.count_nonzero(np.isfinite(tensor)))
        raise CheckpointError(
            f"tensor {name!r} in {entry.path} holds {bad} NaN or infinite values (in float32), "
            "which would make every logit NaN."
        )
    return tensor


def all_finite(tensor: np.ndarray) -> bool:
    """True when no value is NaN or infinite.

    The sum of an array holding NaN or an infinity is NaN or infinite, so a finite sum proves the array finite in
    one fast pass with no temporary array; only a non-finite sum (a bad value, or finite values whose float32 sum
    overflows) needs the exact element-wise check.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is expected here, not a warning
        return bool(np.isfinite(tensor.sum())) or bool(np.isfinite(tensor).all())


def _as_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "F32":
        return raw
    if dtype == "BF16":
        return bfloat16_bits_to_float32(raw)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, which read_tensor refuses
        return raw.astype(np.float32)


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top 16 bits of a float32: shift them back into place."""
    widened = bits.astype(np.uint32)
    widened <<= 16
    return widened.view(np.float32)
