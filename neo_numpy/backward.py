"""GPT-Neo's backward pass, part by part, for a batch: reference.py's forward functions, each with its backward.

Each part of the model has two functions:

    out, saved = part_forward(x, ...)        # the same numbers as reference.py's part, plus what backward needs
    dx, grads = part_backward(dout, saved)   # dL/dx and dL/d(parameters) from dL/d(out)

`d<name>` always means "the gradient of the loss with respect to <name>", an array of <name>'s shape.
neo_numpy/training.py chains the parts into `loss_and_grads`, and the tests hold every gradient equal to PyTorch's
autograd on the same checkpoint (and to central differences in float64).

Shapes: B sequences of T tokens, N = B * T rows, D = hidden_size, H = num_heads, Dh = D / H, F = intermediate_size,
V = vocab_size. Linear weights are [out, in] as in the checkpoint: forward y = x @ W.T + b, so backward is
dx = dy @ W, dW = dy.T @ x, db = dy summed over rows. Everything stays in the weights' dtype (float32, or float64
for a finite-difference check): constants are Python floats, which never promote a float32 array.
"""

import math

import numpy as np

from .reference import MASKED

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


# ---------------------------------------------------------------- embeddings: h = wte[ids] + wpe[positions]


def embeddings_forward(ids, wte, wpe):  # ids int [B, T] -> h [B, T, D]
    return wte[ids] + wpe[np.arange(ids.shape[1])]  # [B, T, D]  token row + position row


def embeddings_backward(dh, ids, dwte):  # dh [B, T, D]; adds into dwte [V, D]; -> dwpe rows [T, D]
    B, T, D = dh.shape
    np.add.at(dwte, ids.reshape(-1), dh.reshape(B * T, D))  # [V, D]  a repeated id gets the SUM of its rows
    return dh.sum(axis=0)  # [T, D]  position t was used once per sequence


# ---------------------------------------------------------------- LayerNorm: y = (x - mean) / std * weight + bias


def layer_norm_forward(x, weight, bias, eps):  # [..., D] -> [..., D]  (N rows, or B x T)
    mean = x.mean(axis=-1, keepdims=True)  # [N, 1]
    centered = x - mean  # [N, D]
    variance = (centered * centered).mean(axis=-1, keepdims=True)  # [N, 1]  biased, as in reference.layer_norm
    inv_std = 1.0 / np.sqrt(variance + eps)  # [N, 1]
    normed = centered * inv_std  # [N, D]  mean 0, variance 1 per row
    return normed * weight + bias, (normed, inv_std, weight)  # [N, D]


def layer_norm_backward(dout, saved):  # dout [..., D] -> dx [..., D], dweight [D], dbias [D]
    normed, inv_std, weight = saved
    D = dout.shape[-1]
    dweight = (dout * normed).reshape(-1, D).sum(axis=0)  # [D]  summed over every position
    dbias = dout.reshape(-1, D).sum(axis=0)  # [D]
    dnormed = dout * weight  # [N, D]
    # Three terms: through x itself, through the mean (every x moves it) and through the variance (likewise).
    through_mean = dnormed.mean(axis=-1, keepdims=True)  # [N, 1]
    through_variance = normed * (dnormed * normed).mean(axis=-1, keepdims=True)  # [N, D]
    dx = (dnormed - through_mean - through_variance) * inv_std  # [N, D]
    return dx, dweight, dbias


# ---------------------------------------------------------------- self-attention: q/k/v (no bias), softmax, out_proj


def softmax_forward(scores, visible):  # [B, H, T, T], bool [T, T] -> weights [B, H, T, T]
    masked = np.where(visible, scores, MASKED)  # [B, H, T, T]  keys a query may not see: exp(...) is exactly 0
    masked -= masked.max(axis=-1, keepdims=True)  # [B, H, T, T]  row max subtracted: exp cannot overflow
    np.exp(masked, out=masked)  # [B, H, T, T]
    masked /= masked.sum(axis=-1, keepdims=True)  # [B, H, T, T]  every row sums to 1
    return masked


def softmax_backward(dweights, weights):  # [B, H, T, T] x2 -> dscores [B, H, T, T]
    # d softmax: p * (g - sum(p * g)) per row; a masked key has p = 0, so its score gets no gradient
    row_dot = (weights * dweights).sum(axis=-1, keepdims=True)  # [B, H, T, 1]
    return weights * (dweights - row_dot)  # [B, H, T, T]


