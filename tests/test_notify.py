"""Notifications: the summary reaches a webhook with its counts and failures and no secret; a receiver down,
failing or silent costs at most the timeout and is a problem line, never an exception; no URL is shown whole."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from orchestrator import notify
from orchestrator.audit.controls import AuditTarget, Control, Verdict, Violation
from orchestrator.audit.report import compliance_document
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import Outcome, RunResult, TargetState
from orchestrator.notify import check_urls, public_url, send, should_notify, summary_text
from orchestrator.redact import MASK, redact, remember
from orchestrator.report import report_document
from orchestrator.settings import RunSettings
from tests.conftest import make_deployment
from tests.fakes import closed_port, serving

pytestmark = pytest.mark.anyio
SECRET = "s3cret-Hunter2-xyz"  # a password the inventory referenced, echoed by a careless server


@dataclass
class Receiver:
    """A webhook on 127.0.0.1: `/ok` takes the message, `/broken` answers 500, `/silent` never answers."""

    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    port: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts[request.path] = self.attempts.get(request.path, 0) + 1
        if request.path.startswith("/ok"):
            self.received.append(await request.json())
            return web.json_response({})
        if request.path.startswith("/broken"):
            return web.Response(status=500, text=f"internal error for {request.path_qs}")
        await anyio.sleep(60)
        return web.Response()

    def url(self, path: str, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serving(receiver.handle, shutdown_timeout=0.1) as port:
        receiver.port = port
        yield receiver


def run_document(tmp_path: Path, kind: str = "run") -> dict[str, Any]:
    """Three targets: one succeeded, two failed for the same reason (a server echoing the password)."""
    targets = []
    for index, name in enumerate(("gis-1", "gis-2", "gis-3")):
        target = TargetState(index, make_deployment(name), "default", f"b-{name}", None, job_id=f"j{index}")
        if index == 0:
            target.finish(Outcome.SUCCEEDED, 1_795_741_260.0)
            target.verified = True  # a snapshot's backup found in its store's list
        else:
            target.fail(TargetError(ErrorClass.AUTHENTICATION, f"sign-in refused for password {SECRET}"), 1.0)
        targets.append(target)
    result = RunResult(
        "r1", 1_795_741_200.0, 1_795_741_300.0, targets, RunSettings(report_dir=tmp_path), "i", kind=kind
    )
    return report_document(result)  # built before the secret is known: notify's own redaction must mask it


async def test_the_summary_arrives_with_counts_failures_and_the_report_and_no_secret(tmp_path: Path) -> None:
    """What the webhook gets: the counts, the failure grouped with its count, the failing targets, where the
    report is; the password in the server's message masked."""
    document = run_document(tmp_path)
    remember(SECRET)
    title, body = summary_text(document, "run", tmp_path / "r1")
    async with receiving() as receiver:
        problems = await send([receiver.url("/ok")], title, body, timeout=5, ok=False)
    assert problems == []
    (message,) = receiver.received
    assert message["title"] == "Backup run r1: 1 of 3 targets succeeded"
    text = message["message"]
    assert "3 targets: 1 succeeded, 2 failed." in text
    assert f"- 2 x authentication: sign-in refused for password {MASK}" in text
    assert f"gis-2/default: failed (authentication): sign-in refused for password {MASK}" in text
    assert f"Report: {tmp_path / 'r1' / 'report.html'}" in text
    assert SECRET not in json.dumps(message) and message["type"] == "failure"


async def test_a_receiver_down_and_one_answering_500_are_problem_lines_within_the_timeout() -> None:
    """Never an exception: one line per failed URL, the 500 one tried twice, neither showing its path or token."""
    down = f"json://127.0.0.1:{closed_port()}/hook/Tok3nDown9?token=q1w2e3r4t5"
    async with receiving() as receiver:
        broken = receiver.url("/broken/Tok3nBroken7?key=z9x8c7v6")
        started = time.monotonic()
        problems = await send([down, broken], "title", "body", timeout=3)
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert receiver.attempts == {"/broken/Tok3nBroken7": 2}
    first, second = problems
    assert first.startswith(f"notification 1 of 2 ({public_url(down)}) failed after 2 attempts: ")
    assert second.startswith(f"notification 2 of 2 (json://127.0.0.1:{receiver.port}/…) failed after 2 attempts: ")
    assert "500" in second
    for secret in ("Tok3nDown9", "q1w2e3r4t5", "Tok3nBroken7", "z9x8c7v6", "/hook", "/broken"):
        assert secret not in first + second
    assert "Tok3nBroken7" not in redact(f"later, a log line naming {broken}")  # remembered for every sink


