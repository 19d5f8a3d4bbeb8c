"""The inventory: which deployments to back up, where they are, and where their secrets come from.

TOML is the main format (a `[defaults]` table and `[[deployments]]` entries); CSV, as a CMDB exports it,
is the second, with the same field names as columns and `;` between list values. Every problem in
the file is collected and reported at once, each naming the file, the line and the fix, before any
request is sent. Secrets are referenced (`*_env`, `*_file`), never written in the inventory.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import SecretStr

from orchestrator.addresses import is_loopback
from orchestrator.errors import InputError
from orchestrator.model import Deployment
from orchestrator.redact import remember

MIN_PASSCODE_LENGTH: Final = 8
FIELDS: Final = (
    "name",
    "url",
    "tags",
    "stores",
    "username",
    "password_env",
    "password_file",
    "passcode_env",
    "passcode_file",
    "retention_days",
    "ca_bundle",
    "verify_tls",
)
_LIST_FIELDS: Final = frozenset({"tags", "stores"})
_LITERAL_SECRETS: Final = {"password": "password", "passcode": "passcode", "token": "password", "secret": "password"}
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Inventory:
    path: Path
    deployments: tuple[Deployment, ...]
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class _Entry:
    """One deployment's raw fields, each with where it was written (for messages)."""

    values: dict[str, Any]
    where: dict[str, str]
    label: str  # "deployments[3] (gis-eu-1)" or "row 4 (gis-eu-1)"
    location: str  # file:line of the entry


@dataclass(slots=True)
class _Problems:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, location: str, message: str) -> None:
        line = f"{location}: {message}"
        if line not in self.lines:  # an inherited default fails once, not once per deployment
            self.lines.append(line)


