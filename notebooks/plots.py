"""The notebooks' plots, so that a notebook shows the idea and one call, not matplotlib.

Each function draws one figure from arrays the notebook computed, and shows it. Nothing here computes a result
the notebook relies on: every number a plot shows was computed, and printed or checked, in the notebook.
"""

import matplotlib.pyplot as plt
import numpy as np


def position_similarity(wpe):  # [P, D]: cosine similarity of the first positions' vectors
    shown = min(len(wpe), 256)
    unit = wpe[:shown] / np.linalg.norm(wpe[:shown], axis=1, keepdims=True)  # [shown, D]
    plt.figure(figsize=(4.5, 4))
    plt.imshow(unit @ unit.T, cmap="RdBu_r", vmin=-1, vmax=1)
    plt.colorbar(label="cosine similarity")
    plt.title(f"wpe: similarity of positions 0..{shown - 1}")
    plt.xlabel("position")
    plt.ylabel("position")
    plt.show()


def first_residual_stream(h0, token_vectors, position_vectors, labels):  # [T, D] x3, T labels
    T = len(h0)
    limit = float(np.percentile(np.abs(h0), 99))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.28 * T + 2), gridspec_kw={"width_ratios": [3, 1]})
    image = left.imshow(h0, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    left.set_yticks(range(T), labels, fontsize=8)
    left.set_xlabel("hidden dimension")
    left.set_title("h0 = wte[ids] + wpe[positions]")
    figure.colorbar(image, ax=left, fraction=0.03, pad=0.01)
    rows = np.arange(T)
    right.barh(rows - 0.2, np.linalg.norm(token_vectors, axis=1), height=0.4, label="|wte[id]|")
    right.barh(rows + 0.2, np.linalg.norm(position_vectors, axis=1), height=0.4, label="|wpe[t]|")
    right.plot(np.linalg.norm(h0, axis=1), rows, "k.", label="|h0|")
    right.set_ylim(T - 0.5, -0.5)
    right.set_yticks([])
    right.set_xlabel("vector length")
    right.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    plt.tight_layout()
    plt.show()


def stream_lengths(stream, normalized, D, h0, h0_normalized):  # lengths per block, and values before / after
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.5))
    axes[0].plot(stream, "o-", label="|h|, the stream")
    axes[0].plot(normalized, "s-", label="|LayerNorm(h)| before weight and bias")
    axes[0].axhline(np.sqrt(D), color="grey", linestyle=":", label=f"sqrt(D) = {np.sqrt(D):.1f}")
    axes[0].set_xlabel("block")
    axes[0].set_ylabel("vector length, last token")
    axes[0].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    axes[0].set_title("what each block's branches read")
    axes[1].hist(h0.ravel(), bins=80, alpha=0.6, density=True, label="h0")
    axes[1].hist(h0_normalized.ravel(), bins=80, alpha=0.6, density=True, label="normalised")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8)
    axes[1].set_title("values of all tokens, before and after")
    plt.tight_layout()
    plt.show()


def per_dimension(values, title):  # [D]
    plt.figure(figsize=(7, 2.8))
    plt.plot(values, ".", markersize=3)
    plt.axhline(1.0, color="grey", linewidth=0.5)
    plt.xlabel("hidden dimension")
    plt.title(title)
    plt.tight_layout()
    plt.show()


def entropy_with_and_without_scale(entropies, uniform, last_rows, labels, title):
    """entropies, last_rows: {label: [T]}; the entropy of each query's weights, and the last query's weights."""
    T = len(labels)
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.5))
    for (label, values), marker in zip(entropies.items(), "os"):
        axes[0].plot(values, f"{marker}-", label=label)
    axes[0].plot(uniform, "k:", label="uniform over the visible keys")
    axes[0].set_xlabel("query position")
    axes[0].set_ylabel("entropy (nats)")
    axes[0].legend(fontsize=8)
    for (label, values), offset in zip(last_rows.items(), (-0.2, 0.2)):
        axes[1].bar(np.arange(T) + offset, values, width=0.4, label=label)
    axes[1].set_xticks(range(T), labels, rotation=90, fontsize=7)
    axes[1].set_title(f"weights of the last query, {labels[-1]!r}")
    axes[1].legend(fontsize=8)
    plt.suptitle(title)
    plt.tight_layout()
    plt.show()


