"""neo_numpy.hub.resolve_model_dir: local folders, short names, the weights folder, the HF cache and downloads.

No test reaches the network: huggingface_hub.snapshot_download is replaced by a fake that records its arguments.
"""

import json
import logging
import re
import shutil
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
from checkpoints import SOURCE
from conftest import expect_error
from huggingface_hub.errors import HTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import filter_repo_objects

import neo_numpy
from neo_numpy import ModelNotFoundError, hub
from neo_numpy.hub import resolve_model_dir

REPO_125M = "EleutherAI/gpt-neo-125m"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")  # what neo_numpy needs, at least


class FakeSnapshotDownload:
    """Stands in for huggingface_hub.snapshot_download: records every call, then answers as told.

    cache: what a cache probe (local_files_only=True) finds: a folder to return, or None (LocalEntryNotFoundError).
    download: an exception to raise for a real download, or a list of files to write into local_dir.
    repo_files: what huggingface_hub.list_repo_files answers (the repo's files), or an exception to raise.
    """

    def __init__(self, cache=None, download=CHECKPOINT_FILES, repo_files=None):
        self.calls, self.cache, self.download = [], cache, download
        listed = download if isinstance(download, tuple) else CHECKPOINT_FILES
        self.repo_files = listed if repo_files is None else repo_files

    def list_repo_files(self, repo_id, **kwargs):
        if isinstance(self.repo_files, BaseException):
            raise self.repo_files
        return list(self.repo_files)

    def __call__(self, repo_id, **kwargs):
        self.calls.append(dict(kwargs, repo_id=repo_id))
        if kwargs.get("local_files_only"):
            if self.cache is None:
                raise LocalEntryNotFoundError(f"{repo_id} is not in the cache")
            return str(self.cache)
        if isinstance(self.download, BaseException):
            raise self.download
        local_dir = Path(kwargs["local_dir"])
        local_dir.mkdir(parents=True, exist_ok=True)
        for name in self.download:
            (local_dir / name).write_text("{}")
        return str(local_dir)

    @property
    def downloads(self):
        return [call for call in self.calls if not call.get("local_files_only")]


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """An empty weights folder, set as $NEO_NUMPY_WEIGHTS; the network is 'up' (not offline) unless a test says."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("NEO_NUMPY_WEIGHTS", str(folder))
    offline(monkeypatch, False)
    return folder


def offline(monkeypatch, value: bool):
    """HF_HUB_OFFLINE as huggingface_hub read it from the environment at import."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", value)


def install(monkeypatch, fake):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake.list_repo_files)
    return fake


def complete_folder(folder, files=CHECKPOINT_FILES):
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_text("{}")
    return folder


def one_sentence(message):
    return message.endswith(".") and "\n" not in message and len(re.findall(r"[.;:!?]\s+[A-Z]", message)) == 0


# ---------------------------------------------------------------------------------------------- local paths


def test_existing_folder_is_returned_as_is(tmp_path, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload())
    assert resolve_model_dir(tmp_path) == tmp_path
    assert resolve_model_dir(str(tmp_path)) == tmp_path
    assert fake.calls == []


def test_existing_folder_named_like_a_short_name_wins(tmp_path, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload())
    (tmp_path / "125M").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("125M") == Path("125M")
    assert fake.calls == []


@pytest.mark.parametrize("kind", ["absolute", "relative", "home"])
def test_missing_path_is_named(tmp_path, monkeypatch, weights, kind):
    fake = install(monkeypatch, FakeSnapshotDownload())
    monkeypatch.chdir(tmp_path)
    path = {
        "absolute": str(tmp_path / "nowhere" / "model"),
        "relative": "./no-such-model",
        "home": "~/no-such-model-xyz",
    }[kind]
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir(path)
    assert str(Path(path).expanduser()) in str(error.value)
    assert "does not exist" in str(error.value)
    assert fake.calls == []