def load_inventory(path: Path) -> Inventory:
    """Read and check the whole inventory; raise `InputError` listing every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError([f"{path}: cannot read the inventory ({exc.strerror}); check --inventory"]) from None
    problems = _Problems()
    if path.suffix.lower() == ".csv":
        entries = _csv_entries(path, text, problems)
    else:
        entries = _toml_entries(path, text, problems)
    deployments = _resolve(entries, path.parent, problems)
    if not problems.lines and not deployments:
        problems.add(str(path), "no deployments; add [[deployments]] entries (see inventories/example.toml)")
    if problems.lines:
        raise InputError(problems.lines)
    return Inventory(path, tuple(deployments), tuple(problems.warnings))


def _toml_entries(path: Path, text: str, problems: _Problems) -> list[_Entry]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.add(str(path), f"not valid TOML: {exc}")
        return []
    lines = text.splitlines()
    defaults_line = _header_lines(lines, "[defaults]")
    entry_lines = _header_lines(lines, "[[deployments]]")
    for key in data:
        if key not in ("defaults", "deployments"):
            problems.add(
                f"{path}:{_key_line(lines, key)}",
                f"unknown top-level key {key!r}; {_did_you_mean(key, ('defaults', 'deployments'))}",
            )
    defaults = data.get("defaults", {})
    defaults_at = f"{path}:{defaults_line[0] if defaults_line else 1}"
    if not isinstance(defaults, dict):
        problems.add(defaults_at, "[defaults] must be a table")
        defaults = {}
    _check_keys(defaults, defaults_at, "[defaults]", problems, allow_identity=False)
    raw = data.get("deployments", [])
    if not isinstance(raw, list):
        problems.add(str(path), "deployments must be an array of tables: write [[deployments]] before each entry")
        return []
    entries = []
    for index, item in enumerate(raw):
        at = f"{path}:{entry_lines[index] if index < len(entry_lines) else 1}"
        name = item.get("name", "?") if isinstance(item, dict) else "?"
        label = f"deployments[{index}] ({name})"
        if not isinstance(item, dict):
            problems.add(at, f"{label}: must be a table")
            continue
        _check_keys(item, at, label, problems, allow_identity=True)
        values = {k: v for k, v in defaults.items() if k in FIELDS}
        where = dict.fromkeys(values, defaults_at)
        values.update({k: v for k, v in item.items() if k in FIELDS})
        where.update(dict.fromkeys((k for k in item if k in FIELDS), at))
        entries.append(_Entry(values, where, label, at))
    return entries


def _csv_entries(path: Path, text: str, problems: _Problems) -> list[_Entry]:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    for column in header:
        if column not in FIELDS:
            problems.add(f"{path}:1", _unknown_key_message(column, "header"))
    entries = []
    for row in reader:
        at = f"{path}:{reader.line_num}"
        values: dict[str, Any] = {}
        for column, cell in row.items():
            if column not in FIELDS or cell is None or cell.strip() == "":
                continue
            cell = cell.strip()
            if column in _LIST_FIELDS:
                values[column] = [part.strip() for part in cell.split(";") if part.strip()]
            elif column == "verify_tls":
                values[column] = {"true": True, "false": False}.get(cell.lower(), cell)
            elif column == "retention_days":
                values[column] = _number_or_text(cell)
            else:
                values[column] = cell
        entries.append(
            _Entry(values, dict.fromkeys(values, at), f"row {reader.line_num} ({values.get('name', '?')})", at)
        )
    return entries


def _number_or_text(cell: str) -> Any:
    try:
        return float(cell)
    except ValueError:
        return cell


def _check_keys(table: Mapping[str, Any], at: str, label: str, problems: _Problems, *, allow_identity: bool) -> None:
    for key in table:
        if key in _LITERAL_SECRETS:
            kind = _LITERAL_SECRETS[key]
            problems.add(
                at,
                f"{label}: a literal secret ({key!r}) is refused: reference it instead, "
                f'with {kind}_env = "VARIABLE" or {kind}_file = "path/to/file"',
            )
        elif key not in FIELDS or (not allow_identity and key in ("name", "url")):
            problems.add(at, f"{label}: " + _unknown_key_message(key, "key"))


def _unknown_key_message(key: str, what: str) -> str:
    return f"unknown {what} {key!r}; {_did_you_mean(key, FIELDS)}"


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"


def _header_lines(lines: list[str], header: str) -> list[int]:
    return [number for number, line in enumerate(lines, 1) if line.strip().startswith(header)]


def _key_line(lines: list[str], key: str) -> int:
    for number, line in enumerate(lines, 1):
        if re.match(rf"\s*\[*\s*{re.escape(key)}\b", line):
            return number
    return 1


# -- resolution --


def _resolve(entries: list[_Entry], base: Path, problems: _Problems) -> list[Deployment]:
    deployments = []
    seen: dict[str, str] = {}
    seen_urls: dict[str, str] = {}
    secret_cache: dict[tuple[str, str], str | None] = {}
    for entry in entries:
        name = entry.values.get("name")
        if isinstance(name, str) and name in seen:
            problems.add(
                entry.location,
                f"{entry.label}: duplicate name {name!r} (first at {seen[name]}); names must be unique",
            )
            continue
        if isinstance(name, str):
            seen[name] = entry.location
        deployment = _resolve_one(entry, base, problems, secret_cache)
        if deployment is None:
            continue
        same_site = _site_key(deployment.url)
        if same_site in seen_urls:
            # Two entries for one deployment would run two DR jobs on it at once; the server refuses one.
            problems.add(
                entry.where.get("url", entry.location),
                f"{entry.label}: url: {deployment.url} is also deployment {seen_urls[same_site]}; "
                "list each deployment once, with all its stores in `stores`",
            )
            continue
        seen_urls[same_site] = f"{deployment.name!r} ({entry.location})"
        deployments.append(deployment)
    return deployments


def _site_key(url: str) -> str:
    """One deployment however its URL is spelled: case of scheme and host, default port, trailing slash."""
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme.lower())
    port = parts.port if parts.port not in (None, default_port) else None
    host = (parts.hostname or "").lower() + (f":{port}" if port else "")
    return f"{parts.scheme.lower()}://{host}{parts.path.rstrip('/')}"


def _resolve_one(
    entry: _Entry, base: Path, problems: _Problems, cache: dict[tuple[str, str], str | None]
) -> Deployment | None:
    values, label = entry.values, entry.label
    before = len(problems.lines)

    def bad(key: str, message: str) -> None:
        problems.add(entry.where.get(key, entry.location), f"{label}: {key}: {message}")

    name = values.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        bad("name", 'missing or invalid; write name = "gis-eu-1" (letters, digits, ".", "_", "-")')
    url = _check_url(values.get("url"), lambda message: bad("url", message))
    tags = _string_list(values.get("tags", []), "tags", bad)
    stores = _string_list(values.get("stores", []), "stores", bad)
    username = values.get("username", "")
    if not isinstance(username, str) or not username:
        bad("username", 'missing; write username = "admin" in [defaults] or in the entry')
    retention = values.get("retention_days")
    if retention is not None and (
        isinstance(retention, bool) or not isinstance(retention, int | float) or retention <= 0
    ):
        bad("retention_days", "must be a positive number of days; leave it out for backups that never expire")
    verify = values.get("verify_tls", True)
    if not isinstance(verify, bool):
        bad("verify_tls", "must be true or false")
    ca_bundle = None
    if "ca_bundle" in values:
        ca_bundle = (base / str(values["ca_bundle"])).resolve()
        if not ca_bundle.is_file():
            bad("ca_bundle", f"{ca_bundle} is not a readable file; give the PEM file of your private CA")
    password = _secret(entry, "password", base, problems, cache)
    passcode = _secret(entry, "passcode", base, problems, cache)
    remember(*(secret for secret in (password, passcode) if secret))  # masked wherever the tool writes
    if passcode is not None and len(passcode) < MIN_PASSCODE_LENGTH:
        where = "passcode_env" if "passcode_env" in values else "passcode_file"
        bad(
            where, f"the passcode is shorter than {MIN_PASSCODE_LENGTH} characters; ArcGIS refuses it: use a longer one"
        )
    if len(problems.lines) > before or password is None or passcode is None:
        return None
    assert isinstance(name, str) and url is not None
    return Deployment(
        name=name,
        url=url,
        tags=tuple(tags),
        stores=tuple(dict.fromkeys(stores)),
        username=username,
        password=SecretStr(password),
        passcode=SecretStr(passcode),
        retention_days=float(retention) if retention is not None else None,
        ca_bundle=ca_bundle,
        verify_tls=bool(verify),
        source=entry.location,
    )


def _check_url(value: Any, bad: Any) -> str | None:
    if not isinstance(value, str) or not value:
        bad('missing; write url = "https://gis.example.com/arcgis" (the root, including the web context)')
        return None
    parts = urlsplit(value)
    if parts.username or parts.password:
        bad("must not hold credentials; reference them with password_env or password_file")
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        bad(f'{value!r} is not an https URL; write url = "https://host/context"')
        return None
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        bad(f"{value!r} uses http; use https (http is allowed for loopback addresses only)")
        return None
    if parts.query or parts.fragment:
        bad("must not hold a query, a fragment or credentials; give the plain root URL")
        return None
    if parts.path.strip("/") == "":
        bad(f"{value!r} has no web context; write the root including it, e.g. https://{parts.netloc}/arcgis")
        return None
    return value.rstrip("/")


def _string_list(value: Any, key: str, bad: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        bad(key, f'must be a list of names, e.g. {key} = ["a", "b"]')
        return []
    return value


def _secret(
    entry: _Entry, kind: str, base: Path, problems: _Problems, cache: dict[tuple[str, str], str | None]
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


def _owner(entry: _Entry, where: str) -> str:
    """Who a message is about: the entry, or [defaults] when the key was inherited (said once for all)."""
    return entry.label if where == entry.location else "[defaults]"


def _read_secret_file(path: Path, key: str, where: str, problems: _Problems) -> str | None:
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


# -- selection --


def select(deployments: Iterable[Deployment], selectors: Iterable[str]) -> list[Deployment]:
    """Keep the deployments matching every selector (`tag=TAG`, `name=GLOB`), in inventory order."""
    rules = []
    for selector in selectors:
        kind, _, value = selector.partition("=")
        if kind not in ("tag", "name") or not value:
            raise InputError([f"--select {selector!r}: write tag=TAG or name=GLOB (e.g. --select name=gis-eu-*)"])
        rules.append((kind, value))
    chosen = [
        d
        for d in deployments
        if all((value in d.tags) if kind == "tag" else fnmatch.fnmatchcase(d.name, value) for kind, value in rules)
    ]
    if not chosen:
        raise InputError([f"--select {' '.join(selectors)}: no deployment matched; nothing to do"])
    return chosen
