"""GPT-Neo's hyper-parameters, parsed from a checkpoint's config.json.

A field that config.json leaves out takes transformers' GPTNeoConfig default, so a checkpoint loads here when it
loads there, and gives the same numbers. What is refused is what would compute wrong numbers (a malformed value,
a size the weights do not have) or cannot be represented (an activation other than gelu_new).
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import CheckpointError
from .paths import check_inside_folder, read_bounded
from .untrusted_json import parse_json, quoted
from .values import is_int, is_number

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1_000_000  # a GPT-Neo config.json is about 1 KB: a larger file is not a config, and is not read
SUPPORTED_ACTIVATIONS = ("gelu_new",)
ATTENTION_KINDS = ("global", "local")
UPPER_LIMITS = {  # every count in config.json, bounded far above GPT-Neo 2.7B (vocab 50257, 2048 positions, ...)
    "vocab_size": 1 << 24,
    "max_position_embeddings": 1 << 20,
    "hidden_size": 1 << 16,
    "num_layers": 1024,
    "num_heads": 1 << 16,
    "intermediate_size": 1 << 18,
    "window_size": 1 << 20,
}
TRANSFORMERS_DEFAULTS = {  # transformers' GPTNeoConfig: the value of each field that config.json leaves out
    "vocab_size": 50257,
    "max_position_embeddings": 2048,
    "hidden_size": 2048,
    "num_layers": 24,
    "num_heads": 16,
    "intermediate_size": None,  # 4 * hidden_size
    "window_size": 256,
    "attention_types": [[["global", "local"], 12]],
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "tie_word_embeddings": True,
}
ALIASES = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}  # GPTNeoConfig.attribute_map


@dataclass(frozen=True)
class NeoConfig:
    """Everything the forward pass needs to know about a GPT-Neo model.

    The released 125M model reads: vocab_size=50257, max_position_embeddings=2048, hidden_size=768,
    num_layers=12, num_heads=12, intermediate_size=3072, window_size=256,
    attention_layers=("global", "local", "global", ..., "local").
    """

    vocab_size: int  # rows of wte (token embeddings); 50257 in the released models
    max_position_embeddings: int  # rows of wpe (position embeddings): the hard context limit, 2048
    hidden_size: int  # width of the residual stream (768 / 2048 / 2560)
    num_layers: int  # number of transformer blocks
    num_heads: int  # attention heads per layer; head_dim = hidden_size // num_heads
    intermediate_size: int  # MLP inner width; config.json's null means 4 * hidden_size
    window_size: int  # local layers attend to the current token and the window_size - 1 before it
    attention_layers: tuple  # one "global" or "local" per layer, expanded from attention_types
    layer_norm_epsilon: float = 1e-5  # added to the (biased) variance in every LayerNorm
    activation_function: str = "gelu_new"  # the MLP non-linearity; only gelu_new is implemented
    bos_token_id: Optional[int] = 50256  # <|endoftext|>; None when null or outside the vocabulary
    eos_token_id: Optional[int] = 50256  # generation stops here; None (it never stops) when null or outside the vocab
    tie_word_embeddings: bool = True  # the output head is wte, unless the weights file holds its own lm_head.weight

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "NeoConfig":
        """Validate a config.json dictionary, value by value and by type, then expand attention_types per layer.

        Every size is bounded before anything is built from it, so a hostile config cannot make loading allocate
        without limit: counts are checked against UPPER_LIMITS and attention_types' total before it is expanded.
        """
        if not isinstance(raw, dict):
            raise CheckpointError(f"{source} holds a JSON {type(raw).__name__}, not the object a config.json must be.")
        if raw.get("model_type") != "gpt_neo":
            raise CheckpointError(
                f"{source} describes model_type {quoted(raw.get('model_type'))}, but neo_numpy only runs 'gpt_neo'."
            )
        raw = with_defaults(raw, source)
        activation = raw["activation_function"]
        if not isinstance(activation, str) or activation not in SUPPORTED_ACTIVATIONS:
            raise CheckpointError(
                f"{source} asks for activation_function {quoted(activation)}, but neo_numpy only implements 'gelu_new'."
            )
        sizes = {name: _count(raw, name, source) for name in UPPER_LIMITS if name != "intermediate_size"}
        if raw["intermediate_size"] is None:  # null (or absent) means 4 * hidden_size
            sizes["intermediate_size"] = 4 * sizes["hidden_size"]
        else:
            sizes["intermediate_size"] = _count(raw, "intermediate_size", source)
        if sizes["hidden_size"] % sizes["num_heads"]:
            raise CheckpointError(
                f"{source}: hidden_size {sizes['hidden_size']} is not divisible by num_heads {sizes['num_heads']}."
            )
        _check_attention_types(raw["attention_types"], sizes["num_layers"], source)
        attention_layers = expand_attention_types(raw["attention_types"])
        _check_saved_attention_layers(raw.get("attention_layers"), attention_layers, source)
        return cls(
            **sizes,
            attention_layers=attention_layers,
            layer_norm_epsilon=_epsilon(raw["layer_norm_epsilon"], source),
            activation_function=activation,
            **_special_token_ids(raw, sizes["vocab_size"], source),
            tie_word_embeddings=_flag(raw, "tie_word_embeddings", source),
        )

    @classmethod
    def from_file(cls, path) -> "NeoConfig":
        """Read config.json (a file of its folder, not a link elsewhere; at most MAX_CONFIG_BYTES) and check it."""
        path = Path(path)
        check_inside_folder(path, path.parent)
        data = read_bounded(path, MAX_CONFIG_BYTES, "a GPT-Neo checkpoint folder needs a config.json")
        return cls.from_dict(parse_json(data, str(path)), source=str(path))


def with_defaults(raw: dict, source: str) -> dict:
    """config.json's entries under GPTNeoConfig's field names, with transformers' default for each one left out.

    num_attention_heads and num_hidden_layers name num_heads and num_layers, as in transformers; both names with
    different values are refused, since nothing says which one the weights were made for. A null attention_types
    means the default, as in GPTNeoConfig.
    """
    raw = dict(raw)
    for alias, name in ALIASES.items():
        if alias in raw:
            if name in raw and raw[name] != raw[alias]:
                raise CheckpointError(
                    f"{source} gives {name} {quoted(raw[name])} and {alias} {quoted(raw[alias])}, two names for one "
                    "value."
                )
            raw[name] = raw.pop(alias)
    if "attention_types" in raw and raw["attention_types"] is None:
        del raw["attention_types"]
    return {**TRANSFORMERS_DEFAULTS, **raw}


def _count(raw: dict, name: str, source: str) -> int:
    """A positive int no larger than UPPER_LIMITS[name] (a bool or a float such as 32.7 is refused, not truncated)."""
    value = raw[name]
    if not is_int(value) or value <= 0:
        raise CheckpointError(f"{source}: {name} must be a positive integer, got {quoted(value)}.")
    if value > UPPER_LIMITS[name]:
        raise CheckpointError(f"{source}: {name} is {quoted(value)}, beyond the limit of {UPPER_LIMITS[name]}.")
    return int(value)


def _epsilon(value, source: str) -> float:
    if not is_number(value) or not 0 < value < math.inf:  # NaN fails both comparisons
        raise CheckpointError(f"{source}: layer_norm_epsilon must be a finite number above 0, got {quoted(value)}.")
    return float(value)


def _flag(raw: dict, name: str, source: str) -> bool:
    if not isinstance(raw[name], bool):
        raise CheckpointError(f"{source}: {name} must be true or false, got {quoted(raw[name])}.")
    return raw[name]


def _special_token_ids(raw: dict, vocab_size: int, source: str) -> dict:
    """{"bos_token_id": id or None, "eos_token_id": id or None}.

    An id outside the vocabulary loads with one warning, as in transformers, and becomes None: the model can never
    produce that token, so generation never stops at it, just as transformers' generate() never does.
    """
    ids = {name: _token_id(raw[name], name, source) for name in ("bos_token_id", "eos_token_id")}
    outside = {name: value for name, value in ids.items() if value is not None and not 0 <= value < vocab_size}
    if outside:
        named = " and ".join(f"{name} {quoted(value)}" for name, value in outside.items())
        effect = "; generation never stops at an end-of-text token" if "eos_token_id" in outside else ""
        verb = "is" if len(outside) == 1 else "are"
        log.warning(f"{source}: {named} outside the vocabulary (0 .. {vocab_size - 1}) {verb} ignored{effect}.")
    return {name: None if name in outside else value for name, value in ids.items()}


def _token_id(value, name: str, source: str) -> Optional[int]:
    """One id, written alone or as a one-element list; null or an empty list means none.

    transformers stops at any id of a longer eos list; neo_numpy stops at one, so it refuses such a list rather
    than generate differently without a word.
    """
    ids = value if isinstance(value, list) else [] if value is None else [value]
    if len(ids) > 1 or not all(is_int(i) for i in ids):
        raise CheckpointError(f"{source}: {name} must be one token id or null, got {quoted(value)}.")
    return int(ids[0]) if ids else None


def _check_attention_types(attention_types, num_layers: int, source: str) -> None:
    """attention_types is [[kinds, repeats], ...] with known kinds, and expands to exactly num_layers layers.

    The total is computed before anything is expanded, so [[["global"], 10**9]] is refused at once.
    """
    example = "like [[['global', 'local'], 6]]"
    if not isinstance(attention_types, list) or not attention_types:
        raise CheckpointError(
            f"{source}: attention_types is malformed: it must be a list of [kinds, repeats], {example}."
        )
    total = 0
    for item in attention_types:
        if not (
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], list) and item[0] and is_int(item[1])
        ):
            raise CheckpointError(
                f"{source}: attention_types item {quoted(item)} is malformed: it must be [kinds, repeats], {example}."
            )
        kinds, repeats = item
        unknown = [kind for kind in kinds if kind not in ATTENTION_KINDS]
        if unknown:
            raise CheckpointError(
                f"{source}: attention_types names {quoted(unknown)}, but only 'global' and 'local' exist."
            )
        if repeats < 0:
            raise CheckpointError(f"{source}: attention_types item {quoted(item)} repeats a negative number of times.")
        total += len(kinds) * repeats
    if total != num_layers:
        raise CheckpointError(
            f"{source}: attention_types expands to {quoted(total)} layers but num_layers is {num_layers}."
        )


def _check_saved_attention_layers(saved, expanded: tuple, source: str) -> None:
    """config.json's attention_layers, when present, must be what attention_types expands to.

    GPTNeoConfig saves attention_layers beside attention_types, and on loading transformers keeps the saved list,
    so its blocks follow attention_layers, not attention_types. neo_numpy expands attention_types: a file where the
    two disagree would give numbers different from transformers', so it is refused rather than read one way.
    """
    if saved is not None and saved != list(expanded):
        raise CheckpointError(
            f"{source}: attention_layers {quoted(saved)} is not what attention_types expands to "
            f"({quoted(list(expanded))}); the two must agree."
        )


def expand_attention_types(attention_types) -> tuple:
    """[[["global", "local"], 6]] -> ("global", "local", "global", ..., "local") (12 entries).

    Each item is [pattern, repeats]: the pattern is written out `repeats` times, items in order,
    so local-first or mixed layouts come out exactly as the config says.
    """
    return tuple(kind for pattern, repeats in attention_types for _ in range(repeats) for kind in pattern)
