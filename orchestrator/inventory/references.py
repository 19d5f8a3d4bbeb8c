"""The secrets an inventory references (`password_env`, `passcode_file`, ...), read from the environment and
from files: each reference read once however many entries share it, never echoed in a message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from orchestrator.inventory.sources import Entry, Problems

SECRET_FILE_CAP: Final = 64 * 1024  # bytes: a password or passcode is far shorter; /dev/zero is not read whole


def read_secret(
    entry: Entry, kind: str, base: Path, problems: Problems, cache: dict[tuple[str, str], str | None]
) -> str | None:
    env_key, file_key = f"{kind}_env", f"{kind}_file"
    env_name, file_name = entry.values.get(env_key), entry.values.get(file_key)
    if env_name is not None and file_name is not None:
        problems.add(entry.where[file_key], f"{entry.label}: give {env_key} or {file_key}, not both")
        return None
    if env_name is None and file_name is None:
        problems.add(
            entry.location,
            f'{entry.label}: no {kind}; write {env_key} = "VARIABLE" or {file_key} = "path" '
            "(in [defaults] or in the entry)",
        )
        return None
    if env_name is not None:
        key, where = ("env", str(env_name)), entry.where[env_key]
        if key not in cache:
            cache[key] = os.environ.get(str(env_name)) or None
        if cache[key] is None:
            problems.add(
                where,
                f"{_owner(entry, env_key)}: {env_key}: the environment variable {env_name} is not set (or empty); "
                "export it before the run",
            )
        return cache[key]
    # Keyed by the reference as written, then by the file it resolves to: 10,000 entries inheriting one
    # `password_file` resolve its path once (a resolve each cost a 10,000-deployment run's start a second).
    written, where = ("written", f"{base}\0{file_name}"), entry.where[file_key]
    if written not in cache:
        path = (base / str(file_name)).resolve()
        key = ("file", str(path))
        if key not in cache:
            cache[key] = _read_secret_file(path, f"{_owner(entry, file_key)}: {file_key}", where, problems)
        cache[written] = cache[key]
    return cache[written]


def _owner(entry: Entry, key: str) -> str:
    """Who a message is about: the entry, or [defaults] when the key was inherited (said once for all)."""
    return "[defaults]" if key in entry.inherited else entry.label


def _read_secret_file(path: Path, key: str, where: str, problems: Problems) -> str | None:
    """The one line of the regular file at `path` (a link to one is fine: Kubernetes mounts secrets so). A
    FIFO, a device, a folder, a huge file or a second line is a problem: a run must not hang, fill memory
    or send two lines as one secret. The value is never in a message."""
    fix, data = "point it at a regular file holding the secret on one line", b""
    try:
        mode = os.stat(path).st_mode  # looked at before opening: a FIFO or a device is never opened
        if stat.S_ISREG(mode):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                mode = os.fstat(fd).st_mode  # what was opened, not what the name showed a moment before
                data = _read_capped(fd) if stat.S_ISREG(mode) else b""
            finally:
                os.close(fd)
    except OSError as exc:
        problems.add(where, f"{key}: cannot read {path} ({exc.strerror}); check the path and its permissions")
        return None
    if not stat.S_ISREG(mode):
        problems.add(where, f"{key}: {path} is {_kind(mode)}, not a regular file; {fix}")
        return None
    if len(data) > SECRET_FILE_CAP:
        problems.add(where, f"{key}: {path} is over {SECRET_FILE_CAP // 1024} KiB, too large for a secret; {fix}")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problems.add(where, f"{key}: {path} is not UTF-8 text; {fix}")
        return None
    filled = [number for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not filled:
        problems.add(where, f"{key}: {path} is empty")
        return None
    if len(filled) > 1:
        problems.add(
            where,
            f"{key}: a second line at {path}:{filled[1]}; the file must hold the secret alone, on one line "
            "(a final newline is fine): remove the other lines",
        )
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        problems.warnings.append(f"{where}: {key}: {path} is readable by other users; chmod 600 it")
    return text.strip()


def _read_capped(fd: int) -> bytes:
    """The file's bytes, but never more than one past the cap."""
    chunks: list[bytes] = []
    size = 0
    while size <= SECRET_FILE_CAP and (chunk := os.read(fd, SECRET_FILE_CAP + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip
    return next((words for test, words in kinds if test(mode)), "not a file")
