"""What notebooks 8 and 9 measure and draw, as small functions over `reference.forward`'s activation record.

    record = {}
    logits = reference.forward(ids, weights, config, record=record)   # [T, V]; record: name -> activation
    patterns = attention_patterns(record, config)                     # [L, H, T, T]
    previous_token_scores(patterns)                                   # [L, H]
    induction_scores(patterns, n)                                     # [L, H], for n tokens repeated once

The names and the scores follow TransformerLens and Anthropic's "In-context Learning and Induction Heads" (Olsson
et al. 2022): on n random tokens followed by the same n again, a head's previous-token score is its mean attention
from position i to i - 1, and its induction (prefix-matching) score is its mean attention from a position i of the
second half to i - n + 1, the token that followed the earlier copy of the current token. Nothing here depends on
the model's size: the same functions run on the tiny trained model and on the released ones.
"""

import nb_setup  # noqa: F401  (first: it makes neo_numpy importable from a checkout that is not installed)
import numpy as np
from IPython.display import display

from neo_numpy import reference


def repeated_random_tokens(n, vocab_size, rng, low=1):  # -> int [2n]: n random ids in low..vocab_size-1, twice
    first = rng.integers(low, vocab_size, size=n)  # [n]
    return np.concatenate([first, first])  # [2n]


def run_with_record(ids, weights, config):  # [T] -> (logits [T, V], record {name: activation})
    record = {}
    return reference.forward(ids, weights, config, record=record), record


def attention_patterns(record, config):  # -> [L, H, T, T]: every layer's attention weights, one array
    return np.stack([record[f"blocks.{i}.attn.hook_pattern"] for i in range(config.num_layers)])


def previous_token_scores(patterns):  # [L, H, T, T] -> [L, H]: mean attention from i to i - 1
    T = patterns.shape[-1]
    return patterns[..., np.arange(1, T), np.arange(T - 1)].mean(axis=-1)


def induction_scores(patterns, n):  # [L, H, 2n, 2n] -> [L, H]: from i in the second half to i - n + 1
    queries = np.arange(n, 2 * n)  # the second copy
    return patterns[..., queries, queries - n + 1].mean(axis=-1)


def first_token_scores(patterns):  # [L, H, T, T] -> [L, H]: mean attention to position 0, from positions 1..T-1
    return patterns[..., 1:, 0].mean(axis=-1)


def token_losses(logits, ids):  # [T, V], [T] -> [T - 1]: -log p(the true next token), in nats
    shifted = logits[:-1].astype(np.float64) - logits[:-1].max(axis=-1, keepdims=True)  # [T-1, V]
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # [T-1, V]
    return -log_probabilities[np.arange(len(ids) - 1), ids[1:]]  # [T-1]


def logit_lens(record, weights, config):  # -> [L + 1, T, V]: ln_f and the head after 0, 1, ..., L blocks
    streams = [record["blocks.0.hook_resid_pre"]] + [
        record[f"blocks.{i}.hook_resid_post"] for i in range(config.num_layers)
    ]
    eps = config.layer_norm_epsilon
    return np.stack(
        [
            reference.layer_norm(h, weights.ln_f_weight, weights.ln_f_bias, eps) @ weights.lm_head_weight.T
            for h in streams
        ]
    )


def central_differences(loss, array, indices, step=1e-6):  # d loss / d array.flat[index], numerically
    flat = array.reshape(-1)  # a view: changing it changes what loss() reads
    slopes = []
    for index in indices:
        original = flat[index]
        flat[index] = original + step
        above = loss()
        flat[index] = original - step
        below = loss()
        flat[index] = original
        slopes.append((above - below) / (2 * step))
    return np.array(slopes)


def check_gradients(part, loss, pairs, rng, picks=6, tolerance=1e-6):
    """pairs: {name: (array, its gradient from the backward pass)}. Compares a few random entries of each gradient
    with central differences of loss() (float64), relative to the gradient's largest entry, and says so."""
    for name, (array, gradient) in pairs.items():
        indices = rng.choice(array.size, size=min(picks, array.size), replace=False)
        numeric = central_differences(loss, array, indices)
        error = np.abs(numeric - gradient.reshape(-1)[indices]).max() / max(np.abs(gradient).max(), 1e-12)
        assert error < tolerance, f"{part}, d/d{name}: relative difference {error:.1e}"
        print(f"✓ {part}: d/d{name} matches central differences at {len(indices)} entries ({error:.0e})")


def show_key(name, value):
    """Print a result the notebook's test compares on every run: ints and strings exactly, floats within a tolerance.

    It is shown as text (what a reader sees) and kept in the output as JSON under its own type, which the test reads.
    """
    value = value.item() if isinstance(value, np.generic) else value
    display({"application/vnd.neo-numpy.key+json": {name: value}, "text/plain": f"{name}: {value}"}, raw=True)
