"""Hostile or broken answers (issue 5): each becomes a classified `TargetError` on its own target, never a crash
of the run and never a wrong "succeeded".

The pure decisions (`interpret`, `envelope_error`, `judge_job`) and the poller are driven by hypothesis; the
client is driven over real sockets by tests.test_api's tiny `aiohttp.web` stub on 127.0.0.1, and never
connects anywhere else. The bugs these tests found (a Retry-After that crashed the parser, an uncapped
Retry-After, a failed job with an empty message reported without a reason) each have a test of their own.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import format_datetime
from typing import Any, Final

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.api import ArcGISClient, envelope_error, interpret
from orchestrator.backoff import MAX_RETRY_AFTER
from orchestrator.clock import ManualClock
from orchestrator.dr import FAILED_STATUSES, Verdict, judge_job
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import Outcome, TargetState
from orchestrator.poll import Poller
from tests.conftest import PASSCODE, make_deployment
from tests.test_api import DR, HTML_PAGE, NOW, Handler, SteppingClock, Stub, client_for, reply

pytestmark = pytest.mark.anyio

CREATE: Final = f"{DR}/stores/default/backups/create"
BACKUP: Final = "backup-hostile"
GIVE_UP: Final = 600.0  # the job timeout of the poller properties, in ManualClock seconds from 0
ERROR_CLASSES: Final = frozenset(c.value for c in ErrorClass)
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
END_TO_END = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies --

KEYS: Final = st.sampled_from(
    ["status", "error", "code", "message", "messages", "details", "messageCode", "jobid", "result", "state"]
)
huge_numbers = st.sampled_from([2**63, -(2**63) - 1, 2**64 + 1, 10**300, -(10**300), 1e308, -1e308, 5e-324])
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_numbers, st.floats(), st.text(max_size=12)
)  # floats include NaN and +-Infinity, which json.dumps writes as the literals NaN and Infinity
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)
json_objects = st.dictionaries(KEYS | st.text(max_size=8), json_values, max_size=4)

STATUS_WORDS: Final = (
    "COMPLETED",
    "EXECUTING",
    "SUBMITTED",
    "UNAVAILABLE",
    "FAILED",
    "CANCELLED",
    "TIMED OUT",
    "ERROR",
    "SUCCESS",
    "COMPLETE",
    "COMPLETED_WITH_WARNINGS",
    "NOT COMPLETED",
    "COMPLETED.",
    "COMPLETEDD",
    "C0MPLETED",
    "COMP LETED",
)
WHITESPACE: Final = st.text(alphabet=" \t\r\n\x0b\x0c\u00a0\u2003\u3000", max_size=3)


ANY_STATUS_WORD: Final = st.sampled_from(STATUS_WORDS)


@st.composite
def respelled(draw: st.DrawFn, words: st.SearchStrategy[str] = ANY_STATUS_WORD) -> str:
    """A status word in random case with random whitespace around it: ` completed\\n`, `CoMpLeTeD`."""
    word = draw(words)
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    cased = "".join(c.lower() if flip else c for c, flip in zip(word, flips, strict=True))
    return draw(WHITESPACE) + cased + draw(WHITESPACE)


statuses = st.one_of(
    respelled(st.sampled_from(["COMPLETED", "FAILED", "UNAVAILABLE"])),  # the words that decide, drawn often
    st.sampled_from(STATUS_WORDS),
    respelled(),
    st.text(max_size=14),
    json_values,
)
message_lists = st.one_of(
    json_values,
    st.lists(st.text(max_size=10) | json_values, max_size=3),
    st.lists(st.fixed_dictionaries({}, optional={"message": json_values, "code": json_values}), max_size=3),
)
job_bodies = st.builds(
    lambda extra, known: {**extra, **known},
    st.dictionaries(KEYS | st.text(max_size=8), json_values, max_size=2),
    st.fixed_dictionaries({"status": statuses}, optional={"messages": message_lists, "result": json_values}),
)  # bodies without a status come from json_objects


@st.composite
def truncated_json(draw: st.DrawFn) -> bytes:
    """A valid JSON document cut anywhere before its end."""
    document = json.dumps(draw(job_bodies | json_values)).encode()
    return document[: draw(st.integers(0, max(len(document) - 1, 0)))]


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    """Nesting around Python's recursion limit, closed or not, bare or inside an `error`, `messages` or `jobid`."""
    depth = draw(st.integers(1, 3000))
    closed = draw(st.booleans())
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    core = opener * depth + (b"1" + closer * depth if closed else b"")
    key = draw(st.sampled_from([None, b"error", b"messages", b"jobid", b"status"]))
    return core if key is None else b'{"' + key + b'": ' + core + (b"}" if closed else b"")


