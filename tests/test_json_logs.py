"""`--log-format json`: every line on stderr is a JSON object with `run_id`, and a line about a deployment has
`deployment` and `store` as fields; output flags belong to the invocation, never inherited by a retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main  # first: the package's modules import each other in this order
from tests.test_cli_run import FAST, Simulator, _simulator

FLEET = """count = 2
versions = { "11.3" = 1 }
job_duration = { dist = "fixed", value = 0.3 }
[[deployments]]
name = "broken"
faults = { job_failure = 1.0 }
[[deployments]]
name = "flaky"
faults = { http_5xx = 0.5 }
"""
QUICK = [*FAST, "--retry-max", "0.1", "--name-template", "b-{run_id}-{deployment}"]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Simulator]:
    """A deployment whose jobs always fail, one whose gateway answers 503 half the time, and two good ones."""
    fleet_file = tmp_path / "fleet-file.toml"
    fleet_file.write_text(FLEET)
    yield from _simulator(tmp_path, "--fleet", str(fleet_file))


def _records(err: str) -> list[dict[str, Any]]:
    """Every line of stderr, each parsed as JSON (a line that is not fails the test)."""
    return [json.loads(line) for line in err.splitlines()]


def _run_id(out: str) -> str:
    return out.split("run id: ")[1].split()[0]


def test_every_line_is_json_with_the_run_id_and_deployment_and_store_as_fields(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first line, each event and each retry: JSON with `run_id`; retries and finished targets name their
    deployment and store as fields (a retry of a request to a deployment: `store` null)."""
    args = ["run", "--inventory", str(fleet.inventory), "--report-dir", str(tmp_path / "r"), "--log-format", "json"]
    assert main([*args, *QUICK]) == 1
    out, err = capsys.readouterr()
    records = _records(err)
    run_id = _run_id(out)  # the summary on stdout stays text: stdout is not the log
    assert {r["run_id"] for r in records} == {run_id}
    assert records[0]["event"] == "run" and records[0]["targets"] == 4 and records[0]["kind"] == "run"
    finished = [r for r in records if r["event"] == "finished"]
    assert {(r["deployment"], r["store"]) for r in finished} == {
        ("gis-0000", "default"), ("gis-0001", "default"), ("broken", "default"), ("flaky", "default")
    }  # fmt: skip
    retries = [r for r in records if r["event"] == "retry"]
    assert retries and {r["deployment"] for r in retries} == {"flaky"}
    assert all(r["store"] is None and "delay_s" in r and r["error_class"] for r in retries)


def test_a_retry_of_a_quiet_run_logs_unless_it_says_quiet(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--quiet` and `--log-format` are the invocation's: a retry of a quiet run writes log lines, as JSON
    when it asks; a warning of a JSON run is a JSON line too; `--no-quiet` exists for every command."""
    args = ["run", "--inventory", str(fleet.inventory), "--report-dir", str(tmp_path / "r"), "--quiet", *QUICK]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert err == ""
    first = _run_id(out)
    assert main(["retry", first, "--log-format", "json"]) == 1
    out, err = capsys.readouterr()
    records = _records(err)
    retry_id = _run_id(out)
    assert {r["run_id"] for r in records} == {retry_id}
    assert records[0]["event"] == "run" and records[0]["kind"] == "retry" and records[0]["parent_run_id"] == first
    assert [(r["deployment"], r["outcome"]) for r in records if r["event"] == "finished"] == [("broken", "failed")]

    assert main(["retry", first, "--quiet", "--no-quiet"]) == 1  # text lines: the log format is not inherited
    err = capsys.readouterr().err
    assert err.startswith("run ") and " finished " in err

    (fleet.inventory.parent / "fleet.secrets" / "password").chmod(0o644)  # the inventory warns of it
    assert main(["retry", retry_id, "--log-format", "json"]) == 1
    records = _records(capsys.readouterr().err)
    assert any(r["event"] == "warning" and "readable by other users" in r["warning"] for r in records)


def test_the_ctrl_c_line_is_json_too(fleet: Simulator, tmp_path: Path) -> None:
    """Ctrl-C during a JSON run: the `stopping` line is a JSON line with the run's id, like every other."""
    args = ["run", "--inventory", str(fleet.inventory), "--report-dir", str(tmp_path / "r"), "--log-format", "json"]
    env = {**os.environ, "ORCHESTRATOR_FAILPOINT": "after_submitted:2:sigint"}
    process = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, *QUICK, "--grace", "0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert process.returncode == 3, process.stderr
    records = _records(process.stderr)
    assert len({r["run_id"] for r in records}) == 1
    stopping = [r for r in records if r["event"] == "stopping"]
    assert len(stopping) == 1 and stopping[0]["message"].startswith("stopping: nothing new is submitted")
