"""The HTTP client: answer classification, retries, the body cap, redirects, tokens and 10.9's legacy paths.

Pure functions are tested by table. Everything that speaks HTTP runs over real sockets on 127.0.0.1:
against the simulator (with a `ManualClock` shared by client and server, so token expiry and job runtime
cost nothing), or against a tiny `aiohttp.web` stub when a test needs one exact raw answer.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Any, Final

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from orchestrator import api
from orchestrator.api import ArcGISClient, envelope_error, interpret, open_api_context
from orchestrator.api.transport import MAX_BODY_BYTES, transport_error
from orchestrator.backoff import MAX_RETRY_AFTER
from orchestrator.clock import Clock, ManualClock, sleep_unless_by_sleeping
from orchestrator.dr import dr_job_running, dr_status_is_ours, dr_status_message
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import Deployment
from orchestrator.settings import RunSettings
from orchestrator.simulator import SimulatedFleet
from tests.conftest import PASSCODE, PASSWORD, FleetStarter, make_deployment
from tests.fakes import serving

pytestmark = pytest.mark.anyio

NOW: Final = ManualClock().now()
TOKEN_PATH: Final = "/sharing/rest/generateToken"
DR: Final = "/admin/system/disasterrecovery"
HTML_PAGE: Final = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

A = ErrorClass.AUTHENTICATION
C = ErrorClass.CONFIGURATION
T = ErrorClass.TRANSIENT
P = ErrorClass.PERMANENT
U = ErrorClass.UNREACHABLE


# -- helpers --


def envelope(code: object, message: str = "error", details: list[str] | None = None, **extra: object) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "details": details or [], **extra}}).encode()


def classify(status: int, body: bytes, headers: dict[str, str] | None = None) -> TargetError:
    with pytest.raises(TargetError) as caught:
        interpret(status, headers or {}, body, NOW)
    return caught.value


def deployment_at(url: str, *, password: str = PASSWORD) -> Deployment:
    return make_deployment("gis-0000", url=url, password=password, passcode=PASSCODE)


@asynccontextmanager
async def client_for(
    url: str,
    clock: Clock,
    *,
    password: str = PASSWORD,
    on_retry: api.OnRetry | None = None,
    **settings: Any,
) -> AsyncIterator[ArcGISClient]:
    """A real client (one session, one request limiter) for the deployment at `url`.

    A test that waits on a `ManualClock` nobody advances fails after 10 s instead of hanging.
    """
    values: dict[str, Any] = {"retry_initial": 1.0, "retry_max": 30.0, "request_timeout": 5.0, "connect_timeout": 2.0}
    values.update(settings)
    with anyio.fail_after(10):
        async with open_api_context(RunSettings(**values), clock, random.Random(7), on_retry) as context:
            yield ArcGISClient(deployment_at(url, password=password), context)


class SteppingClock:
    """A clock whose `sleep` records the delay asked for, moves time by it and returns at once."""

    def __init__(self, start: float = NOW) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()

    async def sleep_unless(self, event: anyio.Event, seconds: float | None) -> None:
        await sleep_unless_by_sleeping(self, event, seconds)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(
    status: int = 200,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Handler:
    """One canned answer: `body` as JSON, or `raw` bytes."""

    async def answer(request: web.Request) -> web.StreamResponse:
        data = raw if raw is not None else json.dumps(body).encode()
        return web.Response(status=status, body=data, headers=headers, content_type=content_type)

    return answer


OK: Final = reply(body={"ok": True})


class Stub:
    """A tiny server on 127.0.0.1: each path answers its script in order, the last answer repeating.

    generateToken grants `t1`, `t2`, ... valid one hour on `clock` unless scripted otherwise.
    `hits` counts requests per path, `tokens` lists the bearer token of every request but sign-ins.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.scripts: dict[str, list[Handler]] = {TOKEN_PATH: [self.grant]}
        self.hits: Counter[str] = Counter()
        self.tokens: list[str] = []
        self.issued = 0

    def script(self, path: str, *answers: Handler) -> None:
        self.scripts[path] = list(answers)

    async def grant(self, request: web.Request) -> web.StreamResponse:
        self.issued += 1
        expires = round((self.clock.now() + 3600) * 1000)
        return web.json_response({"token": f"t{self.issued}", "expires": expires, "ssl": False})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        if request.path != TOKEN_PATH:
            self.tokens.append(request.headers.get("X-Esri-Authorization", "").removeprefix("Bearer "))
        script = self.scripts.get(request.path)
        if script is None:
            return web.Response(status=404, text="no such path")
        return await script[min(self.hits[request.path], len(script)) - 1](request)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the base URL."""
        async with serving(self.handle) as port:
            yield f"http://127.0.0.1:{port}"


def records(fleet: SimulatedFleet, since: int = 0) -> list[tuple[str, int, int]]:
    """(endpoint, HTTP status, envelope code) of every request the simulator saw, from `since` on."""
    return [(r.endpoint, r.status, r.error_code) for r in fleet.requests[since:]]


def count(fleet: SimulatedFleet, endpoint: str) -> int:
    return sum(1 for r in fleet.requests if r.endpoint == endpoint)


# -- interpret: one HTTP answer in, an object or a classified error out (pure) --


@pytest.mark.parametrize(
    ("status", "body", "error_class", "code"),
    [
        pytest.param(200, envelope(498, "Invalid token."), A, 498, id="envelope-498"),
        pytest.param(200, envelope(499, "Token Required", messageCode="GWM_0003"), A, 499, id="envelope-499"),
        pytest.param(200, envelope(400, "Token Required", messageCode="GWM_0003"), A, 400, id="GWM_0003-alone"),
        pytest.param(200, envelope(403, "You do not have permissions."), A, 403, id="envelope-403"),
        pytest.param(200, envelope(401, "Unauthorized."), A, 401, id="envelope-401"),
        pytest.param(
            200, envelope(400, "Unable to generate token.", ["Invalid username or password."]), A, 400, id="sign-in"
        ),
        pytest.param(200, envelope(404, "Resource does not exist or is inaccessible."), C, 404, id="envelope-404"),
        pytest.param(200, envelope(400, "Backup store 'x' does not exist."), C, 400, id="does-not-exist"),
        pytest.param(200, envelope(500, 'JSONObject["supportBDSBackup"] not found.'), P, 500, id="envelope-500"),
        pytest.param(500, envelope(500, "Internal error."), P, 500, id="envelope-500-in-http-500"),
        pytest.param(200, envelope(429, "Too many requests."), T, 429, id="envelope-429"),
        pytest.param(200, envelope(503, "Service unavailable."), T, 503, id="envelope-503"),
        pytest.param(
            200,
            envelope(409, "Unable to create backup.", ["Another disaster recovery operation is in progress (job j)."]),
            T,
            409,
            id="in-progress",
        ),
        pytest.param(
            200, envelope(409, "Unable to create backup.", ["Backup 'b' already exists."]), P, 409, id="duplicate"
        ),
        pytest.param(200, envelope(400, "Unable to create backup.", ["The passcode is short."]), P, 400, id="400"),
        pytest.param(498, envelope(498, "Invalid token."), A, 498, id="mirrored-status-498"),
    ],
)
def test_envelope_is_classified_whatever_the_status(
    status: int, body: bytes, error_class: ErrorClass, code: int
) -> None:
    """ArcGIS's {"error": ...} envelope decides the class (HTTP 200 included); envelope 500 is not retried."""
    error = classify(status, body)
    assert (error.error_class, error.code, error.ambiguous) == (error_class, code, False)