async def test_a_receiver_that_never_answers_costs_the_timeout_and_no_more() -> None:
    """A silent webhook: `send` returns at its timeout with a problem, both attempts having had their share."""
    async with receiving() as receiver:
        urls = [receiver.url("/silent"), receiver.url("/ok")]
        assert check_urls(urls) == []  # as the CLI does first: Apprise and its JSON plugin are loaded by then
        started = time.monotonic()
        problems = await send(urls, "t", "b", timeout=0.8)
        elapsed = time.monotonic() - started
    assert 0.7 < elapsed < 1.5
    assert problems == [f"notification 1 of 2 (json://127.0.0.1:{receiver.port}/…) failed: no answer within 0.8 s"]
    assert receiver.attempts["/silent"] == 2 and len(receiver.received) == 1


async def test_a_notification_under_way_is_cancelled_at_once() -> None:
    """Ctrl-C while a webhook hangs: the cancellation goes through at once, the thread is left behind."""
    async with receiving() as receiver:
        started = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            await send([receiver.url("/silent")], "t", "b", timeout=10)
        assert scope.cancelled_caught
        assert time.monotonic() - started < 1


async def test_no_url_sends_nothing_and_returns_no_problem() -> None:
    assert await send([], "t", "b", timeout=1) == []


@pytest.mark.parametrize(
    ("on", "ok", "expected"),
    [("failure", True, False), ("failure", False, True), ("always", True, True), ("always", False, True)],
)
def test_should_notify(on: str, ok: bool, expected: bool) -> None:
    """`--notify-on failure` (the default) keeps quiet after a fully good run; `always` never does."""
    assert should_notify(on, ok) is expected


def test_should_notify_refuses_an_unknown_choice() -> None:
    with pytest.raises(ValueError, match="failure, always"):
        should_notify("sometimes", True)


def test_check_urls_refuses_what_apprise_cannot_use_without_showing_it() -> None:
    """Bad URLs are refused before any backup is requested: every problem at once, no URL whole."""
    urls = [
        "json://127.0.0.1:8080/hook",
        "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops",
        "nosuchscheme://Secr3tHost/Secr3tPath",
        "hooks.example.com/no-scheme",
        "",
    ]
    problems = check_urls(urls)
    assert problems == [
        "--notify URL 3 of 5 (nosuchscheme://…): Apprise cannot use it: its scheme is unknown or a part is missing "
        "or malformed (the schemes and their parts: https://github.com/caronc/apprise/wiki)",
        "--notify URL 4 of 5: not a URL; an Apprise URL reads like slack://... or json://host:port/path",
        "--notify URL 5 of 5: not a URL; an Apprise URL reads like slack://... or json://host:port/path",
    ]
    assert check_urls(urls[:2]) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://user:pw@127.0.0.1:8080/hook?token=x", "json://127.0.0.1:8080/…"),
        ("jsons://hooks.example.com", "jsons://hooks.example.com"),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops", "slack://…"),
        ("https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazk", "https://hooks.slack.com/…"),
        ("mailtos://alerts:app-password@gmail.com?to=ops@example.com", "mailtos://gmail.com/…"),
        ("pagerduty://integrationkey@apikey", "pagerduty://…"),
        ("ntfy://ntfy.example.com/dr-alerts", "ntfy://ntfy.example.com/…"),
        ("json://[::1]:9000/x", "json://[::1]:9000/…"),
        ("not a url", "(not a URL)"),
        ("\x1b[2J://x", "(not a URL)"),
    ],
)
def test_public_url_keeps_the_scheme_and_a_real_host_only(url: str, shown: str) -> None:
    """A token in the host's place (Slack, PagerDuty) is no host: only a host name or address is shown."""
    assert public_url(url) == shown


