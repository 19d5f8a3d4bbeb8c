"""A simulated deployment changed between runs, as its administrator would: upgraded, a store added or removed,
another store made the default (`SimulatedFleet.reconfigure`)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import Admin, FleetStarter

pytestmark = pytest.mark.anyio

STORES = "/admin/system/disasterrecovery/stores"


async def test_a_deployment_reconfigured_between_runs_answers_as_reconfigured(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """A new default store is marked so in the stores list; a removed store is refused as unknown (its backups
    gone with it), a new one starts empty; a new version is said and serves its own paths; the plans follow."""
    async with start_fleet(stores=["a", "b"], default_store="a", job_duration={"dist": "fixed", "value": 1}) as (
        fleet, sim, clock,
    ):  # fmt: skip
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        assert "jobid" in await admin.create("kept-in-a", store="a")
        clock.advance(2)
        fleet.reconfigure("gis-0000", stores=("b", "c"), default_store="c", version="12.0")
        listed = (await admin.get(STORES))["backupStores"]
        assert [(s["name"], s["default"]) for s in listed] == [("b", False), ("c", True)]
        refused = await admin.create("into-a", store="a")
        assert refused["error"]["code"] == 404 and "does not exist" in refused["error"]["message"]
        assert await admin.backup_names("c") == [] and fleet.backups("gis-0000") == []
        assert (await admin.get("/admin"))["fullVersion"] == "12.0.0"
        fleet.reconfigure("gis-0000", version="10.9")
        assert (await admin.create("new-path", store="c"))["error"]["code"] == 404  # 10.9: legacy paths only
        assert fleet.plans[0].version == "10.9" and fleet.plans[0].default_store == "c"
        with pytest.raises(ValueError, match="not one of the stores"):
            fleet.reconfigure("gis-0000", default_store="a")
        with pytest.raises(ValueError, match="unknown version"):
            fleet.reconfigure("gis-0000", version="9.0")
