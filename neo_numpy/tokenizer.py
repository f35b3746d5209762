"""GPT-2's byte-level BPE tokenizer, loaded from a checkpoint's files through the `tokenizers` library.

"The dog" -> [464, 3290];  "Hello world" -> [15496, 995];  " world" and "world" are different tokens (995 vs 6894).
Byte-level means every token is a run of UTF-8 bytes, so one character can be split across two tokens:
decoding token by token would print replacement characters, which `TextStream` avoids.
"""

from pathlib import Path

import numpy as np

from .errors import CheckpointError, InputError
from .hub import DEFAULT_MODEL, resolve_model_dir

END_OF_TEXT = "<|endoftext|>"


class NeoTokenizer:
    """encode(text) -> list[int]; decode(ids) -> str; eos_token_id is <|endoftext|> (50256)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer  # a tokenizers.Tokenizer
        self.eos_token_id = tokenizer.token_to_id(END_OF_TEXT)
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode_batch(self, texts):
        """Left-pad several prompts into (input_ids int64 [B, T], attention_mask int64 [B, T]), padding with EOS."""
        rows = [self.encode(text) for text in texts]
        if not all(rows):
            raise InputError("every prompt must contain at least one token; an empty prompt was given.")
        width = max(len(row) for row in rows)
        pad = self.eos_token_id if self.eos_token_id is not None else 0
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = row
            mask[i, width - len(row) :] = 1
        return ids, mask


def load_tokenizer(name_or_path=DEFAULT_MODEL) -> NeoTokenizer:
    """The tokenizer of a checkpoint: its tokenizer.json, or vocab.json + merges.txt (the files EleutherAI ships)."""
    return tokenizer_from_folder(resolve_model_dir(name_or_path))


def tokenizer_from_folder(folder: Path) -> NeoTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = Path(folder)
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