def attention_maps(maps, title):
    """maps: {(row title, column title): [T, T] weights}; drawn as a grid, square root to show small weights."""
    rows = list(dict.fromkeys(row for row, _ in maps))
    columns = list(dict.fromkeys(column for _, column in maps))
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(3.4 * len(columns), 3.5 * len(rows)), squeeze=False)
    for (row, column), weights in maps.items():
        axis = axes[rows.index(row), columns.index(column)]
        axis.imshow(weights**0.5, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(f"{row}, {column}", fontsize=9)
        axis.set_xlabel("key")
        axis.set_ylabel("query")
    figure.suptitle(title)
    plt.tight_layout()
    plt.show()


def mlp_activations(activation, positive, labels):  # [T, F], [T] fraction of units > 0, T labels
    T, F = activation.shape
    limit = float(np.percentile(np.abs(activation), 99))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.25 * T + 2), gridspec_kw={"width_ratios": [4, 1]})
    image = left.imshow(activation, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    left.set_yticks(range(T), labels, fontsize=7)
    left.set_xlabel(f"MLP unit (of {F})")
    left.set_title("gelu_new(c_fc(x)), block 0")
    figure.colorbar(image, ax=left, fraction=0.03, pad=0.01)
    right.barh(range(T), positive)
    right.set_ylim(T - 0.5, -0.5)
    right.set_yticks([])
    right.set_xlim(0, 1)
    right.set_xlabel("fraction of units > 0")
    plt.tight_layout()
    plt.show()


def residual_stream(stream_norms, attention_norms, mlp_norms, kinds, token):  # per block, for one token
    blocks = np.arange(len(kinds))
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    axes[0].plot(np.arange(len(stream_norms)), stream_norms, "ko-")
    axes[0].set_xlabel("blocks applied")
    axes[0].set_ylabel("|h|")
    axes[0].set_title(f"residual stream of the last token {token!r}")
    axes[0].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[1].bar(blocks - 0.2, attention_norms, width=0.4, label="|attn(ln_1(h))|")
    axes[1].bar(blocks + 0.2, mlp_norms, width=0.4, label="|mlp(ln_2(h))|")
    axes[1].set_xticks(blocks, [f"{i}\n{kind}" for i, kind in enumerate(kinds)], fontsize=8)
    axes[1].set_xlabel("block")
    axes[1].legend(fontsize=8)
    axes[1].set_title("what each branch adds")
    plt.tight_layout()
    plt.show()


def surprise_per_token(surprise, labels, uniform):  # [T-1] nats, T-1 labels of the predicted tokens
    plt.figure(figsize=(12, 3.4))
    plt.bar(range(len(surprise)), surprise)
    plt.axhline(uniform, color="grey", linestyle=":", label="uniform guess, log(vocab_size)")
    plt.xticks(range(len(surprise)), labels, rotation=90, fontsize=8)
    plt.ylabel("-log p (nats)")
    plt.title("how surprising each token of the prompt was, given the tokens before it")
    plt.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def logit_lens_rank(ranks, probabilities, token):  # [L+1] each: the final prediction's rank and probability
    depth = np.arange(len(ranks))
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    axes[0].semilogy(depth, ranks, "o-")
    axes[0].invert_yaxis()
    axes[0].set_ylabel("rank (1 = top)")
    axes[1].plot(depth, probabilities, "o-")
    axes[1].set_ylabel("probability")
    for axis in axes:
        axis.set_xlabel("blocks applied before ln_f + head")
        axis.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    figure.suptitle(f"logit lens: the final prediction {token!r} after each block")
    plt.tight_layout()
    plt.show()


def sampling(probabilities, order, by_temperature, filtered, p, kept):
    """probabilities [V] and order (ids, most likely first); by_temperature {t: [V]}; filtered {title: [V] after}."""
    shown, ranks = order[:30], np.arange(1, 31)
    figure, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    axes[0].plot(ranks, probabilities[shown], "ko-", label="t = 1")
    for t, values in by_temperature.items():
        axes[0].plot(ranks, values[shown], "o-", label=f"t = {t}")
    axes[0].set_title("temperature")
    for axis, (title, after) in zip(axes[1:3], filtered.items()):
        axis.bar(ranks, probabilities[shown], color="lightgrey", label="before")
        axis.bar(ranks, after[shown], width=0.5, label="after (renormalised)")
        axis.set_title(title)
    for axis in axes[:3]:
        axis.set_yscale("log")
        axis.set_xlabel("rank")
        axis.set_ylabel("probability (log scale)")
        axis.legend(fontsize=8)
    curve_ranks = np.unique(np.geomspace(1, len(probabilities), 400).astype(int))  # 400 points are enough
    axes[3].semilogx(curve_ranks, np.cumsum(probabilities[order])[curve_ranks - 1])
    axes[3].axhline(p, color="grey", linestyle=":")
    axes[3].axvline(kept, color="C1", label=f"{kept} tokens")
    axes[3].set_xlabel("rank")
    axes[3].set_ylabel("cumulative probability")
    axes[3].set_title("where top-p cuts")
    axes[3].legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def parameter_counts(counts):  # {part: parameters}
    total = sum(counts.values())
    figure, axis = plt.subplots(figsize=(7, 3.8))
    parts = list(counts)
    axis.bar(parts, [counts[part] for part in parts], color=[f"C{i}" for i in range(len(parts))])
    for i, part in enumerate(parts):
        axis.text(
            i, counts[part], f"{counts[part]:,}\n{counts[part] / total:.2%}", ha="center", va="bottom", fontsize=8
        )
    axis.set_yscale("log")
    axis.set_ylim(top=10 * max(counts.values()))
    axis.set_ylabel("parameters (log scale)")
    axis.set_title(f"this checkpoint: {total:,} parameters")
    plt.tight_layout()
    plt.show()


def attention_per_head(patterns, kinds, title, tokens=None):
    """One attention map per head and layer: row i is query i, column j key j; bright is a large weight."""
    L, H, T, _ = patterns.shape
    figure, axes = plt.subplots(L, H, figsize=(2.6 * H, 2.7 * L), squeeze=False)
    for i in range(L):
        for h in range(H):
            axes[i, h].imshow(patterns[i, h], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            axes[i, h].set_title(f"layer {i} ({kinds[i]}), head {h}", fontsize=9)
            axes[i, h].set_xticks([])
            axes[i, h].set_yticks([])
    axes[-1, 0].set_xlabel("key position")
    axes[-1, 0].set_ylabel("query position")
    figure.suptitle(title, fontsize=11)
    plt.tight_layout()
    plt.show()


def head_scores(scores, kinds):
    """scores: {name: [L, H]}. One heat map per score, the value written in each cell."""
    heads = next(iter(scores.values())).shape[1]
    width, fontsize = max(4.2, 0.55 * heads + 2), 10 if heads <= 6 else 6
    figure, axes = plt.subplots(1, len(scores), figsize=(width * len(scores), 0.5 * len(kinds) + 1.8), squeeze=False)
    for axis, (name, values) in zip(axes[0], scores.items()):
        axis.imshow(values, cmap="Blues", vmin=0, vmax=1)
        for (i, h), value in np.ndenumerate(values):
            color = "white" if value > 0.6 else "black"
            axis.text(h, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=fontsize)
        axis.set_xticks(range(values.shape[1]))
        axis.set_yticks(range(len(kinds)), [f"layer {i} ({kind})" for i, kind in enumerate(kinds)])
        axis.set_xlabel("head")
        axis.set_title(name, fontsize=10)
    plt.tight_layout()
    plt.show()


def losses_by_position(losses, n, uniform, title):
    """losses: [B, 2n - 1] per sequence and position; the repeat starts at position n."""
    positions = np.arange(1, 2 * n)  # the position of the token being predicted
    plt.figure(figsize=(9, 3.4))
    plt.plot(positions, losses.mean(axis=0), "o-", markersize=3, label="mean over the sequences")
    plt.axhline(uniform, color="grey", linestyle=":", label=f"a uniform guess, ln {np.exp(uniform):.0f}")
    plt.axvline(n - 0.5, color="C3", linestyle="--", label="the repeat starts")
    plt.xlabel("position of the predicted token")
    plt.ylabel("loss (nats)")
    plt.title(title)
    plt.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def curves(curves, xlabel, ylabel, title, log=False, reference_line=None):
    """curves: {label: y values}; one line each, against 0, 1, 2, ..."""
    plt.figure(figsize=(8, 3.4))
    for label, values in curves.items():
        plt.plot(np.arange(len(values)), values, label=label)
    if reference_line is not None:
        plt.axhline(reference_line[1], color="grey", linestyle=":", label=reference_line[0])
    if log:
        plt.yscale("log")
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    plt.title(title)
    plt.legend(fontsize=8)
    plt.tight_layout()
    plt.show()
