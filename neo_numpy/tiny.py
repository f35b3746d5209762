"""A tiny GPT-Neo trained by neo_numpy itself, on the repeat task, so the notebooks have a model that really learned.

The task: B sequences of n random tokens (n from 16 to 24, ids 1..31 of a vocabulary of 32; id 0 is the
end-of-text token and never appears) followed by the same n tokens again. The first half cannot be predicted
(loss ln 31 = 3.43 per token); the second half can, perfectly, by a model that finds the earlier copy of the current
token and predicts the token after it: a previous-token head and an induction head. The model has two layers, a
local one with window 4 (it can only look back 3 tokens: enough for the previous-token head, never enough to reach the
first copy) and a global one.

    python -m neo_numpy.tiny                     # rebuilds notebooks/tiny_model/ (3000 steps; see its README)
    model = neo_numpy.load_model("notebooks/tiny_model")

Initialisation: transformers' GPT-Neo initialisation (`_init_weights`) with initializer_range 0.1: every linear
weight and both embeddings N(0, 0.1), biases 0, LayerNorm weights 1 and biases 0. GPT-2 would also shrink the
residual projections (out_proj, c_proj) by 1/sqrt(2 * num_layers); that is left out here, as in the torch run this
recipe was measured with. With GPT-2's std 0.02 the dot products q . k start so small that the loss sits at
ln(vocab) for well over a thousand steps before the induction head forms; 0.1 shortens that plateau.
Training: AdamW (betas 0.9, 0.999, no weight decay), lr 3e-3 after 100 linear warm-up steps, then constant;
gradients clipped at norm 1; batch 32; every step a fresh batch from one seeded NumPy generator, so the same seed
gives the same weights on the same machine (another BLAS may round differently). One BLAS thread: the matrices are
small, and more threads only wait for each other.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .backward import block_forward, embeddings_forward
from .checkpoint import expected_shapes
from .config import NeoConfig
from .loading import load_model
from .reference import visible_keys
from .saving import save_checkpoint
from .threads import blas_threads
from .training import AdamW, clip_grad_norm, learning_rate, loss_and_grads, named_parameters

TINY_MODEL_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "tiny_model"
TINY_CONFIG = NeoConfig(
    vocab_size=32,
    max_position_embeddings=48,  # two copies of at most 24 tokens
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=256,
    window_size=4,
    attention_layers=("local", "global"),
    bos_token_id=0,
    eos_token_id=0,
)
INITIALIZER_RANGE = 0.1
SHORTEST, LONGEST = 16, 24  # tokens before the repeat
STEPS = 3000


def repeat_batch(rng, batch: int, vocab: int = 32, length: int = None):
    """int [B, 2n]: n random tokens from 1..vocab-1, then the same n again (n drawn from 16..24 unless given)."""
    n = int(rng.integers(SHORTEST, LONGEST + 1)) if length is None else length
    first = rng.integers(1, vocab, size=(batch, n))  # [B, n]
    return np.concatenate([first, first], axis=1)  # [B, 2n]


def initial_tensors(config: NeoConfig, seed: int, std: float = INITIALIZER_RANGE) -> dict:
    """name -> float32 array: transformers' GPT-Neo initialisation (see the module docstring) for `config`."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("bias"):
            tensors[name] = np.zeros(shape, np.float32)
        elif ".ln_" in name:  # LayerNorm weights (ln_1, ln_2, ln_f)
            tensors[name] = np.ones(shape, np.float32)
        else:  # linear weights, wte, wpe
            tensors[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return tensors


def train_repeat_model(
    out=TINY_MODEL_DIR,
    steps: int = STEPS,
    seed: int = 0,
    batch: int = 32,
    lr: float = 3e-3,
    warmup: int = 100,
    log=None,
):
    """Train the tiny model from its seeded initialisation and save it in `out`. Returns (model, losses per step).
    log: a function called as log(step, loss) after every 100th step, or None."""
    with tempfile.TemporaryDirectory() as start:
        save_checkpoint(start, initial_tensors(TINY_CONFIG, seed), TINY_CONFIG, initializer_range=INITIALIZER_RANGE)
        model = load_model(start, threads=1)
    params = named_parameters(model.weights)
    optimizer = AdamW(params, weight_decay=0.0)
    rng = np.random.default_rng(seed + 1)
    losses = []
    with blas_threads(1):
        for step in range(steps):
            loss, grads = loss_and_grads(repeat_batch(rng, batch), model.weights, model.config)
            clip_grad_norm(grads, 1.0)
            optimizer.step(grads, lr=learning_rate(step, lr, warmup, steps, final_fraction=1.0))  # constant after
            losses.append(loss)
            if log is not None and (step + 1) % 100 == 0:
                log(step + 1, loss)
    save_checkpoint(out, params, model.config, initializer_range=INITIALIZER_RANGE)
    return load_model(out, threads=1), losses


def half_losses(model, ids) -> tuple:
    """Mean cross-entropy of predicting the tokens of the first half (positions 1..n-1) and of the second half
    (positions n..2n-1, predicted from position n-1 on). ids: int [B, 2n]."""
    logits = model.forward(ids).astype(np.float64)  # [B, 2n, V]
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))  # [B, 2n, V]
    targets = ids[:, 1:]  # [B, 2n - 1]
    losses = -np.take_along_axis(log_probs[:, :-1], targets[..., None], axis=-1)[..., 0]  # [B, 2n - 1]
    n = ids.shape[1] // 2
    return float(losses[:, : n - 1].mean()), float(losses[:, n - 1 :].mean())