@pytest.mark.parametrize(
    ("status", "error_class", "ambiguous"),
    [
        (408, T, False),
        (425, T, False),
        (429, T, False),
        (503, T, False),
        (500, T, True),
        (502, T, True),
        (504, T, True),
        (401, A, False),
        (403, A, False),
        (404, C, False),
        (400, P, False),
        (405, P, False),
        (418, P, False),
    ],
)
def test_plain_http_errors_are_classified(status: int, error_class: ErrorClass, ambiguous: bool) -> None:
    """An error page with no envelope: 5xx/429/408 transient (500/502/504 may have been carried out)."""
    error = classify(status, HTML_PAGE)
    assert (error.error_class, error.code, error.ambiguous) == (error_class, status, ambiguous)
    assert str(status) in error.message


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_permanent_and_name_the_location(status: int) -> None:
    """A 3xx is never followed; the error names where it pointed."""
    error = classify(status, b"", {"Location": "https://idp.example.com/login"})
    assert error.error_class is P and error.code == status
    assert "https://idp.example.com/login" in error.message and "not followed" in error.message


def test_redirect_wins_over_an_envelope_body() -> None:
    """A 3xx is a redirect even when its body looks like an ArcGIS error."""
    error = classify(302, envelope(503, "busy"), {"Location": "/elsewhere"})
    assert error.error_class is P and "/elsewhere" in error.message


@pytest.mark.parametrize(
    ("body", "wording"),
    [
        (HTML_PAGE, "an HTML page"),
        (b"  \n<!DOCTYPE html><html></html>", "an HTML page"),
        (b"", "an empty body"),
        (b"Service temporarily down", "a body that is not JSON"),
        (b'{"truncated": ', "a body that is not JSON"),
        (b"\xff\xfe\x00garbage", "a body that is not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'"text"', "JSON str"),
        (b"42", "JSON int"),
    ],
    ids=["html", "html-after-blanks", "empty", "text", "truncated", "undecodable", "list", "string", "number"],
)
def test_unreadable_success_answers_are_permanent_with_a_readable_message(body: bytes, wording: str) -> None:
    """HTTP 200 that is not a JSON object (login page, proxy page, empty, a list) is refused, saying what it was."""
    error = classify(200, body)
    assert error.error_class is P
    assert wording in error.message


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000], ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_permanent_error(body: bytes) -> None:
    """A pathological body (well under the size cap) becomes a classified error, not a RecursionError."""
    error = classify(200, body)
    assert error.error_class is P


def test_a_json_object_is_returned() -> None:
    """A valid object is the answer, whatever else it holds."""
    body = {"fullVersion": "11.3.0", "resources": ["system"], "error": None}
    assert interpret(200, {}, json.dumps(body).encode(), NOW) == body


@pytest.mark.parametrize(
    ("status", "body", "header", "expected"),
    [
        (503, HTML_PAGE, "7", 7.0),
        (429, HTML_PAGE, " 120 ", 120.0),
        (503, HTML_PAGE, formatdate(NOW + 30, usegmt=True), 30.0),
        (503, HTML_PAGE, formatdate(NOW - 30, usegmt=True), 0.0),
        (200, envelope(429, "Too many requests."), "5", 5.0),
        (503, HTML_PAGE, "soon", None),
        (503, HTML_PAGE, None, None),
    ],
    ids=["seconds", "seconds-padded", "http-date", "http-date-past", "envelope-429", "garbage", "absent"],
)
def test_retry_after_is_passed_through(status: int, body: bytes, header: str | None, expected: float | None) -> None:
    """Retry-After, in seconds or as an HTTP date (relative to `now`), reaches the error as `retry_after`."""
    headers = {"Retry-After": header} if header is not None else {}
    assert classify(status, body, headers).retry_after == expected


# -- envelope_error tolerates any shape (pure) --


@pytest.mark.parametrize(
    ("error", "code", "in_message"),
    [
        ({"code": "498", "message": "Invalid token."}, None, "Invalid token."),
        ({"code": True, "message": "odd"}, None, "odd"),
        ({"code": 498.0, "message": "float"}, None, "float"),
        ({"code": 400}, 400, "error"),
        ({"code": 400, "message": None}, 400, "error"),
        ({"code": 400, "message": 42}, 400, "42"),
        ({"code": 400, "message": "m", "details": "not a list"}, 400, "m"),
        ({"code": 400, "message": "m", "details": None}, 400, "m"),
        ({"code": 400, "message": "m", "details": {"a": 1}}, 400, "m"),
        ({"code": 400, "message": "m", "details": [1, None, {"k": "v"}]}, 400, "1; None; {'k': 'v'}"),
        ({"messageCode": ["unhashable"], "message": "m"}, None, "m"),
        ({}, None, "error"),
    ],
    ids=[
        "code-string",
        "code-bool",
        "code-float",
        "no-message",
        "message-none",
        "message-int",
        "details-string",
        "details-none",
        "details-dict",
        "details-mixed",
        "messageCode-list",
        "empty",
    ],
)
def test_envelope_error_tolerates_odd_shapes(error: dict[str, Any], code: int | None, in_message: str) -> None:
    """A malformed envelope (code as string/bool/float, no message, details not a list) still becomes an error."""
    result = envelope_error(error, retry_after=3.0)
    assert isinstance(result, TargetError)
    assert result.code == code and result.retry_after == 3.0
    assert in_message in result.message


def test_an_envelope_without_a_code_reads_cleanly_and_a_bare_error_value_is_still_an_error() -> None:
    """No "None" in a message without a code; `{"error": "text"}` is an error, never a successful answer."""
    assert envelope_error({"message": "Invalid token."}).message == "Invalid token."
    with pytest.raises(TargetError) as caught:
        interpret(200, {}, b'{"error": "Backup store not reachable"}', NOW)
    assert caught.value.error_class is P and caught.value.message == "Backup store not reachable"
    assert interpret(200, {}, b'{"error": null, "status": "success"}', NOW) == {"error": None, "status": "success"}


@pytest.mark.parametrize(
    ("body", "error_class", "message"),
    [
        (b'{"status": "error", "messages": ["Invalid token."], "code": 498}', A, "498 Invalid token."),
        (b'{"status": "ERROR", "messages": ["Busy", "try later"], "code": 503}', T, "503 Busy; try later"),
        (b'{"status": "error"}', P, "error"),
        (b'{"status": "error", "messages": ["Token expired"], "code": "498"}', A, "498 Token expired"),
    ],
)
def test_the_classic_admin_error_is_an_error_not_a_job_status(
    body: bytes, error_class: ErrorClass, message: str
) -> None:
    """`{"status": "error", ...}` (classic admin APIs) is classified like the envelope, never judged a failed job."""
    with pytest.raises(TargetError) as caught:
        interpret(200, {}, body, NOW)
    assert caught.value.error_class is error_class and caught.value.message == message


