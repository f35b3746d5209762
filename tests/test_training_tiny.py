"""The tiny GPT-Neo trained by neo_numpy on the repeat task (notebooks/tiny_model/, made by `python -m neo_numpy.tiny`):
it loads in neo_numpy and transformers with equal logits, it is small, and it really learned the task."""

from pathlib import Path

import numpy as np
from checkpoints import require
from conftest import relative_error

import neo_numpy
from neo_numpy.tiny import TINY_CONFIG, TINY_MODEL_DIR, half_losses, initial_tensors, repeat_batch

require("torch", "transformers")

import torch  # noqa: E402
from transformers import GPTNeoForCausalLM  # noqa: E402


def test_committed_model_loads_in_both_with_equal_logits():
    assert sorted(path.name for path in Path(TINY_MODEL_DIR).iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert (TINY_MODEL_DIR / "model.safetensors").stat().st_size < 1 << 20
    ours = neo_numpy.load_model(TINY_MODEL_DIR)
    theirs = GPTNeoForCausalLM.from_pretrained(TINY_MODEL_DIR).eval()
    ids = repeat_batch(np.random.default_rng(5), 4, length=20)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(ids)).logits.numpy()
    assert relative_error(ours.forward(ids), expected) < 1e-5


def test_it_predicts_the_repeated_half():
    """Fresh sequences: the first half is unpredictable (about ln 31 = 3.43 per token), the repeat is not."""
    first, second = half_losses(neo_numpy.load_model(TINY_MODEL_DIR), repeat_batch(np.random.default_rng(6), 32))
    print(f"first half {first:.3f}, second half {second:.3f}")
    assert first > 3.0 and second < first - 1.0


def test_initialisation_is_seeded():
    one, two, other = (initial_tensors(TINY_CONFIG, seed) for seed in (0, 0, 1))
    assert all(np.array_equal(one[name], two[name]) for name in one)
    assert not np.array_equal(one["transformer.wte.weight"], other["transformer.wte.weight"])
    assert np.all(one["transformer.h.0.ln_1.weight"] == 1) and np.all(one["transformer.h.1.mlp.c_fc.bias"] == 0)
