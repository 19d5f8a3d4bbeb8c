"""The command line of the audit: exit 1 while a target has no good backup, 0 once a run made one, 2 for a bad
policy (nothing sent)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.test_cli_run import FAST, Simulator, _simulator


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """Two simulated deployments in another process, with no backup yet."""
    yield from _simulator(tmp_path, "--deployments", "2", "--versions", "11.3=1,12.0=1", "--job-seconds", "0.3")


def test_audit_exit_codes_follow_the_fleet(
    simulator: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No backup: every target in violation, exit 1; after a run, every target compliant, exit 0."""
    audit = ["audit", "--inventory", str(simulator.inventory), "--report-dir", str(tmp_path / "r")]
    assert main(audit) == 1
    out, err = capsys.readouterr()
    assert "0 of 2 targets compliant; 2 in violation." in out and "violations by control: recent 2, depth 2" in out
    assert "audit: 2 targets on 2 deployments; policy: built-in defaults" in err
    report = out.split("report: ")[1].split()[0]
    assert Path(report).name == "compliance.html" and Path(report).is_file()
    assert main(["run", "--inventory", str(simulator.inventory), "--report-dir", str(tmp_path / "r"), *FAST]) == 0
    capsys.readouterr()
    assert main([*audit, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "2 of 2 targets compliant." in out and err == ""


def test_a_bad_policy_exits_2_and_sends_nothing(
    simulator: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nmin_backup = 2\n")
    before = simulator.stats()["requests"]
    code = main(
        ["audit", "--inventory", str(simulator.inventory), "--policy", str(policy), "--report-dir", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{policy}:2: [policy]: unknown key 'min_backup'; did you mean 'min_backups'?" in err
    assert simulator.stats()["requests"] == before


@pytest.fixture
def hanging_simulator(tmp_path: Path) -> Iterator[Simulator]:
    """Two simulated deployments that never answer."""
    fleet = tmp_path / "hang.toml"
    fleet.write_text("count = 2\n[faults]\nhang = 1.0\nhang_s = 60\n")
    yield from _simulator(tmp_path, "--fleet", str(fleet))


def test_ctrl_c_ends_the_audit_with_exit_3_and_a_report_of_every_target(
    hanging_simulator: Simulator, tmp_path: Path
) -> None:
    """Interrupted while the deployments do not answer: exit 3, and every target is in the report, unknown."""
    command = [sys.executable, "-m", "orchestrator", "audit", "--inventory", str(hanging_simulator.inventory),
               "--report-dir", str(tmp_path / "r")]  # fmt: skip
    audit = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert audit.stderr is not None
    assert audit.stderr.readline().startswith("audit: 2 targets on 2 deployments")
    while hanging_simulator.stats()["peak_requests_in_flight"] < 2:  # both deployments asked, neither answering
        time.sleep(0.05)
    audit.send_signal(signal.SIGINT)
    out, err = audit.communicate(timeout=30)
    assert audit.returncode == 3, err
    assert "stopping the audit" in err and "the audit was interrupted" in out
    (report,) = (tmp_path / "r").glob("audit-*/compliance.json")
    document = json.loads(report.read_text())
    assert [t["error_class"] for t in document["targets"]] == ["interrupted", "interrupted"]
    assert document["summary"]["unknown"] == 2
