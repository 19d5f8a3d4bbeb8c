"""The secrets an inventory references (`password_env`, `passcode_file`, ...), read from the environment and
from files: each reference read once however many entries share it, never echoed in a message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.inventory.sources import Entry, Problems


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
                f"{_owner(entry, where)}: {env_key}: the environment variable {env_name} is not set (or empty); "
                "export it before the run",
            )
        return cache[key]
    path = (base / str(file_name)).resolve()
    key, where = ("file", str(path)), entry.where[file_key]
    if key not in cache:
        cache[key] = _read_secret_file(path, f"{_owner(entry, where)}: {file_key}", where, problems)
    return cache[key]


def _owner(entry: Entry, where: str) -> str:
    """Who a message is about: the entry, or [defaults] when the key was inherited (said once for all)."""
    return entry.label if where == entry.location else "[defaults]"


def _read_secret_file(path: Path, key: str, where: str, problems: Problems) -> str | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except OSError as exc:
        problems.add(where, f"{key}: cannot read {path} ({exc.strerror}); check the path and its permissions")
        return None
    if not value:
        problems.add(where, f"{key}: {path} is empty")
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        problems.warnings.append(f"{where}: {key}: {path} is readable by other users; chmod 600 it")
    return value
