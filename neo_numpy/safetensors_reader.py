"""A small reader for the safetensors format, one tensor at a time.

A .safetensors file is:  [8 bytes: header length N, little-endian u64] [N bytes: JSON header] [raw tensor bytes]
The header maps each tensor name to {"dtype": "F32", "shape": [768, 768], "data_offsets": [begin, end]}, offsets
counted from the first byte after the header. We read each tensor straight from the file into a fresh array, so
loading never holds more than the model plus one tensor in memory (no pickle, no whole-file copy). bfloat16 is
widened to float32 by hand because NumPy has no bfloat16 type.
"""

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError

FILE_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}  # BF16 read as raw bits
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, its dtype code and shape, and its absolute byte range."""

    path: Path
    dtype: str  # "F32", "F16" or "BF16"
    shape: tuple
    start: int
    end: int


def read_header(path: Path) -> dict:
    """Return {tensor name: TensorEntry} for one .safetensors file, checking that every byte range fits in the file."""
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path} is not a safetensors file: it is only {file_size} bytes long.")
            (header_length,) = struct.unpack("<Q", prefix)
            if header_length > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path} is not a valid safetensors file (its header length field is {header_length})."
                )
            if header_length > file_size - 8:
                raise CheckpointError(
                    f"{path} is truncated: its header needs {header_length} bytes but the file has {file_size - 8} after the length field."
                )
            header = json.loads(file.read(header_length))
    except OSError as error:
        raise CheckpointError(f"{path} could not be read ({error.strerror or error}).") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is not a valid safetensors file (its header is not JSON).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file (its header is not a JSON object).")

    data_start = 8 + header_length
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(n) for n in info["shape"]), info["data_offsets"]
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path} is not a valid safetensors file (the entry for {name!r} is malformed)."
            ) from None
        if not 0 <= begin <= end:
            raise CheckpointError(
                f"{path} is not a valid safetensors file (tensor {name!r} has data_offsets {[begin, end]})."
            )
        if data_start + end > file_size:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {data_start + end} but the file has {file_size} bytes."
            )
        entries[name] = TensorEntry(path, dtype, shape, data_start + begin, data_start + end)
    return entries


def read_tensor(entry: TensorEntry, name: str) -> np.ndarray:
    """Read one tensor from disk as a float32 NumPy array of its shape."""
    if entry.dtype not in FILE_DTYPES:
        raise CheckpointError(
            f"tensor {name!r} in {entry.path} has dtype {entry.dtype}; neo_numpy reads F32, F16 and BF16."
        )
    file_dtype = FILE_DTYPES[entry.dtype]
    count = int(np.prod(entry.shape, dtype=np.int64))
    if count * file_dtype.itemsize != entry.end - entry.start:
        raise CheckpointError(
            f"tensor {name!r} in {entry.path} has {entry.end - entry.start} bytes, which does not fit shape {list(entry.shape)}."
        )
    raw = np.empty(entry.shape, dtype=file_dtype)
    with open(entry.path, "rb") as file:
        file.seek(entry.start)
        if file.readinto(memoryview(raw).cast("B")) != raw.nbytes:
            raise CheckpointError(f"{entry.path} is truncated inside tensor {name!r}.")
    if entry.dtype == "F32":
        return raw
    if entry.dtype == "F16":
        return raw.astype(np.float32)
    return bfloat16_bits_to_float32(raw)


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top 16 bits of a float32: shift them back into place."""
    widened = bits.astype(np.uint32)
    widened <<= 16
    return widened.view(np.float32)