html_pages = st.sampled_from(
    [
        HTML_PAGE,
        b"  \r\n<!DOCTYPE html><html><body><form action='/login'>Sign in</form></body></html>",
        b"<HTML><HEAD><TITLE>504 Gateway Time-out</TITLE></HEAD></HTML>",
        b"<?xml version='1.0'?><error>proxy</error>",
    ]
)
odd_literals = st.sampled_from(
    [
        b"",
        b" ",
        b"null",
        b"true",
        b"0",
        b"NaN",
        b"-Infinity",
        b'"COMPLETED"',
        b'["jobid", "j1"]',
        b'{"jobid": NaN}',
        b'{"jobid": Infinity, "status": -Infinity}',
        b'{"jobid": 1' + b"0" * 5000 + b"}",  # more digits than Python converts: a ValueError inside json
        b'{"jobid": 1e999}',
        b'{"jobid": "j1"',
        b'{"jobid": "j1"}}',
        b'{"jobid": "j1", "jobid": null}',
        b'{"jobid": "\xff\xfe"}',
        b"\xef\xbb\xbf" + b'{"jobid": "j1"}',  # a UTF-8 byte order mark
        '{"jobid": "j1"}'.encode("utf-16"),
        b'{"error": {"code": 498, "message": "Invalid token."}, "jobid": "j1"}',
        b'{"error": "denied", "jobid": "j1"}',
        b'{"error": {}, "jobid": "j1"}',
    ]
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_objects.map(lambda value: json.dumps(value).encode()),
    job_bodies.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),  # null, lists, strings, numbers
    st.builds(lambda error, rest: json.dumps({**rest, "error": error}).encode(), json_values, json_objects),
    st.builds(lambda job_id, rest: json.dumps({**rest, "jobid": job_id}).encode(), json_values, json_objects),
    truncated_json(),
    deeply_nested(),
    html_pages,
    odd_literals,
)


http_dates = st.datetimes(timezones=st.just(UTC)).map(lambda moment: format_datetime(moment, usegmt=True))
NASTY_RETRY_AFTER: Final = (
    "",
    " ",
    "soon",
    "1.5",
    "-0",
    "+5",
    "nan",
    "inf",
    "1e3",
    "0x10",
    "1_000",
    "9" * 400,  # float() reads it as inf
    "0" * 5000,  # more digits than int() converts
    "²",  # str.isdigit() says yes, float() says no
    "①②",
    "١٢",  # Arabic-Indic digits
    "Tue, 31 Feb 2026 00:00:00 GMT",
    "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",  # OverflowError inside parsedate_to_datetime
    "Mon, 01 Jan 2026 99999999999:00:00 GMT",
    "Mon, 01 Jan 2026 00:00:00 +99999999999999",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Mon, 01 Jan 0001 00:00:00 -2359",
)
retry_after_values = st.one_of(
    st.integers(0, 10**30).map(str),
    st.integers(-(10**6), -1).map(str),
    http_dates,
    st.sampled_from(NASTY_RETRY_AFTER),
    st.text(max_size=40),
)
header_maps = st.builds(
    lambda noise, known: {**noise, **known},
    st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=4),
    st.fixed_dictionaries({}, optional={"Retry-After": retry_after_values, "Location": st.text(max_size=40)}),
)
http_statuses = st.one_of(
    st.sampled_from([200, 201, 202, 204, 301, 302, 307, 400, 401, 403, 404, 408, 429, 498, 500, 502, 503, 504]),
    st.integers(100, 599),
)


