"""`orchestrator simulate` serves a fleet until interrupted, writes a usable inventory, refuses bad input."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.anyio


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("press Ctrl-C"):
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"simulator ended early: {lines} {process.stderr.read() if process.stderr else ''}")
        lines.append(line.strip())
    return process, lines


async def test_simulate_serves_https_and_writes_an_inventory(tmp_path: Path) -> None:
    """The inventory points at the fleet, its secret files sign in, the CA verifies; Ctrl-C stops it cleanly."""
    inventory = tmp_path / "fleet.toml"
    process, lines = _start(
        "--deployments",
        "3",
        "--seed",
        "5",
        "--tls-dir",
        str(tmp_path / "tls"),
        "--write-inventory",
        str(inventory),
    )
    try:
        assert lines[0].startswith("simulated fleet of 3 deployments listening on https://127.0.0.1:")
        parsed = tomllib.loads(inventory.read_text())
        assert [d["name"] for d in parsed["deployments"]] == ["gis-0000", "gis-0001", "gis-0002"]
        defaults = parsed["defaults"]
        assert set(defaults) == {"username", "password_file", "passcode_file", "retention_days", "ca_bundle"}
        secrets_dir = tmp_path / "fleet.secrets"
        password = (secrets_dir / "password").read_text().strip()
        assert password not in inventory.read_text()
        assert (secrets_dir / "passcode").stat().st_mode & 0o077 == 0
        assert len((secrets_dir / "passcode").read_text().strip()) >= 8
        ca = (tmp_path / defaults["ca_bundle"]).resolve()
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(ca)))
        async with aiohttp.ClientSession(connector=connector) as session:
            url = parsed["deployments"][1]["url"] + "/sharing/rest/generateToken"
            form = {"username": defaults["username"], "password": password, "f": "json"}
            async with session.post(url, data=form) as response:
                assert "token" in await response.json()
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "simulator stopped" in stdout
    assert password not in stdout + stderr + " ".join(lines)


async def test_simulate_takes_the_password_from_an_environment_variable() -> None:
    """--password-env names a variable; the secret itself is never a command-line argument."""
    process, lines = _start("--deployments", "1", "--password-env", "SIM_PW", env={"SIM_PW": "from-the-environment"})
    try:
        base = lines[0].rsplit(" ", 1)[1]
        async with aiohttp.ClientSession() as session:
            form = {"username": "admin", "password": "from-the-environment", "f": "json"}
            async with session.post(f"{base}/gis-0000/sharing/rest/generateToken", data=form) as response:
                assert "token" in await response.json()
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0


async def test_common_flags_shape_the_fleet(tmp_path: Path) -> None:
    """--versions, --stores and --token-lifetime override the fleet file, merging into its [faults]."""
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text("count = 9\n[faults]\nhttp_429 = 0.0\njob_failure = 0.5\n")
    process, lines = _start(
        "--fleet", str(fleet_file), "--deployments", "4", "--versions", "12.0=1", "--stores", "a,b",
        "--token-lifetime", "5",
    )  # fmt: skip
    try:
        base = lines[0].rsplit(" ", 1)[1]
        async with aiohttp.ClientSession() as session, session.get(f"{base}/_simulator/fleet") as response:
            fleet = (await response.json())["items"]
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert len(fleet) == 4
    assert {(d["version"], tuple(d["stores"]), d["token_lifetime_s"]) for d in fleet} == {("12.0", ("a", "b"), 5.0)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "wild"], "invalid choice"),
        (["--host", "0.0.0.0"], "only listens on loopback"),
        (["--password-env", "SURELY_UNSET_VARIABLE_XYZ"], "SURELY_UNSET_VARIABLE_XYZ"),
        (["--fleet", "/nonexistent/fleet.toml"], "cannot read the fleet file"),
        (["--deployments", "-1"], "count"),
        (["--versions", "11.3=lots"], "not VERSION=WEIGHT"),
        (["--versions", "9.9=1"], "unknown version '9.9'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["simulate", *args])
    except SystemExit as exit_:  # argparse's own refusals
        code = int(exit_.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
