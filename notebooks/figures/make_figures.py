"""Draw the notebooks' diagrams: everything here is true of every GPT-Neo checkpoint and needs no weights.

    python notebooks/figures/make_figures.py            # rewrites every notebooks/figures/*.png

The notebooks' markdown embeds these PNG files, so a reader sees them on the repository page without running
anything. Drawing is deterministic (matplotlib's own defaults and fonts, fixed size and dpi, no timestamp), and
tests/test_figures.py redraws every figure and fails when a committed PNG is missing or differs from its script.
Sizes in the pictures are the released models' (config.json of EleutherAI/gpt-neo-125m, -1.3B, -2.7B).
"""

import sys
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

HERE = Path(__file__).resolve().parent
DPI = 100
VOCAB, POSITIONS, WINDOW = 50257, 2048, 256  # the same in all three released models
RELEASED = {"125M": (768, 12, 12), "1.3B": (2048, 24, 16), "2.7B": (2560, 32, 20)}  # hidden, layers, heads
COLORS = {"stream": "#4c72b0", "norm": "#dddddd", "attention": "#f2b36f", "mlp": "#8fc99a", "embed": "#c7b5e3"}


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
        (3.3, "block 0", COLORS["attention"]),
        (4.4, "block 1", COLORS["attention"]),
        (5.5, "...", "white"),
        (6.6, "block L-1", COLORS["attention"]),
        (7.8, "ln_f", COLORS["norm"]),
        (9.0, "logits = ln_f(h) @ wte.T  [T, V]", COLORS["embed"]),
    ]
    for (y, text, color), (next_y, _, _) in zip(stack, stack[1:] + [(None, None, None)]):
        box(left, 2, y, text, color, width=3.4, height=0.62, fontsize=9)
        if next_y is not None:
            arrow(left, (2, y + 0.33), (2, next_y - 0.33))
    left.set_title("the model", fontsize=12)

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
    ("ln_f(h) after 12 blocks", "[T, 768]", COLORS["norm"]),
    ("logits = ln_f(h) @ wte.T", "[T, 50257]", COLORS["embed"]),
]


def draw_data_flow():
    """Every step of the forward pass with the shape it produces, in the 125M model's numbers."""
    rows = len(DATA_FLOW)
    figure = Figure(figsize=(9, 0.52 * rows + 1.2))
    axis = blank_axis(figure, (0.0, 0.0, 1.0, 0.93), (0, 10), (rows, -0.6))
    for row, (step, shape, color) in enumerate(DATA_FLOW):
        box(axis, 3.4, row, step, color, width=5.6, height=0.62, fontsize=10)
        axis.text(6.7, row, shape, ha="left", va="center", fontsize=11, family="monospace")
        if row + 1 < rows:
            arrow(axis, (3.4, row + 0.33), (3.4, row + 0.67))
    axis.add_patch(Rectangle((0.2, 1.55), 9.6, 12.0, fill=False, ls="--", lw=1, ec="grey"))
    axis.text(9.75, 1.75, "x 12 blocks", ha="right", va="top", fontsize=10, color="grey")
    axis.set_title("GPT-Neo 125M, T tokens in: shapes along the way (H = 12 heads of 64)", fontsize=12)
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


def parameter_counts(hidden, layers, vocab=VOCAB, positions=POSITIONS):
    """Parameters by part for a GPT-Neo with intermediate size 4 x hidden (every released model)."""
    inner = 4 * hidden
    return {
        "embeddings (wte, wpe)": (vocab + positions) * hidden,
        "attention (q, k, v, out_proj)": layers * (4 * hidden * hidden + hidden),
        "MLP (c_fc, c_proj)": layers * (2 * hidden * inner + inner + hidden),
        "LayerNorms": layers * 4 * hidden + 2 * hidden,
    }


def kv_cache_bytes(hidden, layers, context=POSITIONS, window=WINDOW, bytes_per_number=4):
    """A full-context cache, batch 1: global layers keep `context` keys and values, local layers `window`."""
    return layers // 2 * 2 * hidden * bytes_per_number * (context + window)


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
            kv_cache_bytes(h, layers) / 2**30 for h, layers, _ in RELEASED.values()
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


FIGURES = {
    "block.png": draw_block,
    "data_flow.png": draw_data_flow,
    "masks.png": draw_masks,
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
