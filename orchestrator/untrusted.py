"""Text a server sent, made safe before a person, a terminal or a spreadsheet sees it. Pure.

Server text is untrusted: it may hold terminal escape sequences, be megabytes long, or start with `=` so
a spreadsheet runs it as a formula. `shown` strips control characters and caps the length (where the
text enters the tool); `csv_cell` neutralises formulas (OWASP's advice: a leading quote); `md_cell`
keeps a Markdown table a table.
"""

from __future__ import annotations

import re
from typing import Any, Final

MAX_TEXT: Final = 500  # characters of one server text kept: enough for any real message
# Control characters (escape sequences' lead-in), invisible direction marks, and lone surrogates (valid JSON,
# but no file or database can encode them).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]+")
_MARKDOWN: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "[": "\\[", "]": "\\]",
                                  "(": "\\(", ")": "\\)", "!": "\\!", "`": "\\`", "\n": " ", "\r": " "})  # fmt: skip
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def shown(value: Any, cap: int = MAX_TEXT) -> str:
    """A server's value as text: control characters (escape sequences' lead-in included) become one space,
    and the text is cut at `cap` characters with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    text = _CONTROL.sub(" ", text[: cap * 4]).strip()
    return text if len(text) <= cap else text[: cap - 1] + "…"


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def md_cell(value: Any) -> str:
    """A Markdown table cell: its pipes escaped, its HTML, links and images inert, on one line."""
    text = "" if value is None else str(value)
    return text.translate(_MARKDOWN)


def code_span(value: Any) -> str:
    """Text for inside a Markdown code span: shown as it is, but for what could end the span or the line."""
    return shown(value, 300).replace("`", "'")
