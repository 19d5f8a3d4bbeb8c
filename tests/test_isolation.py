"""One hostile deployment never changes another's outcome: whatever it answers (a version that is not one, a
token with a line break, numbers past any float, wrong types, HTML, errors), the run ends normally, the
healthy deployments succeed, and the hostile one ends with a classified reason.

The hostile deployment is a small `aiohttp.web` server on 127.0.0.1 answering what hypothesis draws for
each endpoint; the healthy ones are simulated deployments on another socket. `make fuzz` runs the same
property with many more examples (ORCHESTRATOR_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from itertools import cycle
from pathlib import Path
from typing import Final

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.api import open_clients
from orchestrator.clock import SystemClock
from orchestrator.errors import ErrorClass
from orchestrator.model import Outcome, build_targets
from orchestrator.runner import run_fleet
from orchestrator.settings import load_settings
from orchestrator.simulator import SimulatedFleet, serve_fleet
from orchestrator.simulator.config import fleet_from_mapping
from tests.conftest import PASSWORD, make_deployment
from tests.fakes import serving
from tests.test_hostile_answers import huge_numbers, json_objects, json_values

pytestmark = pytest.mark.anyio
EXAMPLES: Final = int(os.environ.get("ORCHESTRATOR_FUZZ_EXAMPLES", "12"))
ENDPOINTS: Final = ("token", "root", "stores", "create", "job", "backups", "status", "other")

# Text a server should never send, and st.text() would not draw: a lone surrogate, a Markdown link.
ODD: Final = ["10.²", "1" * 5000, "11.3\r\n", "\x1b[2J", '=HYPERLINK("x")', "", " ", "x\ud800y", "[x](http://t)"]
odd_text = st.sampled_from(ODD) | st.text(max_size=40)
odd_numbers = huge_numbers | st.floats() | st.integers()
answers_by_endpoint = {
    "token": st.one_of(
        st.fixed_dictionaries(
            {
                "token": st.sampled_from(["good-token-1", "bad\r\ntoken", "x" * 10_000, "sp ace"]) | odd_text,
                "expires": odd_numbers | odd_text,
            }
        ),
        json_objects,
    ),
    "root": st.one_of(st.fixed_dictionaries({"fullVersion": odd_text | odd_numbers | json_values}), json_objects),
    "stores": st.one_of(
        st.fixed_dictionaries(
            {
                "backupStores": st.lists(
                    st.fixed_dictionaries({"name": odd_text | json_values, "default": st.booleans() | json_values}),
                    max_size=3,
                )
                | json_values
            }
        ),
        json_objects,
    ),
    "create": st.one_of(st.fixed_dictionaries({"jobid": odd_text | json_values, "status": odd_text}), json_objects),
    "job": st.one_of(
        st.fixed_dictionaries(
            {"status": st.sampled_from(["COMPLETED", "FAILED", "EXECUTING"]) | odd_text, "messages": json_values}
        ),
        json_objects,
    ),
    "backups": st.one_of(st.fixed_dictionaries({"backups": json_values}), json_objects),
    "status": json_objects,
    "other": json_objects,
}
raw_bodies = st.sampled_from([b"<html>502 Bad Gateway</html>", b"{", b"", b"\xff\xfe", b"[]", b"null"])
# What a deployment that works answers: drawn most of the time, so the hostile answers are met at every
# step of a run (sign-in, version, stores, create, job, list, status), not only at the first.
NOW_MS: Final = 1_795_741_200_000
plausible = {
    "token": st.fixed_dictionaries({"token": st.just("good-token-1"), "expires": st.just(4_000_000_000_000)}),
    "root": st.fixed_dictionaries({"fullVersion": st.sampled_from(["11.3", "11.4", "12.0", "10.9.1", "10.9"])}),
    "stores": st.just({"backupStores": [{"name": "default", "default": True}]}),
    "create": st.fixed_dictionaries(
        {"jobid": st.from_regex(r"j[0-9a-f]{8}", fullmatch=True), "status": st.just("SUBMITTED")}
    ),
    "job": st.fixed_dictionaries(
        {
            "status": st.sampled_from(["SUBMITTED", "EXECUTING", "COMPLETED", "FAILED", "UNAVAILABLE"]),
            "messages": st.lists(st.text(max_size=20), max_size=2),
        }
    ),
    "backups": st.fixed_dictionaries(
        {
            "backups": st.lists(
                st.fixed_dictionaries(
                    {
                        "backupName": st.sampled_from(["b-hostile", "other", "b-hostile "]),
                        "status": st.sampled_from(["completed", "failed"]),
                        "release": st.sampled_from(["11.3.0", "11.4.0", "12.0.0"]),
                        "completeTime": st.integers(NOW_MS - 10**9, NOW_MS),
                        "retentionDate": st.just(-1),
                    }
                ),
                max_size=3,
            )
        }
    ),
    "status": st.fixed_dictionaries(
        {"status": st.fixed_dictionaries({"state": st.sampled_from(["running", "success", "failed", "no_op"])})}
    ),
    "other": json_objects,
}
Answer = tuple[int, bytes]
SERVED: Counter[str] = Counter()  # hostile answers served, by endpoint, over the module's examples


@pytest.fixture(scope="module", autouse=True)
def _count_served() -> Iterator[None]:
    """`make fuzz` says how many hostile answers went through the client, the poller and the audit."""
    yield
    print(f"\nhostile answers served: {sum(SERVED.values())} ({dict(SERVED.most_common())})")


@st.composite
def scripts(draw: st.DrawFn) -> dict[str, list[Answer]]:
    """Per endpoint, a few answers the hostile deployment gives in turn (the last repeating)."""
    script = {}
    for endpoint in ENDPOINTS:
        hostile = st.tuples(
            st.sampled_from([200, 200, 200, 400, 500, 502]),
            answers_by_endpoint[endpoint].map(lambda b: json.dumps(b).encode()) | raw_bodies,
        )
        works = st.tuples(st.just(200), plausible[endpoint].map(lambda b: json.dumps(b).encode()))
        answers = []
        for _ in range(draw(st.integers(1, 4))):  # one answer in four hostile
            answers.append(draw(hostile if draw(st.integers(0, 3)) == 0 else works))
        script[endpoint] = answers
    return script


def endpoint_of(path: str) -> str:
    markers = (("generateToken", "token"), ("/create", "create"), ("/jobs/", "job"), ("/backups", "backups"),
               ("/status", "status"), ("/stores", "stores"))  # fmt: skip
    for marker, endpoint in markers:
        if marker in path:
            return endpoint
    return "root" if path.rstrip("/").endswith("/admin") else "other"


@asynccontextmanager
async def hostile_server(script: dict[str, list[Answer]]) -> AsyncIterator[str]:
    turns = {endpoint: cycle(answers) for endpoint, answers in script.items()}

    async def answer(request: web.Request) -> web.Response:
        endpoint = endpoint_of(request.path)
        SERVED[endpoint] += 1
        status, body = next(turns[endpoint])
        return web.Response(status=status, body=body, content_type="application/json")

    async with serving(answer) as port:
        yield f"http://127.0.0.1:{port}/hostile"


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(script=scripts())
async def test_a_hostile_deployment_never_changes_another_deployments_outcome(
    script: dict[str, list[Answer]], tmp_path: Path
) -> None:
    """The run ends normally whatever one deployment answers; the others succeed; it ends with a reason."""
    fleet = SimulatedFleet(
        fleet_from_mapping({"count": 2, "versions": {"11.3": 1}, "job_duration": {"dist": "fixed", "value": 0.05}}),
        password=PASSWORD,
    )
    quick = {"poll_initial": 0.05, "poll_max": 0.2, "job_timeout": 1.0, "retries": 1, "retry_initial": 0.01,
             "retry_max": 0.02, "request_timeout": 2.0, "report_dir": tmp_path}  # fmt: skip
    settings_ = load_settings(quick)
    async with serve_fleet(fleet) as sim, hostile_server(script) as hostile_url:
        deployments = [
            make_deployment("gis-0000", url=sim.url_of("gis-0000"), password=PASSWORD),
            make_deployment("hostile", url=hostile_url),
            make_deployment("gis-0001", url=sim.url_of("gis-0001"), password=PASSWORD),
        ]
        clock = SystemClock()
        targets = build_targets(deployments, name_template="b-{deployment}", run_id="r", started_at=clock.now())
        async with open_clients(settings_, clock, random.Random(1)) as clients:
            result = await run_fleet(targets, settings_, clients=clients, run_id="r", started_at=clock.now(),
                                     clock=clock)  # fmt: skip
    healthy = [t for t in result.targets if t.deployment.name != "hostile"]
    assert [t.outcome for t in healthy] == [Outcome.SUCCEEDED] * 2, [(t.key, t.error) for t in healthy]
    (hostile,) = [t for t in result.targets if t.deployment.name == "hostile"]
    listed = any(b'"b-hostile"' in body and b"completed" in body for _, body in script["backups"])
    assert hostile.outcome is not Outcome.SUCCEEDED or listed  # a success only when its backup was listed
    assert hostile.outcome is Outcome.SUCCEEDED or hostile.error.strip()
    assert hostile.outcome is Outcome.SUCCEEDED or hostile.error_class in {c.value for c in ErrorClass}
    assert "\r" not in hostile.error and "\x1b" not in hostile.error and len(hostile.error) <= 500


def _answers(**bodies: bytes) -> dict[str, list[Answer]]:
    script = {endpoint: [(200, b'{"status": "nothing"}')] for endpoint in ENDPOINTS}
    script["token"] = [(200, b'{"token": "good-token-1", "expires": 4000000000000}')]
    script.update({endpoint: [(200, body)] for endpoint, body in bodies.items()})
    return script


@pytest.mark.parametrize(
    ("bodies", "error_class", "says"),
    [
        ({"root": '{"fullVersion": "10.\u00b2"}'.encode()}, "permanent", "is not a version"),
        ({"root": b'{"fullVersion": "' + b"1" * 5000 + b'"}'}, "permanent", "is not a version"),
        ({"root": b'{"fullVersion": ' + b"1" * 5000 + b"}"}, "permanent", ""),
        ({"token": b'{"token": "bad\\r\\ntoken", "expires": 4000000000000}'}, "permanent", "token that is not one"),
        ({"token": b'{"token": "ok-token", "expires": 1e400}'}, None, ""),
        ({"token": b'{"token": "ok-token", "expires": ' + b"9" * 5000 + b"}"}, None, ""),
    ],
    ids=["superscript-version", "long-version", "huge-number-version", "token-with-crlf", "expires-1e400",
         "expires-5000-digits"],
)  # fmt: skip
async def test_the_attacks_of_the_review_are_that_deployments_own_failures(
    bodies: dict[str, bytes], error_class: str | None, says: str, tmp_path: Path
) -> None:
    """A version that is not one, a 5,000-digit version, a token with a line break, an `expires` past any
    number: each ends as the deployment's own classified failure with a reason, never the run's end
    (issue 12's attacks, one by one)."""
    settings_ = load_settings({"job_timeout": 1.0, "retries": 0, "request_timeout": 2.0, "report_dir": tmp_path,
                               "poll_initial": 0.05, "poll_max": 0.1})  # fmt: skip
    async with hostile_server(_answers(**bodies)) as url:
        clock = SystemClock()
        targets = build_targets([make_deployment("hostile", url=url)], name_template="b", run_id="r",
                                started_at=clock.now())  # fmt: skip
        async with open_clients(settings_, clock, random.Random(1)) as clients:
            result = await run_fleet(targets, settings_, clients=clients, run_id="r", started_at=clock.now(),
                                     clock=clock)  # fmt: skip
    (target,) = result.targets
    assert target.outcome is not Outcome.SUCCEEDED and target.error and target.error_class != "internal"
    if error_class is not None:
        assert target.error_class == error_class and says in target.error, target.error


@FUZZ
@given(script=scripts())
async def test_a_hostile_deployment_never_changes_another_deployments_verdict(script: dict[str, list[Answer]]) -> None:
    """The audit reads every deployment whatever one answers: the others keep their verdicts, and the hostile
    one is compliant only if its backups answer even holds a completed entry."""
    from orchestrator.api import open_api_context
    from orchestrator.audit.policy import Policy
    from orchestrator.audit.survey import Found, survey
    from orchestrator.settings import AuditSettings
    from orchestrator.simulator.jobs import Backup, ms

    fleet = SimulatedFleet(fleet_from_mapping({"count": 2, "versions": {"11.3": 1}}), password=PASSWORD)
    now = fleet.clock.now()
    fleet.deployments["gis-0000"].backups["default"]["good"] = Backup(
        "good", "default", "11.3.0", "", now - 3600, now - 3500, ms(now + 30 * 86_400)
    )
    found: Found = {}
    async with serve_fleet(fleet) as sim, hostile_server(script) as hostile_url:
        deployments = [
            make_deployment("gis-0000", url=sim.url_of("gis-0000"), password=PASSWORD, stores=()),
            make_deployment("hostile", url=hostile_url, stores=()),
            make_deployment("gis-0001", url=sim.url_of("gis-0001"), password=PASSWORD, stores=()),
        ]
        settings_ = AuditSettings(retries=1, retry_initial=0.01, retry_max=0.02, request_timeout=2.0)
        async with open_api_context(settings_, SystemClock(), random.Random(1)) as context:
            await survey(deployments, Policy(), context, now=now, found=found)
    assert found[("gis-0000", "")].verdict.value == "compliant"
    assert found[("gis-0001", "")].verdict.value == "violation"  # no backup at all
    hostile = found[("hostile", "")]
    listed_completed = any(b"completed" in body.lower() for _, body in script["backups"])
    assert hostile.verdict.value != "compliant" or listed_completed
    assert "\x1b" not in hostile.error and "\r" not in hostile.error


async def test_a_lone_surrogate_in_a_servers_words_reaches_the_ledger_and_reports_cleaned(tmp_path: Path) -> None:
    """Valid JSON, but no file or database can encode `\\ud800`: a failed job's message holding one ends the
    target with a reason, and the run is recorded and reported (before, the ledger writer crashed the run)."""
    from orchestrator import usecases

    script = _answers(
        root=b'{"fullVersion": "11.3"}',
        stores=b'{"backupStores": [{"name": "default", "default": true}]}',
        create=b'{"jobid": "j1", "status": "SUBMITTED"}',
        job=b'{"status": "FAILED", "messages": ["bad \\ud800 thing \\u001b[2J"]}',
    )
    async with hostile_server(script) as url:
        settings_ = load_settings({"report_dir": tmp_path / "r", "ledger": tmp_path / "l.sqlite3", "retries": 0,
                                   "poll_initial": 0.05, "poll_max": 0.1, "job_timeout": 2.0})  # fmt: skip
        plan = usecases.new_plan(settings_, [make_deployment("hostile", url=url)], "inventory")
        finished = await usecases.execute(plan)
    (target,) = finished.result.targets
    assert (target.outcome, target.error_class) == (Outcome.FAILED, "job_failed")
    assert "bad" in target.error and "\ud800" not in target.error and "\x1b" not in target.error
    assert (finished.folder / "report.md").read_text(encoding="utf-8").count("bad") >= 1
