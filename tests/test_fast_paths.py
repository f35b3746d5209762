"""The engine's fast paths give what the plain computations give.

prompt_attention (query blocks, only the keys a block can see, on a thread pool) against attention over the full
masked square; elementwise work on row blocks of the pool against the same functions on the whole array; the
W @ x.T orientation of few-row products and the fused q/k/v weight. (Whole-model parity with transformers is in
test_forward_parity.py and test_generation.py.)
"""

import copy
import threading

import numpy as np
import pytest

import neo_numpy
from neo_numpy.layers import (
    add_bias_then_gelu,
    attention,
    gelu_new,
    layer_norm,
    linear,
    merge_heads,
    mlp,
    prefill_masks,
    prompt_attention,
)
from neo_numpy.threads import RowPool, blas_threads

HEADS, HEAD_DIM = 3, 8


def relative_error(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def attention_inputs(padding, length, seed):
    """q, k, v [B, H, T, Dh] and key_visible [B, T] with `padding[b]` padded positions on the left of row b."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((len(padding), HEADS, length, HEAD_DIM), dtype=np.float32) for _ in range(3))
    key_visible = np.ones((len(padding), length), dtype=bool)
    for row, pad in enumerate(padding):
        key_visible[row, :pad] = False
    return q, k, v, key_visible


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "length, block, window, padding",
    [
        (100, 16, 256, [0]),  # T not a multiple of the block; the window longer than the prompt
        (100, 16, 5, [0, 7]),  # a window shorter than the block; left padding
        (64, 64, 20, [0, 30]),  # one block exactly
        (37, 8, 13, [36, 0, 3]),  # a row with one real token; the window not a multiple of the block
        (130, 64, 64, [0, 70]),  # the window equal to the block; padding longer than the block
    ],
)
def test_blocked_attention_equals_the_full_masked_square(length, block, window, padding, workers):
    q, k, v, key_visible = attention_inputs(padding, length, seed=length + block)
    masks = prefill_masks(np, key_visible, window)
    real_queries = key_visible[:, :, None]  # [B, T, 1]: a padded query sees no key and its output means nothing
    pool = RowPool(workers)
    for kind, window_size in (("global", None), ("local", window)):
        full = merge_heads(attention(q, k, v, masks[kind]))  # [B, T, D]
        blocked = prompt_attention(q, k, v, masks[kind], window_size, pool, block=block)
        assert blocked.shape == full.shape and blocked.dtype == np.float32
        assert relative_error(np.where(real_queries, blocked, 0), np.where(real_queries, full, 0)) < 1e-6, kind


def test_blocked_attention_never_computes_hidden_keys():
    """Keys a block cannot see may hold anything, even NaN: the blocked path must not read them."""
    length, block, window = 96, 16, 10
    q, k, v, key_visible = attention_inputs([0], length, seed=1)
    masks = prefill_masks(np, key_visible, window)
    reference = prompt_attention(q, k, v, masks["local"], window, RowPool(1), block=block)
    for query_block in range(0, length, block):
        poisoned_k, poisoned_v = k.copy(), v.copy()
        oldest_seen = max(0, query_block - window + 1)
        poisoned_k[:, :, :oldest_seen] = np.nan  # older than any key of this block's windows
        poisoned_v[:, :, :oldest_seen] = np.nan
        out = prompt_attention(q, poisoned_k, poisoned_v, masks["local"], window, RowPool(1), block=block)
        rows = slice(query_block, query_block + block)
        assert np.array_equal(out[:, rows], reference[:, rows])


@pytest.mark.parametrize("count", [1, 8, 127, 128, 300])  # inline (below two blocks), exactly two, ragged end
def test_row_blocks_give_the_plain_results_exactly(count):
    rng = np.random.default_rng(count)
    x = rng.standard_normal((count, 24), dtype=np.float32) * 3
    weight, bias = rng.standard_normal(24, dtype=np.float32), rng.standard_normal(24, dtype=np.float32)
    pool = RowPool(2, block_rows=64)
    normed = layer_norm(x, weight, bias, 1e-5, pool)
    plain = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5) * weight + bias
    assert np.array_equal(normed, layer_norm(x, weight, bias, 1e-5)) and normed.dtype == np.float32
    assert relative_error(normed, plain) < 1e-6
    activated = x.copy()
    pool.rows(lambda start, stop: add_bias_then_gelu(activated[start:stop], bias), count)
    assert np.array_equal(activated, gelu_new(x + bias)) and activated.dtype == np.float32


def test_mlp_on_the_pool_gives_c_proj_of_gelu_of_c_fc(neo_models):
    layer = neo_models["local_first"].weights.layers[0]
    x = np.random.default_rng(3).standard_normal((2, 150, layer.c_fc_weight.shape[1]), dtype=np.float32)
    plain = linear(gelu_new(linear(x, layer.c_fc_weight, layer.c_fc_bias)), layer.c_proj_weight, layer.c_proj_bias)
    assert np.array_equal(mlp(x, layer, RowPool(2)), plain) and np.array_equal(mlp(x, layer), plain)


def test_pool_runs_every_item_once_on_several_threads_and_restores_blas_threads():
    from threadpoolctl import threadpool_info

    def blas_counts():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    pool = RowPool(2)
    seen, threads, lock = [], set(), threading.Lock()
    release = threading.Barrier(2, timeout=10)  # the first two items wait for each other: two threads at once

    def record(item):
        if item < 2:
            release.wait()
        with lock:
            seen.append(item)
            threads.add(threading.get_ident())
            counts_inside.append(blas_counts())

    with blas_threads(2):
        before, counts_inside = blas_counts(), []
        pool.run(record, range(10))
        assert blas_counts() == before
    assert sorted(seen) == list(range(10)) and len(threads) == 2
    assert all(count == 1 for counts in counts_inside for count in counts)  # the pool is the parallelism


def test_pool_passes_on_a_worker_error():
    def fail_on_three(item):
        if item == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        RowPool(2).run(fail_on_three, range(6))


@pytest.mark.parametrize("rows", [1, 3, 8, 9])  # 1 to 8 rows take the W @ x.T orientation
def test_linear_gives_x_times_w_transposed_in_either_orientation(rows):
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 1, 40), dtype=np.float32)
    weight, bias = rng.standard_normal((24, 40), dtype=np.float32), rng.standard_normal(24, dtype=np.float32)
    y = linear(x, weight, bias)
    assert y.shape == (rows, 1, 24) and y.dtype == np.float32 and y.flags.c_contiguous
    assert relative_error(y, x.astype(np.float64) @ weight.T.astype(np.float64) + bias) < 1e-6


def test_fused_qkv_shares_memory_with_the_layer_weights(checkpoint_dirs):
    model = neo_numpy.load_model(checkpoint_dirs["alternating"])
    width = model.config.hidden_size
    for layer in model.weights.layers:
        stacked = layer.qkv_proj_weight
        assert stacked.shape == (3 * width, width)
        for i, part in enumerate((layer.q_proj_weight, layer.k_proj_weight, layer.v_proj_weight)):
            assert np.shares_memory(part, stacked) and np.array_equal(part, stacked[i * width : (i + 1) * width])


def test_q_k_v_weights_never_go_stale(torch_models, tmp_path):
    """Writing into a q/k/v view changes the logits; assigning a new q gives the logits of a checkpoint saved with
    that q, and views taken earlier see it; an array of another shape or dtype is refused in one sentence."""
    import torch
    from checkpoints import save_checkpoint

    model = neo_numpy.load_model(save_checkpoint(torch_models["alternating"], tmp_path / "original"))
    layer, width, ids = model.weights.layers[1], model.config.hidden_size, np.arange(30)[None]
    original = model.forward(ids)

    held_k = layer.k_proj_weight  # a view, taken before anything changes
    held_k *= 2  # in place: the stacked weight the engine multiplies by changes with it
    assert not np.allclose(model.forward(ids), original)
    held_k /= 2  # exactly back (powers of two)
    assert np.array_equal(model.forward(ids), original)

    new_q = np.random.default_rng(0).standard_normal((width, width), dtype=np.float32) * 0.1
    changed = copy.deepcopy(torch_models["alternating"])
    with torch.no_grad():
        changed.transformer.h[1].attn.attention.q_proj.weight.copy_(torch.from_numpy(new_q))
    reference = neo_numpy.load_model(save_checkpoint(changed, tmp_path / "changed")).forward(ids)
    held_q, stacked = layer.q_proj_weight, layer.qkv_proj_weight
    layer.q_proj_weight = new_q
    assert np.array_equal(held_q, new_q) and layer.qkv_proj_weight is stacked
    assert np.array_equal(model.forward(ids), reference)

    layer.qkv_proj_weight = stacked.copy() * 0  # the stacked weight itself is copied into, too
    assert layer.qkv_proj_weight is stacked and not held_q.any()
    layer.qkv_proj_weight = neo_numpy.load_model(tmp_path / "changed").weights.layers[1].qkv_proj_weight
    assert np.array_equal(model.forward(ids), reference)

    wrong_shape, wrong_dtype, not_an_array = new_q[:, :10], new_q.astype(np.float64), new_q.tolist()
    for field in ("q_proj_weight", "v_proj_weight", "qkv_proj_weight"):
        for value in (wrong_shape, wrong_dtype, not_an_array):
            with pytest.raises(neo_numpy.InputError, match=rf"^{field} takes a ndarray of dtype float32 and shape"):
                setattr(layer, field, value)
    assert np.array_equal(model.forward(ids), reference)


def test_tied_embedding_and_head_never_go_stale(neo_models):
    """In a tied checkpoint wte is the output head: assigning either one changes both, through the same array."""
    weights = copy.deepcopy(neo_models["alternating"].weights)
    wte = weights.wte
    assert weights.lm_head_weight is wte
    weights.wte = np.zeros_like(wte)
    assert weights.wte is wte and weights.lm_head_weight is wte and not wte.any()
    weights.lm_head_weight = np.ones_like(wte)
    assert weights.wte.all()
    with pytest.raises(neo_numpy.InputError, match=r"^wte takes a ndarray of dtype float32"):
        weights.wte = wte[:10]
