"""Part of an inventory written as an inventory of its own: the deployments named, in the file's order, with
the same `[defaults]` (and `[policy]`), secrets still by reference. A snapshot writes its ready.toml and
not-ready.toml with it, so an upgrade wave takes exactly the deployments that are safe to upgrade.

Paths in the inventory are relative to its folder; the new file lives elsewhere, so they become absolute.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any, Final

import tomli_w

from orchestrator.files import write_private
from orchestrator.inventory.sources import Problems, csv_entries

PATH_KEYS: Final = ("password_file", "passcode_file", "ca_bundle")


def subset_document(path: Path, names: Collection[str]) -> dict[str, Any]:
    """The inventory at `path` narrowed to the deployments `names`, as a TOML document. The file has been
    loaded before (`load_inventory`): it is valid."""
    base = path.resolve().parent
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        entries = [entry.values for entry in csv_entries(path, text, Problems())]
        return {"deployments": [_absolute(e, base) for e in entries if e.get("name") in names]}
    data = tomllib.loads(text)
    document: dict[str, Any] = {}
    if "defaults" in data:
        document["defaults"] = _absolute(data["defaults"], base)
    if "policy" in data:
        document["policy"] = data["policy"]
    document["deployments"] = [_absolute(e, base) for e in data.get("deployments", []) if e.get("name") in names]
    return document


def write_subset(path: Path, document: dict[str, Any], heading: str) -> None:
    """`document` as TOML under a comment `heading`, at `path` in a private folder: 0600, never through a link."""
    lines = "".join(f"# {line}\n" for line in heading.splitlines())
    write_private(path, lines + "\n" + tomli_w.dumps(document))


def _absolute(values: dict[str, Any], base: Path) -> dict[str, Any]:
    return {k: str(base / v) if k in PATH_KEYS and isinstance(v, str) else v for k, v in values.items()}
