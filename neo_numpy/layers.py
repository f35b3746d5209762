"""GPT-Neo's building blocks as plain functions on arrays.

Shapes use B = batch, T = query positions, S = key positions, D = hidden size, H = heads, Dh = D // H, F = MLP width.
The functions only use operators, array methods and NumPy ufuncs/functions, which CuPy arrays also answer
(NumPy hands them to CuPy through the __array_ufunc__ / __array_function__ protocols), so the same code runs on
both backends without asking which one it is on.

The elementwise work of a prompt (LayerNorm, c_fc's bias and GELU) and its attention run in blocks of rows on a
threads.RowPool when one is given (`pool`), and in the calling thread otherwise; every row is computed on its own,
so the numbers are the same either way.
"""

import numpy as np

from .threads import INLINE, MATRIX_VECTOR_ROWS

MASKED_SCORE = float(np.finfo(np.float32).min)  # what transformers writes into disallowed attention scores
GELU_SCALE = float(np.sqrt(2.0 / np.pi))  # Python floats keep float32 arrays float32 (NumPy 2 promotion rules)
QUERY_BLOCK = 64  # prompt_attention's queries per block: small enough to skip most masked scores, big for BLAS


def layer_norm(x, weight, bias, eps: float, pool=INLINE):
    """Normalise each position's vector to mean 0 and (biased) variance 1, then scale and shift.  x: [..., D]

    Returns a new array; a prompt's rows are normalised in blocks on the pool's threads.
    """
    rows = x.reshape(-1, x.shape[-1])  # [N, D]
    out = np.empty_like(rows)  # [N, D]
    pool.rows(lambda start, stop: _layer_norm_into(rows[start:stop], weight, bias, eps, out[start:stop]), len(rows))
    return out.reshape(x.shape)  # [..., D]


def _layer_norm_into(x, weight, bias, eps: float, out):
    """layer_norm of the rows x [n, D], written into out [n, D] step by step (no temporary of x's size)."""
    width = x.shape[-1]
    mean = x.sum(axis=-1, keepdims=True) / width  # [n, 1]
    centered = np.subtract(x, mean, out=out)  # [n, D]
    variance = (centered * centered).sum(axis=-1, keepdims=True) / width  # [n, 1]  biased: divides by D, not D - 1
    centered /= np.sqrt(variance + eps)
    centered *= weight
    centered += bias


def linear(x, weight, bias=None):
    """y = x @ W.T + b with PyTorch's [out, in] weight layout.  x: [..., in] -> [..., out], always float32.

    The leading axes are flattened first, so a batch is one matrix-matrix product (NumPy would otherwise loop,
    reading the weight once per batch row). With float16 weights (GPU) the product runs in the weights' dtype
    and the result comes back as float32.

    A few rows (a decode step: at most MATRIX_VECTOR_ROWS) are multiplied as W @ x.T, [out, in] @ [in, N]: for
    2 to 8 rows OpenBLAS runs that orientation about 25% faster than x @ W.T (measured), for 1 row the same.
    """
    rows = x.reshape(-1, x.shape[-1]).astype(weight.dtype, copy=False)  # [N, in]: one matrix product for all rows
    few_rows = rows.shape[0] <= MATRIX_VECTOR_ROWS
    y = (weight @ rows.T).T.copy() if few_rows else rows @ weight.T  # [N, out], C-contiguous either way
    if bias is not None:
        y += bias
    return y.astype(np.float32, copy=False).reshape(*x.shape[:-1], weight.shape[0])  # [..., out]


def gelu_new(x, out=None):
    """GPT-2's tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Computed step by step in one buffer, because in a prompt x is large ([T, F]) and every temporary array
    costs a pass over memory. `out=x` overwrites x with the result.
    """
    y = x * x  # x^2
    y *= x  # x^3
    y *= 0.044715
    y += x  # x + 0.044715 x^3
    y *= GELU_SCALE
    np.tanh(y, out=y)
    y += 1.0
    y = np.multiply(y, x, out=y if out is None else out)
    y *= 0.5
    return y