def attention_patterns(ids, weights, config) -> list:
    """Each layer's attention weights, [B, H, T, T] per layer, for int ids [B, T]."""
    h = embeddings_forward(ids, weights.wte, weights.wpe)  # [B, T, D]
    patterns = []
    for layer, kind in zip(weights.layers, config.attention_layers):
        h, saved = block_forward(h, layer, visible_keys(kind, ids.shape[1], config.window_size), config)
        patterns.append(saved[1][4])  # the saved attention weights of attn_forward
    return patterns


def head_scores(pattern, n: int) -> tuple:
    """Per head: previous-token score (mean attention from i to i - 1, over i >= 1) and induction score (mean
    attention from i in the second half to i - n + 1, the token after the earlier copy). pattern [B, H, 2n, 2n]."""
    positions = np.arange(1, 2 * n)
    previous = pattern[:, :, positions, positions - 1].mean(axis=(0, 2))  # [H]
    second = np.arange(n, 2 * n)
    induction = pattern[:, :, second, second - n + 1].mean(axis=(0, 2))  # [H]
    return previous, induction


def report(model, seed: int = 1234, batch: int = 64, n: int = 20) -> str:
    """The measured figures of a tiny model on fresh repeat sequences, as text."""
    ids = repeat_batch(np.random.default_rng(seed), batch, length=n)
    first, second = half_losses(model, ids)
    lines = [f"loss on {batch} fresh sequences of {n} + {n} tokens: first half {first:.3f}, second half {second:.4f}"]
    for i, pattern in enumerate(attention_patterns(ids, model.weights, model.config)):
        previous, induction = head_scores(pattern, n)
        kind = model.config.attention_layers[i]
        lines.append(f"layer {i} ({kind}) previous-token score per head: {' '.join(f'{s:.2f}' for s in previous)}")
        lines.append(f"layer {i} ({kind}) induction score per head:      {' '.join(f'{s:.2f}' for s in induction)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neo_numpy.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_MODEL_DIR, help=f"output folder (default: {TINY_MODEL_DIR})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimizer steps (default: {STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data seed (default: 0)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model, losses = train_repeat_model(
        args.out,
        steps=args.steps,
        seed=args.seed,
        log=lambda step, loss: print(f"step {step}: loss {loss:.3f}", flush=True),
    )
    seconds = time.perf_counter() - started
    print(f"trained {args.steps} steps in {seconds:.1f} s; training loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(report(model))
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
