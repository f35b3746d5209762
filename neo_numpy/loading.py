"""The front door: a model name or folder in, a Checkpoint (folder, config, tokenizer) or a ready NeoModel out.

checkpoint = open_checkpoint("125M")        # finds or downloads the folder, reads and checks config.json
model = load_model(checkpoint)              # reads the weights; nothing is resolved or parsed a second time
ids = checkpoint.tokenizer.encode("Hello")  # the tokenizer is read on first use, checked against the config
"""

from pathlib import Path

from .backend import get_backend
from .checkpoint import load_weights
from .config import NeoConfig
from .hub import DEFAULT_MODEL, resolve_model_dir
from .model import NeoModel
from .paths import kind_of
from .threads import ThreadPlan
from .tokenizer import NeoTokenizer, tokenizer_from_folder


class Checkpoint:
    """A checkpoint folder with its config.json read and checked; its tokenizer is read on first use, then kept."""

    def __init__(self, folder: Path, config: NeoConfig):
        self.folder = folder  # holds config.json, the safetensors weights and the tokenizer files
        self.config = config
        self._tokenizer = None

    @property
    def tokenizer(self) -> NeoTokenizer:
        """The folder's tokenizer, refused if it can produce an id the model has no embedding for."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_folder(self.folder, self.config)
        return self._tokenizer

    def __repr__(self):
        return f"Checkpoint({self.folder})"


def open_checkpoint(name_or_path=DEFAULT_MODEL) -> Checkpoint:
    """ "125M", "1.3B", "2.7B", a hub id or a local folder -> its Checkpoint (a Checkpoint is returned as it is)."""
    if isinstance(name_or_path, Checkpoint):
        return name_or_path
    folder = resolve_model_dir(name_or_path)
    return Checkpoint(folder, NeoConfig.from_file(folder / "config.json"))


def load_model(name_or_path=DEFAULT_MODEL, backend: str = "numpy", dtype: str = "float32", threads=None) -> NeoModel:
    """Load a GPT-Neo checkpoint: "125M", "1.3B", "2.7B", a hub id, a local folder with config.json + safetensors,
    or a Checkpoint from open_checkpoint.

    backend: "numpy" (CPU) or "cupy" (NVIDIA GPU); dtype: weight storage, "float32" (or "float16" on the GPU);
    threads: BLAS threads, None for the default plan, an int for all work, or a threads.ThreadPlan.
    """
    plan = ThreadPlan.choose(threads)  # bad values are refused before anything is read
    chosen = get_backend(backend, dtype)
    checkpoint = open_checkpoint(name_or_path)
    weights = load_weights(checkpoint.folder, checkpoint.config, chosen.asarray)
    return NeoModel(checkpoint.config, weights, chosen, checkpoint.folder, plan)


def load_tokenizer(name_or_path=DEFAULT_MODEL) -> NeoTokenizer:
    """The tokenizer of a checkpoint (a name, a folder or a Checkpoint): tokenizer.json, or vocab.json + merges.txt.

    When the folder has a config.json the tokenizer is checked against it, as NeoModel.tokenizer is; a folder
    holding only tokenizer files gives its tokenizer unchecked.
    """
    if isinstance(name_or_path, Checkpoint):
        return name_or_path.tokenizer
    folder = resolve_model_dir(name_or_path)
    if kind_of(folder / "config.json") == "missing":
        return tokenizer_from_folder(folder)
    return open_checkpoint(folder).tokenizer