@dataclass(frozen=True)
class Refusal:
    """A classified error the client could raise for one request."""

    error_class: ErrorClass
    message: str
    code: int | None = None

    def error(self) -> TargetError:
        return TargetError(self.error_class, self.message, code=self.code)


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer as it came off the wire, read the way the client reads it (through `interpret`)."""

    status: int
    headers: dict[str, str]
    body: bytes


def refusals_of(classes: list[ErrorClass]) -> st.SearchStrategy[Refusal]:
    return st.builds(
        Refusal,
        st.sampled_from(classes),
        st.text(min_size=1, max_size=30),  # the client never raises with an empty message (the interpret property)
        st.none() | st.sampled_from([400, 404, 409, 429, 498, 499, 500, 502, 503]),
    )


refusals = refusals_of(list(ErrorClass))
raw_answers = st.builds(RawAnswer, http_statuses, header_maps, bodies)
JobAnswer = dict[str, Any] | Refusal | RawAnswer
ListAnswer = frozenset[str] | Refusal
job_answers: st.SearchStrategy[JobAnswer] = st.one_of(job_bodies, refusals, raw_answers)
other_names = st.frozensets(st.sampled_from([BACKUP + "-2", BACKUP.upper(), " " + BACKUP, "x"]) | st.text(max_size=16))
unlisting: st.SearchStrategy[ListAnswer] = st.one_of(other_names.map(lambda names: names - {BACKUP}), refusals)
dr_statuses = st.one_of(
    json_objects,
    st.fixed_dictionaries(
        {"backupName": st.just(BACKUP)},
        optional={"backupStore": st.sampled_from(["default", "offsite"]), "state": json_values, "message": json_values},
    ),
)


def _loads_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


# -- interpret: any status, any headers, any body: an object or a classified error (pure) --


def _interpreted(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any] | TargetError:
    """interpret's answer, or the TargetError it raised; any other exception propagates."""
    try:
        return interpret(status, headers, body, NOW)
    except TargetError as error:
        return error


@PROPERTY
@given(http_statuses, header_maps, bodies)
@example(200, {"Retry-After": "9" * 400}, b'{"error": {"code": 503}}')  # float() reads it as inf
@example(503, {"Retry-After": "²"}, HTML_PAGE)
@example(200, {}, b'{"error": "denied", "jobid": "j1"}')
@example(503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, HTML_PAGE)
@example(302, {"Location": "http://example.invalid/"}, b'{"jobid": "j1"}')
@example(500, {}, b'{"jobid": "j1"}')
@example(200, {}, b'{"error": ' + b"[" * 990 + b"]" * 990 + b"}")  # deep, but just parseable: str() of it
def test_interpret_answers_an_object_or_a_classified_error(status: int, headers: dict[str, str], body: bytes) -> None:
    """interpret never raises anything but a classified TargetError, and returns an object only for a 2xx."""
    result = _interpreted(status, headers, body)
    if isinstance(result, TargetError):
        assert isinstance(result.error_class, ErrorClass)
        assert isinstance(result.message, str) and result.message
        assert result.code is None or (isinstance(result.code, int) and not isinstance(result.code, bool))
        if 300 <= status < 400:  # never followed, never retried
            assert result.error_class is ErrorClass.PERMANENT and result.code == status
        wait = result.retry_after
        assert wait is None or (isinstance(wait, float) and 0 <= wait <= MAX_RETRY_AFTER), wait  # NaN fails too
    else:
        assert isinstance(result, dict)
        assert 200 <= status < 300, "a non-2xx answer was taken for a success"
        assert not result.get("error"), "an error envelope was taken for a success"


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "①②",
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        "Mon, 01 Jan 2026 99999999999:00:00 GMT",
        "Mon, 01 Jan 2026 00:00:00 +99999999999999",
    ],
    ids=["superscript-two", "circled-digits", "huge-year", "huge-hour", "huge-offset"],
)
def test_a_garbage_retry_after_is_a_classified_error(value: str) -> None:
    """A Retry-After that is neither delta-seconds nor a valid HTTP date is ignored: the 503 stays a 503."""
    with pytest.raises(TargetError) as caught:
        interpret(503, {"Retry-After": value}, HTML_PAGE, NOW)
    assert caught.value.error_class is ErrorClass.TRANSIENT and caught.value.retry_after is None