def test_a_classic_error_on_a_gateway_status_stays_transient_and_ambiguous() -> None:
    """On a 502 the status line rules: the create it answered may have been carried out."""
    with pytest.raises(TargetError) as caught:
        interpret(502, {}, b'{"status": "error", "messages": ["upstream"], "code": 500}', NOW)
    assert caught.value.transient and caught.value.ambiguous


def test_a_job_that_ended_error_is_still_a_job() -> None:
    """A job body (it has its `jobid`) whose status is ERROR is passed on to be judged a failed job."""
    body = {"jobid": "j1", "status": "ERROR", "messages": ["staging failed"]}
    assert interpret(200, {}, json.dumps(body).encode(), NOW) == body


def test_envelope_details_are_part_of_the_message() -> None:
    """The details say why (e.g. the running job's id): they reach the message and the classification."""
    error = envelope_error(
        {"code": 409, "message": "Unable to create backup.", "details": ["Another DR operation is in progress."]}
    )
    assert error.message == "409 Unable to create backup. (Another DR operation is in progress.)"
    assert error.error_class is T


# -- small pure helpers --


@pytest.mark.parametrize(
    ("status", "running"),
    [
        ({}, False),
        ({"state": "no_op"}, False),
        ({"state": "success"}, False),
        ({"state": "completed_with_warnings"}, False),
        ({"state": "failed"}, False),
        ({"state": "running"}, True),
        ({"state": "in_progress"}, True),
        ({"code": 3, "messages": []}, True),  # 10.9 says "running" by leaving the state out
    ],
)
def test_dr_job_running(status: dict[str, Any], running: bool) -> None:
    """Only the documented end states (and no status at all) mean no DR job is running."""
    assert dr_job_running(status) is running


_LEGACY_STARTED = {"code": 4014, "message": "Started backup process."}
_BEFORE_MS = 1_800_000_000_000.0  # when the job the status showed before our first create started


@pytest.mark.parametrize(
    ("status", "mark", "ours"),
    [
        ({"backupName": "b", "backupStore": "default", "state": "failed"}, None, True),
        ({"backupName": "b", "state": "running"}, None, True),  # no store named: the one we asked for
        ({"backupName": "other", "backupStore": "default"}, 0.0, False),
        ({"backupName": "b", "backupStore": "offsite"}, 0.0, False),
        # 10.9 names no backup: a job other than the one seen before our create is ours
        ({"code": 3, "messages": [{**_LEGACY_STARTED, "when": _BEFORE_MS + 5}]}, _BEFORE_MS, True),
        ({"code": 3, "messages": [{**_LEGACY_STARTED, "when": _BEFORE_MS - 5}]}, _BEFORE_MS, True),  # clocks apart
        ({"code": 3, "messages": [{**_LEGACY_STARTED, "when": _BEFORE_MS}]}, 0.0, True),  # none before it
        ({"code": 3, "state": "failed", "messages": [{**_LEGACY_STARTED, "when": _BEFORE_MS}, {}]}, _BEFORE_MS, False),
        ({"code": 3, "messages": [{**_LEGACY_STARTED, "when": _BEFORE_MS}]}, None, False),  # resumed: no mark
        ({"code": 0, "messages": [], "state": "no_op"}, 0.0, False),
        ({"code": 3, "messages": [{"when": "yesterday"}]}, 0.0, False),  # no readable start: never taken as ours
        ({"code": 3, "messages": [{"when": True}]}, 0.0, False),
        ({}, 0.0, False),
    ],
)
def test_dr_status_is_ours(status: dict[str, Any], mark: float | None, ours: bool) -> None:
    """Our create's job by its backup name, or on 10.9 (no name) by being another job than the one seen before."""
    assert dr_status_is_ours(status, "b", "default", mark) is ours


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"message": "staging volume full"}, "staging volume full"),
        (
            {"message": "", "messages": [{"message": "started"}, {"message": "Backup failed: disk"}]},
            "Backup failed: disk",
        ),
        ({"messages": [{"code": 1}]}, "no message"),
        ({"messages": "not a list"}, "no message"),
        ({}, "no message"),
    ],
)
def test_dr_status_message(status: dict[str, Any], message: str) -> None:
    """The reason a DR status gives: its message (10.9.1+) or its last message (10.9), never empty."""
    assert dr_status_message(status) == message


@pytest.mark.parametrize(
    ("version", "legacy"),
    [("10.9", True), ("10.9.0", True), ("10.9.1", False), ("11.3.0", False), ("12.0", False), ("", False)],
)
async def test_legacy_paths_only_before_10_9_1(version: str, legacy: bool) -> None:
    """Only 10.9 (before 10.9.1) uses the backuprestore paths; an unknown version does not."""
    async with client_for("http://127.0.0.1:9", ManualClock()) as client:
        client.version = version
        assert client.legacy is legacy


# -- raw answers from a tiny server: body cap, redirects, retries, Retry-After --


def _chunked(total: int, prefix: bytes = b"", suffix: bytes = b"") -> Handler:
    """Streams exactly `total` bytes (prefix, spaces, suffix) in 64 KiB writes, never held at once."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        piece = b" " * (64 * 1024)
        left = total - len(prefix) - len(suffix)
        try:
            await response.write(prefix)
            while left > 0:
                await response.write(piece[:left])
                left -= len(piece)
            await response.write(suffix)
            await response.write_eof()
        except ConnectionError:
            pass  # the client refused the rest: that is the point
        return response

    return answer


async def test_a_body_over_the_cap_is_refused() -> None:
    """A streamed answer one byte over MAX_BODY_BYTES is a permanent error, and not retried."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", _chunked(MAX_BODY_BYTES + 1, b'{"pad": "', b'"}'))
    async with stub.serve() as url, client_for(url, clock) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is P
    assert str(MAX_BODY_BYTES) in caught.value.message
    assert stub.hits["/admin"] == 1 and clock.sleeps == []