def split_heads(x, num_heads):  # [B, T, D] -> [B, H, T, Dh]
    B, T, D = x.shape
    heads = x.reshape(B, T, num_heads, D // num_heads).transpose(0, 2, 1, 3)  # [B, H, T, Dh]  a strided view
    return np.ascontiguousarray(heads)  # a copy: NumPy's batched matmul uses BLAS only on contiguous matrices


def transposed(x):  # [B, H, m, n] -> [B, H, n, m], contiguous
    return np.ascontiguousarray(x.swapaxes(-1, -2))  # (as the right operand of a batched matmul, a transposed VIEW
    #                                                  makes NumPy skip BLAS: ~25x slower, measured)


def merge_heads(x):  # [B, H, T, Dh] -> [B, T, D]
    B, H, T, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * Dh)


def attn_forward(x, layer, visible, num_heads):  # x [B, T, D] (ln_1's output) -> [B, T, D]
    B, T, D = x.shape
    qkv = x.reshape(B * T, D) @ layer.qkv_proj_weight.T  # [N, 3D]  q, k, v in one product (stacked [3D, D] weight)
    q, k, v = (split_heads(part.reshape(B, T, D), num_heads) for part in np.split(qkv, 3, axis=1))  # [B, H, T, Dh]
    scores = q @ transposed(k)  # [B, H, T, T]  q_i . k_j, NOT divided by sqrt(Dh)
    weights = softmax_forward(scores, visible)  # [B, H, T, T]
    merged = merge_heads(weights @ v).reshape(B * T, D)  # [N, D]  each head's weighted values, side by side
    out = merged @ layer.out_proj_weight.T + layer.out_proj_bias  # [N, D]
    return out.reshape(B, T, D), (x, q, k, v, weights, merged, layer)


def attn_backward(dout, saved):  # dout [B, T, D] -> dx [B, T, D], grads {field: array}
    x, q, k, v, weights, merged, layer = saved
    B, T, D = dout.shape
    H = q.shape[1]
    dout = dout.reshape(B * T, D)  # [N, D]
    dmerged = dout @ layer.out_proj_weight  # [N, D]
    dheads = split_heads(dmerged.reshape(B, T, D), H)  # [B, H, T, Dh]
    dweights = dheads @ transposed(v)  # [B, H, T, T]
    dv = weights.swapaxes(-1, -2) @ dheads  # [B, H, T, Dh]  key j collects from every query that took it
    dscores = softmax_backward(dweights, weights)  # [B, H, T, T]
    dq = dscores @ k  # [B, H, T, Dh]
    dk = dscores.swapaxes(-1, -2) @ q  # [B, H, T, Dh]
    dqkv = np.concatenate([merge_heads(d).reshape(B * T, D) for d in (dq, dk, dv)], axis=1)  # [N, 3D]
    x = x.reshape(B * T, D)  # [N, D]
    grads = {
        "qkv_proj_weight": dqkv.T @ x,  # [3D, D]  rows 0..D-1 are q_proj's, then k_proj's, then v_proj's
        "out_proj_weight": dout.T @ merged,  # [D, D]
        "out_proj_bias": dout.sum(axis=0),  # [D]
    }
    dx = dqkv @ layer.qkv_proj_weight  # [N, D]
    return dx.reshape(B, T, D), grads


# ---------------------------------------------------------------- MLP: c_proj(gelu_new(c_fc(x)))


def gelu_new_forward(x):  # [N, F] -> [N, F]  reference.gelu_new; x * x * x, as NumPy's float32 x**3 is ~50x slower
    t = np.tanh(GELU_SCALE * (x + GELU_CUBIC * (x * x * x)))  # [N, F]  the tanh, kept for the backward
    return 0.5 * x * (1.0 + t), t  # [N, F]


def gelu_new_backward(dy, x, t):  # [N, F] x3 -> dx [N, F]
    # d/dx 0.5 x (1 + t) = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * (x * x))  # [N, F]
    return dy * slope  # [N, F]


def mlp_forward(x, layer):  # [N, D] -> [N, D]
    pre = x @ layer.c_fc_weight.T + layer.c_fc_bias  # [N, F]  widen
    inner, t = gelu_new_forward(pre)  # [N, F]
    out = inner @ layer.c_proj_weight.T + layer.c_proj_bias  # [N, D]  narrow back
    return out, (x, pre, t, layer)


