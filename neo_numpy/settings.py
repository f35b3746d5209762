"""How to generate: one frozen `GenerationSettings`, checked once when it is built.

`model.generate(ids, max_new_tokens=20, do_sample=True, ...)` takes transformers' keyword names and defaults;
`GenerationSettings.for_model(config, **those keywords)` turns them into one of these, filling in the model's own
end-of-text id when `eos_token_id` is not given. Everything downstream (the decode loop, the logits processors,
the command line) reads this object and never checks a value again.
"""

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

from .errors import InputError
from .values import is_int, is_number

_FLOAT32 = np.finfo(np.float32)
FLOAT32_RANGE = f"from {_FLOAT32.smallest_subnormal:.2g} to {_FLOAT32.max:.2g} (neither 0 nor infinite in float32)"


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 20  # generate at most this many tokens
    min_new_tokens: int = 0  # hold the end-of-text token back until this many have been generated
    do_sample: bool = False  # False: greedy (argmax); True: draw from the filtered distribution
    temperature: float = 1.0  # logits are divided by this before sampling
    top_k: Optional[int] = 50  # sample among the k most likely tokens; 0 or None disables (used only when sampling)
    top_p: Optional[float] = 1.0  # nucleus sampling: the smallest set of tokens with probability >= top_p
    repetition_penalty: float = 1.0  # CTRL's penalty on tokens already in the text; 1.0 disables
    eos_token_id: Optional[int] = None  # generation stops at this token; None never stops
    seed: Optional[int] = None  # seeds the sampler; None draws fresh randomness

    @classmethod
    def for_model(cls, config, **settings) -> "GenerationSettings":
        """Settings from transformers-style keywords; `eos_token_id` defaults to the model's own (50256)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise InputError(f"generation has no setting {unknown[0]!r}; the settings are {', '.join(sorted(known))}.")
        settings.setdefault("eos_token_id", config.eos_token_id)
        chosen = cls(**settings)
        chosen.check_vocabulary(config.vocab_size)
        return chosen

    def __post_init__(self):
        """Refuse settings that have no meaning, in one sentence each."""
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise InputError(
                f"max_new_tokens must be a positive integer, got {shown(self.max_new_tokens)}.",
                parameter="max_new_tokens",
            )
        if not is_int(self.min_new_tokens) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InputError(
                f"min_new_tokens must be an integer from 0 to max_new_tokens ({self.max_new_tokens}), "
                f"got {shown(self.min_new_tokens)}.",
                parameter="min_new_tokens",
            )
        if not isinstance(self.do_sample, (bool, np.bool_)):
            raise InputError(f"do_sample must be True or False, got {shown(self.do_sample)}.", parameter="do_sample")
        if not _is_positive_in_float32(self.temperature):
            raise InputError(
                f"temperature must be a number {FLOAT32_RANGE}, got {shown(self.temperature)}.", parameter="temperature"
            )
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 0):
            raise InputError(
                f"top_k must be a non-negative integer (0 or None disables it), got {shown(self.top_k)}.",
                parameter="top_k",
            )
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {shown(self.top_p)}.", parameter="top_p")
        if not _is_positive_in_float32(self.repetition_penalty):
            raise InputError(
                f"repetition_penalty must be a number {FLOAT32_RANGE}, and 1.0 disables it; "
                f"got {shown(self.repetition_penalty)}.",
                parameter="repetition_penalty",
            )
        if self.eos_token_id is not None and (not is_int(self.eos_token_id) or self.eos_token_id < 0):
            raise InputError(
                f"eos_token_id must be a token id or None, got {shown(self.eos_token_id)}.", parameter="eos_token_id"
            )
        if self.seed is not None and (not is_int(self.seed) or self.seed < 0):
            raise InputError(f"seed must be a non-negative integer or None, got {shown(self.seed)}.", parameter="seed")

    def check_room(self, prompt_length: int, context: int) -> None:
        """The prompt and every new token but the last must fit the context: the last token is only chosen, never
        fed back, so prompt + max_new_tokens may be context + 1, as transformers computes it."""
        room = context + 1 - prompt_length  # new tokens that fit
        if self.max_new_tokens > room:
            raise InputError(
                f"the prompt has {prompt_length} token(s) and max_new_tokens asks for {self.max_new_tokens} more, "
                f"beyond the model's {context}-position context "
                + (f"(at most {room} new tokens fit)." if room > 0 else "(the prompt alone is longer)."),
                parameter="max_new_tokens",
            )

    def check_vocabulary(self, vocab_size: int) -> None:
        """The end-of-text id must be a token of the model (0 .. vocab_size - 1)."""
        if self.eos_token_id is not None and self.eos_token_id >= vocab_size:
            raise InputError(
                f"eos_token_id {self.eos_token_id} is outside the model's vocabulary (0 .. {vocab_size - 1})."
            )


def shown(value) -> str:
    """repr(value), shortened when it is long (10**400 has 401 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _as_float(value):
    """`value` as a Python float; None for what is no number (a bool, a string) or beyond a float (10**400)."""
    if not is_number(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _is_number(value) -> bool:
    number = _as_float(value)
    return number is not None and not math.isnan(number)


def _is_positive_in_float32(value) -> bool:
    """A number that float32, the logits' type, holds as neither 0 nor infinity: the logits are divided by it,
    and 1e-300 would round to 0 (a division by zero), 1e39 to infinity."""
    number = _as_float(value)
    if number is None:
        return False
    with np.errstate(over="ignore"):
        return 0 < np.float32(number) < np.inf  # NaN fails both comparisons