@pytest.mark.parametrize(
    "value", ["86400", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"], ids=["a-day", "inf", "year-9999"]
)
def test_retry_after_is_bounded_when_read(value: str) -> None:
    """A Retry-After asking for more than MAX_RETRY_AFTER (even one float() reads as inf) is read as the cap."""
    with pytest.raises(TargetError) as caught:
        interpret(503, {"Retry-After": value}, HTML_PAGE, NOW)
    assert caught.value.retry_after == MAX_RETRY_AFTER


# -- envelope_error: any JSON inside the envelope (pure) --


envelope_codes = st.one_of(
    st.sampled_from([400, 401, 403, 404, 409, 429, 498, 499, 500, 503, "498", "abc", "", 498.0, True, None, [498]]),
    json_values,
)
envelopes = st.builds(
    lambda noise, known: {**noise, **known},
    json_objects,
    st.fixed_dictionaries(
        {},
        optional={"code": envelope_codes, "message": json_values, "details": json_values, "messageCode": json_values},
    ),
)


@PROPERTY
@given(envelopes, st.none() | st.floats(0, MAX_RETRY_AFTER))
def test_envelope_error_never_raises(error: dict[str, Any], retry_after: float | None) -> None:
    """envelope_error turns any envelope into a classified TargetError with a message, never an exception."""
    result = envelope_error(error, retry_after)
    assert isinstance(result, TargetError) and isinstance(result.error_class, ErrorClass)
    assert isinstance(result.message, str) and result.message
    assert result.retry_after == retry_after
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        assert result.code == code
        if code in (498, 499):  # a refused token is renewed, never retried as it is nor taken for success
            assert result.error_class is ErrorClass.AUTHENTICATION
    else:
        assert result.code is None


# -- judge_job: any job body (pure) --


def _says_completed(status: Any) -> bool:
    """The oracle: the word COMPLETED, in any case, with whitespace around it and nothing else."""
    if not isinstance(status, str):
        return False
    word = status.strip()
    return word.isascii() and word.lower() == "completed"


@PROPERTY
@given(job_bodies | json_objects)
@example({"status": "COMPLETED\u200b"})  # a zero-width space is not whitespace
@example({"status": "Completed_with_errors"})
@example({"status": "UNAVAILABLE"})
@example({"status": "FAILED", "messages": [{"message": {"nested": [float("nan")]}}, None, 10**300]})
def test_judge_job_confirms_only_the_word_completed(body: dict[str, Any]) -> None:
    """judge_job never raises; it confirms only `completed` (any case, padded), and an unknown status waits."""
    verdict, status, reason = judge_job(body)
    raw = body.get("status")
    assert status == (raw if isinstance(raw, str) else "")
    assert (verdict is Verdict.CONFIRM) == _says_completed(raw)
    failing = isinstance(raw, str) and raw.strip().upper() in FAILED_STATUSES
    assert (verdict is Verdict.FAILED) == failing
    if not _says_completed(raw) and not failing:
        assert verdict is Verdict.WAIT
    assert isinstance(reason, str)


# -- the poller, end to end, with a deployment answering hostile things --


@dataclass
class HostileDeployment:
    """A `JobApi` whose answers are scripted, each list's last answer repeating; raw HTTP answers are read
    through `interpret`, as the real client reads them."""

    clock: ManualClock
    job_answers: list[JobAnswer]
    list_answers: list[ListAnswer]
    statuses: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    asked: Counter[str] = field(default_factory=Counter)

    def _next(self, what: str, script: list[Any]) -> Any:
        self.asked[what] += 1
        return script[min(self.asked[what], len(script)) - 1]

    async def job(self, job_id: str) -> dict[str, Any]:
        answer: JobAnswer = self._next("job", self.job_answers)
        if isinstance(answer, Refusal):
            raise answer.error()
        if isinstance(answer, RawAnswer):
            return interpret(answer.status, answer.headers, answer.body, self.clock.now())
        return answer

    async def backup_names(self, store: str) -> set[str]:
        answer: ListAnswer = self._next("backups", self.list_answers)
        if isinstance(answer, Refusal):
            raise answer.error()
        return set(answer)

    async def dr_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._next("dr_status", self.statuses)
        return status


async def _let_tasks_run() -> None:
    """Give every ready task its turn (the fake deployment answers without real I/O)."""
    for _ in range(30):
        await anyio.lowlevel.checkpoint()


async def _follow(api: HostileDeployment, *, job_id: str = "j1", give_up_at: float = GIVE_UP) -> TargetState:
    """Follow one job with a real Poller, stepping the manual clock to each due poll (as tests/test_poll.py)."""
    clock = api.clock
    poller = Poller(clock=clock, rng=random.Random(7))
    target = TargetState(0, make_deployment(), "default", BACKUP, None, job_id=job_id)
    target.submitted_at = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)

        async def follow_then_close() -> None:
            await poller.follow(target, api, give_up_at)
            tg.cancel_scope.cancel()  # every job followed has ended

        tg.start_soon(follow_then_close)
        with anyio.fail_after(10):
            while not target.finished or poller.followed:
                await _let_tasks_run()
                due = poller.next_due
                clock.advance(max(due - clock.now(), 0.0) if due is not None else 0.5)
    return target


