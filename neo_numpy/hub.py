"""Turn a model name into a local checkpoint folder, downloading from the Hugging Face Hub when needed.

"125M", "1.3B" and "2.7B" name EleutherAI's released models; any other "owner/name" is a hub repo id; anything
that exists on disk is used as it is. Downloads go to the project's weights/ folder (or $NEO_NUMPY_WEIGHTS):
weights/gpt-neo-125m for the released 125M, weights/<owner>/<name> for any other repo.
"""

import os
import re
import sys
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
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(
                f"{local} is a file; pass the checkpoint folder that contains config.json instead."
            )
        return local
    repo_id = SHORT_NAMES.get(name.lower(), name)
    if not is_repo_id(repo_id) or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"{local} does not exist: pass an existing checkpoint folder, a hub id like EleutherAI/gpt-neo-125m, "
            "or one of 125M, 1.3B, 2.7B."
        )
    return _from_hub(repo_id)


def _from_hub(repo_id: str) -> Path:
    import huggingface_hub

    target = download_folder(repo_id)
    local = find_local_copy(repo_id)
    if local is not None:
        return local
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(
            f"{repo_id} is not in {target} or the Hugging Face cache, and HF_HUB_OFFLINE is set; "
            "download it on a connected machine or pass a local checkpoint folder instead."
        )
    if sys.stderr is not None:  # progress goes to stderr, never into the generated text on stdout
        print(f"Downloading {repo_id} into {target} ...", flush=True, file=sys.stderr)
    try:
        huggingface_hub.snapshot_download(repo_id, allow_patterns=FILES_NEEDED, local_dir=target)
    except (HTTPError, OSError) as error:  # HTTPError: the Hub client's transport errors
        raise ModelNotFoundError(_download_failure(repo_id, error)) from None
    if not is_complete_checkpoint(target):
        raise ModelNotFoundError(
            f"{repo_id} on the Hugging Face Hub has no config.json with safetensors weights (neo_numpy does not load "
            "pickle files); convert it with transformers' save_pretrained and pass that folder instead."
        )
    return target


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
        cached = Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=FILES_NEEDED, local_files_only=True))
    except LocalEntryNotFoundError:  # not in the cache
        return None
    return cached if is_complete_checkpoint(cached) else None


def is_complete_checkpoint(folder: Path) -> bool:
    """True when `folder` has a config.json and its safetensors weights, single or with every shard of the index."""
    if not (folder / "config.json").is_file():
        return False
    if (folder / "model.safetensors").is_file():
        return True
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return False
    try:
        shards = set(read_shard_index(index).values())
    except CheckpointError:
        return False
    return bool(shards) and all((folder / shard).is_file() for shard in shards)


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