def test_the_token_shaped_parts_of_a_url_are_masked_everywhere_and_plain_words_are_not() -> None:
    """A webhook's tokens and password go to the redaction layer; `services` stays a word in every report."""
    check_urls(
        [
            "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "mailtos://alerts:pw-for-mail@gmail.com",
        ]
    )
    line = "posted to services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ as alerts with pw-for-mail"
    assert redact(line) == f"posted to services/{MASK}/{MASK}/{MASK} as alerts with {MASK}"


def test_a_snapshot_summary_names_the_deployments_not_ready(tmp_path: Path) -> None:
    document = run_document(tmp_path, kind="snapshot")
    title, body = summary_text(document, "snapshot", tmp_path / "r1")
    assert title == "Pre-upgrade snapshot r1: 1 of 3 deployments ready for the upgrade"
    assert "Not ready:\n- gis-2: default: sign-in refused for password" in body
    assert body.endswith(f"Report: {tmp_path / 'r1' / 'report.html'}")


def test_an_audit_summary_counts_verdicts_and_names_the_worst_targets_first(tmp_path: Path) -> None:
    """Most controls failed first, then what could not be read; server text arrives without its escapes."""
    at = 1_795_741_200.0

    def violating(name: str, *controls: Control) -> AuditTarget:
        violations = tuple(Violation(c, f"{c.value} fails") for c in controls)
        return AuditTarget(make_deployment(name), "default", Verdict.VIOLATION, at, violations)

    targets = [
        AuditTarget(make_deployment("gis-ok"), "default", Verdict.COMPLIANT, at),
        violating("gis-old", Control.RECENT),
        violating("gis-worst", Control.RECENT, Control.RELEASE),
        AuditTarget(make_deployment("gis-x"), "default", Verdict.UNKNOWN, at, error_class="unreachable",
                    error="no answer\x1b[2J\x1b]8;;http://evil\x07 at all"),
    ]  # fmt: skip
    document = compliance_document(targets, audit_id="a1", audited_at=at, finished_at=at, inventory="i", policy={})
    title, body = summary_text(document, "audit", tmp_path / "audit-a1")
    assert title == "Compliance audit a1: 1 of 4 targets compliant"
    assert body.splitlines()[:7] == [
        "4 targets: 1 compliant, 2 in violation, 1 unknown.",
        "",
        "Violations by control: recent 2, release 1.",
        "",
        "Worst targets:",
        "- gis-worst/default: recent: recent fails; release: release fails",
        "- gis-old/default: recent: recent fails",
    ]
    assert "- gis-x/default: unknown (unreachable): no answer" in body and "\x1b" not in body and "\x07" not in body
    assert body.endswith(f"Report: {tmp_path / 'audit-a1' / 'compliance.html'}")


def test_a_huge_summary_is_capped_for_the_smallest_service(tmp_path: Path) -> None:
    """Thousands of distinct failures and 5 MiB reasons still make one short message (ntfy takes 4 KiB)."""
    document = run_document(tmp_path)
    failures = [{"error_class": "permanent", "reason": f"{n} " + "x" * 5_000_000, "count": 1} for n in range(3)]
    document["summary"]["failures_by_reason"] = failures * 1000
    title, body = summary_text(document, "run", tmp_path)
    assert len(body) <= notify.BODY_CAP and len(title) <= notify.TITLE_CAP
    assert "- ... and 2995 more reasons" in body


_SILENT_WEBHOOK_SCRIPT = """
import socket, time, anyio
from orchestrator.notify import check_urls, send
print(time.time())  # imported: the clock starts
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(5)  # connections are taken and never answered
url = f"json://127.0.0.1:{listener.getsockname()[1]}/hook"
assert check_urls([url]) == []
print(anyio.run(lambda: send([url], "t", "b", timeout=1.0)))
"""


@pytest.mark.slow
def test_an_abandoned_notification_does_not_hold_the_process_at_exit() -> None:
    """Apprise joins its sending threads at exit: their sockets time out with the attempt, so the command
    ends about when `send` returns, not when Apprise's own socket timeouts would have let go."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SILENT_WEBHOOK_SCRIPT], capture_output=True, text=True, timeout=30)
    ended = time.time()
    assert done.returncode == 0, done.stderr
    imported, problems = done.stdout.splitlines()
    assert "no answer within 1 s" in problems
    # About 1 s; held by Apprise's own socket timeouts (4 s) the exit would come after 4.6 s.
    assert ended - float(imported) < 3.5