@END_TO_END
@given(
    st.lists(job_answers | json_objects, min_size=1, max_size=8),
    st.lists(unlisting, min_size=1, max_size=4),
    st.lists(dr_statuses, min_size=1, max_size=3),
    st.booleans(),
)
@example([{"status": "COMPLETED"}], [frozenset()], [{}], True)  # the one wrong "succeeded" that matters most
@example([RawAnswer(200, {}, b'{"status": "completed "}')], [Refusal(ErrorClass.TRANSIENT, "HTTP 503")], [{}], True)
@example([Refusal(ErrorClass.CONFIGURATION, "404 Job does not exist")], [frozenset({"x"})], [{}], True)
async def test_a_backup_never_listed_never_succeeds(
    job_script: list[JobAnswer], list_script: list[ListAnswer], statuses: list[dict[str, Any]], has_job_id: bool
) -> None:
    """Whatever the job polls answer, a backup absent from its store's list ends FAILED or TIMED_OUT, with a
    reason and a class, by the job timeout; never SUCCEEDED, and the poller never crashes."""
    api = HostileDeployment(ManualClock(start=0.0), job_script, list_script, statuses)
    target = await _follow(api, job_id="j1" if has_job_id else "")
    assert target.outcome in (Outcome.FAILED, Outcome.TIMED_OUT), target.outcome
    assert target.error and target.error_class in ERROR_CLASSES
    if target.outcome is Outcome.TIMED_OUT:
        assert target.error_class == ErrorClass.JOB_TIMED_OUT.value
    else:
        assert target.error_class in (ErrorClass.AUTHENTICATION.value, ErrorClass.JOB_FAILED.value)
    assert target.finished_at is not None and target.finished_at <= GIVE_UP + 1


@pytest.mark.parametrize(
    "messages",
    [[""], [{"message": ""}], [" "], ["", {"message": "\t"}], [], None],
    ids=["empty-string", "empty-message", "blank", "all-blank", "no-messages", "null-messages"],
)
async def test_a_failed_job_with_an_empty_message_still_says_why(messages: list[Any]) -> None:
    """A job that ends FAILED fails its target with a non-empty reason, however empty its messages."""
    api = HostileDeployment(ManualClock(start=0.0), [{"status": "FAILED", "messages": messages}], [frozenset()])
    target = await _follow(api)
    assert target.outcome is Outcome.FAILED and target.error_class == ErrorClass.JOB_FAILED.value
    assert target.error.strip(), "a failed target whose report row gives no reason"


waiting_bodies = job_bodies.filter(
    lambda body: not (isinstance(body.get("status"), str) and body["status"].strip().upper() in FAILED_STATUSES)
)
tolerated = refusals_of([c for c in ErrorClass if c is not ErrorClass.AUTHENTICATION])


@END_TO_END
@given(
    st.lists(waiting_bodies | tolerated, max_size=8),
    respelled(st.just("COMPLETED")),
    st.lists(other_names.map(lambda names: names - {BACKUP}) | tolerated, max_size=5),
)
@example(
    [
        {"status": "UNAVAILABLE"},
        {"status": "SOMETHING NEW", "messages": ["ignored"]},
        {},
        Refusal(ErrorClass.TRANSIENT, "HTTP 503"),
        Refusal(ErrorClass.PERMANENT, "answered an HTML page instead of JSON"),
    ],
    "COMPLETED",
    [Refusal(ErrorClass.TRANSIENT, "HTTP 502"), frozenset({"other"})],
)
async def test_a_completed_job_whose_backup_is_listed_succeeds(
    noise: list[JobAnswer], completed: str, list_noise: list[ListAnswer]
) -> None:
    """Noise that is no failure (unknown statuses, odd shapes, errors other than authentication), then COMPLETED
    in any spelling and the backup in the list: the target SUCCEEDS, with no error."""
    listed: ListAnswer = frozenset({BACKUP, "someone-else"})
    api = HostileDeployment(ManualClock(start=0.0), [*noise, {"status": completed}], [*list_noise, listed])
    target = await _follow(api, give_up_at=10_000.0)
    assert target.outcome is Outcome.SUCCEEDED, (target.outcome, target.error)
    assert (target.error, target.error_class) == ("", "")
    assert target.finished_at is not None and target.finished_at < 10_000.0