async def test_a_body_at_the_cap_is_read_whole() -> None:
    """A body of exactly MAX_BODY_BYTES, in many pieces, is read and parsed."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", _chunked(MAX_BODY_BYTES, b'{"ok": true, "pad": "', b'"}'))
    async with stub.serve() as url, client_for(url, clock) as client:
        body = await client.call("/admin")
    assert body["ok"] is True and len(body["pad"]) > MAX_BODY_BYTES - 100


@pytest.mark.parametrize("path", ["/admin", TOKEN_PATH])
async def test_a_redirect_to_another_host_is_not_followed(path: str) -> None:
    """A 307 (to an admin path or from generateToken, which carries the password) reaches no other host."""
    clock = SteppingClock()
    stub, elsewhere = Stub(clock), Stub(clock)
    async with elsewhere.serve() as other_url, stub.serve() as url, client_for(url, clock) as client:
        target = other_url + path
        stub.script(path, reply(307, raw=b"", headers={"Location": target}))
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert not caught.value.transient
    assert target in caught.value.message and "not followed" in caught.value.message
    assert elsewhere.hits == Counter()
    assert stub.hits[path] == 1 and clock.sleeps == []


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(reply(503, raw=HTML_PAGE, content_type="text/html"), id="http-503"),
        pytest.param(reply(502, raw=HTML_PAGE, content_type="text/html"), id="http-502"),
        pytest.param(reply(429, raw=HTML_PAGE, content_type="text/html"), id="http-429"),
        pytest.param(reply(raw=envelope(503, "Service unavailable.")), id="envelope-503"),
        pytest.param(reply(raw=envelope(409, "x", ["A DR operation is in progress."])), id="in-progress"),
    ],
)
async def test_transient_errors_are_retried_until_success(failure: Handler) -> None:
    """Two transient answers, then success: three requests, two backoff sleeps within the ceilings."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", failure, failure, OK)
    async with stub.serve() as url, client_for(url, clock, retries=4) as client:
        assert await client.call("/admin") == {"ok": True}
    assert stub.hits["/admin"] == 3
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 1.0 and 0 <= clock.sleeps[1] <= 2.0  # retry_initial * 2 ** attempt


@pytest.mark.parametrize(
    ("failure", "error_class"),
    [
        pytest.param(reply(raw=envelope(400, "Unable to create backup.")), P, id="envelope-400"),
        pytest.param(reply(raw=envelope(500, 'JSONObject["supportBDSBackup"] not found.')), P, id="envelope-500"),
        pytest.param(reply(raw=envelope(404, "Resource does not exist.")), C, id="envelope-404"),
        pytest.param(reply(raw=envelope(403, "No permission.")), A, id="envelope-403"),
        pytest.param(reply(404, raw=b"not found", content_type="text/plain"), C, id="http-404"),
        pytest.param(reply(raw=HTML_PAGE, content_type="text/html"), P, id="html-200"),
    ],
)
async def test_other_errors_are_not_retried(failure: Handler, error_class: ErrorClass) -> None:
    """A non-transient answer is raised after exactly one request, with no sleep."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", failure, OK)
    async with stub.serve() as url, client_for(url, clock, retries=4) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is error_class
    assert stub.hits["/admin"] == 1 and clock.sleeps == []


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_retries_bound_the_attempts(retries: int) -> None:
    """A deployment that always answers 503 gets 1 + `retries` requests, then the transient error."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", reply(503, raw=HTML_PAGE, content_type="text/html"))
    async with stub.serve() as url, client_for(url, clock, retries=retries) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is T and caught.value.code == 503
    assert stub.hits["/admin"] == 1 + retries and len(clock.sleeps) == retries


async def test_retries_bound_the_sign_in_attempts() -> None:
    """A generateToken that always answers 503 is tried at most 1 + `retries` times by one call."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script(TOKEN_PATH, reply(503, raw=HTML_PAGE, content_type="text/html"))
    async with stub.serve() as url, client_for(url, clock, retries=2) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is T
    assert stub.hits[TOKEN_PATH] == 3 and len(clock.sleeps) == 2


async def test_no_retry_when_the_caller_says_so() -> None:
    """`retry=False` (creates, job polls) makes exactly one request even for a transient error."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin/jobs/j1", reply(503, raw=HTML_PAGE, content_type="text/html"), OK)
    async with stub.serve() as url, client_for(url, clock, retries=4) as client:
        with pytest.raises(TargetError) as caught:
            await client.job("j1")
    assert caught.value.error_class is T
    assert stub.hits["/admin/jobs/j1"] == 1 and clock.sleeps == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), (formatdate(NOW + 42, usegmt=True), 42.0), ("86400", MAX_RETRY_AFTER)],
    ids=["seconds", "http-date", "capped"],
)
async def test_retry_after_is_honoured(header: str, expected: float) -> None:
    """The wait before a retry is the server's Retry-After (seconds or date; capped), not a backoff draw."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", reply(503, raw=HTML_PAGE, headers={"Retry-After": header}, content_type="text/html"), OK)
    async with stub.serve() as url, client_for(url, clock, retry_for=3600.0) as client:  # a budget for the cap
        assert await client.call("/admin") == {"ok": True}
    assert clock.sleeps == [expected]


async def test_on_retry_sees_every_retry_and_its_delay() -> None:
    """The on_retry hook is told the deployment, the error and the very delay slept, once per retry."""
    clock = SteppingClock()
    stub = Stub(clock)
    busy = reply(429, raw=HTML_PAGE, headers={"Retry-After": "3"}, content_type="text/html")
    stub.script("/admin", busy, reply(502, raw=HTML_PAGE, content_type="text/html"), OK)
    seen: list[tuple[str, int | None, float]] = []
    hook: api.OnRetry = lambda deployment, error, delay: seen.append((deployment.name, error.code, delay))  # noqa: E731
    async with stub.serve() as url, client_for(url, clock, on_retry=hook) as client:
        await client.call("/admin")
    assert [(name, code) for name, code, _ in seen] == [("gis-0000", 429), ("gis-0000", 502)]
    assert [delay for _, _, delay in seen] == clock.sleeps and clock.sleeps[0] == 3.0


async def test_a_create_lost_in_a_gateway_error_is_ambiguous_and_sent_once() -> None:
    """create_backup is not retried by the client; a 502 says it may have been carried out."""
    clock = SteppingClock()
    stub = Stub(clock)
    create = f"{DR}/stores/default/backups/create"
    stub.script(create, reply(502, raw=HTML_PAGE, content_type="text/html"), reply(body={"jobid": "j1"}))
    async with stub.serve() as url, client_for(url, clock, retries=4) as client:
        with pytest.raises(TargetError) as caught:
            await client.create_backup("default", "b1", PASSCODE, "d", None)
    assert caught.value.error_class is T and caught.value.ambiguous
    assert stub.hits[create] == 1 and clock.sleeps == []


async def test_a_create_answer_without_a_job_id_is_ambiguous() -> None:
    """A create answered without `jobid` may still have started a job: permanent, and ambiguous."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script(f"{DR}/stores/default/backups/create", reply(body={"status": "SUBMITTED"}))
    async with stub.serve() as url, client_for(url, clock) as client:
        with pytest.raises(TargetError) as caught:
            await client.create_backup("default", "b1", PASSCODE, "d", None)
    assert caught.value.error_class is P and caught.value.ambiguous


async def test_a_dropped_connection_is_transient_and_ambiguous() -> None:
    """A connection closed before any answer is transient, and may have been carried out."""
    clock = SteppingClock()
    stub = Stub(clock)

    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    stub.script("/admin", drop)
    async with stub.serve() as url, client_for(url, clock, retries=0) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is T and caught.value.ambiguous
    assert "connection lost" in caught.value.message


