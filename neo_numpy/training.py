"""Training GPT-Neo in NumPy: the loss and its gradients, AdamW, gradient clipping and the learning-rate schedule.

    model = neo_numpy.load_model("125M")
    loss, grads = loss_and_grads(ids, model.weights, model.config)   # ids: int [B, T]
    optimizer = AdamW(named_parameters(model.weights), weight_decay=0.01)
    clip_grad_norm(grads, 1.0)
    optimizer.step(grads, lr=learning_rate(step, 6e-4, warmup=100, total=1000))
    model.forward(ids)  # already uses the new weights: every update is in place

The backward pass itself, part by part, is in backward.py. Gradient names are the ones
`transformers.GPTNeoForCausalLM.named_parameters()` lists, so they can be compared with PyTorch's one by one.

Weight decay: AdamW decays every tensor of two or more dimensions -- the linear weights AND the embeddings wte and
wpe -- and never a bias or a LayerNorm weight. Decaying the embeddings is what nanoGPT does and what transformers'
Trainer does (it exempts only biases and LayerNorm weights), and most GPT-Neo fine-tunes on the Hugging Face Hub were
made with the Trainer, so a fine-tune here behaves like theirs. (The price: rows of tokens that never occur in the
training text shrink by a factor (1 - lr * weight_decay) per step, which over a fine-tune's few thousand steps at
lr 5e-5 and weight decay 0.01 is a change of well under 0.1%.)
"""

import math

import numpy as np

from .backward import (
    block_backward,
    block_forward,
    embeddings_backward,
    embeddings_forward,
    head_and_loss_backward,
    head_and_loss_forward,
    layer_norm_backward,
    layer_norm_forward,
)
from .checkpoint import NeoWeights
from .config import NeoConfig
from .errors import InputError
from .inputs import check_token_ids
from .reference import visible_keys

# One block's parameters in the order transformers lists them: LayerWeights field -> name inside "transformer.h.{i}."
LAYER_PARAMETERS = {
    "ln_1_weight": "ln_1.weight",
    "ln_1_bias": "ln_1.bias",
    "k_proj_weight": "attn.attention.k_proj.weight",
    "v_proj_weight": "attn.attention.v_proj.weight",
    "q_proj_weight": "attn.attention.q_proj.weight",
    "out_proj_weight": "attn.attention.out_proj.weight",
    "out_proj_bias": "attn.attention.out_proj.bias",
    "ln_2_weight": "ln_2.weight",
    "ln_2_bias": "ln_2.bias",
    "c_fc_weight": "mlp.c_fc.weight",
    "c_fc_bias": "mlp.c_fc.bias",
    "c_proj_weight": "mlp.c_proj.weight",
    "c_proj_bias": "mlp.c_proj.bias",
}


def is_tied(weights) -> bool:
    """True when the output head is wte itself (the released models), False for a separate lm_head.weight."""
    return weights.lm_head_weight is weights.wte


def named_parameters(weights) -> dict:
    """name -> the model's own array for every trainable tensor, as GPTNeoForCausalLM.named_parameters() lists them.

    The arrays are the weights themselves (q/k/v_proj are views into the fused qkv_proj_weight), so updating them
    in place updates the model. A tied head has no "lm_head.weight": it is "transformer.wte.weight".
    """
    params = {"transformer.wte.weight": weights.wte, "transformer.wpe.weight": weights.wpe}
    for i, layer in enumerate(weights.layers):
        for field, name in LAYER_PARAMETERS.items():
            params[f"transformer.h.{i}.{name}"] = getattr(layer, field)
    params["transformer.ln_f.weight"] = weights.ln_f_weight
    params["transformer.ln_f.bias"] = weights.ln_f_bias
    if not is_tied(weights):
        params["lm_head.weight"] = weights.lm_head_weight
    return params


