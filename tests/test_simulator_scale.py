"""10,000 deployments in one process are practical: built quickly, each one its own server."""

from __future__ import annotations

import aiohttp
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator import SimulatedFleet, serve_fleet
from tests.conftest import PASSWORD, Admin, config_of

pytestmark = pytest.mark.anyio


async def test_ten_thousand_deployments_on_one_socket() -> None:
    """Deployments across the whole range answer, each with its own state."""
    fleet = SimulatedFleet(
        config_of(count=10_000, job_duration={"dist": "fixed", "value": 1}),
        clock=ManualClock(),
        password=PASSWORD,
    )
    assert len(fleet.deployments) == 10_000
    async with serve_fleet(fleet) as sim, aiohttp.ClientSession() as session:
        for name in ("gis-0000", "gis-4999", "gis-9999"):
            admin = Admin(session, sim, name)
            await admin.sign_in()
            assert "jobid" in await admin.create(f"backup-of-{name}")
        fleet.clock.advance(1)  # type: ignore[attr-defined]
        owners = {b["deployment"]: b["backupName"] for b in fleet.backups()}
        assert owners == {n: f"backup-of-{n}" for n in ("gis-0000", "gis-4999", "gis-9999")}
