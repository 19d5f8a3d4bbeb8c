"""report.html and compliance.html in headless chromium: no error, no request off the page, the charts drawn
with report.json's counts, the table filtered and sorted, and a server's markup shown as text, run never."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.audit.report import write_compliance
from orchestrator.report import write_reports
from tests.browser.conftest import Opened
from tests.test_html_report import HOSTILE, audit_document, fleet_result

pytestmark = pytest.mark.browser
Open = Callable[[Path], Opened]


@pytest.fixture
def run_report(tmp_path: Path, open_report: Open) -> tuple[Opened, dict[str, Any]]:
    folder = write_reports(fleet_result(tmp_path))
    return open_report(folder / "report.html"), json.loads((folder / "report.json").read_text())


@pytest.fixture
def audit_report(tmp_path: Path, open_report: Open) -> tuple[Opened, dict[str, Any]]:
    folder = write_compliance(audit_document(), tmp_path)
    return open_report(folder / "compliance.html"), json.loads((folder / "compliance.json").read_text())


def marks(opened: Opened, chart: str) -> list[dict[str, Any]]:
    """Each bar of a chart as drawn: its data attributes and its rendered width and height."""
    found: list[dict[str, Any]] = opened.page.eval_on_selector_all(
        f'svg[data-chart="{chart}"] rect',
        "els => els.map(e => ({...e.dataset, w: e.getBBox().width, h: e.getBBox().height}))",
    )
    return found


def visible_rows(opened: Opened, column: int = 0) -> list[str]:
    found: list[str] = opened.page.eval_on_selector_all(
        "#targets tbody tr", f"rows => rows.filter(r => !r.hidden).map(r => r.cells[{column}].textContent)"
    )
    return found


def column_index(opened: Opened, name: str) -> int:
    index: int = opened.page.eval_on_selector_all(
        "#targets thead th", f"ths => ths.findIndex(th => th.dataset.column === {json.dumps(name)})"
    )
    return index


def test_the_run_report_opens_cleanly_and_asks_nothing_of_the_network(run_report: tuple[Opened, Any]) -> None:
    """No console error, no page error, no CSP violation; the only request is the file itself."""
    opened, _ = run_report
    opened.page.wait_for_load_state("networkidle")
    assert opened.problems == []
    assert opened.requests == [opened.url]
    assert opened.page.title().startswith("Run r-html")


def test_the_run_charts_are_drawn_with_report_json_counts(run_report: tuple[Opened, Any]) -> None:
    """Outcomes by tag, the durations of the succeeded targets and the timeline: every bar's count is
    report.json's, and every bar with a count is drawn with a size."""
    opened, document = run_report
    by_tag: dict[str, dict[str, int]] = {}
    for bar in marks(opened, "outcomes-by-tag"):
        by_tag.setdefault(bar["row"], {})[bar["series"]] = int(bar["count"])
        assert bar["w"] > 0
    assert by_tag == document["summary"]["by_tag"]
    durations = [r["duration_s"] for r in document["targets"] if r["outcome"] == "succeeded"]
    bins = marks(opened, "durations")
    assert sum(int(b["count"]) for b in bins) == len(durations) == document["summary"]["succeeded"]
    for bar in bins:
        assert int(bar["count"]) == len([d for d in durations if float(bar["start"]) <= d < float(bar["end"])])
        assert (bar["h"] > 0) == (int(bar["count"]) > 0)
    timeline: Counter[str] = Counter()
    for bar in marks(opened, "timeline"):
        timeline[bar["series"]] += int(bar["count"])
    assert timeline == Counter(r["outcome"] for r in document["targets"] if r["finished_at"])
    tiles = opened.page.eval_on_selector_all(
        ".tile[data-outcome]", "ts => ts.map(t => [t.dataset.outcome, +t.dataset.count])"
    )
    assert dict(tiles) == {o: document["summary"][o] for o, _ in tiles}
    assert opened.page.text_content("[data-verdict-line]") == (
        "8 of 13 backed up; 3 failed, 1 timed out, 1 skipped: gis-eu-3/default, gis-lab-3/default, gis-us-2/default"
        " and 2 more."
    )


def test_the_table_filters_by_text_and_by_outcome(run_report: tuple[Opened, Any]) -> None:
    """Typing a deployment's name keeps its rows only; the outcome select narrows further; clearing the text
    keeps every row of that outcome; the count says how many are shown."""
    opened, document = run_report
    page = opened.page
    every = [r["deployment"] for r in document["targets"]]
    assert visible_rows(opened) == every
    page.fill("#filter", "gis-us")
    assert visible_rows(opened) == [d for d in every if d.startswith("gis-us")]
    page.fill("#filter", "gis-us-3")
    assert visible_rows(opened) == ["gis-us-3"]
    page.fill("#filter", "gis-us")
    page.select_option("#filter-value", "failed")
    assert visible_rows(opened) == ["gis-us-2"]
    page.fill("#filter", "")
    assert visible_rows(opened) == [r["deployment"] for r in document["targets"] if r["outcome"] == "failed"]
    assert page.text_content("#shown") == f"3 of {len(every)} shown"
    page.select_option("#filter-value", "")
    assert visible_rows(opened) == every


