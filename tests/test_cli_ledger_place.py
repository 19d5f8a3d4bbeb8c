"""Where the run ledger lives: beside the reports by default (one durable volume, one lock per report folder),
elsewhere with --ledger, nowhere with --no-ledger; a ledger at the former default place is pointed out."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.test_cli_run import FAST, Simulator, simulator  # noqa: F401  (the fixture)


@pytest.fixture
def no_ledger_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ORCHESTRATOR_LEDGER (the suite sets one for every test), and a state directory of the test's own."""
    monkeypatch.delenv("ORCHESTRATOR_LEDGER", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "arcgis-fleet-backup" / "ledger.sqlite3"


def test_the_ledger_is_beside_the_reports_and_found_there(
    simulator: Simulator,  # noqa: F811
    no_ledger_setting: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run records in REPORT_DIR/ledger.sqlite3; `runs` and `retry` find it from --report-dir alone."""
    reports = tmp_path / "nightly"
    assert main(["run", "--inventory", str(simulator.inventory), "--report-dir", str(reports), "--quiet", *FAST]) == 0
    run_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    assert (reports / "ledger.sqlite3").is_file() and not no_ledger_setting.exists()
    assert main(["runs", "--report-dir", str(reports)]) == 0
    assert run_id in capsys.readouterr().out
    assert main(["retry", run_id, "--report-dir", str(reports)]) == 0
    assert "nothing to retry" in capsys.readouterr().out
    assert main(["retry", run_id, "--report-dir", str(tmp_path / "elsewhere")]) == 2
    assert f"no ledger at {tmp_path / 'elsewhere' / 'ledger.sqlite3'}" in capsys.readouterr().err


def test_no_ledger_keeps_nothing(
    simulator: Simulator,  # noqa: F811
    no_ledger_setting: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--no-ledger: the run works the same, and no ledger is left anywhere."""
    reports = tmp_path / "r"
    args = ["run", "--inventory", str(simulator.inventory), "--report-dir", str(reports), "--no-ledger", *FAST]
    assert main(args) == 0
    assert not (reports / "ledger.sqlite3").exists() and not no_ledger_setting.exists()
    assert len(list(reports.glob("*/report.json"))) == 1
    assert main(["runs", "--report-dir", str(reports)]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_a_ledger_at_the_former_default_place_is_pointed_out(
    simulator: Simulator,  # noqa: F811
    no_ledger_setting: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not silently abandoned: where it is, where runs now go, and how to keep using it or move it."""
    no_ledger_setting.parent.mkdir(parents=True)
    no_ledger_setting.write_bytes(b"")
    reports = tmp_path / "r"
    assert main(["plan", "--inventory", str(simulator.inventory), "--report-dir", str(reports)]) == 0
    err = capsys.readouterr().err
    assert f"a ledger of earlier versions is at {no_ledger_setting}" in err
    assert f"--ledger {no_ledger_setting}" in err and str(reports / "ledger.sqlite3") in err
    assert "before the next run" in err
    # After a run has made the new one, every later command still says where the old history is.
    # Two runs may start within one second here: {run_id} keeps their backup names apart.
    run = ["run", "--inventory", str(simulator.inventory), "--report-dir", str(reports), "--quiet", *FAST,
           "--name-template", "backup-{run_id}-{deployment}"]  # fmt: skip
    assert main(run) == 0
    assert f"a ledger of earlier versions is at {no_ledger_setting}" in capsys.readouterr().err
    assert main(["runs", "--report-dir", str(reports)]) == 0
    assert "its runs are still there" in capsys.readouterr().err
    assert main(run) == 0
    assert "its runs are still there" in capsys.readouterr().err
