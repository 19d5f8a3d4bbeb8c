"""The inventory: which deployments to back up, where they are, and where their secrets come from.

TOML is the main format (a `[defaults]` table and `[[deployments]]` entries); CSV, as a CMDB exports it,
is the second, with the same field names as columns and `;` between list values. Every problem in
the file is collected and reported at once, each naming the file, the line and the fix, before any
request is sent. Secrets are referenced (`*_env`, `*_file`), never written in the inventory.

What each field may hold is a pydantic model (`rules.Fields`), the fix for each rule in its messages.
Kept by hand, because pydantic cannot know them: the file and line each value was written on
(`sources`: the TOML and CSV parsers keep no positions), `[defaults]` inheritance (a problem in an
inherited value is said once, at its line in `[defaults]`), problems across entries (the same name or
deployment twice, here), and the secrets, read from variables and files and never echoed (`references`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from orchestrator.errors import InputError
from orchestrator.inventory.references import read_secret
from orchestrator.inventory.rules import FIELDS, MIN_PASSCODE_LENGTH, Fields, problem, shown_url
from orchestrator.inventory.sources import Entry, Problems, csv_entries, toml_entries
from orchestrator.model import Deployment
from orchestrator.redact import remember

__all__ = ["FIELDS", "Inventory", "Rule", "load_inventory", "matches", "select", "selection_rules"]


@dataclass(frozen=True, slots=True)
class Inventory:
    path: Path
    deployments: tuple[Deployment, ...]
    warnings: tuple[str, ...] = ()


def load_inventory(path: Path) -> Inventory:
    """Read and check the whole inventory; raise `InputError` listing every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError([f"{path}: cannot read the inventory ({exc.strerror}); check --inventory"]) from None
    problems = Problems()
    read = csv_entries if path.suffix.lower() == ".csv" else toml_entries
    entries = read(path, text, problems)
    deployments = _resolve(entries, path.parent, problems)
    if not problems.lines and not deployments:
        problems.add(str(path), "no deployments; add [[deployments]] entries (see inventories/example.toml)")
    if problems.lines:
        raise InputError(problems.lines)
    return Inventory(path, tuple(deployments), tuple(problems.warnings))


# -- resolution --


def _resolve(entries: list[Entry], base: Path, problems: Problems) -> list[Deployment]:
    deployments = []
    seen: dict[str, str] = {}
    seen_urls: dict[str, str] = {}
    secret_cache: dict[tuple[str, str], str | None] = {}
    for entry in entries:
        name = entry.values.get("name")
        name_at = entry.where.get("name", entry.location)
        if isinstance(name, str) and name in seen:
            problems.add(
                name_at, f"{entry.label}: duplicate name {name!r} (first at {seen[name]}); names must be unique"
            )
            continue
        if isinstance(name, str):
            seen[name] = name_at
        deployment = _resolve_one(entry, base, problems, secret_cache)
        if deployment is None:
            continue
        same_site = _site_key(deployment.url)
        if same_site in seen_urls:
            # Two entries for one deployment would run two DR jobs on it at once; the server refuses one.
            problems.add(
                entry.where.get("url", entry.location),
                f"{entry.label}: url: {shown_url(deployment.url)} is also deployment {seen_urls[same_site]}; "
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
    entry: Entry, base: Path, problems: Problems, cache: dict[tuple[str, str], str | None]
) -> Deployment | None:
    """The entry's fields checked against `rules.Fields` and its secrets read: every problem found is added."""
    before = len(problems.lines)
    fields, refused = None, set()
    try:
        fields = Fields.model_validate(entry.values, context={"base": base})
    except ValidationError as invalid:
        for error in invalid.errors():
            key, message = problem(error, entry.label)
            refused.add(key)
            problems.add(entry.where.get(key, entry.location), message)
    # A reference already refused (not text) is not read too: one problem, one message.
    password, passcode = (
        None if refused & {f"{kind}_env", f"{kind}_file"} else read_secret(entry, kind, base, problems, cache)
        for kind in ("password", "passcode")
    )
    remember(*(secret for secret in (password, passcode) if secret))  # masked wherever the tool writes
    if passcode is not None and len(passcode) < MIN_PASSCODE_LENGTH:
        key = "passcode_env" if "passcode_env" in entry.values else "passcode_file"
        problems.add(
            entry.where.get(key, entry.location),
            f"{entry.label}: {key}: the passcode is shorter than {MIN_PASSCODE_LENGTH} characters; "
            "ArcGIS refuses it: use a longer one",
        )
    if len(problems.lines) > before or fields is None or password is None or passcode is None:
        return None
    return Deployment(
        name=fields.name,
        url=fields.url,
        tags=fields.tags,
        stores=tuple(dict.fromkeys(fields.stores)),
        username=fields.username,
        password=SecretStr(password),
        passcode=SecretStr(passcode),
        retention_days=fields.retention_days,
        ca_bundle=Path(fields.ca_bundle) if fields.ca_bundle else None,
        verify_tls=fields.verify_tls,
        source=entry.location,
    )


def select(deployments: Iterable[Deployment], selectors: Iterable[str]) -> list[Deployment]:
    """Keep the deployments matching every selector (`tag=TAG`, `name=GLOB`), in inventory order."""
    selectors = list(selectors)
    rules = selection_rules(selectors)
    chosen = [d for d in deployments if matches(d, rules)]
    if not chosen:
        raise InputError([f"--select {' '.join(selectors)}: no deployment matched; nothing to do"])
    return chosen


Rule = tuple[str, str]  # (tag | name, value)


def selection_rules(selectors: Iterable[str], where: str = "--select") -> list[Rule]:
    """The rules `--select` (or a policy rule's `select`) names; `InputError` for one not written right."""
    rules = []
    for selector in selectors:
        kind, _, value = selector.partition("=")
        if kind not in ("tag", "name") or not value:
            raise InputError([f"{where} {selector!r}: write tag=TAG or name=GLOB (e.g. name=gis-eu-*)"])
        rules.append((kind, value))
    return rules


def matches(deployment: Deployment, rules: Iterable[Rule]) -> bool:
    """Whether a deployment matches every rule. Pure."""
    return all(
        (value in deployment.tags) if kind == "tag" else fnmatch.fnmatchcase(deployment.name, value)
        for kind, value in rules
    )