def test_a_header_click_sorts_the_table_and_a_second_reverses_it(run_report: tuple[Opened, Any]) -> None:
    """duration_s sorts as numbers (empty cells last), deployment as text; aria-sort says which way."""
    opened, document = run_report
    page = opened.page
    duration = column_index(opened, "duration_s")
    header = f"#targets thead th:nth-child({duration + 1})"
    page.click(f"{header} button")
    timed = sorted((r["duration_s"], r["deployment"]) for r in document["targets"] if r["duration_s"] is not None)
    untimed = [r["deployment"] for r in document["targets"] if r["duration_s"] is None]
    assert visible_rows(opened) == [d for _, d in timed] + untimed
    assert page.get_attribute(header, "aria-sort") == "ascending"
    page.click(f"{header} button")
    assert visible_rows(opened) == [d for _, d in reversed(timed)] + untimed
    assert page.get_attribute(header, "aria-sort") == "descending"
    page.click("#targets thead th:nth-child(1) button")
    assert visible_rows(opened) == sorted(r["deployment"] for r in document["targets"])
    assert page.get_attribute(header, "aria-sort") == "none"
    page.fill("#filter", "gis-lab")  # a filter applies to the sorted table
    assert visible_rows(opened) == ["gis-lab-1", "gis-lab-2", "gis-lab-3", "gis-lab-4"]


def test_a_servers_markup_is_shown_as_text_and_runs_nothing(run_report: tuple[Opened, Any]) -> None:
    """The error `<script>window.pwned=1</script> <img src=x onerror=...>` reads as those characters in the table
    and in the failures; no script ran (window.pwned undefined), no img exists, and nothing was requested."""
    opened, _ = run_report
    page = opened.page
    page.fill("#filter", "gis-us-2")
    error = column_index(opened, "error")
    assert visible_rows(opened, error) == [HOSTILE]
    assert HOSTILE in (page.text_content("#failures") or "")
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.eval_on_selector_all("img", "els => els.length") == 0
    assert page.eval_on_selector_all("script", "els => els.length") == 2
    assert opened.requests == [opened.url] and opened.problems == []


def test_a_snapshot_report_shows_its_readiness_table(tmp_path: Path, open_report: Open) -> None:
    """kind snapshot: the readiness line and one row per deployment, ready or with its reason."""
    folder = write_reports(fleet_result(tmp_path, kind="snapshot"))
    opened = open_report(folder / "report.html")
    document = json.loads((folder / "report.json").read_text())
    ready = opened.page.eval_on_selector_all("#readiness tbody tr", "rows => rows.map(r => r.dataset.ready)")
    assert ready == ["yes" if a["ready"] else "no" for a in document["readiness"]["deployments"]]
    assert (
        opened.page.text_content("[data-readiness-line]") == "8 of 13 deployments ready for the upgrade; 5 not ready."
    )
    assert opened.problems == [] and opened.requests == [opened.url]


def test_the_compliance_report_draws_ages_verdicts_and_days_from_compliance_json(
    audit_report: tuple[Opened, Any],
) -> None:
    """Each target's age against its own limit (the prod rule's 12 h, else 24 h), verdicts by tag and days
    covered, as compliance.json counts them; the verdict select filters; no error, no request, no script run."""
    opened, document = audit_report
    page = opened.page
    assert opened.problems == [] and opened.requests == [opened.url]
    assert page.text_content("[data-verdict-line]") == "2 of 7 targets compliant; 4 in violation, 1 unknown."
    ages = {(b["deployment"], b["maxAgeHours"], b["ageHours"]) for b in marks(opened, "age")}
    expected = {
        (
            r["deployment"],
            "12" if "prod" in r["tags"] else "24",
            "" if r["age_hours"] is None else f"{r['age_hours']:g}",
        )
        for r in document["targets"]
        if r["verdict"] != "unknown"
    }
    assert ages == expected
    by_tag: dict[str, dict[str, int]] = {}
    for bar in marks(opened, "verdicts-by-tag"):
        by_tag.setdefault(bar["row"], {})[bar["series"]] = int(bar["count"])
    assert by_tag == {t: {v: n for v, n in c.items() if n} for t, c in document["summary"]["by_tag"].items()}
    days = {b["days"]: int(b["count"]) for b in marks(opened, "days-covered") if b["count"] != "0"}
    assert days == Counter(str(r["days_covered"]) for r in document["targets"] if r["days_covered"] is not None)
    page.select_option("#filter-value", "violation")
    assert visible_rows(opened) == [r["deployment"] for r in document["targets"] if r["verdict"] == "violation"]
    page.select_option("#filter-value", "unknown")
    assert visible_rows(opened) == ["gis-us-2"]
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert HOSTILE in (page.text_content("#unknown") or "")
