"""Text generation: one prefill over the prompt, then one token per step through the KV cache.

`generate_tokens` is a generator that yields each step's new token ids [B] (host NumPy ints), so streaming,
stopping early and timing are up to the caller; nothing here prints. `generate` collects them into the array
transformers' generate() returns, and `stream_text` turns them into printable text. Each takes a checked
settings.GenerationSettings.
"""

import numpy as np

from .errors import InputError
from .inputs import check_left_padded, check_token_ids, positions_from_mask
from .sampling import process_logits, sample
from .settings import GenerationSettings
from .tokenizer import TextStream

NO_TOKEN = -1  # marks a row whose scores are not finite, so the step is refused instead of choosing garbage


def generate_tokens(model, input_ids, attention_mask, settings: GenerationSettings):
    """Yield the next token of every row, step by step: int64 [B] per step, at most settings.max_new_tokens steps.

    A row that has produced EOS yields EOS again (transformers' padding) until every row is done, then the
    generator ends. Rows of a left-padded batch (attention_mask) give what they give alone.
    """
    ids, mask = check_token_ids(input_ids, attention_mask, model.config)
    check_left_padded(mask)
    batch, prompt_length = ids.shape
    settings.check_room(prompt_length, model.config.max_position_embeddings)
    eos = settings.eos_token_id
    xp, rng = model.backend.xp, np.random.default_rng(settings.seed)

    rows = xp.arange(batch)
    seen_tokens = xp.zeros((batch, model.config.vocab_size), dtype=bool)  # [B, V] for the repetition penalty
    seen_tokens[rows[:, None], xp.asarray(np.where(mask == 1, ids, ids[:, -1:]))] = True  # padding is not a token
    positions = positions_from_mask(mask)
    next_position = xp.asarray(positions[:, -1:] + 1)  # [B, 1]
    cache = model.new_cache(batch, prompt_length + settings.max_new_tokens - 1)  # the last token is never fed back
    prompt_ids, prompt_positions, prompt_visible = (xp.asarray(a) for a in (ids, positions, mask.astype(bool)))
    logits = model.step(prompt_ids, prompt_positions, prompt_visible, cache, last_positions=1)[:, -1]
    unfinished = xp.ones(batch, dtype=bool)  # on the device, to replace finished rows' tokens
    finished_on_host = np.zeros(batch, dtype=bool)  # the same, from the copied tokens, to stop without a sync
    new_token_visible = xp.ones((batch, 1), dtype=bool)

    for step in range(settings.max_new_tokens):
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow becomes a NO_TOKEN row, refused below
            scores = process_logits(logits, seen_tokens, step, settings)  # [B, V]
            if settings.do_sample:
                tokens = sample(scores, xp.asarray(1.0 - rng.random(batch, dtype=np.float32)))  # uniforms in (0, 1]
            else:
                tokens = scores.argmax(axis=-1)  # [B]
        tokens = xp.where(xp.isfinite(scores.max(axis=-1)), tokens, NO_TOKEN)  # NaN or +inf scores choose nothing
        if eos is not None:
            tokens = xp.where(unfinished, tokens, eos)  # finished rows repeat EOS, as transformers pads them
            unfinished = unfinished & (tokens != eos)
        seen_tokens[rows, tokens] = True
        host_tokens = model.backend.to_host(tokens).astype(np.int64)  # the only device -> host copy per step
        if (host_tokens == NO_TOKEN).any():
            raise _not_finite_scores(model.backend.to_host(logits), settings)
        yield host_tokens
        if eos is not None:
            finished_on_host |= host_tokens == eos
        if step == settings.max_new_tokens - 1 or finished_on_host.all():
            return
        logits = model.step(tokens[:, None], next_position, new_token_visible, cache, last_positions=1)[:, -1]
        next_position = next_position + 1


def _not_finite_scores(logits: np.ndarray, settings: GenerationSettings) -> InputError:
    """Why a step's scores hold NaN or +inf: the model's own logits, or settings that overflow float32."""
    if not np.isfinite(logits.max(axis=-1)).all():
        return InputError("the model's logits are NaN or infinite, so no next token can be chosen.")
    return InputError(
        f"temperature {settings.temperature} and repetition_penalty {settings.repetition_penalty} push the logits "
        "beyond float32's range, so the next-token distribution is not finite; use values closer to 1.",
        parameter="temperature",
    )


def generate(model, input_ids, attention_mask, settings: GenerationSettings) -> np.ndarray:
    """Prompt plus new tokens, int64 [B, T + new], as transformers' generate() returns (padding included)."""
    ids, _ = check_token_ids(input_ids, attention_mask, model.config)
    steps = list(generate_tokens(model, ids, attention_mask, settings))
    return np.concatenate([ids, np.stack(steps, axis=1)], axis=1)


def stream_text(model, tokenizer, prompt_ids, settings: GenerationSettings):
    """Yield (token id, its printable text) for each new token of one prompt; stop before the end-of-text token.

    The text is "" while a character split across tokens is incomplete (see tokenizer.TextStream); the held-back
    bytes come out whole with a later token. Bytes still held back at the end come last, as (None, text).
    """
    if not isinstance(prompt_ids, (list, tuple, np.ndarray)) or _dimensions(prompt_ids) != 1:
        raise InputError(f"the prompt must be a string or one sequence (1-D) of token ids, got {prompt_ids!r:.60}.")
    if len(prompt_ids) == 0:
        raise InputError("the prompt is empty: give at least one token to continue from.")
    text = TextStream(tokenizer)
    for tokens in generate_tokens(model, np.asarray(prompt_ids)[None, :], None, settings):
        if settings.eos_token_id is not None and tokens[0] == settings.eos_token_id:
            break
        yield int(tokens[0]), text.push(tokens[0])
    rest = text.flush()
    if rest:
        yield None, rest


def _dimensions(ids) -> int:
    """How many axes `ids` has as an array; -1 for ragged nested lists, which are no array at all."""
    try:
        return np.ndim(ids)
    except ValueError:
        return -1