async def test_no_answer_within_the_request_timeout_is_transient_and_ambiguous() -> None:
    """A request that gets no answer within request_timeout is transient, and may have been carried out."""
    clock = SteppingClock()
    stub = Stub(clock)

    async def hang(request: web.Request) -> web.StreamResponse:
        await anyio.sleep(10)  # cancelled when the client gives up (handler_cancellation)
        return web.Response()

    stub.script("/admin", hang)
    async with stub.serve() as url, client_for(url, clock, retries=0, request_timeout=0.2) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is T and caught.value.ambiguous
    assert "no answer within the time allowed (0.2 s in all" in caught.value.message


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again on exit: nothing listens there


def count_network_attempts(client: ArcGISClient) -> list[str]:
    """Every request the client's link puts on the network (sign-ins too; not those its open circuit refuses)."""
    sent: list[str] = []
    post = client.link.post

    async def counted(path: str, form: Mapping[str, str], token: str | None = None) -> dict[str, Any]:
        sent.append(path)
        return await post(path, form, token)

    client.link.post = counted  # type: ignore[method-assign]
    return sent


async def test_a_refused_connection_is_unreachable() -> None:
    """Nothing listening is an unreachable `cannot connect`, not a crash, and not ambiguous."""
    async with client_for(f"http://127.0.0.1:{_closed_port()}", SteppingClock(), retries=0) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is U and not caught.value.ambiguous
    assert "cannot connect" in caught.value.message


async def test_a_deployment_nothing_listens_for_is_tried_for_the_budget_cheaply_then_unreachable() -> None:
    """Nothing listening: one call is retried for `retry_for` (not a few attempts), its circuit keeping the
    connections to the breaker's threshold and one per cooldown, and it ends `unreachable`, not `transient`."""
    clock = SteppingClock()
    settings: dict[str, Any] = {"retry_for": 300.0, "breaker_threshold": 5, "breaker_cooldown": 60.0}
    async with client_for(f"http://127.0.0.1:{_closed_port()}", clock, **settings) as client:
        sent = count_network_attempts(client)
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is U and "cannot connect" in caught.value.message
    assert 240.0 <= sum(clock.sleeps) <= 300.0 + 1e-6  # the budget was spent, never overrun
    assert 5 + 3 <= len(sent) <= 5 + 300 // 60 + 1, sent  # threshold, then one try per cooldown
    assert set(sent) == {TOKEN_PATH}  # the sign-in it needs first never got through


async def test_a_request_failing_many_times_in_a_row_still_succeeds_within_the_budget() -> None:
    """Ten 502s in a row, over a minute or so, then an answer: the old count of 4 retries would have failed
    the target; the time budget carries it through."""
    clock = SteppingClock()
    stub = Stub(clock)
    bad_gateway = reply(502, raw=HTML_PAGE, content_type="text/html")
    stub.script("/admin", *[bad_gateway] * 10, OK)
    async with stub.serve() as url, client_for(url, clock) as client:  # the default settings
        assert await client.call("/admin") == {"ok": True}
    assert stub.hits["/admin"] == 11 and len(clock.sleeps) == 10 and sum(clock.sleeps) <= 300.0


async def test_the_time_budget_ends_a_request_that_keeps_failing() -> None:
    """A gateway that always answers 502: retried until `retry_for` is spent (the last retry at its end,
    none after it), then its transient error, however many retries the count would still allow."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", reply(502, raw=HTML_PAGE, content_type="text/html"))
    async with stub.serve() as url, client_for(url, clock, retry_for=60.0, retries=1000) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is T and caught.value.code == 502
    assert sum(clock.sleeps) == pytest.approx(60.0) and stub.hits["/admin"] == len(clock.sleeps) + 1 > 5


# -- tokens --


@asynccontextmanager
async def simulated(
    start_fleet: FleetStarter, fleet: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[SimulatedFleet, ManualClock, ArcGISClient]]:
    """One simulated deployment, gis-0000 (`fleet` configures it), and a client of it, on one ManualClock."""
    async with (
        start_fleet(**(fleet or {})) as (simulated_fleet, sim, clock),
        client_for(sim.url_of("gis-0000"), clock, **settings) as client,
    ):
        yield simulated_fleet, clock, client


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds (failing after 5 s)."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def test_the_token_travels_only_in_the_header(start_fleet: FleetStarter) -> None:
    """Every admin request carries the token in X-Esri-Authorization; no token, password or passcode in a URL."""
    async with simulated(start_fleet, {"job_duration": {"dist": "fixed", "value": 10}}) as (fleet, _, client):
        await client.detect_version()
        job_id = await client.create_backup("default", "b1", PASSCODE, "d", None)
        await client.job(job_id)
        await client.dr_status()
        await client.backup_names("default")
    assert [r.endpoint for r in fleet.requests] == ["token", "root", "create", "job", "status", "backups"]
    assert not any(r.secret_in_url for r in fleet.requests) and fleet.secrets_in_urls == 0
    assert {r.token_source for r in fleet.requests[1:]} == {"x-esri-authorization"}
    assert fleet.requests[0].token_source == "none"
    assert all(r.method == "POST" for r in fleet.requests)


@pytest.mark.parametrize(
    ("lifetime", "renew_after"),
    [
        pytest.param(30.0, 27.0, id="30s-token-renewed-a-tenth-early"),
        pytest.param(3600.0, 3540.0, id="1h-token-renewed-a-minute-early"),
    ],
)
async def test_the_token_is_renewed_a_margin_before_it_expires(
    start_fleet: FleetStarter, lifetime: float, renew_after: float
) -> None:
    """The cached token is reused until a tenth of its life (at most a minute) before expiry, then renewed."""
    faults = {"token_lifetime_s": lifetime} if lifetime < 3600 else {}
    async with simulated(start_fleet, {"faults": faults}, token_minutes=60) as (fleet, clock, client):
        await client.call("/admin")
        clock.advance(renew_after - 0.5)
        await client.call("/admin")
        assert count(fleet, "token") == 1
        clock.advance(1.0)
        await client.call("/admin")
        assert count(fleet, "token") == 2
    assert all(code == 0 for _, _, code in records(fleet))


async def test_no_request_meets_an_expired_token_across_a_long_job(start_fleet: FleetStarter) -> None:
    """With 30 s tokens and a 5-minute job polled every 7 s, tokens are renewed ahead: no 498 ever."""
    config = {"faults": {"token_lifetime_s": 30}, "job_duration": {"dist": "fixed", "value": 300}}
    async with simulated(start_fleet, config) as (fleet, clock, client):
        await client.detect_version()
        job_id = await client.create_backup("default", "long-1", PASSCODE, "d", None)
        statuses = []
        for _ in range(60):
            clock.advance(7)
            statuses.append((await client.job(job_id))["status"])
            if statuses[-1] == "COMPLETED":
                break
        assert "long-1" in await client.backup_names("default")
    assert statuses[-1] == "COMPLETED" and "EXECUTING" in statuses
    assert [r for r in fleet.requests if r.error_code == 498] == []
    assert count(fleet, "token") >= 300 // 30  # renewed all along, never caught out
    assert not any(r.secret_in_url for r in fleet.requests)


async def test_a_token_refused_mid_run_is_renewed_once_and_the_request_retried(start_fleet: FleetStarter) -> None:
    """A 498 (token revoked server-side) leads to exactly one sign-in, then the same request succeeds."""
    async with simulated(start_fleet) as (fleet, _, client):
        await client.call("/admin")
        fleet.deployments["gis-0000"].tokens.clear()  # e.g. the admin pod restarted
        mark = len(fleet.requests)
        root = await client.call("/admin")
    assert root["fullVersion"] == "11.3.0"
    assert records(fleet, mark) == [("root", 200, 498), ("token", 200, 0), ("root", 200, 0)]


async def test_requests_of_one_deployment_sent_together_sign_in_once(start_fleet: FleetStarter) -> None:
    """Five requests of a deployment with no token yet: one sign-in, which the other four wait for and use."""
    async with simulated(start_fleet) as (fleet, _, client):
        mark = len(fleet.requests)
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(client.call, "/admin")
    assert count(fleet, "token") == 1
    assert sorted(endpoint for endpoint, _, _ in records(fleet, mark)) == ["root"] * 5 + ["token"]


async def test_a_sign_in_failing_transiently_before_a_create_is_retried_and_the_create_sent_once() -> None:
    """A create is never retried by the client, but the sign-in it needs is: the create was not sent, so a 503
    from generateToken is waited out, and the create goes once, with the new token."""
    clock = SteppingClock()
    stub = Stub(clock)
    create = f"{DR}/stores/default/backups/create"
    stub.script(TOKEN_PATH, stub.grant, reply(503, raw=HTML_PAGE, content_type="text/html"), stub.grant)
    stub.script(create, reply(body={"jobid": "j1"}))
    async with stub.serve() as url, client_for(url, clock, retries=2) as client:
        stub.script("/admin", OK)
        await client.call("/admin")  # signed in: t1, valid an hour
        await clock.sleep(3600)  # past its renewal time: the create signs in first
        assert await client.create_backup("default", "b1", PASSCODE, "d", None) == "j1"
    assert stub.hits[TOKEN_PATH] == 3 and stub.hits[create] == 1
    assert stub.tokens[-1] == "t2" and len(clock.sleeps) == 2  # the hour, then one backoff before the sign-in


async def test_a_sign_in_that_gets_no_answer_is_not_a_create_that_may_have_landed() -> None:
    """A sign-in before a create that times out is transient but never ambiguous: no create left, so none is
    looked for on the server (nor a later "already exists" taken for ours)."""
    clock = SteppingClock()
    stub = Stub(clock)

    async def hang(request: web.Request) -> web.StreamResponse:
        await anyio.sleep(10)  # cancelled when the client gives up (handler_cancellation)
        return web.Response()

    stub.script(TOKEN_PATH, hang)
    async with stub.serve() as url, client_for(url, clock, retries=0, request_timeout=0.2) as client:
        with pytest.raises(TargetError) as caught:
            await client.create_backup("default", "b1", PASSCODE, "d", None)
    assert caught.value.error_class is T and not caught.value.ambiguous
    assert f"{DR}/stores/default/backups/create" not in stub.hits


async def test_a_token_refused_twice_is_final() -> None:
    """A token refused again right after renewal is an authentication error: one renewal, no storm."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", reply(raw=envelope(498, "Invalid token.")))
    async with stub.serve() as url, client_for(url, clock, retries=4) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is A and caught.value.code == 498
    assert stub.hits == Counter({TOKEN_PATH: 2, "/admin": 2})
    assert stub.tokens == ["t1", "t2"] and clock.sleeps == []


