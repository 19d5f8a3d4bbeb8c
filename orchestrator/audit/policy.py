"""The compliance policy: what the audit holds each deployment to, read from `--policy FILE` or from the
inventory's `[policy]` table, every problem reported at once with file, line and the fix.

    [policy]                      # defaults for every deployment
    max_age_hours = 24
    [[policy.rules]]              # later rules win, for the deployments they select
    select = ["tag=prod"]         # the same rules as --select; all must match
    min_backups = 7

A rule overrides only the keys it names; `Policy.for_deployment` merges the defaults and every rule
that selects the deployment, in file order.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import InputError
from orchestrator.inventory import Rule, matches, selection_rules
from orchestrator.inventory.rules import did_you_mean
from orchestrator.model import Deployment


class PolicyValues(BaseModel):
    """What a deployment is held to. Strict: TOML says what it means."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_age_hours: Annotated[float, Field(gt=0, le=24 * 366)] = 24.0
    min_retention_days: Annotated[float, Field(ge=0, le=36_500)] = 7.0
    min_backups: Annotated[int, Field(ge=0, le=100_000)] = 1
    require_same_release: bool = True
    require_offsite: bool = False
    window_days: Annotated[int, Field(ge=1, le=366)] = 7


KEYS: Final = tuple(PolicyValues.model_fields)
_FIXES: Final = {
    "max_age_hours": "must be a positive number of hours (at most a year), e.g. max_age_hours = 24",
    "min_retention_days": "must be a number of days, 0 or more, e.g. min_retention_days = 7",
    "min_backups": "must be a whole number, 0 or more, e.g. min_backups = 1",
    "require_same_release": "must be true or false",
    "require_offsite": "must be true or false",
    "window_days": "must be a whole number of days from 1 to 366, e.g. window_days = 7",
    "select": 'must be a list of selection rules, as --select takes them, e.g. select = ["tag=prod"]',
}


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One `[[policy.rules]]` entry: whom it selects, and the keys it overrides for them."""

    select: tuple[str, ...]
    overrides: Mapping[str, Any]
    rules: tuple[Rule, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Policy:
    defaults: PolicyValues = field(default_factory=PolicyValues)
    rules: tuple[PolicyRule, ...] = ()
    source: str = "built-in defaults"

    def for_deployment(self, deployment: Deployment) -> PolicyValues:
        """The defaults, then every rule selecting the deployment in order (later ones win). Pure."""
        merged = self.defaults.model_dump()
        for rule in self.rules:
            if matches(deployment, rule.rules):
                merged.update(rule.overrides)
        return PolicyValues.model_validate(merged)

    def describe(self) -> dict[str, Any]:
        """The policy as the compliance report states it."""
        return {
            "source": self.source,
            "defaults": self.defaults.model_dump(),
            "rules": [{"select": list(rule.select), **rule.overrides} for rule in self.rules],
        }


def load_policy(path: Path, *, in_inventory: bool) -> Policy:
    """The policy in a TOML file's `[policy]` table: a policy file (where the table is required) or the
    inventory (where it is optional; a CSV inventory has none). `InputError` lists every problem."""
    if in_inventory and path.suffix.lower() == ".csv":
        return Policy()
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise InputError([f"{path}: cannot read the policy file ({exc.strerror}); check --policy"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError([f"{path}: not valid TOML: {exc}"]) from None
    lines = text.splitlines()
    problems: list[str] = []
    if not in_inventory:
        for key in data:
            if key != "policy":
                at = _header(lines, rf"\[*\s*{re.escape(key)}\b")
                problems.append(f"{path}:{at}: unknown top-level key {key!r}; a policy file holds one [policy] table")
        if "policy" not in data:
            problems.append(f"{path}:1: no [policy] table; write [policy] and its keys (see the README)")
    table = data.get("policy", {})
    if not isinstance(table, dict):
        at = _header(lines, r"\[*\s*policy\b")
        raise InputError([*problems, f"{path}:{at}: policy must be a table: write [policy]"])
    policy = _read(table, path, lines, problems)
    if problems:  # in the file's order
        raise InputError(sorted(problems, key=lambda p: int(p[len(str(path)) + 1 :].split(":", 1)[0])))
    return policy


def _read(table: dict[str, Any], path: Path, lines: list[str], problems: list[str]) -> Policy:
    header = _header(lines, r"\[\s*policy\s*\]")
    values = {k: v for k, v in table.items() if k != "rules"}
    defaults = _values(values, lambda key: f"{path}:{_key_line(lines, header, key)}: [policy]", problems)
    raw_rules = table.get("rules", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        problems.append(f"{path}:{_key_line(lines, header, 'rules')}: [policy]: rules must be an array of tables: "
                        "write [[policy.rules]] before each rule")  # fmt: skip
        raw_rules = []
    headers = [n for n, line in enumerate(lines, 1) if re.match(r"\s*\[\[\s*policy\.rules\s*\]\]", line)]
    rules = []
    for index, raw in enumerate(raw_rules):
        at = headers[index] if index < len(headers) else header

        def where(key: str, index: int = index, at: int = at) -> str:
            return f"{path}:{_key_line(lines, at, key)}: [[policy.rules]] #{index + 1}"

        rule = _rule(raw, where, problems)
        if rule is not None:
            rules.append(rule)
    source = f"{path} [policy]" if table else "built-in defaults"
    return Policy(defaults or PolicyValues(), tuple(rules), source)


def _values(values: dict[str, Any], where: Any, problems: list[str]) -> PolicyValues | None:
    try:
        return PolicyValues.model_validate(values)
    except ValidationError as invalid:
        for error in invalid.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            if error["type"] == "extra_forbidden" and key == "select":
                problems.append(f"{where(key)}: select belongs in a [[policy.rules]] entry (the [policy] table's "
                                "values apply to every deployment)")  # fmt: skip
            elif error["type"] == "extra_forbidden":
                known = (*KEYS, "select", "rules")
                problems.append(f"{where(key)}: unknown key {key!r}; {did_you_mean(key, known)}")
            else:
                problems.append(f"{where(key)}: {key}: {_FIXES[key]}")
        return None


def _rule(raw: dict[str, Any], where: Any, problems: list[str]) -> PolicyRule | None:
    before = len(problems)
    select = raw.get("select")
    rules: list[Rule] = []
    if not isinstance(select, list) or not select or not all(isinstance(s, str) for s in select):
        problems.append(f"{where('select')}: select: {_FIXES['select']}")
    else:
        for selector in select:  # each one's problem, not only the first's
            try:
                rules += selection_rules([selector], where="select")
            except InputError as error:
                problems.extend(f"{where('select')}: {problem}" for problem in error.problems)
    overrides = {k: v for k, v in raw.items() if k != "select"}
    checked = _values(overrides, where, problems)
    if len(problems) > before or checked is None:
        return None
    return PolicyRule(tuple(select or ()), {k: getattr(checked, k) for k in overrides}, tuple(rules))


def _header(lines: list[str], pattern: str) -> int:
    return next((n for n, line in enumerate(lines, 1) if re.match(rf"\s*{pattern}", line)), 1)


def _key_line(lines: list[str], start: int, key: str) -> int:
    """The line of `key = ...` in the table whose header is at `start` (the header itself if not found)."""
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if re.match(r"\s*\[", line):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return start
