"""HTTPS against the simulator's private CA: verified by default, a CA bundle trusted, an unknown CA refused
as a configuration error (no retries), and `verify_tls = false` allowed per deployment but flagged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.inventory import load_inventory
from orchestrator.model import Outcome
from orchestrator.report import write_reports
from orchestrator.simulator import SimulatedFleet, serve_fleet
from orchestrator.simulator.config import fleet_from_mapping
from orchestrator.simulator.inventory_file import write_inventory
from orchestrator.simulator.tls import ensure_tls_files
from tests.conftest import PASSWORD
from tests.test_runner import run

pytestmark = pytest.mark.anyio


async def test_https_verified_with_the_ca_bundle_refused_without_it_and_flagged_when_off(tmp_path: Path) -> None:
    """With the CA: succeeds. Without it: one configuration error, one connection attempt, no retry storm.
    With verify_tls = false: succeeds, and the report says TLS was not verified for that deployment."""
    tls = ensure_tls_files(tmp_path / "tls")
    fleet = SimulatedFleet(
        fleet_from_mapping({"count": 3, "job_duration": {"dist": "fixed", "value": 0.2}}), password=PASSWORD
    )
    async with serve_fleet(fleet, ssl_context=tls.server_context()) as sim:
        assert sim.base_url.startswith("https://127.0.0.1:")
        path = tmp_path / "inventory.toml"
        urls = {p.name: sim.url_of(p.name) for p in fleet.plans}
        write_inventory(path, fleet.plans, urls, password=PASSWORD, ca_bundle=tls.ca_cert)
        trusted, untrusted, unverified = load_inventory(path).deployments
        deployments = [
            trusted,
            replace(untrusted, ca_bundle=None),  # the system's CAs do not know the private one
            replace(unverified, ca_bundle=None, verify_tls=False),
        ]
        result = await run(deployments, tmp_path)
    outcomes = {t.deployment.name: t for t in result.targets}
    assert outcomes[trusted.name].outcome is Outcome.SUCCEEDED
    refused = outcomes[untrusted.name]
    assert (refused.outcome, refused.error_class) == (Outcome.FAILED, "configuration")
    assert "TLS certificate not trusted" in refused.error
    assert sum(r.deployment == untrusted.name for r in fleet.requests) == 0  # refused in the handshake
    assert outcomes[unverified.name].outcome is Outcome.SUCCEEDED
    document = json.loads((write_reports(result) / "report.json").read_text())
    assert document["summary"]["tls_not_verified"] == [unverified.name]
    assert [row["tls_verified"] for row in document["targets"]] == [True, True, False]
    markdown = (write_reports(result) / "report.md").read_text()
    assert f"**TLS not verified** (`verify_tls = false` in the inventory) for: {unverified.name}." in markdown
