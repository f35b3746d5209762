"""Tests against EleutherAI's released checkpoints. They run only when the files are already on this machine.

Looked for in neo_numpy.hub.weights_dir() (weights/gpt-neo-125m, or $NEO_NUMPY_WEIGHTS) and in the Hugging Face cache;
nothing is downloaded. Run them with: python -m pytest -m released tests/test_released.py -s
"""

from pathlib import Path

import numpy as np
import pytest
from checkpoints import require
from conftest import relative_error

import neo_numpy
from neo_numpy import hub

require("torch")

import torch  # noqa: E402

pytestmark = pytest.mark.released

PROMPT = "EleutherAI's GPT-Neo is an open replication of GPT-3. In the beginning the Universe was created."
# transformers' own GPT-Neo test: greedy 1.3B on "The dog"
THE_DOG = [464, 3290]
THE_DOG_GREEDY_1_3B = [
    464,
    3290,
    12,
    3380,
    4866,
    286,
    262,
    1492,
    11,
    543,
    318,
    257,
    4947,
    286,
    27126,
    416,
    262,
    2739,
    1772,
    11,
]


def local_checkpoint(repo_id: str) -> Path:
    """The released checkpoint's folder if it is present locally (weights dir or HF cache); skips the test otherwise."""
    folder_name = repo_id.split("/")[-1]
    folder = hub.find_local_copy(repo_id)
    if folder is not None:
        return folder
    short = {"gpt-neo-125m": "125M", "gpt-neo-1.3B": "1.3B", "gpt-neo-2.7B": "2.7B"}[folder_name]
    pytest.skip(
        f"released {repo_id} is not present locally (download it with: python -m neo_numpy download {short}, "
        f"or put it in weights/{folder_name})"
    )


@pytest.fixture(scope="module")
def folder_125m():
    return local_checkpoint("EleutherAI/gpt-neo-125m")


@pytest.fixture(scope="module")
def folder_1_3b():
    return local_checkpoint("EleutherAI/gpt-neo-1.3B")


def tokenize(folder, text):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"]


def test_125m_logits_match_transformers(folder_125m):
    from transformers import GPTNeoForCausalLM

    ids = np.array([tokenize(folder_125m, PROMPT)], dtype=np.int64)
    assert tokenize(folder_125m, "The dog") == THE_DOG
    neo = neo_numpy.load_model(folder_125m)
    assert (neo.config.hidden_size, neo.config.num_layers, neo.config.num_heads) == (768, 12, 12)
    assert neo.config.attention_layers == ("global", "local") * 6 and neo.config.window_size == 256
    reference_model = GPTNeoForCausalLM.from_pretrained(str(folder_125m), dtype=torch.float32).eval()
    with torch.no_grad():
        reference = reference_model(torch.as_tensor(ids)).logits.numpy()
    ours = neo.forward(ids)
    relative = relative_error(ours, reference)
    print(
        f"\n[parity] released 125M, {ids.shape[1]} tokens: "
        f"max abs {np.abs(ours - reference).max():.3e}, rel {relative:.3e}"
    )
    assert relative < 1e-5
    assert np.array_equal(ours.argmax(-1), reference.argmax(-1))


def test_1_3b_greedy_the_dog(folder_1_3b):
    neo = neo_numpy.load_model(folder_1_3b)
    assert (neo.config.hidden_size, neo.config.num_layers) == (2048, 24)
    output = neo.generate(np.array([THE_DOG]), max_new_tokens=18, do_sample=False)
    assert isinstance(output, np.ndarray) and output.shape == (1, 20)
    assert output[0].tolist() == THE_DOG_GREEDY_1_3B
