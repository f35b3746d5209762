"""GPT-2's byte-level BPE tokenizer, loaded from a checkpoint's files through the `tokenizers` library.

"The dog" -> [464, 3290];  "Hello world" -> [15496, 995];  " world" and "world" are different tokens (995 vs 6894).
Byte-level means every token is a run of UTF-8 bytes, so one character can be split across two tokens:
decoding token by token would print replacement characters, which `TextStream` avoids.
"""

from pathlib import Path

import numpy as np

from .errors import CheckpointError, InputError
from .untrusted_json import quoted
from .values import is_int

END_OF_TEXT = "<|endoftext|>"


class NeoTokenizer:
    """encode(text) -> list[int]; decode(ids) -> str; eos_token_id is <|endoftext|> (50256)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer  # a tokenizers.Tokenizer
        self.eos_token_id = tokenizer.token_to_id(END_OF_TEXT)
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list:
        return self._tokenizer.encode(checked_text(text), add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = list(ids)
        outside = [i for i in ids if not is_int(i) or not 0 <= i < self.vocab_size]
        if outside:
            raise InputError(
                f"token id {quoted(outside[0])} is not an id of this tokenizer (0 .. {self.vocab_size - 1})."
            )
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode_batch(self, texts):
        """Left-pad several prompts into (input_ids int64 [B, T], attention_mask int64 [B, T]), padding with EOS."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise InputError(f"encode_batch takes a non-empty list of prompts, got {quoted(texts)}.")
        rows = [self.encode(text) for text in texts]
        if not all(rows):
            raise InputError("every prompt must contain at least one token; an empty prompt was given.")
        return left_padded(rows, self.eos_token_id if self.eos_token_id is not None else 0)

    def check_fits(self, config, source) -> None:
        """Refuse a tokenizer that can produce an id the model has no embedding for, or lacks the model's EOS."""
        largest = max(self._tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
        if largest >= config.vocab_size:
            raise CheckpointError(
                f"the tokenizer in {source} produces token ids up to {largest}, "
                f"but the model's vocabulary ends at {config.vocab_size - 1}."
            )
        if self._tokenizer.id_to_token(config.eos_token_id) is None:
            raise CheckpointError(
                f"the tokenizer in {source} has no token for the model's end-of-text id {config.eos_token_id}."
            )


def checked_text(text) -> str:
    """`text` itself when it is a str that UTF-8 can encode (a lone surrogate from a mis-decoded argv cannot)."""
    if not isinstance(text, str):
        raise InputError(f"the prompt must be a string, got {type(text).__name__}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"the prompt is not valid UTF-8 text (character {error.start} cannot be encoded); pass the text in UTF-8."
        ) from None
    return text


def left_padded(rows, pad_id: int):
    """Rows of token ids of different lengths -> (ids int64 [B, T], attention_mask int64 [B, T]), padded on the left."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return ids, mask


def tokenizer_from_folder(folder: Path, config=None) -> NeoTokenizer:
    """The tokenizer in `folder`; given the model's config, also checked to fit the model (see check_fits)."""
    folder = Path(folder)
    try:
        tokenizer = _read_tokenizer_files(folder)
    except OSError as error:  # an unreadable folder makes even is_file() fail
        raise CheckpointError(f"{folder} could not be read ({error.strerror or error}).") from None
    if config is not None:
        tokenizer.check_fits(config, folder)
    return tokenizer


def _read_tokenizer_files(folder: Path) -> NeoTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if (folder / "tokenizer.json").is_file():
        try:
            return NeoTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
        except Exception as error:
            raise CheckpointError(f"{folder / 'tokenizer.json'} could not be read as a tokenizer ({error}).") from None
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if vocab.is_file() and merges.is_file():
        try:
            bpe = models.BPE.from_file(str(vocab), str(merges))
        except Exception as error:
            raise CheckpointError(f"{vocab} and {merges} could not be read as a BPE tokenizer ({error}).") from None
        tokenizer = Tokenizer(bpe)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([END_OF_TEXT])
        return NeoTokenizer(tokenizer)
    raise CheckpointError(
        f"{folder} has no tokenizer.json and no vocab.json + merges.txt, so text cannot be tokenized."
    )


class TextStream:
    """Turn token ids arriving one at a time into text that is safe to print at once.

    Tokens are decoded in chunks; a chunk whose text ends in an incomplete UTF-8 character (decoded as U+FFFD)
    is held back until the next token completes it, so every character is printed once and whole, and the
    concatenation of everything returned equals decoding all the ids together.
    """

    def __init__(self, tokenizer: NeoTokenizer):
        self.tokenizer = tokenizer
        self.pending = []  # ids not yet printed

    def push(self, token_id: int) -> str:
        self.pending.append(int(token_id))
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd"):
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        """Whatever is still held back (at the end, an invalid byte sequence stays a replacement character)."""
        text = self.tokenizer.decode(self.pending) if self.pending else ""
        self.pending = []
        return text
