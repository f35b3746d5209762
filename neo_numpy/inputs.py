"""What goes into the model: token ids and attention masks checked against the config, and the positions they imply.

Everything here runs on the host, before any array reaches the backend, so a bad input is refused in one sentence
and never turns into silently wrong logits.
"""

import numpy as np

from .errors import InputError


def check_token_ids(input_ids, attention_mask, config):
    """Validate ids (and mask) for `config`; return them as host int64 arrays of shape [B, T] each.

    input_ids: ints [B, T] or [T]; attention_mask: None (every token real) or 0/1 of the same shape, 0 marking
    left padding.
    """
    ids = _as_rows(input_ids, "input_ids")
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise InputError(
            f"input_ids must be a non-empty [batch, sequence] array of token ids, got shape {list(ids.shape)}."
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be integers, got dtype {ids.dtype}.")
    outside = ids[(ids < 0) | (ids >= config.vocab_size)]
    if outside.size:
        raise InputError(f"token id {int(outside[0])} is outside the vocabulary (0 .. {config.vocab_size - 1}).")
    if ids.shape[1] > config.max_position_embeddings:
        raise InputError(
            f"the sequence has {ids.shape[1]} tokens but the model's context holds at most "
            f"{config.max_position_embeddings} positions."
        )
    if attention_mask is None:
        return ids.astype(np.int64), np.ones(ids.shape, dtype=np.int64)
    return ids.astype(np.int64), _check_mask(_as_rows(attention_mask, "attention_mask"), ids.shape)


def _as_rows(array, name: str) -> np.ndarray:
    """A [T] array-like as [1, T]; anything else as it is (ragged nested lists are refused)."""
    try:
        rows = np.asarray(array)
    except ValueError:  # NumPy refuses ragged nested lists such as [[1, 2], [3]]
        raise InputError(f"{name} must be a rectangular [batch, sequence] array; its rows differ in length.") from None
    except TypeError:  # a CuPy array refuses to become a NumPy array without an explicit copy
        kind = f"{type(array).__module__.split('.')[0]}.{type(array).__name__}"
        raise InputError(
            f"{name} must be on the host (a list or a NumPy array), got a {kind}; copy a CuPy array with .get() first."
        ) from None
    return rows[None, :] if rows.ndim == 1 else rows


def _check_mask(mask: np.ndarray, shape) -> np.ndarray:
    """0/1 values, the ids' shape, at least one real token per row."""
    if mask.shape != shape:
        raise InputError(f"attention_mask has shape {list(mask.shape)} but input_ids has {list(shape)}.")
    bad_values = np.argwhere(~np.isin(mask, (0, 1)))
    if len(bad_values):
        where = tuple(int(i) for i in bad_values[0])
        raise InputError(
            f"attention_mask must hold only 0 (padding) and 1 (real token), but holds {mask[where]} at {list(where)}."
        )
    empty_rows = np.flatnonzero(~mask.any(axis=1))
    if len(empty_rows):
        raise InputError(f"row {int(empty_rows[0])} of attention_mask has no real token (no 1).")
    return mask.astype(np.int64)


def check_left_padded(attention_mask) -> None:
    """Generation appends to the right, so padding must be on the left: the last column all 1s."""
    if not attention_mask[:, -1].all():
        raise InputError("attention_mask must pad on the left: the last column must be all 1s for generation.")


def positions_from_mask(attention_mask):
    """Position ids that count real tokens only: cumsum(mask) - 1, with padding set to 1 as transformers does.

    [[0, 0, 1, 1, 1]] -> [[1, 1, 0, 1, 2]]
    """
    positions = np.cumsum(attention_mask, axis=1) - 1
    return np.where(attention_mask == 0, 1, positions)
