"""An inventory that points at a running simulated fleet, so `orchestrator run` can be tried on it.

Secrets are referenced, never written in the inventory: the admin password and a backup passcode go
to files readable by their owner only, beside the inventory, under `<inventory stem>.secrets/`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from orchestrator.simulator.config import DeploymentPlan


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def inventory_text(
    plans: Iterable[DeploymentPlan],
    url_of: dict[str, str],
    *,
    secrets_dir: str,
    ca_bundle: str | None,
    retention_days: int = 14,
) -> str:
    """The inventory as TOML text. Pure: paths are given relative to the inventory's folder."""
    lines = [
        "# Written by `orchestrator simulate`: every deployment of the simulated fleet.",
        "# Secrets are referenced (password_file, passcode_file), never written here.",
        "",
        "[defaults]",
        'username = "admin"',
        f"password_file = {_toml_string(secrets_dir + '/password')}",
        f"passcode_file = {_toml_string(secrets_dir + '/passcode')}",
        f"retention_days = {retention_days}",
    ]
    if ca_bundle:
        lines.append(f"ca_bundle = {_toml_string(ca_bundle)}")
    for plan in plans:
        lines += [
            "",
            "[[deployments]]",
            f"name = {_toml_string(plan.name)}",
            f"url = {_toml_string(url_of[plan.name])}",
            f"tags = {_toml_list(['simulated', 'v' + plan.version])}",
        ]
        if plan.username != "admin":
            lines.append(f"username = {_toml_string(plan.username)}")
        if len(plan.stores) > 1:
            lines.append(f"stores = {_toml_list(plan.stores)}")
    return "\n".join(lines) + "\n"


def write_inventory(
    path: Path,
    plans: Iterable[DeploymentPlan],
    url_of: dict[str, str],
    *,
    password: str,
    ca_bundle: Path | None = None,
) -> Path:
    """Write the inventory and its secret files; returns the secrets folder."""
    path = path.resolve()
    secrets_dir = path.with_name(path.stem + ".secrets")
    write_secret(secrets_dir / "password", password)
    passcode_file = secrets_dir / "passcode"
    if not passcode_file.exists():  # keep the passcode of earlier backups restorable
        write_secret(passcode_file, secrets.token_urlsafe(24))
    ca = os.path.relpath(ca_bundle.resolve(), path.parent) if ca_bundle else None
    text = inventory_text(plans, url_of, secrets_dir=secrets_dir.name, ca_bundle=ca)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return secrets_dir