def mlp_backward(dout, saved):  # [N, D] -> dx [N, D], grads {field: array}
    x, pre, t, layer = saved
    inner = 0.5 * pre * (1.0 + t)  # [N, F]  gelu_new(pre) again, rather than keeping a third [N, F] array per layer
    dinner = dout @ layer.c_proj_weight  # [N, F]
    dpre = gelu_new_backward(dinner, pre, t)  # [N, F]
    grads = {
        "c_proj_weight": dout.T @ inner,  # [D, F]
        "c_proj_bias": dout.sum(axis=0),  # [D]
        "c_fc_weight": dpre.T @ x,  # [F, D]
        "c_fc_bias": dpre.sum(axis=0),  # [F]
    }
    return dpre @ layer.c_fc_weight, grads  # [N, D]


# ---------------------------------------------------------------- one block: h + attn(ln_1(h)), then + mlp(ln_2(h))


def block_forward(h, layer, visible, config):  # [B, T, D] -> [B, T, D]
    B, T, D = h.shape
    eps = config.layer_norm_epsilon
    normed_1, saved_ln_1 = layer_norm_forward(h, layer.ln_1_weight, layer.ln_1_bias, eps)  # [B, T, D]
    attended, saved_attn = attn_forward(normed_1, layer, visible, config.num_heads)  # [B, T, D]
    h = (h + attended).reshape(B * T, D)  # [N, D]  the residual stream after attention
    normed_2, saved_ln_2 = layer_norm_forward(h, layer.ln_2_weight, layer.ln_2_bias, eps)  # [N, D]
    mlp_out, saved_mlp = mlp_forward(normed_2, layer)  # [N, D]
    return (h + mlp_out).reshape(B, T, D), (saved_ln_1, saved_attn, saved_ln_2, saved_mlp)


def block_backward(dh, saved):  # [B, T, D] -> dh [B, T, D] (into the block), grads {field: array}
    saved_ln_1, saved_attn, saved_ln_2, saved_mlp = saved
    B, T, D = dh.shape
    dh = dh.reshape(B * T, D)  # [N, D]  reaches the block's input directly (residual) and through the MLP
    dnormed_2, mlp_grads = mlp_backward(dh, saved_mlp)  # [N, D]
    dh_mid, dln_2_weight, dln_2_bias = layer_norm_backward(dnormed_2, saved_ln_2)  # [N, D]
    dh = (dh + dh_mid).reshape(B, T, D)  # [B, T, D]  the gradient of the stream after attention
    dnormed_1, attn_grads = attn_backward(dh, saved_attn)  # [B, T, D]
    dh_in, dln_1_weight, dln_1_bias = layer_norm_backward(dnormed_1, saved_ln_1)  # [B, T, D]
    grads = {"ln_1_weight": dln_1_weight, "ln_1_bias": dln_1_bias, "ln_2_weight": dln_2_weight}
    grads.update(ln_2_bias=dln_2_bias, **attn_grads, **mlp_grads)
    return dh + dh_in, grads


# ---------------------------------------------------------------- the head and the loss: mean next-token cross-entropy


def head_and_loss_forward(x, head_weight, targets):  # x [M, D] (ln_f's output), targets int [M] -> loss
    logits = x @ head_weight.T  # [M, V]  the largest array of the step, reused in place below
    logits -= logits.max(axis=-1, keepdims=True)  # [M, V]  shifted by the row max: exp cannot overflow
    target_logits = logits[np.arange(len(targets)), targets]  # [M]  (shifted alike: the loss does not change)
    np.exp(logits, out=logits)  # [M, V]
    sums = logits.sum(axis=-1)  # [M]
    losses = np.log(sums) - target_logits  # [M]  -log softmax(logits)[target] = log sum exp - target logit
    logits /= sums[:, None]  # [M, V]  now the probabilities
    return float(losses.astype(np.float64).mean()), (x, logits, targets)


def head_and_loss_backward(saved, head_weight):  # -> dx [M, D], dhead_weight [V, D]
    x, probs, targets = saved
    dlogits = probs  # [M, V]  d(mean cross-entropy)/d logits = (softmax - one_hot(target)) / M, in place
    dlogits[np.arange(len(targets)), targets] -= 1.0
    dlogits *= 1.0 / len(targets)
    return dlogits @ head_weight, dlogits.T @ x  # [M, D], [V, D]
