"""GPT-2's byte-level BPE tokenizer, loaded from a checkpoint's files through the `tokenizers` library.

"The dog" -> [464, 3290];  "Hello world" -> [15496, 995];  " world" and "world" are different tokens (995 vs 6894).
Byte-level means every token is a run of UTF-8 bytes, so one character can be split across two tokens:
decoding token by token would print replacement characters, which `TextStream` avoids.

The tokenizer is built the way transformers' GPT2Tokenizer (what AutoTokenizer gives for GPT-Neo) builds it: a BPE
model from the vocabulary and merges, a byte-level pre-tokenizer and decoder, and the added and special tokens.
Everything else a tokenizer.json may carry is ignored, as AutoTokenizer ignores it: a `truncation` or `padding`
block (which would silently cut or pad every prompt), a normalizer, another pre-tokenizer, BPE dropout.
From tokenizer_config.json (and special_tokens_map.json, which overrides it) come the fields AutoTokenizer honours
for GPT-2: add_prefix_space, the special tokens (eos_token, bos_token, unk_token, pad_token, ...) and the added
tokens. A folder that names another tokenizer class is refused.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import CheckpointError, InputError
from .paths import check_inside_folder, check_small_file, kind_of, read_bounded, shown
from .untrusted_json import parse_json, quoted
from .values import is_int

END_OF_TEXT = "<|endoftext|>"
MAX_TOKENIZER_FILE_BYTES = 50_000_000  # GPT-2's tokenizer.json is 1.4 MB; the largest common ones (vocabularies of
#                                        250,000 tokens) stay under 35 MB. Refused before parsing: a 132 MB file
#                                        costs 2.5 GB and 21 s to parse.
GPT2_TOKENIZER_CLASSES = (None, "GPT2Tokenizer", "GPT2TokenizerFast")  # None: AutoTokenizer picks GPT2Tokenizer
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
GPT2_SPECIAL_TOKENS = {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}  # the defaults
EXTRA_TOKEN_LISTS = ("additional_special_tokens", "extra_special_tokens")


class NeoTokenizer:
    """encode(text) -> list[int]; decode(ids) -> str.

    eos_token_id: the id of the tokenizer's end-of-text token (<|endoftext|>, 50256, unless tokenizer_config.json
    names another eos_token), or None when the tokenizer names none.
    bos_token_id: the same for its beginning-of-text token (also <|endoftext|> in GPT-2's and GPT-Neo's tokenizers).
    """

    def __init__(self, tokenizer, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT):
        tokenizer.no_truncation()  # a tokenizer's own truncation or padding would change every prompt silently
        tokenizer.no_padding()
        self._tokenizer = tokenizer  # a tokenizers.Tokenizer
        self.eos_token_id = tokenizer.token_to_id(eos_token) if eos_token is not None else None
        self.bos_token_id = tokenizer.token_to_id(bos_token) if bos_token is not None else None
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list:
        """The ids of `text`, as AutoTokenizer's tokenizer(text, add_special_tokens=False) gives them."""
        return self._tokenizer.encode(checked_text(text), add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of a sequence of token ids (a list, a tuple or a 1-D array)."""
        ids = token_id_list(ids)
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
        if config.eos_token_id is not None and self._tokenizer.id_to_token(config.eos_token_id) is None:
            raise CheckpointError(
                f"the tokenizer in {source} has no token for the model's end-of-text id {config.eos_token_id}."
            )


def text_from_bytes(data: bytes, where: str) -> str:
    """The UTF-8 text in `data` (a prompt file, training text), refused in one sentence naming `where` when it is
    not UTF-8 or holds nothing but whitespace."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{where} is not UTF-8 text (byte {error.start} is invalid).") from None
    if not text.strip():
        raise InputError(f"{where} is empty.")
    return text


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