def loss_and_grads(input_ids, weights, config):
    """The mean next-token cross-entropy of a batch and its gradient with respect to every parameter.

    input_ids: int [B, T] (or [T], one sequence), T >= 2; weights, config: `model.weights`, `model.config`.
    Returns (loss, grads): loss is a Python float, the mean over all B * (T - 1) predictions of position t+1 from
    positions <= t -- exactly transformers' `GPTNeoForCausalLM(input_ids, labels=input_ids).loss`; grads maps each
    name of `named_parameters` to an array of that tensor's shape, in the weights' dtype (float32 for a loaded
    model; float64 weights give float64 gradients). With a tied head the wte gradient holds both the embedding's
    and the head's contributions.
    """
    if not isinstance(weights, NeoWeights):
        raise InputError(f"weights must be a model's NeoWeights (model.weights), got {type(weights).__name__}.")
    if not isinstance(config, NeoConfig):
        raise InputError(f"config must be a model's NeoConfig (model.config), got {type(config).__name__}.")
    if not isinstance(weights.wte, np.ndarray):
        raise InputError(
            "training runs on NumPy weights only (load the model with backend='numpy'), "
            f"got {type(weights.wte).__module__}.{type(weights.wte).__name__} arrays."
        )
    ids = check_token_ids(input_ids, None, config)[0]  # [B, T] int64; refuses ids outside the vocabulary
    B, T = ids.shape
    D = config.hidden_size
    if T < 2:
        raise InputError(f"training needs at least 2 tokens per sequence (one to predict from), got {T}.")

    # forward, keeping what each part's backward needs
    h = embeddings_forward(ids, weights.wte, weights.wpe)  # [B, T, D]
    saved_blocks = []
    for layer, kind in zip(weights.layers, config.attention_layers):
        h, saved = block_forward(h, layer, visible_keys(kind, T, config.window_size), config)  # [B, T, D]
        saved_blocks.append(saved)
    x, saved_ln_f = layer_norm_forward(h, weights.ln_f_weight, weights.ln_f_bias, config.layer_norm_epsilon)
    predicting = np.ascontiguousarray(x[:, :-1]).reshape(B * (T - 1), D)  # [M, D]  the last position predicts nothing
    loss, saved_head = head_and_loss_forward(predicting, weights.lm_head_weight, ids[:, 1:].reshape(-1))

    # backward, from the loss to the embeddings
    dpredicting, dhead = head_and_loss_backward(saved_head, weights.lm_head_weight)  # [M, D], [V, D]
    del saved_head  # the [M, V] probabilities
    dx = np.zeros_like(x)  # [B, T, D]
    dx[:, :-1] = dpredicting.reshape(B, T - 1, D)
    dh, dln_f_weight, dln_f_bias = layer_norm_backward(dx, saved_ln_f)  # [B, T, D]
    layer_grads = []
    while saved_blocks:  # last block first; each block's saved activations are freed once used
        dh, grads = block_backward(dh, saved_blocks.pop())  # [B, T, D]
        layer_grads.insert(0, grads)
    tied = is_tied(weights)
    dwte = dhead if tied else np.zeros_like(weights.wte)  # [V, D]
    dwpe = np.zeros_like(weights.wpe)  # [P, D]  positions beyond T get no gradient
    dwpe[:T] = embeddings_backward(dh, ids, dwte)  # adds the embedding's rows into dwte

    grads = {"transformer.wte.weight": dwte, "transformer.wpe.weight": dwpe}
    for i, layer_grad in enumerate(layer_grads):
        for field, array in zip(
            ("q_proj_weight", "k_proj_weight", "v_proj_weight"), np.split(layer_grad.pop("qkv_proj_weight"), 3)
        ):
            layer_grad[field] = array  # [D, D] each: the stacked weight's gradient, split like the weight
        for field, name in LAYER_PARAMETERS.items():
            grads[f"transformer.h.{i}.{name}"] = layer_grad[field]
    grads["transformer.ln_f.weight"] = dln_f_weight
    grads["transformer.ln_f.bias"] = dln_f_bias
    if not tied:
        grads["lm_head.weight"] = dhead
    return loss, grads


