"""GPT-Neo's hyper-parameters, parsed from a checkpoint's config.json."""

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

SUPPORTED_ACTIVATIONS = ("gelu_new",)
ATTENTION_KINDS = ("global", "local")


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
        """Validate a config.json dictionary and expand its attention_types into one kind per layer."""
        model_type = raw.get("model_type")
        if model_type != "gpt_neo":
            raise CheckpointError(f"{source} describes model_type {model_type!r}, but neo_numpy only runs 'gpt_neo'.")
        activation = raw.get("activation_function", "gelu_new")
        if activation not in SUPPORTED_ACTIVATIONS:
            raise CheckpointError(
                f"{source} asks for activation_function {activation!r}, but neo_numpy only implements 'gelu_new'."
            )
        try:
            hidden_size = int(raw["hidden_size"])
            num_layers = int(raw["num_layers"])
            num_heads = int(raw["num_heads"])
            attention_layers = expand_attention_types(raw["attention_types"])
            config = cls(
                vocab_size=int(raw["vocab_size"]),
                max_position_embeddings=int(raw["max_position_embeddings"]),
                hidden_size=hidden_size,
                num_layers=num_layers,
                num_heads=num_heads,
                intermediate_size=int(raw.get("intermediate_size") or 4 * hidden_size),
                window_size=int(raw["window_size"]),
                attention_layers=attention_layers,
                layer_norm_epsilon=float(raw.get("layer_norm_epsilon", 1e-5)),
                activation_function=activation,
                bos_token_id=_single_token_id(raw.get("bos_token_id", 50256)),
                eos_token_id=_single_token_id(raw.get("eos_token_id", 50256)),
            )
        except KeyError as missing:
            raise CheckpointError(f"{source} has no {missing.args[0]!r} entry, which GPT-Neo needs.") from None
        except (TypeError, ValueError) as bad:
            raise CheckpointError(f"{source} has a malformed value: {bad}.") from None
        config._check(source)
        return config

    @classmethod
    def from_file(cls, path) -> "NeoConfig":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: a GPT-Neo checkpoint folder needs a config.json.")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} could not be read as JSON ({error}).") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path} holds a JSON {type(raw).__name__}, not the object a config.json must be.")
        return cls.from_dict(raw, source=str(path))

    def _check(self, source: str) -> None:
        for name in (
            "vocab_size",
            "max_position_embeddings",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "window_size",
        ):
            if getattr(self, name) <= 0:  # checked first: num_heads 0 would otherwise divide by zero below
                raise CheckpointError(f"{source}: {name} must be positive, got {getattr(self, name)}.")
        if self.hidden_size % self.num_heads:
            raise CheckpointError(
                f"{source}: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}."
            )
        if len(self.attention_layers) != self.num_layers:
            raise CheckpointError(
                f"{source}: attention_types expands to {len(self.attention_layers)} layers but num_layers is {self.num_layers}."
            )
        unknown = sorted(set(self.attention_layers) - set(ATTENTION_KINDS))
        if unknown:
            raise CheckpointError(f"{source}: attention_types names {unknown}, but only 'global' and 'local' exist.")


def expand_attention_types(attention_types) -> tuple:
    """[[["global", "local"], 6]] -> ("global", "local", "global", ..., "local") (12 entries).

    Each item is [pattern, repeats]: the pattern is written out `repeats` times, items in order,
    so local-first or mixed layouts come out exactly as the config says.
    """
    layers = []
    for pattern, repeats in attention_types:
        if isinstance(pattern, str):  # [["global", 2]] would otherwise expand letter by letter
            raise ValueError(
                f"attention_types item [{pattern!r}, {repeats!r}] needs a list of kinds, like [[{pattern!r}], {repeats!r}]"
            )
        layers.extend(list(pattern) * int(repeats))
    return tuple(layers)


def _single_token_id(value) -> int:
    """config.json may hold a list of ids; GPT-Neo's files hold one."""
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)
