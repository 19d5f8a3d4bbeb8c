"""Notifications: a short summary of a run, a snapshot or an audit, sent at its end through Apprise.

One URL scheme (Apprise's) reaches Slack, Teams, e-mail, ntfy, PagerDuty, a JSON webhook (`json://`,
`jsons://`) and the rest. What is sent is built by pure functions from the report's own document
(`summary_text`, `should_notify`); `check_urls` refuses a URL Apprise cannot use before anything is
requested; `send` delivers.

A notification never fails the run, never delays it past its timeout and never carries a secret:
- `send` returns its problems (one line per URL) and raises nothing but cancellation. Each URL is tried
  at most twice (`ATTEMPTS`) within one timeout for all of them; Apprise's plugins block on sockets, so
  each attempt runs in a daemon thread with socket timeouts no longer than its share of the budget. The
  event loop only waits for the thread; a timeout or a cancellation abandons it, and its sockets time out
  about when it was abandoned (so the process's exit is not held either; a DNS lookup that hangs is the
  one wait no socket timeout bounds).
- Every text sent passes `untrusted.shown` (no control characters, capped: server text is in it) and
  `redact.redact`. A notify URL is itself a secret (a webhook's token is in it): it is never written
  whole, only as `public_url` shows it (scheme and host, nothing else), and its token-like parts are
  remembered by the redaction layer, so no sink writes them either.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import anyio

from orchestrator import redact as redaction
from orchestrator.errors import MESSAGE_READ, InputError
from orchestrator.redact import MASK, redact
from orchestrator.report import OUTCOMES
from orchestrator.untrusted import shown

NOTIFY_ON: Final = ("failure", "always")  # --notify-on; the default is the first
DEFAULT_TIMEOUT: Final = 10.0  # seconds, every URL and both attempts included
ATTEMPTS: Final = 2  # a notification is retried once
RETRY_PAUSE: Final = 0.5  # seconds between the two attempts, at most a tenth of the timeout
WORST: Final = 5  # targets (or deployments) named in the message
REASONS: Final = 5  # failure reasons (or controls) listed
NOT_A_URL: Final = "(not a URL)"  # what public_url shows of text that is not one
TITLE_CAP: Final = 200
LINE_CAP: Final = 300
BODY_CAP: Final = 3500  # ntfy takes 4 KiB; Slack, Teams and e-mail take far more
_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}$")
# A host name with a dot, an IP address or localhost, with its port: what is shown of a URL.
_HOST_LIKE: Final = re.compile(r"(?i)^(localhost|\[[0-9a-f:.]+\]|[a-z0-9-]+(\.[a-z0-9-]+)+)(:[0-9]{1,5})?$")
_WORD: Final = re.compile(r"^[a-z-]*$")  # a plain lowercase word (`services`, `hooks`) is no token
_TOKEN_LENGTH: Final = 8  # a URL part this long that is not a plain word is taken for a token
T = TypeVar("T")


# -- the message, from values --


def should_notify(on: str, ok: bool) -> bool:
    """`--notify-on always`: every time; `failure`: only when the command did not end fully well."""
    if on not in NOTIFY_ON:
        raise ValueError(f"--notify-on is one of {', '.join(NOTIFY_ON)}, not {on!r}")
    return on == "always" or not ok


def summary_text(document: dict[str, Any], kind: str, folder: Path) -> tuple[str, str]:
    """The (title, body) of the notification for a report's document: `report.report_document`'s for a
    run, a retry or a snapshot (`kind` as the document's), `audit.report.compliance_document`'s for an
    audit (`kind="audit"`). Counts, the failures grouped by reason, the worst few targets, where the report
    is; every line cleaned (`shown`) and redacted. Pure."""
    if kind == "audit":
        title, lines = _audit_text(document)
        report = folder / "compliance.html"
    else:
        title, lines = _run_text(document, kind)
        report = folder / "report.html"
    if document.get("stopped_reason"):
        lines.insert(1, f"Stopped early: {document['stopped_reason']}.")
    lines += ["", f"Report: {report}"]
    return _clean(title, TITLE_CAP), _clean_body(lines)


def _run_text(document: dict[str, Any], kind: str) -> tuple[str, list[str]]:
    summary = document["summary"]
    total, succeeded = summary["total"], summary.get("succeeded", 0)
    name = {"snapshot": "Pre-upgrade snapshot", "retry": "Retry run", "demo": "Demo run"}.get(kind, "Backup run")
    readiness = document.get("readiness")
    if readiness is not None:
        deployments = readiness["ready"] + readiness["not_ready"]
        verdict = f"{readiness['ready']} of {deployments} deployments ready for the upgrade"
    elif succeeded == total:
        verdict = f"all {total} targets succeeded"
    else:
        verdict = f"{succeeded} of {total} targets succeeded"
    title = f"{name} {document.get('run_id', '')}: {verdict}"
    counts = ", ".join(f"{summary[o]} {o}" for o in OUTCOMES if summary.get(o))
    lines = [f"{total} targets: {counts or 'none'}."]
    failures = summary.get("failures_by_reason", [])
    if failures:
        lines += ["", "Failures by reason:"]
        lines += [f"- {f['count']} x {f['error_class']}: {f['reason']}" for f in failures[:REASONS]]
        if len(failures) > REASONS:
            lines.append(f"- ... and {len(failures) - REASONS} more reasons")
    if readiness is not None:
        not_ready = [d for d in readiness["deployments"] if not d["ready"]]
        if not_ready:
            lines += ["", "Not ready:"]
            lines += [f"- {d['deployment']}: {'; '.join(d['reasons'])}" for d in not_ready[:WORST]]
            lines += _more(len(not_ready), "deployments")
    else:
        worst = _worst_run_targets(document.get("targets", []), failures)
        if worst:
            lines += ["", "Worst targets:", *(f"- {line}" for line in worst[:WORST])]
            lines += _more(len(worst), "targets")
    return title, lines


_SEVERITY: Final = ("failed", "timed_out", "interrupted", "not_started", "skipped")


def _worst_run_targets(rows: list[dict[str, Any]], failures: list[dict[str, Any]]) -> list[str]:
    """The targets that did not succeed, the worst outcome first, each with its reason; from the rows where
    the document has them, else from the failures' target lists."""
    if rows:
        failing = [r for r in rows if r.get("outcome") != "succeeded"]
        rank = {outcome: n for n, outcome in enumerate(_SEVERITY)}
        failing.sort(key=lambda r: rank.get(str(r.get("outcome")), len(rank)))  # stable: inventory order kept
        return [
            f"{r['deployment']}/{r['store']}: {r['outcome']}"
            + (f" ({r['error_class']})" if r.get("error_class") else "")
            + (f": {r['error']}" if r.get("error") else "")
            for r in failing
        ]
    return [f"{key}: {f['error_class']}" for f in failures for key in f.get("targets", [])]


def _audit_text(document: dict[str, Any]) -> tuple[str, list[str]]:
    summary = document["summary"]
    total, compliant = summary["targets"], summary["compliant"]
    verdict = f"all {total} targets compliant" if compliant == total else f"{compliant} of {total} targets compliant"
    title = f"Compliance audit {document.get('audit_id', '')}: {verdict}"
    counts = ", ".join(f"{summary[v]} {label}" for v, label in _VERDICTS if summary.get(v))
    lines = [f"{total} targets: {counts or 'none'}."]
    controls = sorted(((n, c) for c, n in summary.get("by_control", {}).items() if n), reverse=True)
    if controls:
        lines += ["", "Violations by control: " + ", ".join(f"{c} {n}" for n, c in controls[:REASONS]) + "."]
    worst = _worst_audit_targets(document.get("targets", []))
    if worst:
        lines += ["", "Worst targets:", *(f"- {line}" for line in worst[:WORST])]
        lines += _more(len(worst), "targets")
    return title, lines


_VERDICTS: Final = (("compliant", "compliant"), ("violation", "in violation"), ("unknown", "unknown"))


def _worst_audit_targets(rows: list[dict[str, Any]]) -> list[str]:
    """Violations first, the most controls failed and the oldest backup first (none at all is oldest);
    then the targets the audit could not read."""
    violating = [r for r in rows if r.get("verdict") == "violation"]
    violating.sort(key=lambda r: (-len(r.get("violations") or []), -_age(r)))
    unknown = [r for r in rows if r.get("verdict") == "unknown"]
    lines = [
        f"{r['deployment']}/{r['store']}: " + "; ".join(f"{v['control']}: {v['reason']}" for v in r["violations"])
        for r in violating
    ]
    lines += [
        f"{r['deployment']}/{r['store']}: unknown" + (f" ({r['error_class']})" if r.get("error_class") else "")
        + (f": {r['error']}" if r.get("error") else "")
        for r in unknown
    ]  # fmt: skip
    return lines


def _age(row: dict[str, Any]) -> float:
    age = row.get("age_hours")
    return float("inf") if age is None else float(age)


def _more(count: int, what: str) -> list[str]:
    return [f"- ... and {count - WORST} more {what}"] if count > WORST else []


def _clean(text: str, cap: int) -> str:
    """Redacted, then cleaned and capped: looking at no more of a huge text than a failure message does."""
    return shown(redact(text[:MESSAGE_READ]), cap)


def _clean_body(lines: list[str]) -> str:
    """Each line cleaned on its own (a line break is the one control character a body keeps), then capped."""
    body = "\n".join(_clean(line, LINE_CAP) for line in lines)
    return body if len(body) <= BODY_CAP else body[: BODY_CAP - 1] + "…"


# -- the URLs --


def public_url(url: str) -> str:
    """A notify URL as it may be written anywhere: its scheme, and its host when what stands in the host's
    place is a host name or address (in `slack://TOKEN/...` it is a token); credentials, path, query and
    fragment dropped. `json://user:pw@127.0.0.1:8080/hook?token=x` -> `json://127.0.0.1:8080/…`."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator or not _SCHEME.match(scheme):
        return NOT_A_URL
    host = _host(rest)
    dropped = rest.rstrip("/") != host
    tail = ("/…" if host else "…") if dropped else ""
    return shown(f"{scheme.lower()}://{host}{tail}", 120)


def _host(rest: str) -> str:
    """The host (and port) of a URL after its `scheme://`, or "" when that place holds no host name."""
    location = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    return location if _HOST_LIKE.match(location) else ""


def _url_parts(url: str) -> list[str]:
    """Every part of a URL that may hold a secret: the credentials, a host that is no host name, each path
    segment, each query value, the fragment; as written and percent-decoded."""
    _, _, rest = url.strip().partition("://")
    location, _, query = rest.partition("?")
    host = _host(rest)
    if host:
        location = location.replace(host, "/", 1)
    pieces = re.split(r"[/@:#]+", location)
    pieces += [value for pair in query.split("&") for value in pair.partition("=")[2:]]
    return [p for piece in pieces for p in {piece, unquote(piece)} if p]


def _remember_secrets(url: str) -> None:
    """The URL's password, and every part of it shaped like a token, masked by every sink from now on. Plain
    words (`services`, `hooks`) are not taken: they would be masked in every report line."""
    _, _, rest = url.strip().partition("://")
    userinfo = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[0]
    password = unquote(userinfo.partition(":")[2])
    tokens = [p for p in _url_parts(url) if len(p) >= _TOKEN_LENGTH and not _WORD.match(p)]
    redaction.remember(*(p for p in (password, *tokens) if p))


def _scrub(text: str, url: str) -> str:
    """Text about a URL (Apprise's own words) with every part of that URL masked, then cleaned and redacted."""
    for piece in sorted(_url_parts(url), key=len, reverse=True):
        if len(piece) >= 3:
            text = text.replace(piece, MASK)
    return _clean(text, LINE_CAP)


def refuse_unusable(urls: Sequence[str]) -> None:
    """A --notify URL Apprise cannot use is bad input (`InputError`), refused before anything is sent."""
    if urls and (problems := check_urls(urls)):
        raise InputError(problems)


def check_urls(urls: Sequence[str]) -> list[str]:
    """The problems of the notify URLs, one line each, none showing a URL whole; [] when Apprise can use
    every one. Called before anything is requested (the caller refuses the input with them). Remembers
    each URL's secrets for the redaction layer, and loads Apprise and the plugins of these schemes, so the
    notification at the end spends its timeout on sending."""
    problems = []
    for index, url in enumerate(urls, 1):
        _remember_secrets(url)
        label = public_url(url)
        where = f"--notify URL {index} of {len(urls)}"
        if label == NOT_A_URL:
            problems.append(f"{where}: not a URL; an Apprise URL reads like slack://... or json://host:port/path")
        elif _plugin(url) is None:
            problems.append(
                f"{where} ({label}): Apprise cannot use it: its scheme is unknown or a part is missing or malformed "
                "(the schemes and their parts: https://github.com/caronc/apprise/wiki)"
            )
    return problems


def _plugin(url: str) -> Any:
    with _quiet_imports():
        return _apprise().Apprise.instantiate(url)


def _apprise() -> Any:
    """Apprise, imported only when notifying (the CLI starts faster without it)."""
    with _quiet_imports():
        import apprise

    return apprise


@contextmanager
def _quiet_imports() -> Iterator[None]:
    """Apprise loads its plugins as it meets their schemes, and one imports `imghdr`, deprecated: a warning
    about a library's insides is nothing the user can act on (and an error in the tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# -- sending --


async def send(
    urls: Sequence[str],
    title: str,
    body: str,
    *,
    # Not a cancel scope at the call site: the budget is split between the attempts and bounds the threads' sockets.
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ok: bool | None = None,
) -> list[str]:
    """Send (title, body) to every URL at once, each tried at most `ATTEMPTS` times, all within `timeout`
    seconds. Returns the problems, one line per URL that failed, showing the URL only as `public_url` does;
    [] when every one was delivered. Raises nothing but cancellation. `ok` colours the message where the
    service can (success, failure; None: information)."""
    title, body = _clean(title, TITLE_CAP), _clean_body(body.split("\n"))
    notify_type = "info" if ok is None else "success" if ok else "failure"
    deadline = anyio.current_time() + timeout
    problems = [""] * len(urls)

    async def one(index: int, url: str) -> None:
        where = f"notification {index + 1} of {len(urls)} ({public_url(url)}) failed"
        problems[index] = f"{where}: no answer within {timeout:g} s"
        _remember_secrets(url)
        reason = ""
        for attempt in range(1, ATTEMPTS + 1):
            if attempt > 1:
                await anyio.sleep(min(RETRY_PAUSE, timeout / 10))  # a short budget keeps most of it for the retry
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            budget = remaining / (ATTEMPTS - attempt + 1)  # the first attempt leaves the retry its share
            with anyio.move_on_after(budget):
                delivered, reason = await _in_daemon_thread(partial(_deliver, url, title, body, notify_type, budget))
                if delivered:
                    problems[index] = ""
                    return
                problems[index] = f"{where} after {attempt} attempt{'s' if attempt > 1 else ''}: " + (
                    _scrub(reason, url) or "no reason given"
                )

    with anyio.move_on_after(timeout + 1.0):  # a guard: each attempt already keeps within the deadline
        async with anyio.create_task_group() as tasks:
            for index, url in enumerate(urls):
                tasks.start_soon(one, index, url)
    return [problem for problem in problems if problem]


def _deliver(url: str, title: str, body: str, notify_type: str, seconds: float) -> tuple[bool, str]:
    """One attempt, blocking (run in a thread): delivered or not, and Apprise's last warning as the reason."""
    apprise = _apprise()
    record = _ThreadLog()
    logger = logging.getLogger("apprise")
    logger.addHandler(record)
    try:
        plugin = _plugin(url)
        if plugin is None:
            return False, "Apprise cannot use this URL"
        # No socket wait longer than this attempt's share of the budget: an attempt abandoned at its timeout
        # ends about then too (Apprise 2 sends from its own pool, whose workers the interpreter joins at exit).
        plugin.socket_connect_timeout = plugin.socket_read_timeout = max(0.1, seconds)
        sender = apprise.Apprise()
        sender.add(plugin)
        result = sender.notify(body=body, title=title, notify_type=notify_type, body_format="text")
        if result:
            return True, ""
        # Apprise 2 keeps each call's log (its services run in its own threads); Apprise 1 logs in this thread.
        logs = getattr(result, "logs", None)
        said = [str(entry.message) for entry in logs()] if callable(logs) else []
        return False, " ".join(dict.fromkeys(said)) or record.last
    except Exception as error:  # a plugin's bug is a failed notification, never the run's end
        return False, f"{type(error).__name__}: {error}"
    finally:
        logger.removeHandler(record)


class _ThreadLog(logging.Handler):
    """Apprise's warnings logged by the thread that made this handler: why its attempt failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.last = record.getMessage()


async def _in_daemon_thread(function: Callable[[], T]) -> T:
    """`function()` in a daemon thread, awaited without blocking the loop. Cancelled (a timeout, Ctrl-C), the
    thread is abandoned; it ends with its socket timeouts, and is not itself joined at exit (anyio's worker
    threads would be). asyncio's own `call_soon_threadsafe`: the tool runs only on asyncio (aiohttp)."""
    loop = asyncio.get_running_loop()
    done = anyio.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(function())
        except BaseException as error:  # handed to the waiter, raised there
            failure.append(error)
        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(done.set)

    threading.Thread(target=run, name="notify", daemon=True).start()
    await done.wait()
    if failure:
        raise failure[0]
    return outcome[0]
