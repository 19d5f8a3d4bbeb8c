"""What the simulator saw is readable in-process and over HTTP under /_simulator/, with no secret."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import PASSCODE, PASSWORD, Admin, FleetStarter

pytestmark = pytest.mark.anyio


async def _inspect(session: aiohttp.ClientSession, base_url: str, what: str, **params: str) -> Any:
    async with session.get(f"{base_url}/_simulator/{what}", params=params) as response:
        assert response.status == 200
        return await response.json()


async def test_records_over_http_match_the_fleet_object(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """requests, creates, jobs, backups, fleet and stats are served as JSON, filtered by deployment."""
    async with start_fleet(count=2, job_duration={"dist": "fixed", "value": 4}) as (fleet, sim, clock):
        admin = Admin(session, sim, "gis-0001")
        await admin.sign_in()
        created = await admin.create("b1")
        clock.advance(4)
        await admin.backup_names()

        requests = await _inspect(session, sim.base_url, "requests", deployment="gis-0001")
        assert requests["total"] == 3
        assert [r["endpoint"] for r in requests["items"]] == ["token", "create", "backups"]
        assert requests["items"][1]["path"] == "/gis-0001/admin/system/disasterrecovery/stores/default/backups/create"
        assert (await _inspect(session, sim.base_url, "requests", deployment="gis-0000"))["total"] == 0
        page = await _inspect(session, sim.base_url, "requests", offset="1", limit="1")
        assert [r["endpoint"] for r in page["items"]] == ["create"]

        [create] = (await _inspect(session, sim.base_url, "creates"))["items"]
        assert create["job_id"] == created["jobid"] and create["accepted"] and not create["response_lost"]
        [job] = (await _inspect(session, sim.base_url, "jobs"))["items"]
        assert job["completed_at"] - job["created_at"] == pytest.approx(4)
        assert job["final_status"] == "COMPLETED" and job["status_now"] == "COMPLETED"
        assert job == fleet.jobs()[0]
        [backup] = (await _inspect(session, sim.base_url, "backups"))["items"]
        assert backup["deployment"] == "gis-0001" and backup["backupName"] == "b1"
        described = (await _inspect(session, sim.base_url, "fleet"))["items"]
        assert [d["name"] for d in described] == ["gis-0000", "gis-0001"]

        stats = await _inspect(session, sim.base_url, "stats")
        assert stats["requests_by_endpoint"] == {"token": 1, "create": 1, "backups": 1}
        assert stats["creates_accepted"] == 1 and stats["jobs"] == 1
        assert stats["peak_running_jobs"] == 1 and stats["secrets_in_urls"] == 0
        assert stats["cpu_seconds"] > 0


async def test_no_secret_is_ever_recorded(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """Passwords, passcodes and tokens never appear in any record, even when sent in the URL."""
    async with start_fleet(count=1) as (fleet, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        url = sim.url_of("gis-0000") + "/admin/system/disasterrecovery/stores/default/backups/create"
        params = {"token": admin.token or "", "passcode": PASSCODE, "name": "leaky", "f": "json"}
        async with session.post(url, params=params) as response:
            assert "jobid" in await response.json()
        dumped = json.dumps(
            [await _inspect(session, sim.base_url, what) for what in ("requests", "creates", "jobs", "fleet", "stats")]
        )
        for secret in (PASSWORD, PASSCODE, admin.token or "?"):
            assert secret not in dumped
        assert fleet.requests[-1].secret_in_url


async def test_peak_running_jobs_and_in_flight_are_measured(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """Concurrency the client caused is visible: overlapping jobs fleet-wide and per deployment."""
    async with start_fleet(count=3, job_duration={"dist": "fixed", "value": 10}) as (fleet, sim, clock):
        for name in ("gis-0000", "gis-0001"):
            admin = Admin(session, sim, name)
            await admin.sign_in()
            await admin.create("b")
        clock.advance(10)
        admin = Admin(session, sim, "gis-0002")
        await admin.sign_in()
        await admin.create("c")
        assert fleet.peak_running_jobs() == (2, 1)
        assert fleet.in_flight.peak >= 1 and fleet.in_flight.now == 0


async def test_manual_clock_can_be_advanced_over_http(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """POST /_simulator/clock/advance moves a manual clock (for a simulator in another process)."""
    async with start_fleet() as (_, sim, clock):
        before = clock.now()
        async with session.post(f"{sim.base_url}/_simulator/clock/advance", params={"seconds": "90"}) as response:
            assert (await response.json())["now_ms"] == int((before + 90) * 1000)
        assert clock.now() == before + 90
        async with session.post(f"{sim.base_url}/_simulator/stats") as response:
            assert response.status == 405
        async with session.get(f"{sim.base_url}/_simulator/nothing") as response:
            assert response.status == 404
