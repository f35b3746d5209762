"""GPT-Neo's hyper-parameters, parsed from a checkpoint's config.json."""

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError
from .untrusted_json import parse_json, quoted
from .values import is_int, is_number

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
    bos_token_id: int = 50256  # <|endoftext|>
    eos_token_id: int = 50256  # <|endoftext|>: generation stops here

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
        model_type = raw.get("model_type")
        if model_type != "gpt_neo":
            raise CheckpointError(
                f"{source} describes model_type {quoted(model_type)}, but neo_numpy only runs 'gpt_neo'."
            )
        activation = raw.get("activation_function", "gelu_new")
        if not isinstance(activation, str) or activation not in SUPPORTED_ACTIVATIONS:
            raise CheckpointError(
                f"{source} asks for activation_function {quoted(activation)}, but neo_numpy only implements 'gelu_new'."
            )
        sizes = {name: _count(raw, name, source) for name in UPPER_LIMITS if name != "intermediate_size"}
        if raw.get("intermediate_size") is None:  # null (or absent) means 4 * hidden_size
            sizes["intermediate_size"] = 4 * sizes["hidden_size"]
        else:
            sizes["intermediate_size"] = _count(raw, "intermediate_size", source)
        if sizes["hidden_size"] % sizes["num_heads"]:
            raise CheckpointError(
                f"{source}: hidden_size {sizes['hidden_size']} is not divisible by num_heads {sizes['num_heads']}."
            )
        attention_types = _required(raw, "attention_types", source)
        _check_attention_types(attention_types, sizes["num_layers"], source)
        return cls(
            **sizes,
            attention_layers=expand_attention_types(attention_types),
            layer_norm_epsilon=_epsilon(raw.get("layer_norm_epsilon", 1e-5), source),
            activation_function=activation,
            bos_token_id=_token_id(raw, "bos_token_id", sizes["vocab_size"], source),
            eos_token_id=_token_id(raw, "eos_token_id", sizes["vocab_size"], source),
        )

    @classmethod
    def from_file(cls, path) -> "NeoConfig":
        path = Path(path)
        try:
            exists = path.is_file()
            data = path.read_bytes() if exists else None
        except OSError as error:  # an unreadable folder makes even is_file() fail
            raise CheckpointError(f"{path} could not be read ({error.strerror or error}).") from None
        if not exists:
            raise CheckpointError(f"{path} does not exist: a GPT-Neo checkpoint folder needs a config.json.")
        return cls.from_dict(parse_json(data, str(path)), source=str(path))


def _required(raw: dict, name: str, source: str):
    if name not in raw:
        raise CheckpointError(f"{source} has no {name!r} entry, which GPT-Neo needs.")
    return raw[name]


def _count(raw: dict, name: str, source: str) -> int:
    """A positive int no larger than UPPER_LIMITS[name] (a bool or a float such as 32.7 is refused, not truncated)."""
    value = _required(raw, name, source)
    if not is_int(value) or value <= 0:
        raise CheckpointError(f"{source}: {name} must be a positive integer, got {quoted(value)}.")
    if value > UPPER_LIMITS[name]:
        raise CheckpointError(f"{source}: {name} is {quoted(value)}, beyond the limit of {UPPER_LIMITS[name]}.")
    return int(value)


def _epsilon(value, source: str) -> float:
    if not is_number(value) or not 0 < value < math.inf:  # NaN fails both comparisons
        raise CheckpointError(f"{source}: layer_norm_epsilon must be a finite number above 0, got {quoted(value)}.")
    return float(value)


def _token_id(raw: dict, name: str, vocab_size: int, source: str) -> int:
    """bos/eos: one id in [0, vocab_size), written alone or as a one-element list.

    transformers stops at any id of a longer eos list; neo_numpy stops at one, so it refuses such a list rather
    than generate differently without a word.
    """
    value = raw.get(name, 50256)
    ids = value if isinstance(value, list) else [value]
    if len(ids) != 1 or not is_int(ids[0]) or not 0 <= ids[0] < vocab_size:
        raise CheckpointError(f"{source}: {name} must be one token id from 0 to {vocab_size - 1}, got {quoted(value)}.")
    return int(ids[0])


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


def expand_attention_types(attention_types) -> tuple:
    """[[["global", "local"], 6]] -> ("global", "local", "global", ..., "local") (12 entries).

    Each item is [pattern, repeats]: the pattern is written out `repeats` times, items in order,
    so local-first or mixed layouts come out exactly as the config says.
    """
    return tuple(kind for pattern, repeats in attention_types for _ in range(repeats) for kind in pattern)
