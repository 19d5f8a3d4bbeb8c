"""HTTPS with a private CA: clients verify the simulator's certificate, and fail without the CA."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import aiohttp
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator import SimulatedFleet, serve_fleet
from orchestrator.simulator.tls import ensure_tls_files
from tests.conftest import PASSWORD, config_of

pytestmark = pytest.mark.anyio


async def test_https_with_verification_against_the_generated_ca(tmp_path: Path) -> None:
    """The CA lands in the folder (key private); a verifying client succeeds, a default one is refused."""
    tls = ensure_tls_files(tmp_path / "tls")
    assert tls.ca_cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert os.stat(tls.server_key).st_mode & 0o077 == 0
    fleet = SimulatedFleet(config_of(count=1), clock=ManualClock(), password=PASSWORD)
    async with serve_fleet(fleet, ssl_context=tls.server_context()) as sim:
        assert sim.base_url.startswith("https://127.0.0.1:")
        url = sim.url_of("gis-0000") + "/sharing/rest/generateToken"
        form = {"username": "admin", "password": PASSWORD, "f": "json"}
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_context())) as verified,
            verified.post(url, data=form) as response,
        ):
            assert "token" in await response.json()
        async with aiohttp.ClientSession() as default_trust:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await default_trust.post(url, data=form)
        localhost = sim.base_url.replace("127.0.0.1", "localhost")
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_context())) as by_name,
            by_name.post(localhost + "/gis-0000/sharing/rest/generateToken", data=form) as response,
        ):
            assert "token" in await response.json()


def test_the_ca_is_reused_across_restarts(tmp_path: Path) -> None:
    """A second start keeps the CA, so a client's trust settings stay valid; the new leaf chains to it."""
    first = ensure_tls_files(tmp_path)
    ca_before = first.ca_cert.read_bytes()
    second = ensure_tls_files(tmp_path)
    assert second.ca_cert.read_bytes() == ca_before
    context = ssl.create_default_context(cafile=str(second.ca_cert))
    assert context.cert_store_stats()["x509_ca"] == 1
    second.server_context()  # the new certificate and key load together