# ---------------------------------------------------------------- optimisation


def decays(name: str, array) -> bool:
    """Weight decay for matrices (linear weights, wte, wpe; see the module docstring), never biases or LayerNorm."""
    return array.ndim >= 2


def global_norm(grads: dict) -> float:
    """sqrt(sum of every gradient element squared), over all tensors together."""
    return math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads.values()))


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global norm is at most max_norm, as torch.nn.utils.clip_grad_norm_
    (which nanoGPT calls with 1.0) does. Returns the norm before clipping; a non-finite norm is left as it is."""
    norm = global_norm(grads)
    scale = max_norm / (norm + 1e-6)
    if math.isfinite(norm) and scale < 1.0:
        for g in grads.values():
            g *= scale
    return norm


def learning_rate(step: int, peak: float, warmup: int, total: int, final_fraction: float = 0.1) -> float:
    """Linear warm-up from peak / warmup to peak over the first `warmup` steps, then cosine decay to
    final_fraction * peak at step `total` (nanoGPT's schedule; it ends at a tenth of the peak). step counts from 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))  # 0 -> 1 over the decay
    final = final_fraction * peak
    return final + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - final)


class AdamW:
    """torch.optim.AdamW, step for step: decoupled weight decay, bias-corrected moments, betas (0.9, 0.999), eps 1e-8.

    Per parameter p with gradient g, at step t (from 1):
        p -= lr * weight_decay * p            (only where `decays`: matrices, not biases or LayerNorm)
        m += (1 - beta1) * (g - m)            (torch's lerp: the same as m = beta1 m + (1 - beta1) g)
        v = beta2 v + (1 - beta2) g^2
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    Parameters are updated IN PLACE (the model's own arrays, views stay views), a block of CHUNK elements at a time
    so the four arrays and the scratch space stay in the CPU cache instead of streaming through memory per operation.
    The moments m and v add 2x the parameters' memory.
    """

    CHUNK = 1 << 15  # elements per block: [32768] float32 is 128 KB per array

    def __init__(self, params: dict, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        for name, p in params.items():
            if not p.flags.c_contiguous:  # reshape(-1) would copy, and the update would be lost
                raise InputError(f"parameter {name} is not contiguous in memory, so it cannot be updated in place.")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(map(float, betas)), float(eps), weight_decay
        self.m = {name: np.zeros_like(p) for name, p in params.items()}
        self.v = {name: np.zeros_like(p) for name, p in params.items()}
        self.steps = 0

    def step(self, grads: dict, lr: float = None) -> None:
        """Apply one update with `grads` (name -> array, as loss_and_grads returns) at learning rate lr."""
        lr = self.lr if lr is None else float(lr)
        beta1, beta2 = self.betas
        self.steps += 1
        step_size = lr / (1.0 - beta1**self.steps)
        sqrt_bias2 = math.sqrt(1.0 - beta2**self.steps)
        for name, p in self.params.items():
            decay = 1.0 - lr * self.weight_decay if decays(name, p) else 1.0
            flat = (p.reshape(-1), grads[name].reshape(-1), self.m[name].reshape(-1), self.v[name].reshape(-1))
            scratch = np.empty(min(self.CHUNK, p.size), dtype=p.dtype)
            for start in range(0, p.size, self.CHUNK):
                p_, g, m, v = (array[start : start + self.CHUNK] for array in flat)
                s = scratch[: len(p_)]
                if decay != 1.0:
                    p_ *= decay
                np.subtract(g, m, out=s)
                s *= 1.0 - beta1
                m += s  # m: lerp towards g
                np.multiply(g, g, out=s)
                s *= 1.0 - beta2
                v *= beta2
                v += s  # v: beta2 v + (1 - beta2) g^2
                np.sqrt(v, out=s)
                s /= sqrt_bias2
                s += self.eps  # the denominator
                np.divide(m, s, out=s)
                s *= step_size
                p_ -= s