@pytest.mark.parametrize("name", ["~no_such_user_xyz/model", "~no_such_user_xyz"])
def test_home_of_an_unknown_user_is_named(name, weights, monkeypatch):
    """Path.expanduser() raises RuntimeError ("Could not determine home directory") for "~user" of an unknown user."""
    fake = install(monkeypatch, FakeSnapshotDownload())
    with expect_error(ModelNotFoundError, name, "does not exist", "home folder"):
        resolve_model_dir(name)
    for load in (neo_numpy.load_model, neo_numpy.load_tokenizer, neo_numpy.open_checkpoint):
        with expect_error(ModelNotFoundError, name):
            load(name)
    assert fake.calls == []


def test_a_file_is_not_a_checkpoint_folder(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="folder") as error:
        resolve_model_dir(file)
    assert str(file) in str(error.value)


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, repo_id",
    [
        ("125M", "EleutherAI/gpt-neo-125m"),
        ("125m", "EleutherAI/gpt-neo-125m"),
        ("1.3B", "EleutherAI/gpt-neo-1.3B"),
        ("1.3b", "EleutherAI/gpt-neo-1.3B"),
        ("2.7B", "EleutherAI/gpt-neo-2.7B"),
        ("2.7b", "EleutherAI/gpt-neo-2.7B"),
        ("EleutherAI/gpt-neo-125m", "EleutherAI/gpt-neo-125m"),
        ("someone/tiny-gpt-neo", "someone/tiny-gpt-neo"),
    ],
)
def test_names_map_to_repo_ids(name, repo_id, weights, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload())
    folder = resolve_model_dir(name)
    released = repo_id.startswith("EleutherAI/")  # weights/<name> for those, weights/<owner>/<name> for others
    assert folder == (weights / repo_id.split("/")[1] if released else weights / repo_id)
    assert {call["repo_id"] for call in fake.calls} == {repo_id}


@pytest.mark.parametrize("name", ["gpt-neo", "350M", "a/b/c", "zz/..", "EleutherAI/..", "a--b/c"])
def test_unknown_names_are_refused_without_network(name, weights, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload())
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir(name)
    assert name in str(error.value) and "125M" in str(error.value)
    assert fake.calls == []


# ---------------------------------------------------------------------------------------------- local copies first


def test_weights_folder_is_used_without_network(weights, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload(download=ConnectionError("no network in this test")))
    folder = complete_folder(weights / "gpt-neo-125m")
    assert resolve_model_dir("125M") == folder
    assert resolve_model_dir("EleutherAI/gpt-neo-125m") == folder
    assert fake.calls == []


def test_released_name_folder_serves_no_other_owner(weights, monkeypatch):
    offline(monkeypatch, True)
    fake = install(monkeypatch, FakeSnapshotDownload())
    complete_folder(weights / "gpt-neo-125m")
    with pytest.raises(ModelNotFoundError, match="someone-else/gpt-neo-125m"):
        resolve_model_dir("someone-else/gpt-neo-125m")
    theirs = complete_folder(weights / "someone-else" / "gpt-neo-125m")
    assert resolve_model_dir("someone-else/gpt-neo-125m") == theirs
    assert resolve_model_dir("125M") == weights / "gpt-neo-125m"
    assert fake.downloads == []


def test_weights_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO_NUMPY_WEIGHTS", str(tmp_path / "elsewhere"))
    assert hub.weights_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("NEO_NUMPY_WEIGHTS")
    assert hub.weights_dir() == Path(hub.__file__).resolve().parent.parent / "weights"


def test_hf_cache_copy_is_used(weights, tmp_path, monkeypatch):
    """A copy in the Hugging Face cache (found with local_files_only=True) needs no download, even offline."""
    offline(monkeypatch, True)
    # the real snapshot_download, on a cache laid out by hand the way huggingface_hub lays it out
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    storage = tmp_path / "hf-cache" / "models--EleutherAI--gpt-neo-125m"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    snapshot = complete_folder(
        storage / "snapshots" / commit, ("config.json", "model.safetensors", "vocab.json", "merges.txt")
    )
    assert Path(resolve_model_dir("125M")).resolve() == snapshot.resolve()


