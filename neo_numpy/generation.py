"""Text generation: one prefill over the prompt, then one token per step through the KV cache.

`generate_tokens` is a generator that yields each step's new token ids [B] (host NumPy ints), so streaming,
stopping early and timing are up to the caller; nothing here prints. `generate` collects them into the array
transformers' generate() returns, and `stream` turns them into printable text.
"""

import numpy as np

from .cache import positions_from_mask
from .errors import InputError
from .sampling import check_settings, process_logits, sample

MODEL_EOS = "config"  # eos_token_id's default: the model's own end-of-text id (None means never stop)


def resolve_eos(model, eos_token_id):
    """The id that ends generation: the model's for MODEL_EOS, otherwise the one given (None: no stopping)."""
    return model.config.eos_token_id if eos_token_id == MODEL_EOS else eos_token_id


def generate_tokens(
    model,
    input_ids,
    attention_mask=None,
    max_new_tokens: int = 20,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    eos_token_id=MODEL_EOS,
    seed=None,
):
    """Yield the next token of every row, step by step: int64 [B] per step, at most max_new_tokens steps.

    Arguments mean what they mean in transformers' generate(). eos_token_id defaults to the model's (50256);
    None never stops. A row that has produced EOS yields EOS again (transformers' padding) until every row is
    done, then the generator ends. Rows of a left-padded batch (attention_mask) give what they give alone.
    """
    check_settings(max_new_tokens, min_new_tokens, temperature, top_k, top_p, repetition_penalty)
    ids, mask = model.check_inputs(input_ids, attention_mask)
    if not mask[:, -1].all():
        raise InputError("attention_mask must pad on the left: the last column must be all 1s for generation.")
    batch, prompt_length = ids.shape
    limit = model.config.max_position_embeddings
    if prompt_length + max_new_tokens > limit:
        raise InputError(
            f"the prompt has {prompt_length} tokens and max_new_tokens asks for {max_new_tokens} more, "
            f"beyond the model's {limit}-position context."
        )
    eos = resolve_eos(model, eos_token_id)
    settings = dict(
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        min_new_tokens=min_new_tokens,
        eos_token_id=eos,
    )
    xp, rng = model.backend.xp, np.random.default_rng(seed)

    rows = xp.arange(batch)
    seen_tokens = xp.zeros((batch, model.config.vocab_size), dtype=bool)  # [B, V] for the repetition penalty
    seen_tokens[rows[:, None], xp.asarray(np.where(mask == 1, ids, ids[:, -1:]))] = True  # padding is not a token
    positions = positions_from_mask(mask)
    next_position = xp.asarray(positions[:, -1:] + 1)  # [B, 1]
    cache = model.new_cache(batch, prompt_length + max_new_tokens)
    logits = model.step(xp.asarray(ids), xp.asarray(positions), xp.asarray(mask.astype(bool)), cache, last_only=True)[
        :, -1
    ]
    unfinished = xp.ones(batch, dtype=bool)  # on the device, to replace finished rows' tokens
    finished_on_host = np.zeros(batch, dtype=bool)  # the same, from the copied tokens, to stop without a sync
    new_token_visible = xp.ones((batch, 1), dtype=bool)

    for step in range(max_new_tokens):
        scores = process_logits(logits, seen_tokens, step, settings)  # [B, V]
        if do_sample:
            tokens = sample(scores, xp.asarray(1.0 - rng.random(batch, dtype=np.float32)))  # uniforms in (0, 1]
        else:
            tokens = scores.argmax(axis=-1)  # [B]
        if eos is not None:
            tokens = xp.where(unfinished, tokens, eos)  # finished rows repeat EOS, as transformers pads them
            unfinished = unfinished & (tokens != eos)
        seen_tokens[rows, tokens] = True
        host_tokens = model.backend.to_host(tokens).astype(np.int64)  # the only device -> host copy per step
        yield host_tokens
        if eos is not None:
            finished_on_host |= host_tokens == eos
        if step == max_new_tokens - 1 or finished_on_host.all():
            return
        logits = model.step(tokens[:, None], next_position, new_token_visible, cache, last_only=True)[:, -1]
        next_position = next_position + 1


def generate(model, input_ids, attention_mask=None, **settings) -> np.ndarray:
    """Prompt plus new tokens, int64 [B, T + new], as transformers' generate() returns (padding included)."""
    ids = np.asarray(input_ids)
    ids = ids[None, :] if ids.ndim == 1 else ids
    steps = list(generate_tokens(model, ids, attention_mask, **settings))
    return np.concatenate([ids.astype(np.int64), np.stack(steps, axis=1)], axis=1)
