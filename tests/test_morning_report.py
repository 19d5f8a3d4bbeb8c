"""The reports a manager reads in the morning: a one-line verdict naming what failed, no rows of zeros, a table
narrow enough to read, tags in the CSV and JSON, targets failing night after night named so, `latest.json`
and an index of runs beside the run folders, and `latest` or a start of a run id wherever one is asked for."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ErrorClass, InputError, TargetError
from orchestrator.ledger import Ledger
from orchestrator.model import Outcome, RunResult, TargetState
from orchestrator.report import MD_ERROR_CHARS, run_verdict, summarize, write_reports
from orchestrator.settings import RunSettings
from tests.conftest import make_deployment
from tests.test_files import mode_of

START = 1_795_741_200.0


def _fleet(failing: int = 2, total: int = 6) -> list[TargetState]:
    targets = []
    for index in range(total):
        deployment = replace(make_deployment(f"gis-{index}"), tags=("prod", "eu"))
        target = TargetState(index, deployment, "default", f"b-gis-{index}", None, job_id=f"j{index}")
        target.submitted_at = START + index
        if index < failing:
            target.fail(TargetError(ErrorClass.JOB_FAILED, "disk full on the backup volume " * 10), START + 60)
        else:
            target.finish(Outcome.SUCCEEDED, START + 30 + index)
        targets.append(target)
    return targets


def _write(report_dir: Path, run_id: str, started: float = START, changes: dict[str, Any] | None = None) -> Path:
    result = RunResult(run_id, started, started + 100, _fleet(), RunSettings(report_dir=report_dir), "inv.toml")
    result.changes = changes or {}
    return write_reports(result)


def test_the_verdict_names_the_first_failures_and_counts_the_rest() -> None:
    """ "4 of 6 backed up; 2 failed: gis-0/default, gis-1/default." — and past VERDICT_NAMES, "and N more"."""
    assert run_verdict(summarize(_fleet())) == "4 of 6 backed up; 2 failed: gis-0/default, gis-1/default."
    assert run_verdict(summarize(_fleet(failing=5))).endswith("gis-2/default and 2 more.")
    assert run_verdict(summarize(_fleet(failing=0))) == "6 of 6 backed up."


def test_report_md_opens_with_the_verdict_hides_zero_rows_and_keeps_its_lines_readable(tmp_path: Path) -> None:
    """The verdict first; the summary lists only outcomes that happened; the table of every target keeps
    six columns (a long error cut), says where the rest are, and no line is as wide as the old 363 chars."""
    markdown = (_write(tmp_path, "r1") / "report.md").read_text()
    lines = markdown.splitlines()
    assert lines[2] == "**4 of 6 backed up; 2 failed: gis-0/default, gis-1/default.**"
    summary = markdown.split("## Summary")[1].split("##")[0]
    assert "| succeeded |" in summary and "| failed " in summary
    assert "timed_out" not in summary and "skipped" not in summary and "not_started" not in summary
    table = markdown.split("## All targets")[1]
    assert "disk full on the backup volume" in table and "disk full on the backup volume " * 10 not in table
    assert "report.csv and report.json" in table
    assert max(len(line) for line in table.splitlines() if line.startswith("|")) <= MD_ERROR_CHARS + 80


def test_tags_are_a_list_in_the_json_and_joined_in_the_csv(tmp_path: Path) -> None:
    """The deployment's tags in every row: a JSON list, `;`-joined in the CSV (as the audit's report does)."""
    folder = _write(tmp_path, "r1")
    assert json.loads((folder / "report.json").read_text())["targets"][0]["tags"] == ["prod", "eu"]
    (first, *_) = csv.DictReader(io.StringIO((folder / "report.csv").read_text()))
    assert first["tags"] == "prod;eu"


def test_targets_failing_run_after_run_are_named_so_not_hidden_behind_no_change(tmp_path: Path) -> None:
    """The demo's second night: the same two failed both nights. Not "No target changed" but "Still failing",
    for how many runs in a row and since when, in report.md and report.html alike."""
    still = [
        {
            "target": f"gis-{i}/default",
            "outcome": "failed",
            "error": "disk full",
            "runs": 2,
            "since": "2026-11-30T02:00:00Z",
        }
        for i in range(2)
    ]
    changes = {"previous_run_id": "r1", "newly_failing": [], "recovered": [], "slower": [], "still_failing": still}
    folder = _write(tmp_path, "r2", changes=changes)
    markdown = (folder / "report.md").read_text()
    assert "No target changed" not in markdown
    assert "- gis-0/default: failing 2 runs in a row (since 2026-11-30T02:00:00Z): disk full" in markdown
    html = (folder / "report.html").read_text()
    assert "Still failing (2)" in html and "no target changed" not in html


def test_latest_json_and_the_index_name_the_runs_newest_first_and_are_owner_only(tmp_path: Path) -> None:
    """Each report written adds its run to index.json / index.md; latest.json names the run started last,
    so rewriting an older run's report does not move it. Plain files, 0600."""
    _write(tmp_path, "r2", started=START + 86_400)
    _write(tmp_path, "r1", started=START)  # an older run's report, written again
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest == {"run_id": "r2", "folder": "r2", "finished_at": "2026-11-28T01:01:40Z", "kind": "run"}
    runs = json.loads((tmp_path / "index.json").read_text())["runs"]
    assert [r["run_id"] for r in runs] == ["r2", "r1"]
    assert runs[0]["verdict"].startswith("4 of 6 backed up") and runs[0]["counts"]["failed"] == 2
    assert "[r2](r2/report.md)" in (tmp_path / "index.md").read_text()
    for name in ("latest.json", "index.json", "index.md"):
        assert not (tmp_path / name).is_symlink() and mode_of(tmp_path / name) == 0o600
    (tmp_path / "index.json").write_text("{not json")  # a broken index is started again
    _write(tmp_path, "r3", started=START + 2 * 86_400)
    assert [r["run_id"] for r in json.loads((tmp_path / "index.json").read_text())["runs"]] == ["r3"]