def test_incomplete_hf_cache_copy_is_not_used(weights, tmp_path, monkeypatch):
    offline(monkeypatch, True)
    cached = complete_folder(tmp_path / "cache-snapshot", ("config.json",))  # no weights
    fake = install(monkeypatch, FakeSnapshotDownload(cache=cached))
    with pytest.raises(ModelNotFoundError):
        resolve_model_dir("125M")
    assert len(fake.calls) == 1 and fake.calls[0]["local_files_only"] is True


# ---------------------------------------------------------------------------------------------- offline and failures


def test_offline_without_local_copy(weights, monkeypatch):
    offline(monkeypatch, True)
    fake = install(monkeypatch, FakeSnapshotDownload())
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir("125M")
    message = str(error.value)
    print(f"\n[offline] {message}")
    assert one_sentence(message), message
    assert "HF_HUB_OFFLINE" in message and "local" in message and REPO_125M in message
    assert str(weights / "gpt-neo-125m") in message
    assert fake.downloads == []  # the cache probe may run, a download must not


@pytest.mark.parametrize(
    "failure",
    [
        HTTPError("Failed to establish a new connection"),
        OSError("Network is unreachable"),
        LocalEntryNotFoundError("cannot reach the Hub and the files are not cached"),  # what hf_hub raises offline
    ],
    ids=["HTTPError", "OSError", "LocalEntryNotFoundError"],
)
def test_download_failure(weights, monkeypatch, failure):
    fake = install(monkeypatch, FakeSnapshotDownload(download=failure))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir("125M")
    message = str(error.value)
    print(f"\n[download failure] {message}")
    assert one_sentence(message), message
    assert "could not download" in message and REPO_125M in message
    assert "local" in message and "folder" in message
    assert len(fake.downloads) == 1


# ---------------------------------------------------------------------------------------------- sharded folders


