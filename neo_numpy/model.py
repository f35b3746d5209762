"""The GPT-Neo model: embeddings, pre-LayerNorm blocks with global or local attention, final LayerNorm, tied head.

    h = wte[ids] + wpe[positions]
    for each block:  h = h + attn(ln_1(h));  h = h + mlp(ln_2(h))
    logits = ln_f(h) @ wte.T

This is the engine: it runs a prompt and then one token at a time through a KV cache, on NumPy or CuPy arrays.
neo_numpy/reference.py computes the same logits in one short file without any of that machinery.
"""

from pathlib import Path

import numpy as np

from . import generation
from .cache import KVCache
from .config import NeoConfig
from .errors import InputError
from .inputs import check_token_ids, positions_from_mask
from .layers import attention, layer_norm, linear, merge_heads, mlp, prefill_masks, prompt_attention, split_heads
from .settings import GenerationSettings
from .threads import MATRIX_VECTOR_ROWS, RowPool, ThreadPlan, blas_threads, fastest_matrix_vector_threads
from .tokenizer import NeoTokenizer, tokenizer_from_folder
from .values import is_int


class NeoModel:
    """A loaded GPT-Neo checkpoint. Build one with `neo_numpy.load_model`."""

    def __init__(self, config: NeoConfig, weights, backend, path: Path = None, threads=None):
        self.config = config
        self.weights = weights  # checkpoint.NeoWeights, arrays on the backend
        self.backend = backend  # backend.Backend: NumPy or CuPy, and the weights' dtype
        self.path = path  # the checkpoint folder it came from
        self.threads = ThreadPlan.choose(threads)  # BLAS threads for prompts and for decode steps (see threads.py)
        self.pool = RowPool(self.threads.prefill if backend.name == "numpy" else 1)  # elementwise work of prompts
        self._tokenizer = None

    # ------------------------------------------------------------------ the forward pass, one step at a time

    def embed(self, input_ids, position_ids):
        """Token plus position embeddings.  ids, positions: int [B, T] -> h: [B, T, D] float32"""
        return (self.weights.wte[input_ids] + self.weights.wpe[position_ids]).astype(np.float32, copy=False)

    def attn(self, normed, layer, layer_cache, start_pos: int, prompt_mask):
        """Self-attention of one layer, out_proj's bias included.  normed (ln_1's output): [B, T, D] -> [B, T, D]

        Keys and values of these T positions go into the layer's cache. A prompt (start_pos == 0) attends to its
        own keys under `prompt_mask` (bool [B, 1, T, T]), one block of queries at a time on the pool's threads;
        a decode step attends to every key the cache keeps.
        """
        heads, width = self.config.num_heads, self.config.hidden_size
        qkv = linear(normed, layer.qkv_proj_weight)  # [B, T, 3D]: q, k and v in one product
        q, k, v = (split_heads(qkv[..., i * width : (i + 1) * width], heads) for i in range(3))  # [B, H, T, Dh] each
        layer_cache.store(k, v, start_pos)
        if start_pos == 0:  # prompt: attend to its own keys (a local layer's ring may not hold them all)
            window = self.config.window_size if layer.kind == "local" else None
            merged = prompt_attention(q, k, v, prompt_mask, window, self.pool)  # [B, T, D]
        else:  # decode: one query against everything the cache holds, its own key included
            keys, values, visible = layer_cache.visible(start_pos + normed.shape[1])
            merged = merge_heads(attention(q, keys, values, visible))  # [B, 1, D]
        return linear(merged, layer.out_proj_weight, layer.out_proj_bias)  # [B, T, D]

    def block(self, h, layer, layer_cache, start_pos: int, prompt_mask):
        """One pre-LN transformer block, as nanoGPT's Block.forward writes it.  h: [B, T, D] -> [B, T, D]

            h = h + attn(ln_1(h))
            h = h + mlp(ln_2(h))

        Each matrix product is one BLAS call over all B*T rows; LayerNorm and the MLP's bias and GELU go over a
        prompt's rows in blocks on the pool's threads (layers.py). The numbers do not depend on the blocks.
        """
        eps = self.config.layer_norm_epsilon
        x = layer_norm(h, layer.ln_1_weight, layer.ln_1_bias, eps, self.pool)  # ln_1(h)
        h = h + self.attn(x, layer, layer_cache, start_pos, prompt_mask)  # h + attn(ln_1(h))
        x = layer_norm(h, layer.ln_2_weight, layer.ln_2_bias, eps, self.pool)  # ln_2(h)
        h = h + mlp(x, layer, self.pool)  # h + mlp(ln_2(h))
        return h

    def final_norm(self, h):
        """ln_f, the LayerNorm after the last block.  h: [B, T, D] -> [B, T, D]"""
        weights, eps = self.weights, self.config.layer_norm_epsilon
        return layer_norm(h, weights.ln_f_weight, weights.ln_f_bias, eps, self.pool)

    def unembed(self, normed):
        """The output head, tied to wte: [B, T, D] -> logits [B, T, vocab] float32"""
        return linear(normed, self.weights.lm_head_weight)

    def step(self, input_ids, position_ids, key_visible, cache: KVCache, last_positions=None, hidden_states=None):
        """Run T new positions through every layer, appending their keys and values to `cache`.

        input_ids, position_ids: int [B, T] on the backend; key_visible: bool [B, T] (False marks padding).
        A prompt (empty cache) may have any T; later calls pass one token (T = 1).
        Returns logits [B, T, vocab], or [B, n, vocab] for the last n positions only when `last_positions` is n:
        the vocabulary-sized head is the largest product, and the next token needs only the last position. When
        `hidden_states` is a list, each block's input is appended to it, then ln_f of the last block's output.
        The step's BLAS threads follow from its B*T rows (`blas_threads_for`).
        """
        start_pos, length = cache.length, input_ids.shape[1]
        if start_pos and length != 1:
            raise InputError(f"after the prompt the cache takes one token per step, got {length}.")
        if start_pos + length > cache.capacity:
            raise InputError(
                f"the cache holds {cache.capacity} positions; position {start_pos + length - 1} does not fit."
            )
        cache.mark_visible(key_visible, start_pos)
        masks = prefill_masks(self.backend.xp, key_visible, self.config.window_size) if start_pos == 0 else {}
        with blas_threads(self.blas_threads_for(input_ids.shape[0] * length)):
            h = self.embed(input_ids, position_ids)  # [B, T, D]
            for layer, layer_cache in zip(self.weights.layers, cache.layers):
                if hidden_states is not None:
                    hidden_states.append(h)
                h = self.block(h, layer, layer_cache, start_pos, masks.get(layer.kind))
            cache.length += length
            keep = slice(-last_positions, None) if last_positions else slice(None)  # positions that get logits
            normed = self.final_norm(h if hidden_states is not None else h[:, keep])  # [B, T or n, D]
            if hidden_states is not None:  # like transformers, the last entry is after ln_f
                hidden_states.append(normed)
            return self.unembed(normed[:, keep])

    # ------------------------------------------------------------------ threads (see threads.py)

    def blas_threads_for(self, rows: int) -> int:
        """BLAS threads for a step over `rows` (= B*T) positions, the one thread policy of the engine: matrix-matrix
        work gets the plan's prefill count; a few rows (matrix-vector work, a decode step) get its decode count,
        measured once by `measure_decode_threads` when the plan leaves it open. (On a GPU the host's BLAS does
        none of the work, and nothing is measured.)"""
        if rows > MATRIX_VECTOR_ROWS or self.backend.name != "numpy":
            return self.threads.prefill
        if self.threads.decode is None:
            self.measure_decode_threads()
        return self.threads.decode

    def measure_decode_threads(self) -> int:
        """Time a row times every MLP weight with 1, half and all cores, and keep the fastest count for decoding."""
        matrices = [layer.c_fc_weight for layer in self.weights.layers]
        self.threads = self.threads.with_decode(fastest_matrix_vector_threads(matrices, self.threads.prefill))
        return self.threads.decode

    # ------------------------------------------------------------------ the public interface

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache(self.config, batch, capacity, self.backend.xp, self.backend.dtype)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        output_hidden_states=False,
        return_backend_array=False,
        last_positions=None,
    ):
        """Logits for every position: int [B, T] (or [T]) -> float32 [B, T, vocab] NumPy array.

        last_positions: n to get logits for the last n positions only, [B, n, vocab] (scoring a continuation, as
        neo_numpy.evaluation does, needs no more; the output head is then run on n positions instead of T).

        attention_mask: 0/1 [B, T] for left-padded batches; positions are counted over real tokens only
        (cumsum(mask) - 1, as transformers' generate() does) and padded keys are never attended to.
        With output_hidden_states, also returns num_layers + 1 arrays [B, T, D]: the embeddings, each block's
        input after that, and finally ln_f of the last block's output (transformers' convention).

        return_backend_array: on the CuPy backend, return CuPy arrays that stay on the GPU instead of copying them
        to the host (for work that continues on the GPU, and for timing the model without the copy).
        """
        ids, mask = check_token_ids(input_ids, attention_mask, self.config)
        if last_positions is not None and (not is_int(last_positions) or not 1 <= last_positions <= ids.shape[1]):
            raise InputError(
                f"last_positions must be None or a whole number from 1 to the {ids.shape[1]} positions given, "
                f"got {last_positions!r}."
            )
        to_device = self.backend.xp.asarray
        hidden = [] if output_hidden_states else None
        logits = self.step(
            to_device(ids),
            to_device(positions_from_mask(mask)),
            to_device(mask.astype(bool)),
            self.new_cache(*ids.shape),
            last_positions=last_positions,
            hidden_states=hidden,
        )
        to_host = (lambda array: array) if return_backend_array else self.backend.to_host
        if output_hidden_states:
            return to_host(logits), [to_host(item) for item in hidden]
        return to_host(logits)

    def generate(self, input_ids, attention_mask=None, **settings):
        """Prompt plus up to max_new_tokens new tokens, int64 [B, T + new], as transformers' generate() returns.

        Keywords as in transformers: max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
        repetition_penalty, eos_token_id (default: the model's), plus seed; see settings.GenerationSettings.
        """
        return generation.generate(
            self, input_ids, attention_mask, GenerationSettings.for_model(self.config, **settings)
        )

    def generate_tokens(self, input_ids, attention_mask=None, **settings):
        """A generator of each step's new token ids, int64 [B]; see generation.generate_tokens."""
        chosen = GenerationSettings.for_model(self.config, **settings)
        return generation.generate_tokens(self, input_ids, attention_mask, chosen)

    def stream(self, prompt, tokenizer=None, **settings):
        """A generator of new text for one prompt (a string, or token ids), printable as it arrives.

        Characters split across tokens come out whole; the EOS token that ends generation is not printed.
        """
        tokenizer = self.tokenizer if tokenizer is None else tokenizer
        if not isinstance(tokenizer, NeoTokenizer):
            raise InputError(f"tokenizer must be a NeoTokenizer (neo_numpy.load_tokenizer), got {tokenizer!r:.60}.")
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        chosen = GenerationSettings.for_model(self.config, **settings)
        return (piece for _, piece in generation.stream_text(self, tokenizer, ids, chosen) if piece)

    @property
    def tokenizer(self):
        """The checkpoint's own tokenizer (tokenizer.json or vocab.json + merges.txt), loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_folder(self.path, self.config)
        return self._tokenizer

    def __repr__(self):
        c = self.config
        return (
            f"NeoModel({self.path}, {c.num_layers} layers, hidden {c.hidden_size}, {c.num_heads} heads, "
            f"window {c.window_size}, backend {self.backend.name}/{np.dtype(self.backend.dtype).name})"
        )