def add_bias_then_gelu(x, bias):
    """x = gelu_new(x + bias), in place (the bias of the product x came from, then the activation, in one pass over
    a block of rows while it is in the CPU cache).  x: [n, F], bias: [F]"""
    x += bias
    return gelu_new(x, out=x)


def softmax_in_place(scores):
    """Softmax over the last axis, written over `scores` (pass a copy to keep the input), after subtracting the
    row maximum so exp never overflows. In place because a prompt's scores are the largest temporaries."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def split_heads(x, num_heads: int):
    """[B, T, D] -> [B, H, T, Dh]"""
    batch, length, width = x.shape
    return x.reshape(batch, length, num_heads, width // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """[B, H, T, Dh] -> [B, T, D]"""
    batch, heads, length, head_dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * head_dim)


def attention(q, k, v, allowed):
    """Masked softmax attention WITHOUT the usual 1/sqrt(Dh) scaling (GPT-Neo never had it).

    q: [B, H, T, Dh]; k, v: [B, H, S, Dh]; allowed: bool [B, 1, T, S], True where query t may see key s.
    Returns [B, H, T, Dh]. Scores and softmax are float32 whatever the weights' dtype.
    """
    scores = q.astype(np.float32, copy=False) @ k.astype(np.float32, copy=False).swapaxes(-1, -2)  # [B, H, T, S]
    np.copyto(scores, MASKED_SCORE, where=~allowed)  # [B, H, T, S]: disallowed scores become float32's minimum
    weights = softmax_in_place(scores)  # [B, H, T, S]
    return weights.astype(v.dtype, copy=False) @ v  # [B, H, T, Dh]


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


def prompt_attention(q, k, v, allowed, window, pool=INLINE, block: int = QUERY_BLOCK):
    """`attention` of a prompt over its own keys, one block of queries at a time, merged: [B, T, D].

    q, k, v: [B, H, T, Dh]; allowed: bool [B, 1, T, T] (causal, window, padding); window: the local window size,
    or None for a global layer. Queries start..stop-1 can only see keys first..stop-1, where first is 0 for a global
    layer and start - window + 1 for a local one, so only that band of scores is computed: about half the square
    for global layers, and a band of width ~window instead of the square for local ones. The keys left out all
    have weight exactly 0 in the full computation (exp of float32's minimum underflows), so the result is the same
    up to float rounding, except for a query that sees no key at all (a padding position), whose output is
    meaningless either way. Blocks run on the pool's threads, each writing its own rows of the result.
    """
    batch, heads, length, head_dim = q.shape
    merged = np.empty_like(v, shape=(batch, length, heads * head_dim))  # [B, T, D]

    def query_block(start: int):
        stop = min(start + block, length)
        first = 0 if window is None else max(0, start - window + 1)  # the oldest key any query of the block sees
        out = attention(
            q[:, :, start:stop], k[:, :, first:stop], v[:, :, first:stop], allowed[:, :, start:stop, first:stop]
        )
        merged[:, start:stop] = merge_heads(out)  # [B, stop - start, D]

    pool.run(query_block, range(0, length, block))
    return merged


def mlp(x, layer, pool=INLINE):
    """c_proj(gelu_new(c_fc(x))), biases included.  x: [..., D] -> [..., F] -> [..., D]

    c_fc's bias and the GELU go over the [N, F] activations in blocks of rows on the pool's threads (in a prompt
    they are the largest elementwise work of a block).
    """
    inner = linear(x, layer.c_fc_weight).reshape(-1, layer.c_fc_weight.shape[0])  # [N, F], c_fc without its bias
    pool.rows(lambda start, stop: add_bias_then_gelu(inner[start:stop], layer.c_fc_bias), len(inner))
    return linear(inner, layer.c_proj_weight, layer.c_proj_bias).reshape(x.shape)  # [..., D]
