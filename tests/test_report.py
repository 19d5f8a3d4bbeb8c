"""The report files: one table of columns makes the JSON rows, the CSV header and the Markdown table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.audit.policy import Policy
from orchestrator.audit.report import compliance_document, write_compliance
from orchestrator.errors import InputError
from orchestrator.files import UnsafePath
from orchestrator.model import Outcome, RunResult, TargetState
from orchestrator.report import COLUMNS, MD_COLUMNS, check_report_dir, write_reports
from orchestrator.settings import RunSettings
from tests.conftest import make_deployment
from tests.test_files import UMASKS, mode_of, umask_of


def test_every_format_has_the_same_columns_in_the_same_order(tmp_path: Path) -> None:
    """A column added to the report's table appears in the JSON rows and the CSV alike; the Markdown table
    keeps the narrow columns a person reads (`MD_COLUMNS`) and says the rest are in the JSON and CSV."""
    target = TargetState(0, make_deployment("gis-1"), "default", "b-gis-1", 1_797_000_000_000, job_id="j1")
    target.submitted_at = 1_795_741_200.0
    target.finish(Outcome.SUCCEEDED, 1_795_741_260.0)
    settings = RunSettings(report_dir=tmp_path)
    folder = write_reports(RunResult("r1", 1_795_741_200.0, 1_795_741_300.0, [target], settings, "inv.toml"))
    (row,) = json.loads((folder / "report.json").read_text())["targets"]
    assert tuple(row) == COLUMNS
    assert row["duration_s"] == 60.0 and row["retention_date"] == "2026-12-11T14:40:00Z" and row["job_id"] == "j1"
    header = next(csv.reader(io.StringIO((folder / "report.csv").read_text())))
    assert tuple(header) == COLUMNS
    table_header = next(
        line for line in (folder / "report.md").read_text().splitlines() if line.startswith("| deployment")
    )
    assert [cell.strip() for cell in table_header.strip("|").split("|")] == list(MD_COLUMNS)
    assert "The other columns (url, backup_name, job_id," in (folder / "report.md").read_text()


def _result(report_dir: Path, run_id: str = "r1") -> RunResult:
    target = TargetState(0, make_deployment("gis-1"), "default", "b-gis-1", 1_797_000_000_000, job_id="j1")
    target.finish(Outcome.SUCCEEDED, 1_795_741_260.0)
    return RunResult(run_id, 1_795_741_200.0, 1_795_741_300.0, [target], RunSettings(report_dir=report_dir), "i.toml")


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_the_report_folder_is_0700_and_its_files_0600(tmp_path: Path, mask: int) -> None:
    """Reports name every deployment and its failures: only their owner reads them, whatever the umask."""
    with umask_of(mask):
        check_report_dir(tmp_path / "reports")
        folder = write_reports(_result(tmp_path / "reports"))
        compliance = write_compliance(_compliance(), tmp_path / "reports")
    assert mode_of(tmp_path / "reports") == mode_of(folder) == mode_of(compliance) == 0o700
    written = [*folder.iterdir(), *compliance.iterdir()]
    assert sorted(p.name for p in written) == [
        "compliance.csv", "compliance.html", "compliance.json", "compliance.junit.xml", "compliance.md",
        "report.csv", "report.html", "report.json", "report.junit.xml", "report.md",
    ]  # fmt: skip
    assert {mode_of(path) for path in written} == {0o600}


def test_a_link_planted_at_the_run_folder_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """reports/RUN_ID made a link in advance (to a folder holding a victim's report.json) is refused: the
    victim's file is unchanged and nothing is added beside it."""
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "report.json").write_text("precious\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r1").symlink_to(victim_dir)
    (tmp_path / "reports" / "audit-a1").symlink_to(victim_dir)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        write_reports(_result(tmp_path / "reports"))
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        write_compliance(_compliance(), tmp_path / "reports")
    assert (victim_dir / "report.json").read_text() == "precious\n"
    assert [p.name for p in victim_dir.iterdir()] == ["report.json"]


@pytest.mark.parametrize("name", ["report.json", "report.csv", "report.md"])
def test_a_link_planted_at_a_report_file_is_refused_and_its_target_unchanged(tmp_path: Path, name: str) -> None:
    """reports/RUN_ID/report.json (or .csv, .md) made a link in advance: refused, never followed, never
    truncated; the file it points at is unchanged."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "reports" / "r1").mkdir(parents=True)
    (tmp_path / "reports" / "r1" / name).symlink_to(victim)
    with pytest.raises(UnsafePath) as refused:
        write_reports(_result(tmp_path / "reports"))
    assert str(refused.value).startswith(f"{tmp_path / 'reports' / 'r1' / name}: is a symbolic link")
    assert victim.read_text() == "precious\n"


def test_a_report_dir_that_is_not_a_folder_is_refused_before_the_run(tmp_path: Path) -> None:
    """check_report_dir: a report_dir that is a file (or a link to one) is an input error naming it and the fix."""
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    for report_dir in (tmp_path / "file", tmp_path / "link"):
        with pytest.raises(InputError) as refused:
            check_report_dir(report_dir)
        assert refused.value.problems == [
            f"report_dir {report_dir}: cannot write there (it is not a folder); choose another with --report-dir"
        ]


def _compliance() -> dict[str, Any]:
    return compliance_document(
        [],
        audit_id="a1",
        audited_at=1_795_741_200.0,
        finished_at=1_795_741_300.0,
        inventory="i.toml",
        policy=Policy().describe(),
    )


def test_server_text_in_the_reports_runs_nothing_and_breaks_no_table(tmp_path: Path) -> None:
    """A server error holding an escape sequence, `<script>`, a formula and a pipe, and a tag with a pipe:
    the Markdown shows them as text in one table row, the CSV as text a spreadsheet will not run."""
    from dataclasses import replace

    from orchestrator.errors import ErrorClass, TargetError

    deployment = replace(make_deployment("gis-1"), tags=("a|b",))
    target = TargetState(0, deployment, "default", "b-gis-1", None, job_id="j1")
    hostile = '=HYPERLINK("http://x")\x1b[2J <script>alert(1)</script> | <img src=x onerror=alert(1)>'
    target.fail(TargetError(ErrorClass.PERMANENT, hostile), 1_795_741_260.0)
    folder = write_reports(
        RunResult("r1", 1_795_741_200.0, 1_795_741_300.0, [target], RunSettings(report_dir=tmp_path), "i")
    )
    markdown = (folder / "report.md").read_text()
    assert "<script>" not in markdown and "<img" not in markdown and "\x1b" not in markdown
    assert "&lt;script&gt;" in markdown and "a\\|b" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| gis-1"))
    assert row.count(" | ") == len(MD_COLUMNS) - 1  # every column one cell: the escaped pipe split nothing
    (cells,) = list(csv.DictReader(io.StringIO((folder / "report.csv").read_text())))
    assert cells["error"].startswith("'=HYPERLINK") and "\x1b" not in cells["error"]