async def test_refused_credentials_fail_once(start_fleet: FleetStarter) -> None:
    """A wrong password is one sign-in request and an authentication error: no retry to lock the account."""
    async with simulated(start_fleet, password="wrong-password", retries=4) as (fleet, _, client):
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is A and "sign-in refused" in caught.value.message
    assert "wrong-password" not in caught.value.message
    assert records(fleet) == [("token", 200, 400)]


@pytest.mark.parametrize(
    "grant", [{"expires": 1}, {"token": "", "expires": 1}, {"token": 5}], ids=["missing", "empty", "not-a-string"]
)
async def test_a_sign_in_without_a_token_is_an_authentication_error(grant: dict[str, Any]) -> None:
    """generateToken answering no usable token fails the deployment's sign-in, without sending a request."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script(TOKEN_PATH, reply(body=grant))
    async with stub.serve() as url, client_for(url, clock) as client:
        with pytest.raises(TargetError) as caught:
            await client.call("/admin")
    assert caught.value.error_class is A and "no token" in caught.value.message
    assert stub.hits["/admin"] == 0


async def test_a_token_going_stale_while_queued_is_renewed_before_sending(start_fleet: FleetStarter) -> None:
    """A request that waited for the only request slot past its token's renewal time signs in again first,
    in that slot, and is sent with the new token: never a 498, never a token bought and left unused."""
    config = {"faults": {"token_lifetime_s": 30}}
    async with simulated(start_fleet, config, concurrency=1) as (fleet, clock, client):
        await client.detect_version()  # signed in at t0; the server expires this token at t0 + 30
        answers: list[dict[str, Any]] = []

        async def queued_call() -> None:
            answers.append(await client.call("/admin"))

        slots = client.context.transport.slots
        async with anyio.create_task_group() as tg, slots.slot():  # this task holds the only request slot
            tg.start_soon(queued_call)
            await until(lambda: slots.waiting == 1)  # the call waits for the slot, its token still fresh
            clock.advance(31)  # past the token's renewal time, and past its expiry at the server
    assert answers and answers[0]["fullVersion"] == "11.3.0"
    assert records(fleet) == [("token", 200, 0), ("root", 200, 0), ("token", 200, 0), ("root", 200, 0)]


async def test_a_late_498_for_a_replaced_token_does_not_sign_in_again() -> None:
    """A 498 for a token another request already renewed reuses the new token: no second sign-in."""
    clock = SteppingClock()
    stub = Stub(clock)
    arrived, release = anyio.Event(), anyio.Event()

    async def late_refusal(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()  # answered only after the other request has renewed the token
        return web.Response(body=envelope(498, "Invalid token."), content_type="application/json")

    async def refuses_t1(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Esri-Authorization") == "Bearer t1":
            return web.Response(body=envelope(498, "Invalid token."), content_type="application/json")
        return web.json_response({"ok": True})

    stub.script("/slow", late_refusal, OK)
    stub.script("/admin", refuses_t1)
    stub.script("/first", OK)
    async with stub.serve() as url, client_for(url, clock) as client:
        await client.call("/first")  # signed in: t1
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call, "/slow")
            with anyio.fail_after(5):
                await arrived.wait()
            assert await client.call("/admin") == {"ok": True}  # 498 with t1, renewed to t2
            release.set()
    assert stub.tokens == ["t1", "t1", "t1", "t2", "t2"]  # /first t1, /slow t1, /admin t1, /admin t2, /slow t2
    assert stub.hits[TOKEN_PATH] == 2


async def test_every_request_is_one_form_post_with_the_current_token_in_a_header_only() -> None:
    """The body and headers made once, not per request, are still right: `f=json` alone without a form and
    first with one; the form content type, no compression asked; the sign-in unsigned; then the current
    token in the header, the renewed one after a 498, and never in the body."""
    clock = SteppingClock()
    stub = Stub(clock)
    seen: list[tuple[str, bytes, str, str, str]] = []

    def capturing(handler: Handler) -> Handler:
        async def capture(request: web.Request) -> web.StreamResponse:
            headers = request.headers
            authorization = headers.get("X-Esri-Authorization", "")
            seen.append(
                (request.path, await request.read(), headers["Content-Type"], headers["Accept-Encoding"], authorization)
            )
            return await handler(request)

        return capture

    stub.script(TOKEN_PATH, capturing(stub.grant))
    stub.script("/admin", capturing(OK), capturing(reply(body={"error": {"code": 498}})), capturing(OK))
    stub.script("/create", capturing(OK))
    form = "application/x-www-form-urlencoded"
    async with stub.serve() as url, client_for(url, clock) as client:
        await client.call("/admin")
        await client.call("/admin")  # 498: signed in again, sent again with t2
        await client.call("/create", {"name": "a b&c", "f": "pjson"})
    assert [(path, authorization) for path, _, _, _, authorization in seen] == [
        (TOKEN_PATH, ""),
        ("/admin", "Bearer t1"),
        ("/admin", "Bearer t1"),
        (TOKEN_PATH, ""),
        ("/admin", "Bearer t2"),
        ("/create", "Bearer t2"),
    ]
    assert {(content_type, encoding) for _, _, content_type, encoding, _ in seen} == {(form, "identity")}
    assert [body for path, body, _, _, _ in seen if path == "/admin"] == [b"f=json"] * 3
    assert seen[-1][1] == b"f=pjson&name=a+b%26c"  # the form's own `f` wins, in the first place
    assert all(b"t1" not in body and b"t2" not in body for _, body, _, _, _ in seen)


# -- server answers through the client, against the simulator --


async def test_default_store_and_store_list(start_fleet: FleetStarter) -> None:
    """The default store is the one the server marks default."""
    config = {"stores": ["primary", "offsite"], "default_store": "offsite"}
    async with simulated(start_fleet, config) as (_, _, client):
        assert [s["name"] for s in await client.store_list()] == ["primary", "offsite"]
        assert await client.default_store() == "offsite"


async def test_create_refusals_are_classified(start_fleet: FleetStarter) -> None:
    """An unknown store is configuration; a DR job already running is transient; neither create is resent."""
    config = {"job_duration": {"dist": "fixed", "value": 60}}
    async with simulated(start_fleet, config, retries=4) as (fleet, _, client):
        with pytest.raises(TargetError) as unknown:
            await client.create_backup("nope", "b0", PASSCODE, "d", None)
        await client.create_backup("default", "b1", PASSCODE, "d", None)
        with pytest.raises(TargetError) as busy:
            await client.create_backup("default", "b2", PASSCODE, "d", None)
    assert unknown.value.error_class is C and "does not exist" in unknown.value.message
    assert busy.value.error_class is T and "in progress" in busy.value.message
    assert [(c.backup_name, c.accepted) for c in fleet.creates] == [("b0", False), ("b1", True), ("b2", False)]


async def test_a_late_gateway_error_on_create_is_ambiguous(start_fleet: FleetStarter) -> None:
    """The server created the backup but the ingress answered 502/504: ambiguous, and sent only once."""
    async with simulated(start_fleet, {"faults": {"late_5xx": 1.0}}, retries=4) as (fleet, _, client):
        with pytest.raises(TargetError) as caught:
            await client.create_backup("default", "b1", PASSCODE, "d", None)
    assert caught.value.error_class is T and caught.value.ambiguous
    assert [(c.backup_name, c.accepted) for c in fleet.creates] == [("b1", True)]


async def test_missing_dr_privilege_is_an_authentication_error(start_fleet: FleetStarter) -> None:
    """An account that signs in but lacks the DR privilege (envelope 403) fails as authentication."""
    config = {"deployments": [{"name": "gis-0000", "forbidden": True}]}
    async with simulated(start_fleet, config) as (_, _, client):
        assert await client.detect_version() == "11.3.0"
        with pytest.raises(TargetError) as caught:
            await client.store_list()
    assert caught.value.error_class is A and caught.value.code == 403


# -- 10.9 --

LEGACY: Final = {"versions": {"10.9": 1}, "job_duration": {"dist": "fixed", "value": 100}}


async def test_10_9_job_follows_the_dr_status(start_fleet: FleetStarter) -> None:
    """On 10.9 the DR status stands in for the job: EXECUTING while it runs, COMPLETED once it ended."""
    async with simulated(start_fleet, LEGACY) as (fleet, clock, client):
        assert await client.detect_version() == "10.9.0" and client.legacy
        job_id = await client.create_backup("default", "legacy-1", PASSCODE, "d", None)
        assert await client.job(job_id) == {"status": "EXECUTING"}
        clock.advance(50)
        assert await client.job(job_id) == {"status": "EXECUTING"}
        clock.advance(50)
        done = await client.job(job_id)
        assert await client.backup_names("default") == {"legacy-1"}
    assert done["status"] == "COMPLETED" and isinstance(done["messages"], list)
    assert [r.endpoint for r in fleet.requests] == [
        "token",
        "root",
        "legacy_create",
        "legacy_status",
        "legacy_status",
        "legacy_status",
        "legacy_backups",
    ]
    assert all(r.error_code == 0 for r in fleet.requests)


async def test_10_9_failed_job_reports_failed_with_messages(start_fleet: FleetStarter) -> None:
    """A 10.9 DR job that fails is FAILED, with the server's messages saying why."""
    async with simulated(start_fleet, {**LEGACY, "faults": {"job_failure": 1.0}}) as (_, clock, client):
        await client.detect_version()
        job_id = await client.create_backup("default", "legacy-1", PASSCODE, "d", None)
        assert (await client.job(job_id))["status"] == "EXECUTING"
        clock.advance(100)
        failed = await client.job(job_id)
        assert await client.backup_names("default") == set()
    assert failed["status"] == "FAILED"
    texts = [m["message"] for m in failed["messages"]]
    assert any("Backup failed during stage" in text for text in texts), texts


