"""GPT-Neo's forward pass in one file, to read top to bottom: the whole model for one sequence, in plain NumPy.

    import neo_numpy
    from neo_numpy import reference

    model = neo_numpy.load_model("125M")
    ids = model.tokenizer.encode("The dog")  # [464, 3290]: T = 2 token ids
    logits = reference.forward(ids, model.weights, model.config)  # float32 [T, vocab]: a score for every next token

Nothing else is here: no KV cache, no batches or padding, no threads, no GPU, no float16. The engine in model.py
computes the same numbers faster, and the tests hold this file equal to it and to transformers' GPTNeoForCausalLM.

`forward(..., record={})` also fills the dict with the activations the notebooks study, named as TransformerLens
names them: `blocks.{i}.hook_resid_pre` and `blocks.{i}.hook_resid_post` (the stream before and after block i,
[T, D]), `blocks.{i}.attn.hook_pattern` (the attention weights, [H, T, T]) and `ln_final.hook_normalized` (ln_f's
output before its weight and bias, [T, D]).

Shapes: T tokens, D = hidden_size (768 in the 125M model), H = num_heads (12), Dh = head_dim = D / H (64),
F = intermediate_size (3072), V = vocab_size (50257). Every linear weight is stored as in the checkpoint,
[out, in], so a linear layer computes x @ weight.T + bias. Functions are named after the checkpoint's parts.
"""

import math

import numpy as np

from .errors import InputError
from .inputs import check_token_ids

MASKED = float(np.finfo(np.float32).min)  # the score of a key a query may not see: its weight comes out exactly 0


def layer_norm(x, weight, bias, eps):  # [T, D] -> [T, D]
    mean = x.mean(axis=-1, keepdims=True)  # [T, 1]  one mean per token, over its D numbers
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # [T, 1]  biased: divided by D, not D - 1
    return (x - mean) / np.sqrt(variance + eps) * weight + bias  # [T, D]  learned scale and shift per dimension


def gelu_new(x):  # [T, F] -> [T, F]  GPT-2's tanh approximation of GELU (the weights were trained with it)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))  # [T, F]


def softmax(scores):  # [..., S] -> [..., S]  in float32
    exps = np.exp(scores - scores.max(axis=-1, keepdims=True))  # [..., S]  row max subtracted: exp cannot overflow
    return exps / exps.sum(axis=-1, keepdims=True)  # [..., S]  every row sums to 1


def visible_keys(kind, T, window_size):  # -> bool [T, T]: True where query i may look at key j
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]  # [T, 1] query positions, [1, T] key positions
    if kind == "global":
        return j <= i  # [T, T]  causal: every earlier token and itself, never a later one
    return (i - window_size < j) & (j <= i)  # [T, T]  local: itself and the window_size - 1 tokens before it


def attn(x, layer, visible, num_heads, record=None, name=""):  # [T, D] -> [T, D]  the only place tokens mix
    T, D = x.shape
    q = (x @ layer.q_proj_weight.T).reshape(T, num_heads, -1).transpose(1, 0, 2)  # [H, T, Dh]  (q, k, v: no bias)
    k = (x @ layer.k_proj_weight.T).reshape(T, num_heads, -1).transpose(1, 0, 2)  # [H, T, Dh]
    v = (x @ layer.v_proj_weight.T).reshape(T, num_heads, -1).transpose(1, 0, 2)  # [H, T, Dh]
    scores = q @ k.transpose(0, 2, 1)  # [H, T, T]  q_i . k_j, NOT divided by sqrt(Dh): GPT-Neo never scaled
    weights = softmax(np.where(visible, scores, MASKED))  # [H, T, T]  row i: how much query i takes from each key
    if record is not None:
        record[name + "hook_pattern"] = weights  # [H, T, T]  the attention pattern, for the notebooks to read
    heads = weights @ v  # [H, T, Dh]  a weighted average of the visible values, per head
    merged = heads.transpose(1, 0, 2).reshape(T, D)  # [T, D]  the heads side by side again
    return merged @ layer.out_proj_weight.T + layer.out_proj_bias  # [T, D]


def mlp(x, layer):  # [T, D] -> [T, D]  the same small network on every token on its own
    inner = gelu_new(x @ layer.c_fc_weight.T + layer.c_fc_bias)  # [T, F]  widen, then the non-linearity
    return inner @ layer.c_proj_weight.T + layer.c_proj_bias  # [T, D]  narrow back


def block(h, layer, visible, config, record=None, name=""):  # [T, D] -> [T, D]  pre-LN: normalise, then add
    eps = config.layer_norm_epsilon
    x = layer_norm(h, layer.ln_1_weight, layer.ln_1_bias, eps)  # [T, D]
    h = h + attn(x, layer, visible, config.num_heads, record, name + "attn.")  # [T, D]
    return h + mlp(layer_norm(h, layer.ln_2_weight, layer.ln_2_bias, eps), layer)  # [T, D]


def forward(input_ids, weights, config, record=None):  # [T] ints -> logits float32 [T, V]: scores for the next token
    """record: None, or a dict that receives the activations under TransformerLens's names (see the top)."""
    if np.ndim(input_ids) != 1:
        raise InputError(f"reference.forward takes one sequence of token ids (1-D), got shape {np.shape(input_ids)}.")
    ids = check_token_ids(input_ids, None, config)[0][0]  # [T]  refuses ids outside the vocabulary or the context
    T = len(ids)
    h = weights.wte[ids] + weights.wpe[np.arange(T)]  # [T, D]  token + position embeddings: the residual stream
    for i, (layer, kind) in enumerate(zip(weights.layers, config.attention_layers)):  # the config's order, always
        if record is not None:
            record[f"blocks.{i}.hook_resid_pre"] = h  # [T, D]  the stream this block reads
        h = block(h, layer, visible_keys(kind, T, config.window_size), config, record, f"blocks.{i}.")  # [T, D]
        if record is not None:
            record[f"blocks.{i}.hook_resid_post"] = h  # [T, D]  the stream after it
    normalized = layer_norm(h, 1.0, 0.0, config.layer_norm_epsilon)  # [T, D]  ln_f before its weight and bias
    if record is not None:
        record["ln_final.hook_normalized"] = normalized  # [T, D]
    x = normalized * weights.ln_f_weight + weights.ln_f_bias  # [T, D]  ln_f(h)
    return x @ weights.lm_head_weight.T  # [T, V]  the head: wte itself in the released models (tied weights)