def token_id_list(ids) -> list:
    """`ids` as a list, when it is a sequence of ids: a list, a tuple, a 1-D array or another iterable, not one id."""
    if isinstance(ids, np.ndarray):
        if ids.ndim == 1:
            return ids.tolist()
    elif isinstance(ids, (list, tuple, range, Iterator)):
        return list(ids)
    raise InputError(f"decode takes a sequence of token ids (a list or a 1-D array), got {quoted(ids)}.")


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
    settings = tokenizer_settings(folder)
    vocab, merges, added = _vocabulary(folder)
    bpe = gpt2_tokenizer(vocab, merges, added, settings)
    tokenizer = NeoTokenizer(bpe, eos_token=settings["eos_token"], bos_token=settings["bos_token"])
    if config is not None:
        tokenizer.check_fits(config, folder)
    return tokenizer


def gpt2_tokenizer(vocab: dict, merges: list, added: list, settings: dict):
    """A tokenizers.Tokenizer built as transformers' GPT2Tokenizer builds its own (see the module docstring).

    added: the tokenizer's added tokens (tokenizers.AddedToken), in id order. The special tokens that `settings`
    names come after them, each one not added yet made an added token, as AutoTokenizer does: a token of the
    vocabulary keeps its id, but is then matched whole in the text ("<|endoftext|>" -> 50256), never split.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    try:
        tokenizer = Tokenizer(
            models.BPE(
                vocab=vocab,
                merges=merges,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        )
    except Exception as error:  # the tokenizers library checks ids and merges, and says what is wrong
        raise CheckpointError(f"the tokenizer's vocabulary and merges could not be read ({error}).") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=settings["add_prefix_space"])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens(added)
    known = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    special = [settings[name] for name in SPECIAL_TOKEN_NAMES if settings[name] is not None] + settings["extra"]
    tokenizer.add_tokens([AddedToken(token, special=True) for token in dict.fromkeys(special) if token not in known])
    return tokenizer


def tokenizer_settings(folder: Path) -> dict:
    """The fields AutoTokenizer honours for GPT-2, from tokenizer_config.json then special_tokens_map.json.

    {"add_prefix_space": bool, "bos_token": str or None, ..., "extra": [additional special tokens]}; the GPT-2
    defaults (<|endoftext|> for bos, eos and unk) where the files say nothing.
    """
    config = _optional_json(folder, "tokenizer_config.json")
    special_map = _optional_json(folder, "special_tokens_map.json")
    source = shown(folder / "tokenizer_config.json")
    if config.get("tokenizer_class") not in GPT2_TOKENIZER_CLASSES:
        raise CheckpointError(
            f"{source} asks for tokenizer_class {quoted(config.get('tokenizer_class'))}, but neo_numpy reads only "
            "GPT-2's byte-level BPE tokenizer (GPT2Tokenizer)."
        )
    add_prefix_space = config.get("add_prefix_space", False)
    if not isinstance(add_prefix_space, bool):
        raise CheckpointError(f"{source}: add_prefix_space must be true or false, got {quoted(add_prefix_space)}.")
    settings = {"add_prefix_space": add_prefix_space}
    for name in SPECIAL_TOKEN_NAMES:
        value = special_map.get(name, config.get(name, GPT2_SPECIAL_TOKENS.get(name)))
        settings[name] = _token_text(value, name, source)
    listed = [token for key in EXTRA_TOKEN_LISTS for token in _token_list(config.get(key), key, source)]
    decoded = config.get("added_tokens_decoder") or {}
    if not isinstance(decoded, dict):
        raise CheckpointError(f"{source}: added_tokens_decoder must map ids to tokens, got {quoted(decoded)}.")
    in_id_order = [decoded[key] for key in sorted(decoded, key=lambda key: (len(key), key))]
    settings["extra"] = [_token_text(token, "added_tokens_decoder", source) for token in in_id_order] + listed
    return settings


def _token_text(value, name: str, source: str):
    """A special token as tokenizer_config.json writes it: a string, {"content": string, ...}, or null."""
    if isinstance(value, dict):
        value = value.get("content")
    if value is not None and not isinstance(value, str):
        raise CheckpointError(f"{source}: {name} must be a token's text, got {quoted(value)}.")
    return value


def _token_list(value, name: str, source: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CheckpointError(f"{source}: {name} must be a list of tokens, got {quoted(value)}.")
    return [_token_text(token, name, source) for token in value]


def _optional_json(folder: Path, name: str) -> dict:
    """The object in folder/name, or {} when there is no such file."""
    path = folder / name
    if kind_of(path) == "missing":
        return {}
    contents = parse_json(_read_tokenizer_file(path), str(path))
    if not isinstance(contents, dict):
        raise CheckpointError(f"{path} holds a JSON {type(contents).__name__}, not an object.")
    return contents


def _read_tokenizer_file(path: Path) -> bytes:
    """A tokenizer file's bytes: a file of its folder (not a link elsewhere), at most MAX_TOKENIZER_FILE_BYTES."""
    check_inside_folder(path, path.parent)
    return read_bounded(path, MAX_TOKENIZER_FILE_BYTES, "the tokenizer needs it")


