"""What each field of an inventory entry may hold, as a pydantic model, and the fix each broken rule asks for.

Strict: TOML says what it means (`retention_days = "14"` is text, not a number). A rule's message is the
fix to write; `problem` turns one of the model's errors into that message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from orchestrator.addresses import is_loopback

MIN_PASSCODE_LENGTH: Final = 8
_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_LITERAL_SECRETS: Final = {"password": "password", "passcode": "passcode", "token": "password", "secret": "password"}
_OWN_RULE: Final = "inventory"  # the error type of the rules below that say their own fix


def _fix(message: str) -> PydanticCustomError:
    return PydanticCustomError(_OWN_RULE, message)


def _root_url(value: str) -> str:
    """The deployment's root URL: https (http for loopback only), its web context, nothing else.

    A message shows the URL without its credentials, query and fragment (`shown_url`): they may hold a
    password, a token or a signature, and a message is printed, logged and kept.
    """
    if not value:
        raise _fix(_FIXES["url"])
    parts = urlsplit(value)
    shown = shown_url(value)
    if parts.username or parts.password:
        raise _fix("must not hold credentials; reference them with password_env or password_file")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise _fix(f'{shown!r} is not an https URL; write url = "https://host/context"')
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise _fix(f"{shown!r} uses http; use https (http is allowed for loopback addresses only)")
    if parts.query or parts.fragment:
        raise _fix(f"{shown!r} must not hold a query or a fragment; give the plain root URL")
    if parts.path.strip("/") == "":
        raise _fix(f"{shown!r} has no web context; write the root including it, e.g. {shown.rstrip('/')}/arcgis")
    return value.rstrip("/")


def shown_url(value: str) -> str:
    """A URL as a message may show it: scheme, host, port and path; never its userinfo, query or fragment."""
    parts = urlsplit(value)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _names(value: Any) -> Any:
    """One name stands for a list of one; a list is held as a tuple."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


Names = Annotated[tuple[Annotated[str, StringConstraints(min_length=1)], ...], BeforeValidator(_names)]


class Fields(BaseModel):
    """What each field of one entry (its `[defaults]` merged in) may hold. Strict: TOML says what it means."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, StringConstraints(pattern=_NAME)]
    url: Annotated[str, AfterValidator(_root_url)]
    tags: Names = ()
    stores: Names = ()
    username: Annotated[str, StringConstraints(min_length=1)]
    password_env: str | None = None
    password_file: str | None = None
    passcode_env: str | None = None
    passcode_file: str | None = None
    retention_days: Annotated[float, Field(gt=0)] | None = None
    ca_bundle: str | None = None  # relative to the inventory's folder (the validation context's `base`)
    verify_tls: bool = True

    @field_validator("ca_bundle")
    @classmethod
    def _readable_pem(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        base: Path = (info.context or {})["base"]
        path = (base / value).resolve()
        if not path.is_file():
            raise _fix(f"{path} is not a readable file; give the PEM file of your private CA")
        return str(path)


FIELDS: Final = tuple(Fields.model_fields)  # the keys of an entry, in the order the examples show them
LIST_FIELDS: Final = frozenset({"tags", "stores"})
# The fix for a field missing or holding the wrong kind of value.
_FIXES: Final = {
    "name": 'missing or invalid; write name = "gis-eu-1" (letters, digits, ".", "_", "-")',
    "url": 'missing; write url = "https://gis.example.com/arcgis" (the root, including the web context)',
    "tags": 'must be a list of names, e.g. tags = ["a", "b"]',
    "stores": 'must be a list of names, e.g. stores = ["a", "b"]',
    "username": 'missing; write username = "admin" in [defaults] or in the entry',
    "password_env": 'must name an environment variable, e.g. password_env = "ARCGIS_PASSWORD"',
    "password_file": 'must be a path, e.g. password_file = "secrets/arcgis-password"',
    "passcode_env": 'must name an environment variable, e.g. passcode_env = "BACKUP_PASSCODE"',
    "passcode_file": 'must be a path, e.g. passcode_file = "secrets/backup-passcode"',
    "retention_days": "must be a positive number of days; leave it out for backups that never expire",
    "ca_bundle": 'must be a path, e.g. ca_bundle = "certs/fleet-ca.pem"',
    "verify_tls": "must be true or false",
}


def problem(error: ErrorDetails, label: str) -> tuple[str, str]:
    """(the key, the message with its fix) for one error of `_Fields`. Pure."""
    key = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        return key, f"{label}: {unknown_key_message(key)}"
    fix = error["msg"] if error["type"] == _OWN_RULE else _FIXES[key]
    return key, f"{label}: {key}: {fix}"


def unknown_key_message(key: str, what: str = "key") -> str:
    if key in _LITERAL_SECRETS:
        kind = _LITERAL_SECRETS[key]
        return (
            f"a literal secret ({key!r}) is refused: reference it instead, "
            f'with {kind}_env = "VARIABLE" or {kind}_file = "path/to/file"'
        )
    return f"unknown {what} {key!r}; {did_you_mean(key, FIELDS)}"


def did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