def sharded_folder(folder, present):
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    complete_folder(folder, ("config.json", "tokenizer.json"))
    index = {"metadata": {}, "weight_map": {"transformer.wte.weight": shards[0], "transformer.ln_f.bias": shards[1]}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    for shard in shards[:present]:
        (folder / shard).write_bytes(b"")
    return folder


def test_sharded_folder_is_complete_only_with_every_shard(weights, monkeypatch):
    offline(monkeypatch, True)
    fake = install(monkeypatch, FakeSnapshotDownload())
    folder = sharded_folder(weights / "gpt-neo-1.3B", present=1)
    with pytest.raises(ModelNotFoundError):
        resolve_model_dir("1.3B")
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert resolve_model_dir("1.3B") == folder
    assert fake.downloads == []


def test_missing_shard_is_downloaded_into_the_same_folder(weights, monkeypatch):
    listing = ("config.json", "tokenizer.json", "model.safetensors.index.json", "model-00002-of-00002.safetensors")
    fake = install(monkeypatch, FakeSnapshotDownload(download=listing[-1:], repo_files=listing))
    folder = sharded_folder(weights / "gpt-neo-1.3B", present=1)
    assert resolve_model_dir("1.3B") == folder
    assert len(fake.downloads) == 1 and Path(fake.downloads[0]["local_dir"]) == folder


@pytest.mark.parametrize(
    "index_text",
    ["{ not json", "[]", '{"metadata": {}}', '{"weight_map": []}', '{"weight_map": {}}', '{"weight_map": {"a": null}}'],
)
def test_unreadable_index_is_not_complete(weights, monkeypatch, index_text):
    offline(monkeypatch, True)
    install(monkeypatch, FakeSnapshotDownload())
    folder = complete_folder(weights / "gpt-neo-2.7B", ("config.json", "tokenizer.json"))
    (folder / "model.safetensors.index.json").write_text(index_text)
    with pytest.raises(ModelNotFoundError):
        resolve_model_dir("2.7B")


def test_folder_without_config_is_not_complete(weights, monkeypatch):
    offline(monkeypatch, True)
    install(monkeypatch, FakeSnapshotDownload())
    complete_folder(weights / "gpt-neo-125m", ("model.safetensors", "tokenizer.json"))
    with pytest.raises(ModelNotFoundError):
        resolve_model_dir("125M")


# ---------------------------------------------------------------------------------------------- what is downloaded

HUB_FILES_125M = [  # the files of EleutherAI/gpt-neo-125m on the Hub
    ".gitattributes",
    "README.md",
    "config.json",
    "flax_model.msgpack",
    "merges.txt",
    "model.safetensors",
    "pytorch_model.bin",
    "rust_model.ot",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "vocab.json",
]
HUB_FILES_SHARDED = [
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "pytorch_model-00001-of-00002.bin",
    "pytorch_model-00002-of-00002.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "tokenizer.json",
]


def test_download_arguments(weights, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload())
    folder = resolve_model_dir("125M")
    assert folder == weights / "gpt-neo-125m"
    assert hub.is_complete_checkpoint(folder)
    (download,) = fake.downloads
    assert download["repo_id"] == REPO_125M
    assert Path(download["local_dir"]) == folder
    assert Path(download["local_dir"]).resolve().is_relative_to(weights.resolve())
    patterns = download["allow_patterns"]
    assert patterns, "snapshot_download must be limited to the files neo_numpy reads"
    chosen = set(filter_repo_objects(HUB_FILES_125M, allow_patterns=patterns))
    assert chosen == {
        "config.json",
        "model.safetensors",
        "merges.txt",
        "vocab.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    }
    chosen = set(filter_repo_objects(HUB_FILES_SHARDED, allow_patterns=patterns))
    assert chosen == {
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    }
    for call in fake.calls:  # the cache probe is limited the same way
        assert call["allow_patterns"] == patterns


def test_second_resolve_uses_the_downloaded_copy(weights, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload())
    first = resolve_model_dir("125M")
    count = len(fake.calls)
    offline(monkeypatch, True)
    assert resolve_model_dir("125m") == first
    assert len(fake.calls) == count


def test_repo_without_safetensors_is_refused_after_download(weights, monkeypatch):
    """Found from the repo's file list, before anything is downloaded."""
    files = ("config.json", "vocab.json", "merges.txt", "pytorch_model.bin")
    fake = install(monkeypatch, FakeSnapshotDownload(download=files))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir("someone/pickle-only-neo")
    message = str(error.value)
    assert "someone/pickle-only-neo" in message and "safetensors" in message and "folder" in message
    assert "tokenizer" not in message and one_sentence(message)
    assert fake.downloads == []


def test_repo_without_tokenizer_is_refused_before_download(weights, monkeypatch):
    fake = install(monkeypatch, FakeSnapshotDownload(download=("config.json", "model.safetensors")))
    with pytest.raises(ModelNotFoundError, match="has no tokenizer files"):
        resolve_model_dir("someone/no-tokenizer")
    assert fake.downloads == []


# ---------------------------------------------------------------------------------------------- unfinished copies


def test_folder_with_weights_but_no_tokenizer_is_completed(weights, monkeypatch):
    """A copy without a tokenizer is not complete: the next resolve fetches the missing files into it."""
    folder = complete_folder(weights / "gpt-neo-125m", ("config.json", "model.safetensors"))
    assert not hub.is_complete_checkpoint(folder)
    assert hub.missing_from_checkpoint(folder) == ["tokenizer files"]
    fake = install(monkeypatch, FakeSnapshotDownload())
    assert resolve_model_dir("125M") == folder and hub.is_complete_checkpoint(folder)
    assert len(fake.downloads) == 1 and Path(fake.downloads[0]["local_dir"]) == folder


def test_interrupted_download_offline(weights, monkeypatch):
    """A folder holding only config.json, HF_HUB_OFFLINE set: one sentence saying what is missing, nothing more."""
    offline(monkeypatch, True)
    install(monkeypatch, FakeSnapshotDownload())
    folder = complete_folder(weights / "gpt-neo-125m", ("config.json",))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir("125M")
    message = str(error.value)
    print(f"\n[offline, unfinished] {message}")
    assert one_sentence(message) and str(folder) in message and "unfinished" in message
    assert "safetensors weights" in message and "tokenizer files" in message and "HF_HUB_OFFLINE" in message
    assert "pickle" not in message and "has no" not in message


def test_interrupted_download_without_network(weights, monkeypatch):
    """The Hub cannot be reached (no HF_HUB_OFFLINE): the repo is not said to lack anything."""
    install(monkeypatch, FakeSnapshotDownload(repo_files=HTTPError("[Errno -3] Temporary failure in name resolution")))
    complete_folder(weights / "gpt-neo-125m", ("config.json",))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir("125M")
    message = str(error.value)
    assert one_sentence(message) and "could not download" in message and "pickle" not in message


def test_download_that_stops_early(weights, monkeypatch):
    fake = FakeSnapshotDownload(download=("config.json",), repo_files=CHECKPOINT_FILES)
    install(monkeypatch, fake)
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_dir("125M")
    message = str(error.value)
    assert one_sentence(message) and "did not finish" in message and "safetensors weights" in message


def test_huggingface_hub_log_lines_are_silenced(weights, monkeypatch, caplog):
    """huggingface_hub's own warnings (such as 'Returning existing local_dir ...') are not printed."""

    class Chatty(FakeSnapshotDownload):
        def __call__(self, repo_id, **kwargs):
            logging.getLogger("huggingface_hub._snapshot_download").warning("Returning existing local_dir")
            return super().__call__(repo_id, **kwargs)

    install(monkeypatch, Chatty())
    caplog.set_level(logging.WARNING)
    resolve_model_dir("125M")
    assert not [record for record in caplog.records if "local_dir" in record.getMessage()]
    assert logging.getLogger("huggingface_hub").getEffectiveLevel() == logging.WARNING  # restored afterwards


# ---------------------------------------------------------------------------------------------- hostile names


@pytest.fixture
def offline_weights(tmp_path, monkeypatch):
    """An empty weights folder and Hugging Face cache, offline."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("NEO_NUMPY_WEIGHTS", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return folder


def test_another_owners_repo_never_gets_eleutherais_folder(offline_weights, checkpoint_dirs):
    released = shutil.copytree(checkpoint_dirs[SOURCE], offline_weights / "gpt-neo-125m")  # the released 125M's folder
    assert hub.resolve_model_dir("125M") == released
    assert hub.resolve_model_dir("EleutherAI/gpt-neo-125m") == released
    with expect_error(ModelNotFoundError, "someone-else/gpt-neo-125m", "HF_HUB_OFFLINE"):
        neo_numpy.load_model("someone-else/gpt-neo-125m")
    theirs = shutil.copytree(checkpoint_dirs[SOURCE], offline_weights / "someone-else" / "gpt-neo-125m")
    assert hub.resolve_model_dir("someone-else/gpt-neo-125m") == theirs
    assert hub.download_folder("someone-else/gpt-neo-125m") == theirs
    assert hub.download_folder("EleutherAI/gpt-neo-125m") == released


@pytest.mark.parametrize("name", ["zz/..", "zz/../..", "EleutherAI/..", "a/b/../../..", "x/-y", "a--b/c"])
def test_names_that_escape_the_weights_folder_are_refused(offline_weights, monkeypatch, tmp_path, name):
    monkeypatch.chdir(tmp_path)  # no folder "zz" here, so these are not existing paths
    (offline_weights / "config.json").write_text("{}")  # what "zz/.." would have found
    with expect_error(ModelNotFoundError, name, "does not exist"):
        neo_numpy.load_model(name)


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_model_name(name):
    with expect_error(ModelNotFoundError, "empty"):
        neo_numpy.load_model(name)
