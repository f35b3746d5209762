"""Choosing the next token from the logits, with transformers' logits processors re-written as small functions.

They run in transformers' order: repetition penalty, min_new_tokens (EOS held back), then, when sampling,
temperature, top-k and top-p, and finally a draw from the softmax of what is left. Every function takes and
returns float32 logits [B, vocab]; a removed token gets -inf, so its probability is exactly 0.
"""

import numpy as np

from .layers import softmax_in_place
from .settings import GenerationSettings


def apply_repetition_penalty(logits, seen_tokens, penalty: float):
    """CTRL's penalty on every token already in the sequence: positive logits / penalty, negative ones * penalty.

    logits: [B, V]; seen_tokens: bool [B, V], True for tokens present in the row (each is penalised once,
    however often it occurs, as transformers does).
    """
    penalized = np.where(logits < 0, logits * penalty, logits / penalty)  # [B, V]
    return np.where(seen_tokens, penalized, logits)


def suppress_token(logits, token_id: int):
    """Make token_id impossible (used to hold EOS back until min_new_tokens are generated)."""
    logits = logits.copy()
    logits[:, token_id] = -np.inf
    return logits


def top_k_filter(logits, k: int):
    """Keep the k highest logits of each row (and any tied with the k-th); the rest get -inf."""
    if k >= logits.shape[-1]:
        return logits
    kth_largest = np.partition(logits, -k, axis=-1)[:, -k:].min(axis=-1, keepdims=True)  # [B, 1]
    return np.where(logits < kth_largest, -np.inf, logits)


def top_p_filter(logits, p: float):
    """Nucleus filtering: drop the least likely tokens whose total probability is at most 1 - p.

    As transformers does it: sort ascending, accumulate the softmax, remove while the running sum <= 1 - p,
    always keep the most likely token. The kept tokens are those at or above the first kept logit.
    """
    ascending = np.sort(logits, axis=-1)  # [B, V]
    cumulative = np.cumsum(softmax_in_place(ascending.copy()), axis=-1)  # [B, V]
    removed = (cumulative <= 1.0 - p).sum(axis=-1, keepdims=True)  # [B, 1] how many of the smallest go
    removed = np.minimum(removed, logits.shape[-1] - 1)
    threshold = np.take_along_axis(ascending, removed, axis=-1)  # [B, 1] smallest logit that stays
    return np.where(logits < threshold, -np.inf, logits)


def sample(logits, uniforms):
    """Draw one token per row with probability softmax(logits), by inverting the cumulative distribution.

    uniforms: float [B] in (0, 1]. The first token whose cumulative probability reaches u is chosen, so a token
    with probability 0 is never drawn and each kept token is drawn in proportion to its probability.
    """
    cumulative = np.cumsum(softmax_in_place(logits.copy()), axis=-1)  # [B, V]
    target = uniforms[:, None] * cumulative[:, -1:]  # [B, 1]
    chosen = (cumulative < target).sum(axis=-1)  # [B]
    return np.minimum(chosen, logits.shape[-1] - 1)


def process_logits(logits, seen_tokens, new_tokens: int, settings: GenerationSettings):
    """Apply the processors transformers would for these settings.  logits: float32 [B, V] -> [B, V]

    seen_tokens: bool [B, V] marks the tokens already in each row (prompt and generated), for the repetition penalty;
    new_tokens: how many tokens were generated before this step, for min_new_tokens.
    """
    if settings.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen_tokens, float(settings.repetition_penalty))
    if settings.eos_token_id is not None and new_tokens < settings.min_new_tokens:
        logits = suppress_token(logits, settings.eos_token_id)
    if settings.do_sample:
        if settings.temperature != 1.0:
            logits = logits / float(settings.temperature)
        if settings.top_k:
            logits = top_k_filter(logits, int(settings.top_k))
        if settings.top_p is not None and settings.top_p < 1.0:
            logits = top_p_filter(logits, float(settings.top_p))
    return logits
