"""The GPT-Neo model: embeddings, pre-LayerNorm blocks with global or local attention, final LayerNorm, tied head.

h = wte[ids] + wpe[positions]
for each block:  h = h + attn(ln_1(h));  h = h + mlp(ln_2(h))
logits = ln_f(h) @ wte.T
"""

import time
from pathlib import Path

import numpy as np

from . import generation
from .backend import get_backend
from .cache import KVCache, positions_from_mask, prefill_masks
from .checkpoint import load_weights
from .config import NeoConfig
from .errors import InputError
from .hub import DEFAULT_MODEL, resolve_model_dir
from .layers import attention, layer_norm, linear, merge_heads, mlp, split_heads
from .threads import MATRIX_VECTOR_ROWS, ThreadPlan, blas_threads
from .tokenizer import TextStream, tokenizer_from_folder


class NeoModel:
    """A loaded GPT-Neo checkpoint. Build one with `neo_numpy.load_model`."""

    def __init__(self, config: NeoConfig, weights, backend, path: Path = None, load_seconds: float = 0.0, threads=None):
        self.config = config
        self.weights = weights
        self.backend = backend
        self.path = path  # the checkpoint folder it came from
        self.load_seconds = load_seconds
        self._tokenizer = None
        self.threads = ThreadPlan.choose(threads)  # BLAS threads for prompts and for decode steps (see threads.py)

    # ------------------------------------------------------------------ the forward pass, one step at a time

    def embed(self, input_ids, position_ids):
        """Token plus position embeddings.  ids, positions: int [B, T] -> h: [B, T, D] float32"""
        return (self.weights.wte[input_ids] + self.weights.wpe[position_ids]).astype(np.float32, copy=False)

    def attention_block(self, h, layer, layer_cache, start: int, masks):
        """Self-attention of one layer on the normalised stream h: [B, T, D] -> [B, T, D].

        Keys and values of these T positions go into the layer's cache; with a prompt (start == 0) the queries
        attend to the prompt's own keys under `masks`, in a decode step to every key the cache keeps.
        """
        heads = self.config.num_heads
        q = split_heads(linear(h, layer.q_proj), heads)  # [B, H, T, Dh]
        k = split_heads(linear(h, layer.k_proj), heads)  # [B, H, T, Dh]
        v = split_heads(linear(h, layer.v_proj), heads)  # [B, H, T, Dh]
        layer_cache.store(k, v, masks["key_visible"], start)
        if start == 0:  # prompt: attend to its own keys (a local layer's ring may not hold them all)
            out = attention(q, k, v, masks[layer.kind])  # [B, H, T, Dh]
        else:  # decode: one query against everything the cache holds, its own key included
            keys, values, visible = layer_cache.visible(start + h.shape[1])
            out = attention(q, keys, values, visible)  # [B, H, 1, Dh]
        return linear(merge_heads(out), layer.out_proj_weight, layer.out_proj_bias)  # [B, T, D]

    def block(self, h, layer, layer_cache, start, masks):
        """One pre-LN transformer block: h + attn(ln_1(h)), then + mlp(ln_2(h)).  h: [B, T, D]"""
        eps = self.config.layer_norm_epsilon
        h = h + self.attention_block(
            layer_norm(h, layer.ln_1_weight, layer.ln_1_bias, eps), layer, layer_cache, start, masks
        )
        return h + mlp(layer_norm(h, layer.ln_2_weight, layer.ln_2_bias, eps), layer)

    def head(self, h):
        """Final LayerNorm and the tied output projection.  h: [B, T, D] -> logits [B, T, vocab] float32"""
        normed = layer_norm(h, self.weights.ln_f_weight, self.weights.ln_f_bias, self.config.layer_norm_epsilon)
        return linear(normed, self.weights.lm_head)

    def step(self, input_ids, position_ids, key_visible, cache: KVCache, last_only: bool, hidden_states=None):
        """Run T new positions through every layer, appending them to `cache`.

        input_ids, position_ids: int [B, T] on the backend; key_visible: bool [B, T] (False marks padding).
        A prompt (empty cache) may have any T; later calls pass one token (T = 1).
        Returns logits [B, T, vocab], or [B, 1, vocab] for the last position only when `last_only`.
        """
        start, length = cache.length, input_ids.shape[1]
        if start and length != 1:
            raise InputError(f"after the prompt the cache takes one token per step, got {length}.")
        if start + length > cache.capacity:
            raise InputError(f"the cache holds {cache.capacity} positions; position {start + length - 1} does not fit.")
        masks = prefill_masks(self.backend.xp, key_visible, self.config.window_size) if start == 0 else {}
        masks["key_visible"] = key_visible
        with blas_threads(self.blas_threads_for(input_ids.shape[0] * length)):
            h = self.embed(input_ids, position_ids)  # [B, T, D]
            for layer, layer_cache in zip(self.weights.layers, cache.layers):
                if hidden_states is not None:
                    hidden_states.append(h)
                h = self.block(h, layer, layer_cache, start, masks)
            cache.length += length
            logits = self.head(h[:, -1:] if last_only else h)
        if hidden_states is not None:  # like transformers, the last entry is after ln_f
            hidden_states.append(
                layer_norm(h, self.weights.ln_f_weight, self.weights.ln_f_bias, self.config.layer_norm_epsilon)
            )
        return logits

    def blas_threads_for(self, rows: int) -> int:
        """BLAS threads for products with `rows` input rows; the decode count is measured on first use."""
        if rows > MATRIX_VECTOR_ROWS:
            return self.threads.prefill
        if self.threads.decode is None:
            self.threads = self.threads.with_measured_decode([layer.c_fc_weight for layer in self.weights.layers])
        return self.threads.decode

    # ------------------------------------------------------------------ the public interface

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache(self.config, batch, capacity, self.backend.xp, self.backend.dtype)

    def forward(
        self, input_ids, attention_mask=None, output_hidden_states: bool = False, return_backend_array: bool = False
    ):
        """Logits for every position: int [B, T] (or [T]) -> float32 [B, T, vocab] NumPy array.

        attention_mask: 0/1 [B, T] for left-padded batches; positions are counted over real tokens only
        (cumsum(mask) - 1, as transformers' generate() does) and padded keys are never attended to.
        With output_hidden_states, also returns num_layers + 1 arrays [B, T, D]: the embeddings, each block's
        input after that, and finally ln_f of the last block's output (transformers' convention).
        """
        input_ids, attention_mask = self.check_inputs(input_ids, attention_mask)
        position_ids = positions_from_mask(attention_mask)
        to_device = self.backend.xp.asarray
        cache = self.new_cache(*input_ids.shape)
        hidden = [] if output_hidden_states else None
        logits = self.step(
            to_device(input_ids), to_device(position_ids), to_device(attention_mask.astype(bool)), cache, False, hidden
        )
        result = logits if return_backend_array else self.backend.to_host(logits)
        if output_hidden_states:
            return result, [item if return_backend_array else self.backend.to_host(item) for item in hidden]
        return result

    def check_inputs(self, input_ids, attention_mask=None):
        """Validate ids (and mask) and return them as host int64 [B, T] (and int64 [B, T]) arrays."""
        ids = np.asarray(input_ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
            raise InputError(
                f"input_ids must be a non-empty [batch, sequence] array of token ids, got shape {list(ids.shape)}."
            )
        if not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"input_ids must be integers, got dtype {ids.dtype}.")
        vocab = self.config.vocab_size
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.size:
            raise InputError(f"token id {int(bad[0])} is outside the vocabulary (0 .. {vocab - 1}).")
        limit = self.config.max_position_embeddings
        if attention_mask is None:
            mask = np.ones(ids.shape, dtype=np.int64)
        else:
            mask = np.asarray(attention_mask)
            if mask.ndim == 1:
                mask = mask[None, :]
            if mask.shape != ids.shape:
                raise InputError(f"attention_mask has shape {list(mask.shape)} but input_ids has {list(ids.shape)}.")
            bad_values = np.argwhere(~np.isin(mask, (0, 1)))
            if len(bad_values):
                where = tuple(int(i) for i in bad_values[0])
                raise InputError(
                    f"attention_mask must hold only 0 (padding) and 1 (real token), but holds {mask[where]} at {list(where)}."
                )
            empty_rows = np.flatnonzero(~mask.any(axis=1))
            if len(empty_rows):
                raise InputError(f"row {int(empty_rows[0])} of attention_mask has no real token (no 1).")
            mask = mask.astype(np.int64)
        if ids.shape[1] > limit:
            raise InputError(
                f"the sequence has {ids.shape[1]} tokens but the model's context holds at most {limit} positions."
            )
        return ids.astype(np.int64), mask

    # ------------------------------------------------------------------ generation (see generation.py)

    def generate(self, input_ids, attention_mask=None, **settings):
        """Prompt plus up to max_new_tokens new tokens, int64 [B, T + new], as transformers' generate() returns."""
        return generation.generate(self, input_ids, attention_mask, **settings)

    def generate_tokens(self, input_ids, attention_mask=None, **settings):
        """A generator of each step's new token ids, int64 [B]; see generation.generate_tokens."""
        return generation.generate_tokens(self, input_ids, attention_mask, **settings)

    def stream(self, prompt, tokenizer=None, **settings):
        """A generator of new text for one prompt (a string, or token ids), printable as it arrives.

        Characters split across tokens come out whole; the EOS token that ends generation is not printed.
        """
        tokenizer = tokenizer or self.tokenizer
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        if len(ids) == 0:
            raise InputError("the prompt is empty: give at least one token to continue from.")
        eos = generation.resolve_eos(self, settings.get("eos_token_id", generation.MODEL_EOS))
        text = TextStream(tokenizer)
        for tokens in self.generate_tokens(np.asarray(ids)[None, :], **settings):
            if eos is not None and tokens[0] == eos:
                break
            piece = text.push(tokens[0])
            if piece:
                yield piece
        rest = text.flush()
        if rest:
            yield rest

    @property
    def tokenizer(self):
        """The checkpoint's own tokenizer (tokenizer.json or vocab.json + merges.txt), loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_folder(self.path)
        return self._tokenizer

    def __repr__(self):
        c = self.config
        return (
            f"NeoModel({self.path}, {c.num_layers} layers, hidden {c.hidden_size}, {c.num_heads} heads, "
            f"window {c.window_size}, backend {self.backend.name}/{np.dtype(self.backend.dtype).name})"
        )


def load_model(name_or_path=DEFAULT_MODEL, backend: str = "numpy", dtype: str = "float32", threads=None) -> NeoModel:
    """Load a GPT-Neo checkpoint: "125M", "1.3B", "2.7B", a hub id, or a local folder with config.json + safetensors.

    backend: "numpy" (CPU) or "cupy" (NVIDIA GPU); dtype: weight storage, "float32" (or "float16" on the GPU);
    threads: BLAS threads, None for the default plan, an int for all work, or a threads.ThreadPlan.
    """
    started = time.perf_counter()
    chosen = get_backend(backend, dtype)
    folder = resolve_model_dir(name_or_path)
    config = NeoConfig.from_file(folder / "config.json")
    weights = load_weights(folder, config, chosen.asarray)
    return NeoModel(config, weights, chosen, folder, time.perf_counter() - started, threads)
