"""Version differences and quirks per deployment: 10.9 legacy paths, 11.4 early COMPLETED, 12.0 no result."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import PASSCODE, Admin, FleetStarter

pytestmark = pytest.mark.anyio

DR = "/system/disasterrecovery"
LEGACY = f"{DR}/backuprestore"
TEN_SECONDS = {"dist": "fixed", "value": 10}


async def test_10_9_serves_only_the_legacy_backup_paths(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """10.9: store-scoped backups, validate and status do not exist; backuprestore/* does, with storeName."""
    async with start_fleet(versions={"10.9": 1}, job_duration=TEN_SECONDS) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        assert (await admin.get("/admin"))["fullVersion"] == "10.9.0"
        assert (await admin.create("new-path"))["error"]["code"] == 404
        assert (await admin.get(f"/admin{DR}/stores/default/backups"))["error"]["code"] == 404
        assert (await admin.get(f"/admin{DR}/status"))["error"]["code"] == 404
        assert (await admin.post(f"{DR}/stores/default/validate"))["error"]["code"] == 404
        assert "timeoutInSeconds" not in await admin.get(f"/admin{DR}/settings")

        created = await admin.post(f"{LEGACY}/backup", name="legacy-1", passcode=PASSCODE, storeName="default")
        assert created["status"] == "SUBMITTED"
        running = (await admin.get(f"/admin{LEGACY}/status"))["status"]
        assert "state" not in running  # 10.9 says "running" by leaving the state out
        assert running["messages"][0]["message"] == "Started backup process."
        assert (await admin.job(created["jobid"]))["error"]["code"] == 404  # the jobs resource is 10.9.1+
        assert (await admin.get("/admin/jobs"))["error"]["code"] == 404
        clock.advance(10)
        listed = await admin.get(f"/admin{LEGACY}/backups", storeName="default")
        assert [b["backupName"] for b in listed["backups"]] == ["legacy-1"]
        assert (await admin.get(f"/admin{LEGACY}/backups/legacy-1"))["backupName"] == "legacy-1"
        assert (await admin.get(f"/admin{LEGACY}/status"))["status"]["state"] == "success"
        assert await admin.post(f"{LEGACY}/backups/legacy-1/delete") == {"status": "success"}
        assert (await admin.get(f"/admin{LEGACY}/backups"))["backups"] == []


async def test_legacy_paths_still_work_on_newer_versions(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """Deprecated at 10.9.1 but still served (the ArcGIS API for Python uses them); legacy root is HTML only."""
    async with start_fleet(versions={"11.5": 1}, job_duration=TEN_SECONDS) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        created = await admin.post(f"{LEGACY}/backup", name="old-client", passcode=PASSCODE)
        clock.advance(10)
        assert (await admin.job(created["jobid"]))["status"] == "COMPLETED"
        assert await admin.backup_names() == ["old-client"]
        async with session.get(
            sim.url_of("gis-0000") + f"/admin{LEGACY}",
            params={"f": "json"},
            headers={"X-Esri-Authorization": f"Bearer {admin.token}"},
        ) as response:
            assert response.content_type == "text/html"


async def test_11_4_job_says_completed_before_the_backup_exists(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """11.4: COMPLETED at once; the backup appears only when the work is really done; the DR lock holds."""
    async with start_fleet(versions={"11.4": 1}, job_duration=TEN_SECONDS) as (fleet, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        created = await admin.create("early")
        job = await admin.job(created["jobid"])
        assert job["status"] == "COMPLETED" and "result" in job
        assert await admin.backup_names() == []
        assert (await admin.get(f"/admin{DR}/status"))["status"]["state"] == "running"
        assert (await admin.create("second"))["error"]["code"] == 409
        clock.advance(10)
        assert await admin.backup_names() == ["early"]
        [record] = fleet.jobs()
        assert record["reported_end_at"] == record["created_at"]
        assert record["completed_at"] == record["created_at"] + 10


async def test_12_0_completed_job_has_no_result(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """12.0: the COMPLETED backup job lacks `result` (GO#263)."""
    async with start_fleet(versions={"12.0": 1}, job_duration=TEN_SECONDS) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        created = await admin.create("plain")
        clock.advance(10)
        job = await admin.job(created["jobid"])
        assert job["status"] == "COMPLETED"
        assert "result" not in job
        assert await admin.backup_names() == ["plain"]


async def test_quirks_are_settings(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """The quirk lists can be changed: 11.4 without the early COMPLETED behaves like any version."""
    async with start_fleet(
        versions={"11.4": 1}, job_duration=TEN_SECONDS, quirks={"instant_complete_versions": []}
    ) as (
        _,
        sim,
        _clock,
    ):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        created = await admin.create("normal")
        assert (await admin.job(created["jobid"]))["status"] == "SUBMITTED"


async def test_versions_are_mixed_per_deployment(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """Each deployment reports its own version; explicit deployments pin theirs."""
    async with start_fleet(
        count=0, deployments=[{"name": "old", "version": "10.9"}, {"name": "new", "version": "12.0"}]
    ) as (_, sim, _clock):
        for name, version in (("old", "10.9.0"), ("new", "12.0.0")):
            admin = Admin(session, sim, name)
            await admin.sign_in()
            assert (await admin.get("/admin"))["fullVersion"] == version