async def test_10_9_job_ids_sends_no_request(start_fleet: FleetStarter) -> None:
    """10.9 has no jobs resource: job_ids() is [] without asking /admin/jobs."""
    async with simulated(start_fleet, LEGACY) as (fleet, _, client):
        await client.detect_version()
        before = len(fleet.requests)
        assert await client.job_ids() == []
        assert len(fleet.requests) == before
    assert not any(r.endpoint in ("jobs", "job") for r in fleet.requests)


async def test_newer_versions_use_the_jobs_resource(start_fleet: FleetStarter) -> None:
    """From 10.9.1 on, job() and job_ids() read /admin/jobs."""
    async with simulated(start_fleet, {**LEGACY, "versions": {"10.9.1": 1}}) as (fleet, clock, client):
        await client.detect_version()
        assert not client.legacy
        job_id = await client.create_backup("default", "b1", PASSCODE, "d", None)
        assert await client.job_ids() == [job_id]
        clock.advance(100)
        assert (await client.job(job_id))["status"] == "COMPLETED"
    assert [r.endpoint for r in fleet.requests][2:] == ["create", "jobs", "job"]


@pytest.mark.parametrize("body", [b"", b"<html>login</html>", b'{"jobid": "j1"', b"[1, 2]"])
def test_an_unreadable_2xx_may_have_been_carried_out(body: bytes) -> None:
    """A 2xx whose body cannot be read is permanent but ambiguous: a create behind it is looked for, not lost."""
    error = classify(200, body)
    assert error.error_class is P and error.ambiguous


