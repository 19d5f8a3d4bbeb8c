"""The simulated deployment answers every endpoint, error and rule as the reference describes, over sockets."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.conftest import PASSCODE, PASSWORD, Admin, FleetStarter

pytestmark = pytest.mark.anyio

DR = "/system/disasterrecovery"


async def test_generate_token_issues_a_token_with_capped_expiry(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """generateToken: default lifetime, a request above the cap is capped (not refused), ssl flag."""
    async with start_fleet(token_default_minutes=120, token_max_minutes=600) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        default = await admin.sign_in()
        assert default["expires"] == int((clock.now() + 120 * 60) * 1000)
        assert default["ssl"] is True
        capped = await admin.sign_in(expiration="99999")
        assert capped["expires"] == int((clock.now() + 600 * 60) * 1000)
        asked = await admin.sign_in(expiration="30")
        assert asked["expires"] == int((clock.now() + 30 * 60) * 1000)


async def test_generate_token_refuses_bad_credentials_and_get(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """Wrong password -> HTTP 200 with the 400 envelope; generateToken is POST-only."""
    async with start_fleet() as (_, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        body = await admin.sign_in(password="wrong-password")
        assert body == {
            "error": {
                "code": 400,
                "message": "Unable to generate token.",
                "details": ["Invalid username or password."],
            }
        }
        async with session.get(sim.url_of("gis-0000") + "/sharing/rest/generateToken", params={"f": "json"}) as r:
            assert r.status == 200
            assert (await r.json())["error"]["code"] == 405


async def test_expired_unknown_and_missing_tokens(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """498 for an expired or unknown token, 499 (GWM_0003) without one, all with HTTP 200."""
    async with start_fleet() as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in(expiration="1")
        assert "fullVersion" in await admin.get("/admin")
        clock.advance(61)
        assert await admin.get("/admin") == {"error": {"code": 498, "message": "Invalid token.", "details": []}}
        admin.token = "not-a-token"
        assert (await admin.get("/admin"))["error"]["code"] == 498
        admin.token = None
        missing = await admin.get("/admin")
        assert missing["error"]["code"] == 499
        assert missing["error"]["messageCode"] == "GWM_0003"


async def test_a_token_is_valid_only_on_its_own_deployment(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """Each deployment is its own server: another deployment's token is invalid."""
    async with start_fleet(count=2) as (_, sim, _clock):
        one, two = Admin(session, sim, "gis-0000"), Admin(session, sim, "gis-0001")
        await one.sign_in()
        two.token = one.token
        assert (await two.get("/admin"))["error"]["code"] == 498


