"""GPT-Neo's building blocks as plain functions on arrays.

Shapes use B = batch, T = query positions, S = key positions, D = hidden size, H = heads, Dh = D // H, F = MLP width.
The functions only use operators, array methods and NumPy ufuncs/functions, which CuPy arrays also answer
(NumPy hands them to CuPy through the __array_ufunc__ / __array_function__ protocols), so the same code runs on
both backends without asking which one it is on.
"""

import numpy as np

MASKED_SCORE = float(np.finfo(np.float32).min)  # what transformers writes into disallowed attention scores
GELU_SCALE = float(np.sqrt(2.0 / np.pi))  # Python floats keep float32 arrays float32 (NumPy 2 promotion rules)


def layer_norm(x, weight, bias, eps: float):
    """Normalise each position's vector to mean 0 and (biased) variance 1, then scale and shift.  x: [..., D]"""
    width = x.shape[-1]
    mean = x.sum(axis=-1, keepdims=True) / width  # [..., 1]
    centered = x - mean  # [..., D]
    variance = (centered * centered).sum(axis=-1, keepdims=True) / width  # [..., 1]  biased: divides by D, not D - 1
    return centered / np.sqrt(variance + eps) * weight + bias  # [..., D]


def linear(x, weight, bias=None):
    """y = x @ W.T + b with PyTorch's [out, in] weight layout.  x: [..., in] -> [..., out], always float32.

    The leading axes are flattened first, so a batch is one matrix-matrix product (NumPy would otherwise loop,
    reading the weight once per batch row). With float16 weights (GPU) the product runs in the weights' dtype
    and the result comes back as float32.
    """
    rows = x.reshape(-1, x.shape[-1]).astype(weight.dtype, copy=False)  # [N, in]: one matrix product for all rows
    y = rows @ weight.T  # [N, out]
    if bias is not None:
        y += bias
    return y.astype(np.float32, copy=False).reshape(*x.shape[:-1], weight.shape[0])  # [..., out]


def gelu_new(x):
    """GPT-2's tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Computed in place in one buffer, step by step, because in a prompt x is large ([T, F]) and every
    temporary array would cost a pass over memory.
    """
    y = x * x  # x^2
    y *= x  # x^3
    y *= 0.044715
    y += x  # x + 0.044715 x^3
    y *= GELU_SCALE
    np.tanh(y, out=y)
    y += 1.0
    y *= x
    y *= 0.5
    return y


def softmax(scores):
    """Softmax over the last axis, after subtracting the row maximum so exp never overflows (one new buffer)."""
    exps = scores - scores.max(axis=-1, keepdims=True)
    np.exp(exps, out=exps)
    exps /= exps.sum(axis=-1, keepdims=True)
    return exps


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
    weights = softmax(scores)  # [B, H, T, S]
    return weights.astype(v.dtype, copy=False) @ v  # [B, H, T, Dh]


def mlp(x, layer):
    """c_proj(gelu_new(c_fc(x))).  x: [B, T, D] -> [B, T, F] -> [B, T, D]"""
    inner = gelu_new(linear(x, layer.c_fc_weight, layer.c_fc_bias))  # [B, T, F]
    return linear(inner, layer.c_proj_weight, layer.c_proj_bias)  # [B, T, D]
