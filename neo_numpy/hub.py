"""Turn a model name into a local checkpoint folder, downloading from the Hugging Face Hub when needed.

"125M", "1.3B" and "2.7B" name EleutherAI's released models; any other "owner/name" is a hub repo id; anything
that exists on disk is used as it is. Downloads go to the project's weights/ folder (or $NEO_NUMPY_WEIGHTS):
weights/gpt-neo-125m for the released 125M, weights/<owner>/<name> for any other repo.
"""

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    HTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .checkpoint import read_shard_index
from .errors import CheckpointError, ModelNotFoundError
from .paths import kind_of, shown

SHORT_NAMES = {
    "125m": "EleutherAI/gpt-neo-125m",
    "1.3b": "EleutherAI/gpt-neo-1.3B",
    "2.7b": "EleutherAI/gpt-neo-2.7B",
}
DEFAULT_MODEL = "125M"

# Only what neo_numpy reads: the config, the safetensors weights (single or sharded) and the tokenizer files.
FILES_NEEDED = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
CHECKPOINT_PARTS = ("config.json", "safetensors weights", "tokenizer files")  # what neo_numpy reads of a folder
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def weights_dir() -> Path:
    """Where downloaded checkpoints go: $NEO_NUMPY_WEIGHTS, else weights/ at the top of the project when running
    from a checkout, else ~/.cache/neo_numpy (an installed package)."""
    if os.environ.get("NEO_NUMPY_WEIGHTS"):
        return Path(os.environ["NEO_NUMPY_WEIGHTS"])
    checkout = Path(__file__).resolve().parent.parent / "weights"
    return checkout if checkout.is_dir() else Path.home() / ".cache" / "neo_numpy"


def resolve_model_dir(name_or_path) -> Path:
    """Return a local folder holding the checkpoint `name_or_path`, downloading it if it is a hub model not yet here."""
    name = str(name_or_path)
    if not name.strip():
        raise ModelNotFoundError("the model name is empty: pass 125M, 1.3B, 2.7B, a hub id or a checkpoint folder.")
    try:
        local = Path(name).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not know (or no home folder at all)
        raise ModelNotFoundError(
            f"{shown(name)} does not exist: its home folder cannot be found; pass an existing checkpoint folder."
        ) from None
    kind = kind_of(local)
    if kind == "folder":
        return local
    if kind != "missing":
        raise ModelNotFoundError(
            f"{shown(local)} is a {kind}; pass the checkpoint folder that contains config.json instead."
        )
    repo_id = SHORT_NAMES.get(name.lower(), name)
    if not is_repo_id(repo_id) or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"{shown(local)} does not exist: pass an existing checkpoint folder, a hub id like "
            "EleutherAI/gpt-neo-125m, or one of 125M, 1.3B, 2.7B."
        )
    return _from_hub(repo_id)


def _from_hub(repo_id: str) -> Path:
    """Download what neo_numpy reads of `repo_id` into its folder, after checking that the repository has it all."""
    import huggingface_hub

    target = download_folder(repo_id)
    local = find_local_copy(repo_id)
    if local is not None:
        return local
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(_offline_failure(repo_id, target))
    with hub_quiet():
        try:
            repo_files = set(huggingface_hub.list_repo_files(repo_id))
        except (HTTPError, OSError) as error:  # HTTPError: the Hub client's transport errors
            raise ModelNotFoundError(_download_failure(repo_id, error)) from None
        lacking = missing_parts(lambda name: name in repo_files)
        if lacking:
            raise ModelNotFoundError(_repo_lacks(repo_id, lacking))
        if sys.stderr is not None:  # progress goes to stderr, never into the generated text on stdout
            print(f"Downloading {repo_id} into {target} ...", flush=True, file=sys.stderr)
        try:
            huggingface_hub.snapshot_download(repo_id, allow_patterns=FILES_NEEDED, local_dir=target)
        except (HTTPError, OSError) as error:
            raise ModelNotFoundError(_download_failure(repo_id, error)) from None
    missing = missing_from_checkpoint(target)
    if missing:
        raise ModelNotFoundError(
            f"the download of {repo_id} into {target} did not finish ({' and '.join(missing)} still missing); "
            "run it again."
        )
    return target


@contextmanager
def hub_quiet():
    """Silence huggingface_hub's own log lines (its progress bars stay): neo_numpy reports failures itself."""
    from huggingface_hub.utils import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)


