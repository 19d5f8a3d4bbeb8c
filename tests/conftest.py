"""Shared fixtures: the anyio plugin pinned to asyncio (aiohttp runs only there) and a simulated fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from orchestrator import redact
from orchestrator.clock import ManualClock
from orchestrator.model import Deployment
from orchestrator.simulator import FleetConfig, RunningSimulator, SimulatedFleet, serve_fleet
from orchestrator.simulator.config import fleet_from_mapping

PASSWORD = "correct-horse-battery"
PASSCODE = "passcode-1234"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The redaction layer's process-wide secrets start empty in every test, and what a test adds goes with it:
    a secret of one test (a passcode "short", say) never masks another test's words ("shorter")."""
    monkeypatch.setattr(redact, "SECRETS", redact.Secrets())


@pytest.fixture(autouse=True)
def _private_ledger(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own ledger, never the user's state directory (subprocesses inherit it too)."""
    monkeypatch.setenv("ORCHESTRATOR_LEDGER", str(tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"))


class Admin:
    """A deliberately plain client of one simulated deployment, for asserting what the server answers."""

    def __init__(self, session: aiohttp.ClientSession, sim: RunningSimulator, deployment: str) -> None:
        self.session = session
        self.sim = sim
        self.root = sim.url_of(deployment)
        self.token: str | None = None

    async def sign_in(self, password: str = PASSWORD, **extra: str) -> dict[str, Any]:
        body = await self.post_raw("/sharing/rest/generateToken", username="admin", password=password, **extra)
        if "token" in body:
            self.token = body["token"]
        return body

    def _headers(self) -> dict[str, str]:
        return {"X-Esri-Authorization": f"Bearer {self.token}"} if self.token else {}

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(
            self.root + path, params={"f": "json", **params}, headers=self._headers()
        ) as response:
            result: dict[str, Any] = await response.json()
            return result

    async def post_raw(self, path: str, **form: str) -> dict[str, Any]:
        async with self.session.post(self.root + path, data={"f": "json", **form}, headers=self._headers()) as resp:
            result: dict[str, Any] = await resp.json()
            return result

    async def post(self, path: str, **form: str) -> dict[str, Any]:
        return await self.post_raw("/admin" + path, **form)

    async def create(self, name: str, store: str = "default", **form: str) -> dict[str, Any]:
        form.setdefault("passcode", PASSCODE)
        return await self.post(f"/system/disasterrecovery/stores/{store}/backups/create", name=name, **form)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.get(f"/admin/jobs/{job_id}")

    async def backup_names(self, store: str = "default") -> list[str]:
        body = await self.get(f"/admin/system/disasterrecovery/stores/{store}/backups")
        return [b["backupName"] for b in body["backups"]]


FleetStarter = Callable[..., AbstractAsyncContextManager[tuple[SimulatedFleet, RunningSimulator, ManualClock]]]


@pytest.fixture
def start_fleet() -> FleetStarter:
    """`async with start_fleet(count=2, ...) as (fleet, sim, clock)`: a fleet on 127.0.0.1, manual clock."""

    @asynccontextmanager
    async def start(**config: Any) -> AsyncIterator[tuple[SimulatedFleet, RunningSimulator, ManualClock]]:
        config.setdefault("versions", {"11.3": 1})
        if not config.get("deployments"):
            config.setdefault("count", 1)
        clock = ManualClock()
        fleet = SimulatedFleet(fleet_from_mapping(config), clock=clock, password=PASSWORD)
        async with serve_fleet(fleet) as sim:
            yield fleet, sim, clock

    return start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def config_of(**config: Any) -> FleetConfig:
    config.setdefault("count", 1)
    return fleet_from_mapping(config)


def make_deployment(
    name: str = "d",
    stores: tuple[str, ...] = ("default",),
    *,
    url: str = "",
    password: str = "x",
    passcode: str = "passcode-1",
) -> Deployment:
    """A resolved inventory entry for tests (secrets given, nothing read from disk)."""
    return Deployment(
        name=name,
        url=url or f"https://127.0.0.1:9/{name}",  # loopback, where nothing listens: unit tests never connect
        tags=(),
        stores=stores,
        username="admin",
        password=SecretStr(password),
        passcode=SecretStr(passcode),
        retention_days=None,
        ca_bundle=None,
        verify_tls=True,
        source="test",
    )