# -- the real client against a tiny server on 127.0.0.1 --


async def _cut_chunked(request: web.Request) -> web.StreamResponse:
    """A chunked answer whose connection closes mid-body."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"jobid": "j1", "pad": "')
    assert request.transport is not None
    request.transport.close()
    return response


async def _short_body(request: web.Request) -> web.StreamResponse:
    """A Content-Length of 1000 with 15 bytes sent, then the connection closes."""
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "1000"})
    await response.prepare(request)
    await response.write(b'{"jobid": "j1"}')
    assert request.transport is not None
    request.transport.close()
    return response


T, P = ErrorClass.TRANSIENT, ErrorClass.PERMANENT


@pytest.mark.parametrize(
    ("answer", "error_class", "ambiguous"),
    [
        pytest.param(_cut_chunked, T, True, id="chunked-cut-mid-stream"),
        pytest.param(_short_body, T, True, id="content-length-above-the-body"),
        pytest.param(reply(200, raw=HTML_PAGE), P, None, id="html-labelled-json"),
        pytest.param(reply(302, raw=b"", headers={"Location": "http://example.invalid/"}), P, None, id="302-away"),
        pytest.param(
            reply(200, raw=b"not gzip at all", headers={"Content-Encoding": "gzip"}), T, True, id="gzip-garbage"
        ),
        pytest.param(  # aiohttp decodes a gzip stream cut after its header as an empty body
            reply(200, raw=b"\x1f\x8b\x08\x00garbage", headers={"Content-Encoding": "gzip"}), P, None, id="gzip-cut"
        ),
        pytest.param(reply(204, raw=b""), P, None, id="204-no-body"),
        pytest.param(reply(500, body={"jobid": "j1"}), T, True, id="500-with-a-jobid"),
        pytest.param(reply(200, raw=b'{"jobid": "j1"'), P, None, id="truncated-json"),
        pytest.param(reply(200, raw=b'{"jobid": NaN}'), P, True, id="jobid-nan"),
        pytest.param(reply(200, raw=b'{"jobid": 1e999}'), P, True, id="jobid-infinity"),
        pytest.param(reply(200, body={"jobid": ""}), P, True, id="jobid-empty"),
        pytest.param(reply(200, body={"jobid": ["j1"]}), P, True, id="jobid-list"),
        pytest.param(reply(200, body=None), P, None, id="null"),
        pytest.param(reply(200, body=["j1"]), P, None, id="list"),
        pytest.param(reply(200, body="j1"), P, None, id="string"),
        pytest.param(reply(200, body={"jobid": "j1", "error": "denied"}), P, None, id="jobid-beside-an-error"),
        pytest.param(reply(200, raw=b'{"jobid": ' + b"[" * 100_000), P, None, id="deeply-nested"),
    ],
)
async def test_a_hostile_create_answer_is_a_classified_error(
    answer: Handler, error_class: ErrorClass, ambiguous: bool | None
) -> None:
    """create_backup meeting a broken answer raises a classified TargetError after one request, never a job id;
    an answer cut off after the server may have acted is ambiguous."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script(CREATE, answer)
    async with stub.serve() as url, client_for(url, clock, retries=4) as client:
        with pytest.raises(TargetError) as caught:
            await client.create_backup("default", "b1", PASSCODE, "d", None)
    error = caught.value
    assert (error.error_class, error.message != "") == (error_class, True), error.message
    if ambiguous is not None:
        assert error.ambiguous is ambiguous
    assert stub.hits[CREATE] == 1 and clock.sleeps == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_create_redirected_to_another_host_reaches_nothing(status: int) -> None:
    """A 3xx to another server (which would grant a job id) is not followed: that server sees no request."""
    clock = SteppingClock()
    stub, elsewhere = Stub(clock), Stub(clock)
    elsewhere.script(CREATE, reply(body={"jobid": "stolen"}))
    async with elsewhere.serve() as other_url, stub.serve() as url, client_for(url, clock) as client:
        stub.script(CREATE, reply(status, raw=b'{"jobid": "j1"}', headers={"Location": other_url + CREATE}))
        with pytest.raises(TargetError) as caught:
            await client.create_backup("default", "b1", PASSCODE, "d", None)
    assert caught.value.error_class is P and caught.value.code == status
    assert "not followed" in caught.value.message
    assert elsewhere.hits == Counter() and stub.hits[CREATE] == 1


