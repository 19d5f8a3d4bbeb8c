"""The report files: one table of columns makes the JSON rows, the CSV header and the Markdown table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from orchestrator.model import Outcome, RunResult, TargetState
from orchestrator.report import COLUMNS, write_reports
from orchestrator.settings import RunSettings
from tests.conftest import make_deployment


def test_every_format_has_the_same_columns_in_the_same_order(tmp_path: Path) -> None:
    """A column added to the report's table appears in the JSON rows, the CSV and the Markdown table alike
    (the Markdown leaves the URL out: it is long and in the JSON and CSV)."""
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
    assert [cell.strip() for cell in table_header.strip("|").split("|")] == [c for c in COLUMNS if c != "url"]
