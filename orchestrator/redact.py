"""One redaction layer for everything the tool writes: log lines, reports, the ledger, error messages.

A secret is either a value the tool knows (every password and passcode read from the inventory's
references, every token a deployment issued) or a shape that carries one whatever its value
(`token=...`, `password=...`, `Bearer ...`), as a careless server or proxy may echo a request back in
an error. `redact(text)` masks both; the sinks (`progress`, `report`, `ledger`, `cli`) call it on
every string they write, so no code path has to remember to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

MASK: Final = "[redacted]"
MIN_SECRET_LENGTH: Final = 4  # shorter values would mask ordinary words; no real secret is that short
_KEY_VALUE: Final = re.compile(r"(?i)\b(token|password|passcode|passwd|secret|client_secret)=([^&\s\"',;)]+)")
_BEARER: Final = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_TOKEN_SHAPED: Final = re.compile(r"[A-Za-z0-9._~+/=-]{4,}")  # at least MIN_SECRET_LENGTH
MAX_TOKENS_KEPT: Final = 200_000


class Secrets:
    """The secrets of this process, and the masking of them.

    Passwords and passcodes are few and fixed (one per secret reference of the inventory) and may hold
    any character: one compiled alternation finds them. Tokens are many and keep coming (one per
    sign-in): they are kept in a set and found as whole token-shaped words, so masking a line costs
    the same with ten tokens known or a hundred thousand.
    """

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._tokens: set[str] = set()

    def add(self, *values: str) -> None:
        fresh = {value for value in values if len(value) >= MIN_SECRET_LENGTH} - self._known
        if fresh:
            self._known |= fresh
            self._pattern = None

    def add_token(self, token: str) -> None:
        if len(self._tokens) >= MAX_TOKENS_KEPT:
            self._tokens.clear()  # the oldest are long expired; a leak of one would be harmless
        if len(token) >= MIN_SECRET_LENGTH:
            self._tokens.add(token)

    def redact(self, text: str) -> str:
        if not text:
            return text
        text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}={MASK}", text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
        if self._tokens:
            text = _TOKEN_SHAPED.sub(lambda m: MASK if m.group(0) in self._tokens else m.group(0), text)
        if self._known:
            if self._pattern is None:  # longest first, so a secret containing another is masked whole
                alternatives = sorted(self._known, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(value) for value in alternatives))
            text = self._pattern.sub(MASK, text)
        return text


SECRETS: Final = Secrets()  # filled where secrets enter: the inventory's secret references, sign-in


def remember(*values: str) -> None:
    """Passwords and passcodes, as the inventory's references are read."""
    SECRETS.add(*values)


def remember_token(token: str) -> None:
    SECRETS.add_token(token)


def redact(text: str) -> str:
    return SECRETS.redact(text)


def redact_all(value: Any) -> Any:
    """Every string inside a JSON-like value (dicts, lists), redacted; other values as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_all(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_all(item) for item in value]
    return value


def redact_each(values: Iterable[str]) -> list[str]:
    return [redact(value) for value in values]