def _vocabulary(folder: Path) -> tuple:
    """(vocab {token: id}, merges [(a, b)], added tokens [tokenizers.AddedToken]) from tokenizer.json, or from
    vocab.json + merges.txt (the files EleutherAI ships)."""
    if kind_of(folder / "tokenizer.json") != "missing":
        return _from_tokenizer_json(folder / "tokenizer.json")
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if kind_of(vocab) == "missing" or kind_of(merges) == "missing":
        raise CheckpointError(
            f"{folder} has no tokenizer.json and no vocab.json + merges.txt, so text cannot be tokenized."
        )
    from tokenizers import models

    for path in (vocab, merges):  # checked as _read_tokenizer_file checks, then read by the library
        check_inside_folder(path, folder)
        check_small_file(path, MAX_TOKENIZER_FILE_BYTES, "the tokenizer needs it")
    try:
        vocab_map, merge_list = models.BPE.read_file(str(vocab), str(merges))
    except Exception as error:
        raise CheckpointError(f"{vocab} and {merges} could not be read as a BPE tokenizer ({error}).") from None
    return vocab_map, merge_list, []


def _from_tokenizer_json(path: Path) -> tuple:
    """The vocabulary, merges and added tokens of a tokenizer.json; the rest of the file is not used."""
    from tokenizers import AddedToken

    contents = parse_json(_read_tokenizer_file(path), str(path))
    model = contents.get("model") if isinstance(contents, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"{path} is not a tokenizer.json with a BPE vocabulary (a model with a vocab object).")
    merges = model.get("merges", []) if model.get("type") == "BPE" else []
    if not isinstance(merges, list) or not all(_is_merge(merge) for merge in merges):
        raise CheckpointError(f'{path}: the model\'s merges must be pairs of tokens, like "a b" or ["a", "b"].')
    added = contents.get("added_tokens") or []
    if not isinstance(added, list) or not all(isinstance(token, dict) and _is_added_token(token) for token in added):
        raise CheckpointError(f"{path}: added_tokens must be a list of tokens with an id and a content.")
    flags = ("single_word", "lstrip", "rstrip", "normalized", "special")
    return (
        model["vocab"],
        [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges],
        [
            AddedToken(token["content"], **{flag: token[flag] for flag in flags if isinstance(token.get(flag), bool)})
            for token in sorted(added, key=lambda token: token["id"])
        ],
    )


def _is_merge(merge) -> bool:
    parts = merge.split(" ") if isinstance(merge, str) else merge
    return isinstance(parts, list) and len(parts) == 2 and all(isinstance(part, str) for part in parts)


def _is_added_token(token: dict) -> bool:
    return is_int(token.get("id")) and isinstance(token.get("content"), str)


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
