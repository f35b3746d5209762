"""The KV cache: keys and values of past positions, so a new token does not recompute the prompt.

A decode step still reads every cached key of a global layer (the new query is compared with all of them), so its
attention work grows with the position; only the projections and the MLP cost one position's work.

Global layers keep every past key in a buffer sized for the whole generation. Local layers only ever look at the
last `window_size` keys, so they keep a ring buffer of that size: position p lives in slot p % window_size, and
memory stays bounded however long the text grows. The order of keys inside the ring does not matter: attention is
a weighted sum over keys, and the visibility mask says which slots hold a real key.
"""


def ring_slots(start_pos: int, length: int, slots: int):
    """Which positions of start_pos .. start_pos+length-1 a ring of `slots` keeps, and the slot of each.

    Returns (first kept index into the new positions, list of slots). Only the last `slots` positions are kept:
    older ones fall out of every future window.
    """
    keep = min(length, slots)
    first = length - keep
    return first, [(start_pos + first + i) % slots for i in range(keep)]


class LayerCache:
    """Keys and values of one layer.  keys, values: [B, H, slots, Dh]; visible: bool [B, slots], shared by every
    layer of the same kind (padding is the same in all of them)."""

    def __init__(self, xp, batch, heads, slots, head_dim, dtype, visible, ring: bool):
        self.keys = xp.zeros((batch, heads, slots, head_dim), dtype=dtype)
        self.values = xp.zeros((batch, heads, slots, head_dim), dtype=dtype)
        self.visible_slots = visible  # bool [B, slots], owned by the KVCache
        self.ring = ring  # True for local layers: slot = position % slots

    def store(self, keys, values, start_pos: int):
        """Write keys and values [B, H, T, Dh] of positions start_pos .. start_pos+T-1."""
        length = keys.shape[2]
        if self.ring:
            first, slots = ring_slots(start_pos, length, self.keys.shape[2])
            self.keys[:, :, slots] = keys[:, :, first:]
            self.values[:, :, slots] = values[:, :, first:]
        else:
            self.keys[:, :, start_pos : start_pos + length] = keys
            self.values[:, :, start_pos : start_pos + length] = values

    def visible(self, end: int):
        """Keys, values [B, H, S, Dh] and visibility bool [B, 1, 1, S] of everything a query at position end - 1
        may see: the whole ring for a local layer, positions 0 .. end-1 for a global one."""
        stop = self.keys.shape[2] if self.ring else end
        return self.keys[:, :, :stop], self.values[:, :, :stop], self.visible_slots[:, None, None, :stop]


class KVCache:
    """One LayerCache per layer, plus how many sequence positions have been processed (`length`)."""

    def __init__(self, config, batch: int, capacity: int, xp, dtype):
        heads, head_dim = config.num_heads, config.head_dim
        self.capacity = capacity  # total sequence positions this cache can hold (prompt + new tokens)
        self.length = 0
        self.ring_size = min(config.window_size, capacity)
        self.visible_positions = xp.zeros((batch, capacity), dtype=bool)  # global layers: False at padding
        self.visible_ring = xp.zeros((batch, self.ring_size), dtype=bool)  # local layers, by ring slot
        self.layers = [
            LayerCache(xp, batch, heads, self.ring_size, head_dim, dtype, self.visible_ring, ring=True)
            if kind == "local"
            else LayerCache(xp, batch, heads, capacity, head_dim, dtype, self.visible_positions, ring=False)
            for kind in config.attention_layers
        ]

    def mark_visible(self, key_visible, start_pos: int):
        """Record which of the new positions start_pos .. start_pos+T-1 are real tokens.  key_visible: bool [B, T]"""
        length = key_visible.shape[1]
        self.visible_positions[:, start_pos : start_pos + length] = key_visible
        first, slots = ring_slots(start_pos, length, self.ring_size)
        self.visible_ring[:, slots] = key_visible[:, first:]

    def nbytes(self) -> int:
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.layers)