# -- the one mapping of aiohttp's failures --


def _client_errors(kind: type[BaseException] = aiohttp.ClientError) -> list[type[BaseException]]:
    """aiohttp.ClientError and every subclass aiohttp defines, however deep."""
    found = [kind]
    for sub in kind.__subclasses__():
        found += [k for k in _client_errors(sub) if k not in found]
    return found


def _an_instance_of(kind: type[BaseException]) -> BaseException:
    """A failure of that kind as aiohttp would raise it (the ones the mapping reads from, built properly)."""
    key = ConnectionKey("gis.example.com", 443, True, True, None, None, None, None)
    if issubclass(kind, aiohttp.ClientConnectorCertificateError):
        return kind(key, ssl.SSLCertVerificationError(1, "certificate verify failed"))
    if issubclass(kind, aiohttp.ClientConnectorError):
        build: Any = kind  # UnixClientConnectorError takes its socket path first
        refused = OSError(111, "Connection refused")
        made: BaseException = build("/run/x.sock", key, refused) if "Unix" in kind.__name__ else build(key, refused)
        return made
    return kind.__new__(kind)  # the mapping reads only its type


@pytest.mark.parametrize("kind", _client_errors(), ids=lambda kind: kind.__name__)
def test_every_aiohttp_failure_is_classified_in_one_place(kind: type[BaseException]) -> None:
    """Whatever aiohttp raises becomes a classified error, never a crash: an untrusted certificate is
    configuration; a connection never made (refused, no such host, connect timeout), unreachable and not
    ambiguous; any other timeout, transient and ambiguous; a connection lost after the request may have gone,
    transient and ambiguous."""
    error = transport_error(_an_instance_of(kind), RunSettings())
    if issubclass(kind, aiohttp.ClientConnectorCertificateError):
        assert (error.error_class, error.ambiguous) == (C, False) and "not trusted" in error.message
    elif issubclass(kind, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        assert (error.error_class, error.ambiguous) == (U, False) and "cannot connect" in error.message
    elif issubclass(kind, TimeoutError):
        assert (error.error_class, error.ambiguous) == (T, True) and "no answer within" in error.message
    else:
        assert (error.error_class, error.ambiguous) == (T, True) and kind.__name__ in error.message
    assert len(_client_errors()) > 20  # aiohttp's tree, read from aiohttp itself


async def test_no_retry_starts_after_the_runs_deadline() -> None:
    """A create whose sign-in keeps failing transiently is not tried again once the run's deadline would pass
    during the wait: nothing is sent after submitting has stopped."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script(TOKEN_PATH, reply(503, raw=HTML_PAGE, content_type="text/html"))
    values: dict[str, Any] = {"retry_initial": 4.0, "retry_max": 4.0, "request_timeout": 5.0, "retries": 50}
    async with (
        stub.serve() as url,
        open_api_context(RunSettings(**values), clock, random.Random(7), None, not_after=NOW + 10) as context,
    ):
        with pytest.raises(TargetError):
            await ArcGISClient(deployment_at(url), context).call("/create", retry=False)
    # Without the deadline the budget (300 s) would allow 51 sign-ins, minutes of them; with it, a handful
    # in the 10 s left (and the 503s' pacing).
    assert stub.hits[TOKEN_PATH] < 10 and clock.now() < NOW + 45
    assert stub.hits.get("/create", 0) == 0


async def test_a_compressed_answer_is_capped_at_its_unpacked_size() -> None:
    """A small gzip "bomb" (400 KB that unpack to 100 MB) is refused at the cap, not unpacked into memory;
    the client asks for no compression in the first place."""
    import gzip

    bomb = gzip.compress(b" " * (100 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < MAX_BODY_BYTES // 10
    clock = SteppingClock()
    stub = Stub(clock)
    seen: list[str] = []

    async def compressed(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Accept-Encoding", ""))
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    stub.script("/admin", compressed)
    async with stub.serve() as url, client_for(url, clock, retries=0) as client:
        with pytest.raises(TargetError, match="larger than"):
            await client.call("/admin")
    assert seen == ["identity"]


async def test_server_names_and_ids_that_are_not_names_are_not_taken() -> None:
    """A default store named with escape sequences, or job ids that are not ids, are not used: the first is
    no default store (the deployment's configuration failure), the second are left out of the jobs list."""
    clock = SteppingClock()
    stub = Stub(clock)
    evil = "\x1b]8;;http://evil/\x07=HYPERLINK(1)" + "Z" * 3000
    stub.script(f"{DR}/stores", reply(body={"backupStores": [{"name": evil, "default": True}]}))
    stub.script("/admin/jobs", reply(body={"jobs": [evil, "j1234abcd", "bad id", "x\ud800y"]}))
    async with stub.serve() as url, client_for(url, clock, retries=0) as client:
        with pytest.raises(TargetError) as caught:
            await client.default_store()
        assert caught.value.error_class is ErrorClass.CONFIGURATION and "\x1b" not in caught.value.message
        assert await client.job_ids() == ["j1234abcd"]


async def test_a_pacing_wait_past_the_deadline_is_not_waited_out() -> None:
    """A deployment that asked for 60 s between requests: a request whose deadline comes sooner fails at once,
    as throttled, rather than being sent after it."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script("/admin", reply(503, raw=HTML_PAGE, headers={"Retry-After": "60"}, content_type="text/html"), OK)
    values: dict[str, Any] = {"retries": 0, "request_timeout": 5.0}
    async with (
        stub.serve() as url,
        open_api_context(RunSettings(**values), clock, random.Random(7), None, not_after=NOW + 5) as context,
    ):
        client = ArcGISClient(deployment_at(url), context)
        with pytest.raises(TargetError):
            await client.call("/admin")
        with pytest.raises(TargetError, match="throttled"):
            await client.call("/admin")
    assert stub.hits["/admin"] == 1 and max(clock.sleeps, default=0.0) < 5
