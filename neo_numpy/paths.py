"""The files of a checkpoint folder, examined as untrusted input before anything reads them.

Three rules, one place each:
- `kind_of(path)` says what is at a path. Python 3.11's Path.exists() and is_dir() raise OSError for a name that is
  too long (errno 36) and PermissionError inside a folder without search permission; here every such error becomes
  one CheckpointError sentence (as is the ValueError of a name holding a NUL character), and every path check of the
  package goes through here.
- `check_inside_folder(path, folder)`: a file that is a symbolic link must lead into the folder itself, or, in a
  Hugging Face cache snapshot (.../snapshots/<revision>/), into that repo's blobs/ folder, where the cache keeps the
  real files. A link elsewhere would make the loader read a file the user never pointed at.
- `check_small_file` and `read_bounded`: a regular file of at most `limit` bytes, checked before it is read, and
  read whole no further than `limit + 1` bytes (a file can grow). A FIFO is never opened for reading: opening one
  blocks until something writes to it.
"""

import errno
import stat
from pathlib import Path

from .errors import CheckpointError

LONGEST_SHOWN_PATH = 160  # characters of a path repeated in a message (a hostile name may be thousands long)


def shown(path) -> str:
    """The path as a message shows it: whole, or its first characters when it is very long."""
    text = str(path)
    return text if len(text) <= LONGEST_SHOWN_PATH else text[: LONGEST_SHOWN_PATH - 3] + "..."


def kind_of(path) -> str:
    """ "missing", "file", "folder", or what else is there ("FIFO", "socket", "device"), following symbolic links."""
    try:
        mode = Path(path).stat().st_mode
    except ValueError:  # a NUL character: no file system path can hold one
        raise CheckpointError(f"{shown(path)!r} is not a usable path: it holds a NUL character.") from None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return "missing"
        raise CheckpointError(f"{shown(path)} could not be examined ({error.strerror or error}).") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def check_is_file(path, needed_for: str) -> None:
    """Refuse, in one sentence, anything at `path` but a regular file; `needed_for` says why the file must exist."""
    kind = kind_of(path)
    if kind == "missing":
        raise CheckpointError(f"{shown(path)} does not exist: {needed_for}.")
    if kind != "file":
        raise CheckpointError(f"{shown(path)} is a {kind}, not a file: {needed_for}.")


def check_inside_folder(path: Path, folder: Path) -> None:
    """A symbolic link at `path` must lead to a file in `folder`, or in the blobs/ of the HF cache snapshot it is.

    The message names the link, never where it leads, so nothing about a file outside the folder is shown.
    """
    try:
        folder = folder.resolve()
        target = path.resolve()
    except (OSError, RuntimeError) as error:  # a symbolic link loop (RuntimeError before Python 3.13)
        message = getattr(error, "strerror", None) or error
        raise CheckpointError(f"{shown(path)} could not be examined ({message}).") from None
    allowed = [folder]
    if folder.parent.name == "snapshots":
        allowed.append(folder.parent.parent / "blobs")
    if target.parent not in allowed:
        raise CheckpointError(f"{shown(path)} is a link to a file outside {shown(folder)}; it must be a file there.")


def check_small_file(path: Path, limit: int, needed_for: str) -> None:
    """Refuse anything at `path` but a regular file of at most `limit` bytes."""
    check_is_file(path, needed_for)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise CheckpointError(f"{shown(path)} could not be examined ({error.strerror or error}).") from None
    if size > limit:
        raise CheckpointError(_too_large(path, limit))


def read_bounded(path: Path, limit: int, needed_for: str) -> bytes:
    """The bytes of the regular file at `path`, refused (before it is read) when it holds more than `limit`."""
    check_small_file(path, limit, needed_for)
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)  # a file that grew since it was checked is still read no further
    except OSError as error:
        raise CheckpointError(f"{shown(path)} could not be read ({error.strerror or error}).") from None
    if len(data) > limit:
        raise CheckpointError(_too_large(path, limit))
    return data


def _too_large(path: Path, limit: int) -> str:
    return f"{shown(path)} is larger than {limit // 1_000_000} MB, far more than a file of its kind holds."
