"""Every fault the simulator injects reaches a real client over a socket, seeded and reproducible."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

import aiohttp
import anyio
import pytest

from tests.conftest import PASSCODE, PASSWORD, Admin, FleetStarter

pytestmark = pytest.mark.anyio

DR = "/system/disasterrecovery"


async def _raw_get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], str]:
    async with session.get(url, params={"f": "json"}) as response:
        return response.status, dict(response.headers), await response.text()


@pytest.mark.parametrize(("fault", "statuses"), [("http_5xx", {502, 503}), ("http_429", {429})])
async def test_http_errors_come_from_the_ingress_with_retry_after(
    start_fleet: FleetStarter, session: aiohttp.ClientSession, fault: str, statuses: set[int]
) -> None:
    """5xx and 429 are HTML pages with a Retry-After header, not ArcGIS JSON."""
    async with start_fleet(faults={fault: 1.0, "retry_after_s": 7}) as (fleet, sim, _clock):
        status, headers, body = await _raw_get(session, sim.url_of("gis-0000") + "/admin")
        assert status in statuses
        assert headers["Retry-After"] == "7"
        assert headers["Content-Type"].startswith("text/html") and "nginx" in body
        assert fleet.requests[-1].fault.startswith("http_")
        assert fleet.requests[-1].status == status


async def test_connection_reset(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """`reset`: the connection drops with no answer; the record says status 0."""
    async with start_fleet(faults={"reset": 1.0}) as (fleet, sim, _clock):
        with pytest.raises(aiohttp.ClientError):
            await _raw_get(session, sim.url_of("gis-0000") + "/admin")
        assert fleet.requests[-1].fault == "reset"
        assert fleet.requests[-1].status == 0


async def test_hang_never_answers_and_is_released_when_the_client_gives_up(
    start_fleet: FleetStarter,
) -> None:
    """`hang`: no answer within any client timeout; the server lets go once the client disconnects."""
    async with start_fleet(faults={"hang": 1.0, "hang_s": 3600}) as (fleet, sim, _clock):
        timeout = aiohttp.ClientTimeout(total=0.3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(TimeoutError):
                await _raw_get(session, sim.url_of("gis-0000") + "/admin")
        with anyio.fail_after(5):
            while fleet.in_flight.now:  # noqa: ASYNC110 - a plain counter, nothing to wait on
                await anyio.sleep(0.01)
        assert fleet.requests[-1].fault == "hang"


async def test_lost_create_response(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """`lost_create`: the job is created and runs, but the connection drops before the answer."""
    async with start_fleet(faults={"lost_create": 1.0}, job_duration={"dist": "fixed", "value": 5}) as (
        fleet,
        sim,
        clock,
    ):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        with pytest.raises(aiohttp.ClientError):
            await admin.create("ambiguous")
        [create] = fleet.creates
        assert create.accepted and create.response_lost and create.job_id
        assert (await admin.get("/admin/jobs"))["jobs"] == [create.job_id]
        assert (await admin.create("ambiguous"))["error"]["code"] == 409  # not lost: refused, so no reset
        clock.advance(5)
        assert await admin.backup_names() == ["ambiguous"]


async def test_unavailable_blips(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """`unavailable_blip`: a job poll answers status UNAVAILABLE although the job runs on."""
    async with start_fleet(faults={"unavailable_blip": 1.0}, job_duration={"dist": "fixed", "value": 5}) as (
        fleet,
        sim,
        clock,
    ):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        created = await admin.create("blip")
        assert (await admin.job(created["jobid"]))["status"] == "UNAVAILABLE"
        clock.advance(5)
        assert await admin.backup_names() == ["blip"]
        assert fleet.fault_counts["unavailable"] == 1


async def test_latency_delays_answers(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """`latency`: every answer waits at least the drawn delay."""
    async with start_fleet(faults={"latency": {"dist": "fixed", "value": 0.2}}) as (_, sim, _clock):
        started = time.monotonic()
        await _raw_get(session, sim.url_of("gis-0000") + "/admin")
        assert time.monotonic() - started >= 0.2


async def test_short_token_lifetime_expires_mid_job(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """`token_lifetime_s`: tokens live only that long whatever was asked, so they expire during a job."""
    async with start_fleet(faults={"token_lifetime_s": 3}, job_duration={"dist": "fixed", "value": 10}) as (
        _,
        sim,
        clock,
    ):
        admin = Admin(session, sim, "gis-0000")
        grant = await admin.sign_in(expiration="60")
        assert grant["expires"] == int((clock.now() + 3) * 1000)
        created = await admin.create("long")
        clock.advance(3)
        assert (await admin.job(created["jobid"]))["error"]["code"] == 498
        await admin.sign_in()
        assert (await admin.job(created["jobid"]))["status"] == "EXECUTING"


async def test_deployment_down_for_a_window(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """`down`: during the window the ingress answers 503 for that deployment only; before and after, normal."""
    deployments = [{"name": "down-one", "down": [10, 20]}, {"name": "up-one"}]
    async with start_fleet(count=0, deployments=deployments) as (fleet, sim, clock):
        down_url = sim.url_of("down-one") + "/admin"
        up_url = sim.url_of("up-one") + "/admin"
        assert (await _raw_get(session, down_url))[0] == 200
        clock.advance(15)
        status, _, body = await _raw_get(session, down_url)
        assert status == 503 and "Service Temporarily Unavailable" in body
        assert (await _raw_get(session, up_url))[0] == 200
        clock.advance(10)
        assert (await _raw_get(session, down_url))[0] == 200
        assert fleet.fault_counts["down"] == 1


async def test_wrong_credentials(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """`wrong_credentials`: the fleet password does not sign in to that deployment."""
    deployments = [{"name": "rotated", "wrong_credentials": True}, {"name": "fine"}]
    async with start_fleet(count=0, deployments=deployments) as (_, sim, _clock):
        refused = await Admin(session, sim, "rotated").sign_in(PASSWORD)
        assert refused["error"]["details"] == ["Invalid username or password."]
        assert "token" in await Admin(session, sim, "fine").sign_in(PASSWORD)


async def test_account_without_the_dr_privilege_gets_403(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """`forbidden`: signs in and reads the admin root, but DR resources and jobs answer the 403 envelope."""
    async with start_fleet(count=0, deployments=[{"name": "viewer", "forbidden": True}]) as (fleet, sim, _clock):
        admin = Admin(session, sim, "viewer")
        await admin.sign_in()
        assert "fullVersion" in await admin.get("/admin")
        refused = await admin.create("nope")
        assert refused["error"]["code"] == 403
        assert refused["error"]["message"].startswith("You do not have permissions")
        assert (await admin.get("/admin/jobs"))["error"]["code"] == 403
        assert fleet.creates[-1].error_code == 403


async def _fault_sequence(start_fleet: FleetStarter, session: aiohttp.ClientSession, seed: int) -> list[Any]:
    faults = {"http_5xx": 0.2, "http_429": 0.2, "unavailable_blip": 0.3, "retry_after_s": 0}
    async with start_fleet(seed=seed, count=2, faults=faults, job_duration={"dist": "fixed", "value": 100}) as (
        fleet,
        sim,
        _clock,
    ):
        for name in ("gis-0000", "gis-0001"):
            admin = Admin(session, sim, name)
            while admin.token is None:
                with suppress(aiohttp.ContentTypeError):  # an injected HTML error page: sign in again
                    await admin.sign_in()
            job_id = None
            while job_id is None:
                with suppress(aiohttp.ContentTypeError):
                    job_id = (await admin.create("b", passcode=PASSCODE)).get("jobid")
            for _ in range(20):
                with suppress(aiohttp.ContentTypeError):
                    await admin.job(job_id)
        return [(r.deployment, r.endpoint, r.fault) for r in fleet.requests]


async def test_faults_are_seeded_and_reproducible(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """The same seed and requests meet the same faults; another seed meets others."""
    first = await _fault_sequence(start_fleet, session, seed=11)
    again = await _fault_sequence(start_fleet, session, seed=11)
    other = await _fault_sequence(start_fleet, session, seed=12)
    assert first == again
    assert first != other
    assert {fault for _, _, fault in first} >= {"http_429", "unavailable", ""}


async def test_faults_can_be_set_per_deployment(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """A deployment's own `faults` or `profile` apply to it alone."""
    deployments = [{"name": "bad", "faults": {"http_5xx": 1.0}}, {"name": "good"}]
    async with start_fleet(count=0, deployments=deployments) as (_, sim, _clock):
        assert (await _raw_get(session, sim.url_of("bad") + "/admin"))[0] in (502, 503)
        assert (await _raw_get(session, sim.url_of("good") + "/admin"))[0] == 200


async def test_job_ends_cancelled_past_the_server_timeout(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """A job longer than the deployment's timeoutInSeconds is CANCELLED at the timeout, with messages."""
    async with start_fleet(job_timeout_s=30, job_duration={"dist": "fixed", "value": 100}) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        created = await admin.create("slow")
        clock.advance(29)
        assert (await admin.job(created["jobid"]))["status"] == "EXECUTING"
        clock.advance(1)
        job = await admin.job(created["jobid"])
        assert job["status"] == "CANCELLED" and job["messages"]
        assert "jobid" in await admin.create("next")  # the DR lock was released at the timeout
