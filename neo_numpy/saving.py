"""Write a GPT-Neo checkpoint folder that both neo_numpy and transformers load: config.json, model.safetensors and the
tokenizer files.

model.safetensors is written here, without the safetensors library (neo_numpy's only runtime dependencies are NumPy,
tokenizers and huggingface_hub). The format: 8 bytes (little-endian uint64) giving the header's length, the header
(JSON: name -> dtype, shape and [start, end) byte offsets into the data, padded with spaces to a multiple of 8),
then every tensor's bytes, C order, little-endian.

Every file is written under a temporary name in the same folder and renamed when complete, so a crash, a full disk
or Ctrl-C never leaves half a file where a checkpoint should be. `StagedFolder` does the same for a whole folder: the
checkpoint is written complete under a temporary name beside its destination, then renamed into place, and the
folder it replaces is removed only after that, so no file of an older checkpoint survives in the new one.
"""

import contextlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from .errors import NeoNumpyError
from .paths import kind_of, shown

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
SAFETENSORS_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64"}


def write_safetensors(path: Path, tensors: dict) -> None:
    """Write {name: array} to `path` as safetensors (through a temporary file renamed at the end)."""
    header, offset = {}, 0
    for name, array in tensors.items():
        dtype = np.dtype(array.dtype)
        if dtype not in SAFETENSORS_DTYPES:
            raise NeoNumpyError(f"tensor {name} has dtype {dtype}, which this safetensors writer does not store.")
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(array.shape), "data_offsets": [offset, 0]}
        offset += array.nbytes
        header[name]["data_offsets"][1] = offset
    header["__metadata__"] = {"format": "pt"}  # what transformers' save_pretrained writes; from_pretrained checks it
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with _replaced_atomically(path) as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for array in tensors.values():
            file.write(memoryview(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))).cast("B"))


def config_dict(config, tied: bool, initializer_range: float = 0.02) -> dict:
    """config.json for `config` (a NeoConfig), in transformers' GPTNeoConfig form."""
    return {
        "architectures": ["GPTNeoForCausalLM"],
        "model_type": "gpt_neo",
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "window_size": config.window_size,
        "attention_types": attention_types(config.attention_layers),
        "activation_function": config.activation_function,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "embed_dropout": 0.0,
        "attention_dropout": 0.0,
        "resid_dropout": 0.0,
        "initializer_range": initializer_range,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": tied,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def attention_types(layers) -> list:
    """("global", "local", "global", "local") -> [[["global", "local"], 2]]: the shortest repeating pattern."""
    count = len(layers)
    for period in range(1, count + 1):
        if count % period == 0 and tuple(layers) == tuple(layers[:period]) * (count // period):
            return [[list(layers[:period]), count // period]]
    raise AssertionError("unreachable: the whole sequence is always a period")


def save_checkpoint(folder, tensors: dict, config, tokenizer_folder=None, initializer_range: float = 0.02) -> Path:
    """Write config.json, model.safetensors ({name: array}, names as transformers' state_dict) and, when
    `tokenizer_folder` is given, copies of its tokenizer files into `folder` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tied = "lm_head.weight" not in tensors
    text = json.dumps(config_dict(config, tied, initializer_range), indent=2) + "\n"
    with _replaced_atomically(folder / "config.json") as file:
        file.write(text.encode("utf-8"))
    write_safetensors(folder / "model.safetensors", tensors)
    for name in TOKENIZER_FILES if tokenizer_folder is not None else ():
        source = Path(tokenizer_folder) / name
        if source.is_file():
            with _replaced_atomically(folder / name) as file, open(source, "rb") as original:
                shutil.copyfileobj(original, file)
    return folder


class StagedFolder:
    """A checkpoint folder written whole beside its destination `out`, then put in its place.

    staged = StagedFolder(out)      # creates .<name>.partial-<pid> beside out now: an unwritable place fails early
    save_checkpoint(staged.folder, ...)
    staged.install()                # out (if any) -> .<name>.old-<pid>, staged folder -> out, old one removed
    staged.discard()                # whatever is left of the staged folder (after an error, or Ctrl-C)
    """

    def __init__(self, out):
        self.out = Path(os.path.abspath(out))  # absolute and without "..", so the name beside it is well defined
        if not self.out.name:
            raise NeoNumpyError(f"{shown(out)} is the root of the file system, not a folder a checkpoint can replace.")
        self.folder = self.out.with_name(f".{self.out.name}.partial-{os.getpid()}")
        self.keep = False
        missing = [folder for folder in self.out.parents if kind_of(folder) == "missing"]
        self.created = missing[::-1]  # the folders above out this creates, outermost first; discard() removes them
        parent = kind_of(self.out.parent)
        if parent not in ("missing", "folder"):
            where = shown(self.out.parent)
            raise NeoNumpyError(f"{shown(out)} cannot be created: {where} is a {parent}, not a folder.")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.folder.mkdir()
        except OSError as error:
            raise NeoNumpyError(f"could not create a folder beside {shown(out)} ({error.strerror or error}).") from None

    def install(self) -> Path:
        """Rename the complete staged folder to `out`; a folder already there is moved aside first and removed last."""
        old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        try:
            if kind_of(self.out) != "missing":
                os.rename(self.out, old)
            try:
                os.rename(self.folder, self.out)
            except OSError:
                if kind_of(old) != "missing":
                    os.rename(old, self.out)  # put the old folder back
                raise
        except OSError as error:
            self.keep = True  # the user's work: discard() leaves it
            raise NeoNumpyError(
                f"could not move the new checkpoint to {shown(self.out)} ({error.strerror or error}); "
                f"it is complete in {shown(self.folder)}."
            ) from None
        if old.is_symlink():  # --out was a link to a folder: the link is replaced, the folder it led to is left alone
            old.unlink()
        shutil.rmtree(old, ignore_errors=True)
        self.created = []  # they hold the checkpoint now
        return self.out

    def discard(self) -> None:
        """Remove the staged folder (unless it is a complete checkpoint install() could not move) and the folders
        above --out that were created for it."""
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)
            for folder in reversed(self.created):  # innermost first; each is empty unless something else wrote there
                with contextlib.suppress(OSError):
                    folder.rmdir()


class _replaced_atomically:
    """`with _replaced_atomically(path) as file:` writes to path's temporary twin, flushed to disk, then renames it
    over `path`; on any error (Ctrl-C included) the temporary file is removed and `path` is left as it was."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")

    def __enter__(self):
        try:
            self.file = open(self.temporary, "wb")
        except OSError as error:
            raise NeoNumpyError(f"could not write {self.path} ({error.strerror or error}).") from None
        return self.file

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if kind is None:
                os.replace(self.temporary, self.path)
        except OSError as error:
            self.temporary.unlink(missing_ok=True)
            raise NeoNumpyError(f"could not write {self.path} ({error.strerror or error}).") from None
        if kind is not None:
            self.temporary.unlink(missing_ok=True)
            if issubclass(kind, OSError):
                raise NeoNumpyError(f"could not write {self.path} ({value.strerror or value}).") from None
        return False
