"""One redaction layer for everything the tool writes: log lines, reports, the ledger, error messages.

A secret is either a value the tool knows (every password and passcode read from the inventory's
references, every token a deployment issued) or a shape that carries one whatever its value
(`token=...`, `access_token=...`, `api_key=...`, `sig=...`, `password=...`, `Bearer ...`), as a careless
server or proxy may echo a request back in an error. `redact(text)` masks both; the sinks (`progress`,
`report`, `ledger`, `cli`) call it on every string they write, so no code path has to remember to.

A server echoes what it was sent in whatever form it holds it: percent-encoded (`%20` or `+` for a
space, hex in either case), JSON-escaped (`\\u00f6`, `\\"`, `\\\\`, `\\/`, or ö raw) or HTML-escaped
(`&quot;`, `&#34;`, `&#x22;`, `&amp;`). A known secret is masked in every one of these forms, and in any
mixture of them: each of its characters may be written in any of its forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.entities import codepoint2name
from typing import Any, Final
from urllib.parse import unquote

MASK: Final = "[redacted]"
MIN_SECRET_LENGTH: Final = 4  # shorter values would mask ordinary words; no real secret is that short
# `key=value`, the key alone or ending a longer one (`access_token`, `client_secret`, `x-api-key`), in any
# case, as written or percent-encoded inside another URL (`%3Ftoken%3D...`); the value runs to `&` or its
# `%26`. The key starts a word (not `monkey=`), and a `%XX` just before it is not a letter of that word.
_KEY_VALUE: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9](?<!%[0-9A-Fa-f]{2}))(token|(?:api)?key|secret|pass(?:word|wd|code)|sig(?:nature)?)(=|%3D)"
    r"((?:\\.|(?!%26)[^&\s\"',;)\\])+)"  # an escape (`\"` in a JSON text) is taken whole, never half of it
)
_BEARER: Final = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_TOKEN_SHAPED: Final = re.compile(r"[A-Za-z0-9._~+/=-]{4,}")  # at least MIN_SECRET_LENGTH
# The same in a text holding escapes: a `%XX` or `\uXXXX` is part of a word, so a token right after `%20`
# or `\u0022` is not taken for the end of a longer word (`20abc...`).
_ESCAPED_TOKEN_SHAPED: Final = re.compile(r"(?:[A-Za-z0-9._~+/=-]|%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}){4,}")
# Inside such a word: the pieces that may be a token (its own characters, its `+`, `/` and `=` perhaps
# percent-encoded), and the escapes and form-encoded spaces (`+`) between them.
_TOKEN_PIECE: Final = re.compile(r"(?:[A-Za-z0-9._~/=-]|%(?:2[BbFf]|3[Dd]))+|%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}")
_PLAIN: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")  # never escaped
_JSON_SHORT: Final = {'"': '"', "\\": "\\", "/": "/", "'": "'", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_HTML_NAMES: Final = {**codepoint2name, ord("'"): "apos"}
MAX_TOKENS_KEPT: Final = 200_000


class Secrets:
    """The secrets of this process, and the masking of them.

    Passwords and passcodes are few and fixed (one per secret reference of the inventory) and may hold
    any character: one compiled alternation finds them, each in every form it may be echoed in
    (`_any_form`). Tokens are many and keep coming (one per sign-in): they are kept in a set and found as
    whole token-shaped words, so masking a line costs the same with ten tokens known or a hundred
    thousand. Tokens are URL-safe, so written the same in every form; a text holding escapes (`%20`,
    `\\u0022`, `+` for a space) is split at them, and a word percent-encoded is looked up decoded.
    """

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._tokens: set[str] = set()

    def add(self, *values: str) -> None:
        fresh = {value for value in values if len(value) >= MIN_SECRET_LENGTH} - self._known
        if fresh:
            self._known |= fresh
            self._pattern = None  # compiled again, every form of every secret, at the next line

    def add_token(self, token: str) -> None:
        if len(self._tokens) >= MAX_TOKENS_KEPT:
            self._tokens.clear()  # the oldest are long expired; a leak of one would be harmless
        if len(token) >= MIN_SECRET_LENGTH:
            self._tokens.add(token)

    def redact(self, text: str) -> str:
        if not text:
            return text
        # The known secrets first: a shape's mask ending at a space or a quote inside a secret would leave
        # the rest of it, no longer whole, to be written.
        if self._known:
            if self._pattern is None:  # longest first, so a secret containing another is masked whole
                alternatives = sorted(self._known, key=len, reverse=True)
                self._pattern = re.compile("|".join(_any_form(value) for value in alternatives))
            text = self._pattern.sub(MASK, text)
        if self._tokens:
            words = _ESCAPED_TOKEN_SHAPED if "%" in text or "\\u" in text else _TOKEN_SHAPED
            text = words.sub(self._mask_token, text)
        text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)

    def _mask_token(self, word: re.Match[str]) -> str:
        text = word.group(0)
        if text in self._tokens:
            return MASK
        key, equals, value = text.partition("=")  # `=` is a token character (base64 padding), and a separator
        if equals and value in self._tokens:
            return f"{key}={MASK}"
        if "%" not in text and "\\" not in text and "+" not in text:
            return text
        # An encoded text: its escapes and form-encoded spaces separate words, and a token's own `+`, `/`
        # and `=` may be percent-encoded.
        return _TOKEN_PIECE.sub(self._mask_piece, text)

    def _mask_piece(self, piece: re.Match[str]) -> str:
        text = piece.group(0)
        return MASK if (unquote(text) if "%" in text else text) in self._tokens else text


def _any_form(secret: str) -> str:
    """A pattern for the secret as written, percent-encoded, JSON-escaped or HTML-escaped, or any mixture.

    Each character is matched in each of its forms: itself; `+` for a space; its UTF-8 bytes as `%XX`;
    `\\"`, `\\\\`, `\\/`... or `\\uXXXX` (a surrogate pair beyond the BMP); `&quot;`, `&#34;` or `&#x22;`.
    Hex digits in either case. ASCII letters and digits are never escaped, so stay plain (the engine skips
    ahead to a secret's first one); anything else may be, even `-._` (an encoder escaping all but those).
    """
    return "".join(_char_forms(char) for char in secret)


def _char_forms(char: str) -> str:
    if char in _PLAIN:
        return char
    code = ord(char)
    utf16 = char.encode("utf-16-be")
    forms = [
        _any_case_hex("".join(f"%{byte:02X}" for byte in char.encode("utf-8"))),
        _any_case_hex("".join(f"\\\\u{utf16[i]:02X}{utf16[i + 1]:02X}" for i in range(0, len(utf16), 2))),
        f"&#0*{code};",
        _any_case_hex(f"&#[xX]0*{code:X};"),
    ]
    if char in _JSON_SHORT:
        forms.append(re.escape("\\" + _JSON_SHORT[char]))
    if code in _HTML_NAMES:
        forms.append(f"&{_HTML_NAMES[code]};")
    if char == " ":
        forms.append(r"\+")
    # The escapes before the character itself: a secret ending in `\` takes the whole `\\` of a JSON text,
    # never half of it (the half left would escape what follows).
    return f"(?:{'|'.join([*forms, re.escape(char)])})"


def _any_case_hex(pattern: str) -> str:
    """`%C3` as `%[cC]3`: the hex digits of a pattern in either case (its only capitals A-F are hex digits)."""
    return re.sub("[A-F]", lambda m: f"[{m.group(0).lower()}{m.group(0)}]", pattern)


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