async def test_token_accepted_from_every_documented_place(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """Body, query, X-Esri-Authorization and Authorization all work; each is recorded, and query is flagged."""
    async with start_fleet() as (fleet, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        token = admin.token
        url = sim.url_of("gis-0000") + "/admin"
        assert token is not None
        tries: tuple[tuple[dict[str, str], dict[str, str], dict[str, str] | None], ...] = (
            ({"X-Esri-Authorization": f"Bearer {token}"}, {"f": "json"}, None),
            ({"Authorization": f"Bearer {token}"}, {"f": "json"}, None),
            ({}, {"f": "json", "token": token}, None),
            ({}, {}, {"f": "json", "token": token}),
        )
        for headers, params, data in tries:
            method = "POST" if data else "GET"
            async with session.request(method, url, headers=headers, params=params, data=data) as response:
                assert "fullVersion" in await response.json(), (headers, params, data)
        admin_requests = [r for r in fleet.requests if r.endpoint == "root"]
        assert [r.token_source for r in admin_requests] == [
            "x-esri-authorization",
            "authorization",
            "query",
            "body",
        ]
        assert [r.secret_in_url for r in admin_requests] == [False, False, True, False]
        assert fleet.secrets_in_urls == 1


async def test_password_in_query_string_is_flagged(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """A client that puts credentials in the URL is caught by the records."""
    async with start_fleet() as (fleet, sim, _clock):
        url = sim.url_of("gis-0000") + "/sharing/rest/generateToken"
        async with session.post(url, params={"username": "admin", "password": PASSWORD, "f": "json"}) as response:
            assert "token" in await response.json()
        assert fleet.requests[-1].secret_in_url
        assert PASSWORD not in json.dumps([r.to_json() for r in fleet.requests])


async def test_strict_mode_refuses_post_with_token_only_in_query(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """With quirks.strict_post_token, a POST must carry its token in the body or a header."""
    async with start_fleet(quirks={"strict_post_token": True}) as (_, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        url = sim.url_of("gis-0000") + "/admin"
        async with session.post(url, params={"token": admin.token or ""}, data={"f": "json"}) as response:
            assert (await response.json())["error"]["code"] == 499
        assert "fullVersion" in await admin.post("")


async def test_formats_html_by_default_json_and_pjson(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """No `f` gives an HTML page (as the real server); json is compact, pjson indented; errors likewise."""
    async with start_fleet() as (_, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        url = sim.url_of("gis-0000") + "/admin"
        headers = {"X-Esri-Authorization": f"Bearer {admin.token}"}
        async with session.get(url, headers=headers) as response:
            assert response.content_type == "text/html"
            assert "fullVersion" in await response.text()
        async with session.get(url, headers=headers, params={"f": "json"}) as response:
            assert response.content_type == "application/json"
            assert "\n" not in await response.text()
        async with session.get(url, headers=headers, params={"f": "pjson"}) as response:
            text = await response.text()
            assert "\n" in text and json.loads(text)["fullVersion"] == "11.3.0"
        async with session.get(url) as response:
            assert response.content_type == "text/html"
            assert "Token Required" in await response.text()


async def test_error_status_mirror_puts_the_code_in_the_status_line(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """error_status = "mirror": same envelope, HTTP status = error code."""
    async with start_fleet(error_status="mirror") as (_, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        async with session.get(sim.url_of("gis-0000") + "/admin", params={"f": "json"}) as response:
            assert response.status == 499
            assert (await response.json())["error"]["code"] == 499
        await admin.sign_in()
        async with session.post(
            sim.url_of("gis-0000") + f"/admin{DR}/stores/nope/backups/create",
            data={"f": "json", "name": "x", "passcode": PASSCODE},
            headers={"X-Esri-Authorization": f"Bearer {admin.token}"},
        ) as response:
            assert response.status == 404


async def test_admin_root_dr_settings_and_stores(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """Admin root with fullVersion, DR resource, settings with timeoutInSeconds, stores list and one store."""
    async with start_fleet(stores=["default", "offsite"], default_store="offsite") as (_, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        root = await admin.get("/admin")
        assert root["fullVersion"] == "11.3.0" and root["currentVersion"] == 11.3
        assert await admin.get(f"/admin{DR}") == {
            "operations": ["status"],
            "resources": ["stores", "settings"],
        }
        settings = await admin.get(f"/admin{DR}/settings")
        assert settings["timeoutInSeconds"] == 7200
        assert settings["stagingVolumeConfig"]["provisioningType"] == "DYNAMIC"
        stores = (await admin.get(f"/admin{DR}/stores"))["backupStores"]
        assert [(s["name"], s["default"]) for s in stores] == [("default", False), ("offsite", True)]
        one = await admin.get(f"/admin{DR}/stores/offsite")
        assert one["name"] == "offsite" and one["type"] == "HOSTED"
        assert (await admin.get(f"/admin{DR}/stores/missing"))["error"]["code"] == 404
        assert await admin.post(f"{DR}/stores/offsite/validate") == {"isReady": True, "status": "success"}


async def test_settings_update_changes_the_timeout(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """settings/update with timeoutInSeconds (11.0+) changes when jobs are cancelled; bad JSON is refused."""
    async with start_fleet(job_duration={"dist": "fixed", "value": 100}) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        ok = await admin.post(f"{DR}/settings/update", settings=json.dumps({"timeoutInSeconds": 50}))
        assert ok == {"status": "success"}
        assert (await admin.get(f"/admin{DR}/settings"))["timeoutInSeconds"] == 50
        assert (await admin.post(f"{DR}/settings/update", settings="{not json"))["error"]["code"] == 400
        job = await admin.create("too-long")
        clock.advance(50)
        cancelled = await admin.job(job["jobid"])
        assert cancelled["status"] == "CANCELLED"
        assert "timeoutInSeconds" in cancelled["messages"][0]
        assert await admin.backup_names() == []


async def test_create_job_lifecycle_and_backup_appearance(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """SUBMITTED -> EXECUTING -> COMPLETED with result.stages; the backup is listed only once completed."""
    async with start_fleet(job_duration={"dist": "fixed", "value": 10}) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        created = await admin.create("nightly-1", description="before upgrade")
        assert created["status"] == "SUBMITTED"
        assert created["jobsUrl"] == f"{sim.url_of('gis-0000')}/admin/jobs/{created['jobid']}"
        assert created["jobid"].startswith("j") and len(created["jobid"]) == 37
        first = await admin.job(created["jobid"])
        assert first["status"] == "SUBMITTED" and first["endtime"] == 0
        assert first["operationURI"].endswith(f"{DR}/stores/default/backups/create")
        clock.advance(1)
        assert (await admin.job(created["jobid"]))["status"] == "EXECUTING"
        assert await admin.backup_names() == []
        clock.advance(9)
        done = await admin.job(created["jobid"])
        assert done["status"] == "COMPLETED"
        assert done["endtime"] == done["starttime"] + 10_000
        assert [s["state"] for s in done["result"]["stages"]] == ["completed"] * 5
        backups = (await admin.get(f"/admin{DR}/stores/default/backups"))["backups"]
        assert len(backups) == 1
        backup = backups[0]
        assert backup["backupName"] == "nightly-1" and backup["status"] == "completed"
        assert backup["retentionDate"] == -1 and backup["description"] == "before upgrade"
        assert backup["completeTime"] - backup["startTime"] == 10_000
        assert await admin.get(f"/admin{DR}/stores/default/backups/nightly-1") == backup
        assert (await admin.get("/admin/jobs"))["jobs"] == [created["jobid"]]


async def test_create_refusals(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """Short passcode, unknown store, missing name, a second job while one runs, a duplicate name."""
    async with start_fleet(job_duration={"dist": "fixed", "value": 10}) as (fleet, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        assert (await admin.create("a", passcode="short"))["error"]["code"] == 400
        assert (await admin.create("a", store="nope"))["error"]["code"] == 404
        assert (await admin.create(""))["error"]["code"] == 400
        assert "jobid" in await admin.create("a")
        busy = await admin.create("b")
        assert busy["error"]["code"] == 409 and "in progress" in busy["error"]["details"][0]
        clock.advance(10)
        duplicate = await admin.create("a")
        assert duplicate["error"]["code"] == 409 and "already exists" in duplicate["error"]["details"][0]
        assert "jobid" in await admin.create("b")
        assert [(c.backup_name, c.accepted, c.error_code) for c in fleet.creates] == [
            ("a", False, 400),
            ("a", False, 404),
            ("", False, 400),
            ("a", True, 0),
            ("b", False, 409),
            ("a", False, 409),
            ("b", True, 0),
        ]


async def test_create_and_operations_are_post_only(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """GET on an operation is refused with an error envelope; resources accept GET and POST."""
    async with start_fleet() as (fleet, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        refused = await admin.get(f"/admin{DR}/stores/default/backups/create", name="x", passcode=PASSCODE)
        assert refused["error"]["code"] == 405
        assert fleet.creates == []
        assert "backups" in await admin.post(f"{DR}/stores/default/backups")


async def test_retention_update_delete_and_cleaner(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """retentionDate is kept, updated, and the cleaner removes expired backups; delete sync and async."""
    async with start_fleet(job_duration={"dist": "fixed", "value": 1}) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        expires = int((clock.now() + 100) * 1000)
        await admin.create("keep", retentionDate=str(expires))
        clock.advance(1)
        assert (await admin.get(f"/admin{DR}/stores/default/backups/keep"))["retentionDate"] == expires
        later = expires + 50_000
        assert await admin.post(f"{DR}/stores/default/backups/keep/update", retentionDate=str(later)) == {
            "status": "success"
        }
        clock.advance(120)  # past the first date, before the new one
        assert await admin.backup_names() == ["keep"]
        clock.advance(40)
        assert await admin.backup_names() == []
        assert (await admin.create("bad", retentionDate="tomorrow"))["error"]["code"] == 400

        await admin.create("one")
        clock.advance(1)
        await admin.create("two")
        clock.advance(1)
        assert await admin.post(f"{DR}/stores/default/backups/one/delete") == {"status": "success"}
        deleted = await admin.post(f"{DR}/stores/default/backups/two/delete", **{"async": "true"})
        assert deleted["status"] == "SUBMITTED"
        assert (await admin.job(deleted["jobid"]))["status"] == "COMPLETED"
        assert await admin.backup_names() == []
        assert (await admin.post(f"{DR}/stores/default/backups/one/delete"))["error"]["code"] == 404


async def test_dr_status_reports_the_last_job(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """DR status: no_op before any job, running with stages, then success with the backup name."""
    async with start_fleet(job_duration={"dist": "fixed", "value": 10}) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        assert (await admin.get(f"/admin{DR}/status"))["status"]["state"] == "no_op"
        await admin.create("b1")
        clock.advance(5)
        running = (await admin.get(f"/admin{DR}/status"))["status"]
        assert running["state"] == "running" and running["backupName"] == "b1"
        assert [s["state"] for s in running["stages"]][:2] == ["completed", "completed"]
        assert running["stages"][2]["state"] == "in_progress"
        clock.advance(5)
        done = (await admin.get(f"/admin{DR}/status"))["status"]
        assert done["state"] == "success" and done["completeTime"] > done["startTime"]


async def test_failed_job_carries_messages_and_leaves_no_backup(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """job_failure: the job ends FAILED with messages, the DR status says failed, no backup appears."""
    async with start_fleet(job_duration={"dist": "fixed", "value": 10}, faults={"job_failure": 1.0}) as (
        _,
        sim,
        clock,
    ):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        job = await admin.create("doomed")
        clock.advance(10)
        failed = await admin.job(job["jobid"])
        assert failed["status"] == "FAILED"
        assert failed["messages"] and "result" not in failed
        assert (await admin.get(f"/admin{DR}/status"))["status"]["state"] == "failed"
        assert await admin.backup_names() == []
        assert "jobid" in await admin.create("doomed")  # the name was never taken


async def test_unknown_job_resource_and_deployment(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """Unknown job id and unknown path: error envelope; unknown deployment: the ingress's 404 page."""
    async with start_fleet() as (_, sim, _clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        assert (await admin.job("j00000000-0000-4000-a000-000000000000"))["error"]["code"] == 404
        assert (await admin.get("/admin/no/such/thing"))["error"]["code"] == 404
        async with session.get(sim.base_url + "/nobody/admin", params={"f": "json"}) as response:
            assert response.status == 404
            assert response.content_type == "text/html"


async def test_job_ttl_forgets_old_jobs(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """quirks.job_ttl_s: finished jobs disappear from the jobs list after the TTL."""
    async with start_fleet(job_duration={"dist": "fixed", "value": 1}, quirks={"job_ttl_s": 60}) as (
        _,
        sim,
        clock,
    ):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        job = await admin.create("b1")
        clock.advance(30)
        assert (await admin.get("/admin/jobs"))["jobs"] == [job["jobid"]]
        clock.advance(60)
        assert (await admin.get("/admin/jobs"))["jobs"] == []
        assert (await admin.job(job["jobid"]))["error"]["code"] == 404
