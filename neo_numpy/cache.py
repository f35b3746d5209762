"""The KV cache: keys and values of past positions, so each new token costs one position's work.

Global layers keep every past key in a buffer sized for the whole generation. Local layers only ever look at the
last `window_size` keys, so they keep a ring buffer of that size: position j lives in slot j % window_size, and
memory stays bounded however long the text grows. The order of keys inside the ring does not matter: attention is
a weighted sum over keys, and the mask says which slots hold a real, visible key.
"""

import numpy as np


class LayerCache:
    """Keys and values of one layer.  keys, values: [B, H, slots, Dh]; slot_visible: bool [B, slots]."""

    def __init__(self, xp, batch, heads, slots, head_dim, dtype, ring: bool):
        self.keys = xp.zeros((batch, heads, slots, head_dim), dtype=dtype)
        self.values = xp.zeros((batch, heads, slots, head_dim), dtype=dtype)
        self.slot_visible = xp.zeros((batch, slots), dtype=bool)
        self.ring = ring  # True for local layers: slot = position % slots

    def store(self, keys, values, key_visible, start: int):
        """Write keys/values [B, H, T, Dh] of sequence indices start .. start+T-1; a ring keeps only the last `slots`."""
        slots = self.keys.shape[2]
        length = keys.shape[2]
        if self.ring:
            keep = min(length, slots)  # older positions than the last `slots` fall out of every future window
            targets = [(start + length - keep + i) % slots for i in range(keep)]
            self.keys[:, :, targets] = keys[:, :, length - keep :]
            self.values[:, :, targets] = values[:, :, length - keep :]
            self.slot_visible[:, targets] = key_visible[:, length - keep :]
        else:
            self.keys[:, :, start : start + length] = keys
            self.values[:, :, start : start + length] = values
            self.slot_visible[:, start : start + length] = key_visible

    def visible(self, end: int):
        """Keys, values and visibility [B, 1, 1, S] of everything stored, for a query at sequence index end - 1."""
        stop = self.keys.shape[2] if self.ring else end
        return self.keys[:, :, :stop], self.values[:, :, :stop], self.slot_visible[:, None, None, :stop]


class KVCache:
    """One LayerCache per layer, plus how many sequence positions have been processed (`length`)."""

    def __init__(self, config, batch: int, capacity: int, xp, dtype):
        heads, head_dim = config.num_heads, config.head_dim
        self.capacity = capacity  # total sequence positions this cache can hold (prompt + new tokens)
        self.length = 0
        self.layers = [
            LayerCache(xp, batch, heads, min(config.window_size, capacity), head_dim, dtype, ring=True)
            if kind == "local"
            else LayerCache(xp, batch, heads, capacity, head_dim, dtype, ring=False)
            for kind in config.attention_layers
        ]

    def nbytes(self) -> int:
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.layers)


def prefill_masks(xp, key_visible, window_size: int):
    """Masks for a prompt attending to itself.  key_visible: bool [B, T] (False at padding).

    Returns {"global": causal, "local": causal and within the window}, each bool [B, 1, T, T]:
    query i may see key j when j <= i (and i - window_size < j for local layers) and key j is not padding.
    """
    length = key_visible.shape[1]
    query = xp.arange(length)[:, None]  # [T, 1]
    key = xp.arange(length)[None, :]  # [1, T]
    causal = key <= query  # [T, T]
    local_window = causal & (key > query - window_size)  # [T, T]
    real_key = key_visible[:, None, None, :]  # [B, 1, 1, T]
    return {"global": causal & real_key, "local": local_window & real_key}


def positions_from_mask(attention_mask):
    """Position ids that count real tokens only: cumsum(mask) - 1, with padding set to 1 as transformers does.

    [[0, 0, 1, 1, 1]] -> [[1, 1, 0, 1, 2]]
    """
    positions = np.cumsum(attention_mask, axis=1) - 1
    return np.where(attention_mask == 0, 1, positions)