@pytest.mark.parametrize("value", ["²", "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"], ids=["digit", "date"])
async def test_a_create_answer_with_a_garbage_retry_after_is_a_classified_error(value: str) -> None:
    """A 503 whose Retry-After is unreadable (sent as UTF-8) is still a transient TargetError, not a crash."""
    clock = SteppingClock()
    stub = Stub(clock)
    stub.script(CREATE, reply(503, raw=HTML_PAGE, headers={"Retry-After": value}, content_type="text/html"))
    async with stub.serve() as url, client_for(url, clock) as client:
        with pytest.raises(TargetError) as caught:
            await client.create_backup("default", "b1", PASSCODE, "d", None)
    assert caught.value.error_class is T and caught.value.retry_after is None


async def _created(client: ArcGISClient) -> str | TargetError:
    """create_backup's job id, or the TargetError it raised; any other exception propagates."""
    try:
        return await client.create_backup("default", "b1", PASSCODE, "d", None)
    except TargetError as error:
        return error


HOP_BY_HOP: Final = frozenset(
    {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive", "upgrade", "trailer"}
)
wire_header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True).filter(
    lambda name: name.lower() not in HOP_BY_HOP
)
wire_header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
wire_headers = st.builds(
    lambda noise, known: {**noise, **known},
    st.dictionaries(wire_header_names, wire_header_values, max_size=4),
    st.fixed_dictionaries(
        {},
        optional={
            "retry-after": retry_after_values.filter(str.isprintable),  # non-ASCII goes out as UTF-8
            "Content-Type": st.sampled_from(["application/json", "text/html", "text/plain; charset=utf-8"]),
        },
    ),
)
wire_bodies = bodies | st.builds(lambda job_id: json.dumps({"jobid": job_id}).encode(), st.text(max_size=10))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(200, 599), wire_headers, wire_bodies)
async def test_create_over_the_wire_returns_a_job_id_only_from_a_proper_answer(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    """Any status, headers and body off a real socket: a TargetError, or the job id of a 2xx JSON object that
    names one (and such an answer with status 200 is accepted)."""
    clock = SteppingClock()
    stub = Stub(clock)

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    stub.script(CREATE, answer)
    parsed = _loads_or_none(body)
    job_id = parsed.get("jobid") if isinstance(parsed, dict) and not parsed.get("error") else None
    # A job id goes into URLs, reports and logs: printable ASCII without spaces, at most 200 characters.
    proper = 200 <= status < 300 and isinstance(job_id, str) and re.fullmatch(r"[\x21-\x7e]{1,200}", job_id) is not None
    async with stub.serve() as url, client_for(url, clock) as client:
        got = await _created(client)
    if isinstance(got, TargetError):
        assert isinstance(got.error_class, ErrorClass) and got.message
        assert not (proper and status == 200), f"a proper answer refused: {got.message}"
    else:
        assert proper and got == job_id
    # Sent once; a 498/499 (token refused) is sent once more with a fresh token, and never more.
    envelope = parsed.get("error") if isinstance(parsed, dict) else None
    code = envelope.get("code") if isinstance(envelope, dict) else None
    int_code = isinstance(code, int) and not isinstance(code, bool)
    # as `call` renews a token; a redirect is refused as one whatever its body says (it is never followed)
    refused_token = status in (498, 499) or (int_code and code in (498, 499) and not 300 <= status < 400)
    assert stub.hits[CREATE] == (2 if refused_token else 1)