def test_a_run_id_may_be_latest_or_an_unambiguous_start_of_one(tmp_path: Path) -> None:
    """`latest` is the run started last; a prefix naming one run is that run; one naming several, or none,
    is refused with the candidates."""
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    try:
        with pytest.raises(InputError, match="no run yet"):
            ledger.resolve("latest")
        for run_id, started in (("20261130-0200-aaaa", 1.0), ("20261201-0200-bbbb", 3.0), ("20261201-0200-bccc", 2.0)):
            ledger.begin_run(
                run_id=run_id, kind="run", parent_run_id="", inventory="/inv.toml", settings={},
                started_at=started, targets=[],
            )  # fmt: skip
        assert ledger.resolve("latest") == "20261201-0200-bbbb"
        assert ledger.resolve("20261130") == "20261130-0200-aaaa"
        assert ledger.resolve("20261201-0200-bc") == "20261201-0200-bccc"
        assert ledger.resolve("20261201-0200-bbbb") == "20261201-0200-bbbb"
        with pytest.raises(InputError, match=r"names several runs \(20261201-0200-bbbb, 20261201-0200-bccc\)"):
            ledger.resolve("20261201")
        with pytest.raises(InputError, match="no run '2025'"):
            ledger.resolve("2025")
        with pytest.raises(InputError, match="empty run id"):
            ledger.resolve("")
    finally:
        ledger.close()


def test_report_latest_rewrites_the_real_runs_folder(tmp_path: Path) -> None:
    """`orchestrator report latest` (or a prefix) writes into the run's own folder, and adds no index entry."""
    from orchestrator import usecases
    from orchestrator.ledger import Ledger

    ledger_path = tmp_path / "ledger.sqlite3"
    ledger = Ledger.open(ledger_path)
    targets = _fleet()
    ledger.begin_run(run_id="20261201T020000Z-abc123", kind="run", parent_run_id="", inventory="inv",
                     settings={"report_dir": str(tmp_path)}, started_at=1.0, targets=targets)  # fmt: skip
    ledger.end_run("20261201T020000Z-abc123", 2.0, "", targets)
    ledger.close()
    for wanted in ("latest", "20261201T02"):
        folder = usecases.rewrite_report(wanted, {"ledger": ledger_path, "report_dir": tmp_path})
        assert folder == tmp_path / "20261201T020000Z-abc123"
    assert not (tmp_path / "latest").exists() and not (tmp_path / "20261201T02").exists()
