"""What an ArcGIS answer means, as pure functions: its JSON object, or the classified `TargetError` it
stands for; and what a sign-in grants.

Every answer is checked for the `{"error": ...}` envelope whatever its HTTP status (ArcGIS answers most
errors with HTTP 200), and for the classic admin error `{"status": "error", "messages", "code"}`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from orchestrator.backoff import parse_retry_after
from orchestrator.errors import ErrorClass, SignInFailed, TargetError

TOKEN_REFUSED: Final = frozenset({498, 499})  # the token expired or was revoked: sign in again, once
_TRANSIENT_HTTP: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
# A gateway error or a server crash may come after the server carried the request out.
_MAYBE_CARRIED_OUT_HTTP: Final = frozenset({500, 502, 504})
# Envelope codes worth retrying. An envelope 500 is the server's own verdict (12.0's
# `JSONObject["supportBDSBackup"] not found`), which no retry changes.
_TRANSIENT_ENVELOPE: Final = frozenset({429, 503})


def interpret(status: int, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
    """Turn one HTTP answer into its JSON object, or raise the classified error it stands for. Pure."""
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if 300 <= status < 400:
        target = headers.get("Location", "?")
        raise TargetError(ErrorClass.PERMANENT, f"HTTP {status} redirect to {target!r} not followed", code=status)
    parsed: Any = None
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python will parse
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        raise envelope_error(parsed["error"], retry_after)
    if isinstance(parsed, dict) and parsed.get("error"):  # an error said as a bare value: still an error
        raise envelope_error({"message": str(parsed["error"])}, retry_after)
    if 200 <= status < 300 and isinstance(parsed, dict) and _is_classic_error(parsed):
        # On any other status the status line says more (a 502 stays transient and ambiguous).
        messages = parsed.get("messages")
        text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else ""
        code = parsed.get("code")
        if isinstance(code, str) and code.strip().isdigit():
            code = int(code)
        raise envelope_error({"code": code, "message": text or "error"}, retry_after)
    if status in _TRANSIENT_HTTP:
        raise TargetError(
            ErrorClass.TRANSIENT,
            f"HTTP {status}",
            retry_after=retry_after,
            code=status,
            ambiguous=status in _MAYBE_CARRIED_OUT_HTTP,
        )
    if status in (401, 403):
        raise TargetError(ErrorClass.AUTHENTICATION, f"HTTP {status}: access refused", code=status)
    if status == 404:
        raise TargetError(ErrorClass.CONFIGURATION, "HTTP 404: no such path (check the URL and web context)", code=404)
    if not 200 <= status < 300:
        raise TargetError(ErrorClass.PERMANENT, f"HTTP {status}", code=status)
    if parsed is None:
        kind = (
            "an HTML page"
            if body.lstrip()[:1] == b"<"
            else ("an empty body" if not body else "a body that is not JSON")
        )
        # A 2xx that cannot be read may still have been carried out (a create, say): ambiguous.
        raise TargetError(
            ErrorClass.PERMANENT, f"answered {kind} instead of JSON (a proxy or login page?)", ambiguous=True
        )
    if not isinstance(parsed, dict):
        raise TargetError(
            ErrorClass.PERMANENT, f"answered JSON {type(parsed).__name__}, expected an object", ambiguous=True
        )
    return parsed


def _is_classic_error(body: Mapping[str, Any]) -> bool:
    """The classic admin APIs' error: `{"status": "error", "messages": [...], "code": 498}`. Pure.

    A job that ended `ERROR` says so too, but carries its `jobid`; this one is about the request
    (an expired token, say), and judged as a failed job it would fail a backup that is running fine.
    """
    status = body.get("status")
    return isinstance(status, str) and status.strip().lower() == "error" and "jobid" not in body


def envelope_error(error: Mapping[str, Any], retry_after: float | None = None) -> TargetError:
    """Classify ArcGIS's `{"error": {"code", "message", "details"}}`."""
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = str(error.get("message") or "error")
    details = error.get("details")
    detail_text = "; ".join(str(d) for d in details) if isinstance(details, list) else ""
    text = (f"{code} {message}" if code is not None else message) + (f" ({detail_text})" if detail_text else "")
    lowered = text.lower()
    if (
        code in TOKEN_REFUSED
        or error.get("messageCode") == "GWM_0003"
        or code in (401, 403)
        or "unable to generate token" in lowered
    ):
        error_class = ErrorClass.AUTHENTICATION
    elif code == 404 or "does not exist" in lowered:
        error_class = ErrorClass.CONFIGURATION
    elif "in progress" in lowered or code in _TRANSIENT_ENVELOPE:
        error_class = ErrorClass.TRANSIENT
    else:
        error_class = ErrorClass.PERMANENT
    return TargetError(error_class, text, retry_after=retry_after, code=code)


def refused_sign_in(error: TargetError) -> SignInFailed:
    """A sign-in failure as the run reports it: refused credentials are final (retrying them only risks
    locking the account); a network or configuration problem stays what it is. Never ambiguous: a sign-in
    creates nothing, whatever became of its answer. Pure."""
    if error.transient or error.error_class in (ErrorClass.CONFIGURATION, ErrorClass.UNREACHABLE):
        return SignInFailed(error.error_class, error.message, retry_after=error.retry_after, code=error.code)
    return SignInFailed(ErrorClass.AUTHENTICATION, f"sign-in refused: {error.message}", code=error.code)


@dataclass(frozen=True, slots=True)
class Grant:
    """A token from generateToken, and when to renew it: a margin before it expires."""

    token: str
    renew_at: float


_TOKEN: Final = re.compile(r"[\x21-\x7e]{1,4096}")


def read_grant(answer: Mapping[str, Any], now: float) -> Grant:
    """The token a sign-in answered, renewed a tenth of its lifetime (at most a minute) before it expires. Pure.

    A token that looks expired already (a server clock far behind ours) is still used once: a 498 renews it.
    An `expires` that is missing or not a finite number counts as a minute.
    """
    token, expires = answer.get("token"), answer.get("expires")
    if not isinstance(token, str) or not token:
        raise TargetError(ErrorClass.AUTHENTICATION, "sign-in answered no token")
    if not _TOKEN.fullmatch(token):  # it goes into a header: no control character, no space, a sane length
        raise TargetError(ErrorClass.PERMANENT, "sign-in answered a token that is not one (characters or length)")
    expires_at = now + 60
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        try:
            seconds = float(expires) / 1000
        except OverflowError:  # an integer too large for a float
            seconds = math.inf
        expires_at = seconds if math.isfinite(seconds) else expires_at
    lifetime = max(0.0, expires_at - now)
    return Grant(token, max(expires_at - min(60.0, lifetime / 10), now + 1.0))
