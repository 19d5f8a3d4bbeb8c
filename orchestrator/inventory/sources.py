"""An inventory file read into entries: each deployment's raw values, with the file and line each was written on.

The TOML and CSV parsers keep no positions, so they are found here from the text itself: in TOML the line of
each key (within its entry's table), in CSV the row's. `[defaults]` are merged into each entry, remembering that
an inherited value was written at its line in `[defaults]`.
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from orchestrator.inventory.rules import FIELDS, LIST_FIELDS, did_you_mean, unknown_key_message

TOP_LEVEL: Final = ("defaults", "deployments", "policy")


@dataclass(slots=True)
class Entry:
    """One deployment's raw fields, each with where it was written (for messages)."""

    values: dict[str, Any]
    where: dict[str, str]  # file:line of each key's own line (in [defaults] for an inherited one)
    label: str  # "deployments[3] (gis-eu-1)" or "row 4 (gis-eu-1)"
    location: str  # file:line of the entry: its [[deployments]] header, or its CSV row
    inherited: frozenset[str] = frozenset()  # the keys whose value came from [defaults]


@dataclass(slots=True)
class Problems:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, location: str, message: str) -> None:
        line = f"{location}: {message}"
        if line not in self.lines:  # an inherited default fails once, not once per deployment
            self.lines.append(line)


def toml_entries(path: Path, text: str, problems: Problems) -> list[Entry]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.add(str(path), f"not valid TOML: {exc}")
        return []
    lines = text.splitlines()
    defaults_line = _header_lines(lines, "[defaults]")
    entry_lines = _header_lines(lines, "[[deployments]]")
    for key in data:
        if key not in TOP_LEVEL:  # the [policy] table is the audit's (`audit.policy`)
            problems.add(
                f"{path}:{_key_line(lines, key)}",
                f"unknown top-level key {key!r}; {did_you_mean(key, TOP_LEVEL)}",
            )
    defaults = data.get("defaults", {})
    defaults_start = defaults_line[0] if defaults_line else 1
    defaults_at = f"{path}:{defaults_start}"
    if not isinstance(defaults, dict):
        problems.add(defaults_at, "[defaults] must be a table")
        defaults = {}
    defaults_where = {key: f"{path}:{_table_key_line(lines, defaults_start, key)}" for key in defaults}
    for key in defaults:  # an entry's own keys are its model's to check; these would be checked once per entry
        if key in ("name", "url"):
            problems.add(
                defaults_where[key], f"[defaults]: {key!r} names one deployment: write it in each [[deployments]]"
            )
        elif key not in FIELDS:
            problems.add(defaults_where[key], f"[defaults]: {unknown_key_message(key)}")
    raw = data.get("deployments", [])
    if not isinstance(raw, list):
        problems.add(str(path), "deployments must be an array of tables: write [[deployments]] before each entry")
        return []
    entries = []
    for index, item in enumerate(raw):
        start = entry_lines[index] if index < len(entry_lines) else 1
        at = f"{path}:{start}"
        name = item.get("name", "?") if isinstance(item, dict) else "?"
        label = f"deployments[{index}] ({name})"
        if not isinstance(item, dict):
            problems.add(at, f"{label}: must be a table")
            continue
        values = {k: v for k, v in defaults.items() if k in FIELDS and k not in ("name", "url")}
        where = {key: defaults_where[key] for key in values}
        inherited = frozenset(values) - frozenset(item)
        values.update(item)
        where.update({key: f"{path}:{_table_key_line(lines, start, key)}" for key in item})
        entries.append(Entry(values, where, label, at, inherited))
    return entries


def csv_entries(path: Path, text: str, problems: Problems) -> list[Entry]:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    for column in header:
        if column not in FIELDS:
            problems.add(f"{path}:1", unknown_key_message(column, "header"))
    entries = []
    for row in reader:
        at = f"{path}:{reader.line_num}"
        values: dict[str, Any] = {}
        for column, cell in row.items():
            if column not in FIELDS or cell is None or cell.strip() == "":
                continue
            cell = cell.strip()
            if column in LIST_FIELDS:
                values[column] = [part.strip() for part in cell.split(";") if part.strip()]
            elif column == "verify_tls":
                values[column] = {"true": True, "false": False}.get(cell.lower(), cell)
            elif column == "retention_days":
                values[column] = _number_or_text(cell)
            else:
                values[column] = cell
        entries.append(
            Entry(values, dict.fromkeys(values, at), f"row {reader.line_num} ({values.get('name', '?')})", at)
        )
    return entries


def _number_or_text(cell: str) -> Any:
    try:
        return float(cell)
    except ValueError:
        return cell


def _header_lines(lines: list[str], header: str) -> list[int]:
    return [number for number, line in enumerate(lines, 1) if line.strip().startswith(header)]


def _table_key_line(lines: list[str], start: int, key: str) -> int:
    """The line of `key = ...` in the table whose header is at line `start` (the header's if not found there)."""
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if re.match(r"\s*\[", line):  # the next table's header
            break
        if re.match(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
    return start


def _key_line(lines: list[str], key: str) -> int:
    for number, line in enumerate(lines, 1):
        if re.match(rf"\s*\[*\s*{re.escape(key)}\b", line):
            return number
    return 1
