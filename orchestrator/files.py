"""The files this tool writes (reports, a snapshot's inventories, the ledger and its lock): readable by their
owner only, and never written through a link someone planted.

- `private_dir`: a folder the tool makes for itself (a run's report folder). Made 0700 (less if the umask
  asks for less), missing parents too; refused if it is a symbolic link, not a folder, or another user's.
- `named_dir`: a folder the user named (`--report-dir`, the ledger's folder). Made like `private_dir` when
  missing; an existing one (a link to one too: the user chose it) only has to be a folder.
- `write_private`: a whole file written into a private folder: a new temporary file beside it (created with
  O_EXCL|O_NOFOLLOW, 0600), fsynced, then renamed over the target (which is refused if it is a link). The
  rename replaces a name and never follows a link; a reader sees the old file or the new one, never half.
- `private_file`, `private_if_present`, `open_private`: a file written in place (the ledger, its lock):
  created 0600 without following a link; an existing one must be a regular file of this user's with no
  other name, and is made 0600 if it was not (files written before this module existed).

A refusal is `UnsafePath`, an `OSError` like any other reason a file cannot be written: it names the path,
what is wrong and the fix. Where it can happen before anything is sent, callers turn it into an
`InputError` (`report.check_report_dir`, `Ledger.open`, `Ledger.lock`).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path
from typing import Final

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700  # and less, if the umask asks for less (mkdir applies it)
_NO_LINK: Final = os.O_NOFOLLOW | os.O_CLOEXEC
_LINK: Final = "is a symbolic link, which this tool never writes through"
_LINK_FIX: Final = "remove it (someone may have planted it), or choose another path"


class UnsafePath(OSError):
    """A file or folder this tool will not write: a symbolic link, not what it should be, or another user's."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        super().__init__(errno.EPERM, f"{problem}; {fix}", str(path))
        self.path = path
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}; {self.fix}"


def private_dir(path: Path) -> Path:
    """`path` as a folder of this user's own, not a link; made (mode 0700 & ~umask) with its missing parents."""
    _make_dirs(path)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(path, _LINK, _LINK_FIX)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(path, "is not a folder", "remove it, or choose another path")
    _refuse_foreign(path, info)
    return path


def named_dir(path: Path) -> Path:
    """`path`, a folder the user named: made like `private_dir` when missing; an existing one (or a link to
    one: the user chose it) must be a folder."""
    _make_dirs(path)
    if not path.is_dir():
        raise UnsafePath(path, "is not a folder", "choose a folder")
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` as a new file of mode 0600, atomically, never through a link. Its folder
    must be this user's and not a link (`private_dir`); a link or anything but a regular file at `path` is
    refused, and nothing is written."""
    folder = _open_folder(path.parent)
    try:
        with suppress(FileNotFoundError):
            _check_file(path, os.stat(path.name, dir_fd=folder, follow_symlinks=False), renamed_over=True)
        temporary = f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINK, FILE_MODE, dir_fd=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise
    finally:
        os.close(folder)


def open_private(path: Path, flags: int) -> int:
    """`os.open(path, flags)` for a file written in place: never through a link, created 0600; an existing
    file must be a regular file of this user's with no other name, and is made 0600. Returns the descriptor."""
    try:
        fd = os.open(path, flags | _NO_LINK, FILE_MODE)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePath(path, _LINK, _LINK_FIX) from None
        raise
    try:
        info = os.fstat(fd)
        _check_file(path, info)
        _refuse_foreign(path, info)
        if stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> os.stat_result:
    """Make sure `path` is a regular file of this user's, 0600, with no other name, without keeping it open
    (SQLite's locks die with any descriptor of the file closed in the process): created so when missing.
    Returns what it is, for `same_file` to check later that it is still that file."""
    with suppress(FileExistsError):
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    info = private_if_present(path)
    if info is None:  # removed this very moment: it is not what was checked
        raise UnsafePath(path, "was removed while it was being opened", "make sure no one else can write its folder")
    return info


def private_if_present(path: Path) -> os.stat_result | None:
    """`private_file` for a file that may be missing (and is then left so): None when missing."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    _check_file(path, info)
    _refuse_foreign(path, info)
    if stat.S_IMODE(info.st_mode) != FILE_MODE:
        os.chmod(path, FILE_MODE)  # checked above to be our own regular file
    return info


def same_file(path: Path, before: os.stat_result) -> None:
    """Refuse `path` if it is no longer the file `before` describes (replaced while it was being opened)."""
    info = os.lstat(path)
    if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino) or stat.S_ISLNK(info.st_mode):
        raise UnsafePath(path, "was replaced while it was being opened", "make sure no one else can write its folder")


def _make_dirs(path: Path) -> None:
    """mkdir -p, every folder made with DIR_MODE (the umask applies); what exists is left as it is."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with suppress(FileExistsError):  # made by someone else meanwhile: checked by the caller
            os.mkdir(folder, DIR_MODE)


def _open_folder(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NO_LINK)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):  # Linux says ENOTDIR for a link
            raise UnsafePath(path, _LINK, _LINK_FIX) from None
        if error.errno == errno.ENOTDIR:
            raise UnsafePath(path, "is not a folder", "remove it, or choose another path") from None
        raise
    try:
        _refuse_foreign(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_file(path: Path, info: os.stat_result, *, renamed_over: bool = False) -> None:
    """A regular file, not a link; one written in place must have no other name (a rename replaces one name)."""
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(path, _LINK, _LINK_FIX)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath(path, "is not a regular file", "remove it, or choose another path")
    if info.st_nlink > 1 and not renamed_over:
        raise UnsafePath(path, "has other names (hard links)", "remove it, or choose another path")


def _refuse_foreign(path: Path, info: os.stat_result) -> None:
    if info.st_uid != os.geteuid():
        raise UnsafePath(path, f"belongs to another user (uid {info.st_uid})", "choose a path of your own")