def is_repo_id(name: str) -> bool:
    """ "owner/name" as the Hub spells repo ids: no "..", "--" or "/" inside a part, so it never escapes weights/."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return REPO_ID.match(name) is not None


def download_folder(repo_id: str) -> Path:
    """Where a hub model is kept: weights_dir()/<name> for EleutherAI's three released models, and
    weights_dir()/<owner>/<name> for any other repo, so someone-else/gpt-neo-125m never finds EleutherAI's copy."""
    released = {repo.lower(): repo for repo in SHORT_NAMES.values()}.get(repo_id.lower())
    if released is not None:
        return weights_dir() / released.split("/")[1]
    owner, name = repo_id.split("/")
    return weights_dir() / owner / name


def find_local_copy(repo_id: str):
    """A complete copy of `repo_id` already on this machine, in the weights folder or the Hugging Face cache
    (~/.cache/huggingface), or None. Needs no network."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    if is_complete_checkpoint(download_folder(repo_id)):
        return download_folder(repo_id)
    try:
        with hub_quiet():
            cached = huggingface_hub.snapshot_download(repo_id, allow_patterns=FILES_NEEDED, local_files_only=True)
    except LocalEntryNotFoundError:  # not in the cache, or only part of it
        return None
    return Path(cached) if is_complete_checkpoint(Path(cached)) else None


def is_complete_checkpoint(folder: Path) -> bool:
    """True when `folder` has everything neo_numpy reads: config.json, safetensors weights (single, or every shard
    of the index) and a tokenizer."""
    return not missing_from_checkpoint(folder)


def missing_from_checkpoint(folder: Path) -> list:
    """What `folder` lacks of a checkpoint, in words ([] when nothing): see missing_parts, plus unlisted shards."""
    missing = missing_parts(lambda name: kind_of(folder / name) == "file")
    index = folder / "model.safetensors.index.json"
    if not missing and kind_of(folder / "model.safetensors") != "file" and not _has_every_shard(index):
        missing.append("shards listed in model.safetensors.index.json")
    return missing


def missing_parts(present) -> list:
    """The parts of a checkpoint (CHECKPOINT_PARTS) that `present` (file name -> bool) does not find."""
    found = (
        present("config.json"),
        present("model.safetensors") or present("model.safetensors.index.json"),
        present("tokenizer.json") or (present("vocab.json") and present("merges.txt")),
    )
    return [part for part, here in zip(CHECKPOINT_PARTS, found) if not here]


def _has_every_shard(index: Path) -> bool:
    try:
        shards = set(read_shard_index(index).values())
    except CheckpointError:
        return False
    return bool(shards) and all(kind_of(index.parent / shard) == "file" for shard in shards)


def _repo_lacks(repo_id: str, lacking: list) -> str:
    advice = (
        "neo_numpy does not load pickle weights: convert them with transformers' save_pretrained and pass that folder"
        if "safetensors weights" in lacking
        else "pass a local checkpoint folder"
    )
    return f"{repo_id} on the Hugging Face Hub has no {' and no '.join(lacking)}; {advice} instead."


def _offline_failure(repo_id: str, target: Path) -> str:
    missing = missing_from_checkpoint(target) if kind_of(target) == "folder" else []
    if missing and len(missing) < len(CHECKPOINT_PARTS):  # some of it is there
        return (
            f"{target} holds an unfinished download of {repo_id} (no {' and no '.join(missing)}), and HF_HUB_OFFLINE "
            "is set; finish it on a connected machine or pass a complete local checkpoint folder instead."
        )
    return (
        f"{repo_id} is not in {target} or the Hugging Face cache, and HF_HUB_OFFLINE is set; "
        "download it on a connected machine or pass a local checkpoint folder instead."
    )


def _download_failure(repo_id: str, error: Exception) -> str:
    if isinstance(error, (RepositoryNotFoundError, GatedRepoError)):
        return (
            f"{repo_id} is not a model repository the Hugging Face Hub will serve; "
            "check the name or pass a local folder."
        )
    if isinstance(error, RevisionNotFoundError):
        return f"{repo_id} has no such revision on the Hugging Face Hub."
    return (
        f"could not download {repo_id} from the Hugging Face Hub ({type(error).__name__}); "
        "check the network connection, or pass a local checkpoint folder instead."
    )
