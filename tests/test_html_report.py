"""report.html and compliance.html without a browser: self-contained, server text escaped, the sections each
kind of report has, and charts whose counts are the document's."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.audit.controls import AuditTarget, judge, store_facts, unknown
from orchestrator.audit.controls import audited as audited_target
from orchestrator.audit.policy import Policy, PolicyRule, PolicyValues
from orchestrator.audit.report import compliance_document, write_compliance
from orchestrator.audit.report import page as compliance_html
from orchestrator.dr import Backup
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.html_report import histogram, max_age_of, nice_step, run_html
from orchestrator.inventory import selection_rules
from orchestrator.model import Outcome, RunResult, TargetState
from orchestrator.report import report_document, write_reports
from orchestrator.settings import RunSettings
from tests.conftest import make_deployment
from tests.test_files import mode_of

START = 1_795_741_200.0  # 2026-11-27T01:00:00Z
HOUR = 3600.0
HOSTILE = '<script>window.pwned=1</script> <img src=x onerror="window.pwned=1"> & done'
# (deployment, tags, outcome, seconds after the start it was submitted, how long it took, error)
FLEET: list[tuple[str, tuple[str, ...], Outcome, float, float, TargetError | None]] = [
    ("gis-eu-1", ("prod", "eu"), Outcome.SUCCEEDED, 0, 41.3, None),
    ("gis-eu-2", ("prod", "eu"), Outcome.SUCCEEDED, 0, 52.7, None),
    (
        "gis-eu-3",
        ("prod", "eu"),
        Outcome.FAILED,
        1,
        30.2,
        TargetError(ErrorClass.JOB_FAILED, "Backup failed during stage 'Stage system configuration'."),
    ),
    ("gis-eu-4", ("prod", "eu"), Outcome.SUCCEEDED, 2, 63.1, None),
    ("gis-us-1", ("prod", "us"), Outcome.SUCCEEDED, 2, 12.4, None),
    ("gis-us-2", ("prod", "us"), Outcome.FAILED, 3, 5.6, TargetError(ErrorClass.PERMANENT, HOSTILE)),
    ("gis-us-3", ("prod", "us"), Outcome.SUCCEEDED, 3, 77.9, None),
    (
        "gis-us-4",
        ("prod", "us"),
        Outcome.TIMED_OUT,
        4,
        120.5,
        TargetError(ErrorClass.JOB_TIMED_OUT, "job still running after 120 s"),
    ),
    ("gis-us-5", ("prod", "us"), Outcome.SUCCEEDED, 5, 33.3, None),
    ("gis-lab-1", ("lab",), Outcome.SUCCEEDED, 6, 18.8, None),
    ("gis-lab-2", ("lab",), Outcome.SUCCEEDED, 7, 24.1, None),
    (
        "gis-lab-3",
        ("lab",),
        Outcome.FAILED,
        8,
        9.9,
        TargetError(ErrorClass.JOB_FAILED, "Backup failed during stage 'Stage system configuration'."),
    ),
    ("gis-lab-4", ("lab",), Outcome.SKIPPED, 0, 0, None),
]


def fleet_result(report_dir: Path, kind: str = "run") -> RunResult:
    """A demo-like run: mostly successes of varied durations, two job failures, one hostile server error, one
    timeout and one skipped target (a snapshot: each success verified, at version 11.3.0)."""
    targets = []
    for index, (name, tags, outcome, submitted, took, error) in enumerate(FLEET):
        deployment = replace(make_deployment(name), tags=tags)
        target = TargetState(index, deployment, "default", f"backup-{name}", 1_797_000_000_000, job_id=f"j{index}")
        target.version = "11.3.0" if kind == "snapshot" else ""
        if outcome is Outcome.SKIPPED:
            target.finish(outcome, START + 130)
        else:
            target.submitted_at = START + submitted
            target.attempts, target.polls = 1, 3 + index
            if error is not None:
                target.fail(error, START + submitted + took)
            else:
                target.verified = kind == "snapshot"
                target.finish(outcome, START + submitted + took)
        targets.append(target)
    settings = RunSettings(report_dir=report_dir)
    return RunResult("r-html", START, START + 131, targets, settings, "fleet.toml", kind=kind)


def run_document(kind: str = "run") -> dict[str, Any]:
    return report_document(fleet_result(Path("unused"), kind))


AUDIT_POLICY = Policy(
    PolicyValues(max_age_hours=24, min_backups=2, window_days=7),
    (PolicyRule(("tag=prod",), {"max_age_hours": 12.0}, tuple(selection_rules(["tag=prod"]))),),
    "policy.toml [policy]",
)


def _backups(name: str, ages_h: Sequence[float], release: str = "11.3.0") -> list[Backup]:
    now = START
    return [
        Backup(f"{name}-{i}", "completed", release, now - age * HOUR - 60, now - age * HOUR, now + 30 * 86_400)
        for i, age in enumerate(ages_h)
    ]


def audit_targets() -> list[AuditTarget]:
    """Compliant, stale (against the default 24 h and the prod rule's 12 h), a backup from before an upgrade,
    never backed up, and one that could not be read, with a hostile error."""
    specs = [
        ("gis-eu-1", ("prod",), [2, 26, 50, 74]),  # compliant under the prod rule's 12 h
        ("gis-eu-2", ("prod",), [16, 40]),  # 16 h: over the prod rule's 12 h, within the default 24 h
        ("gis-lab-1", ("lab",), [16, 40, 64, 88, 112, 136, 160]),  # 16 h: within the default 24 h
        ("gis-lab-2", ("lab",), [30]),  # over 24 h, and only one backup
        ("gis-lab-3", ("lab",), []),  # no good backup at all
    ]
    targets = []
    for name, tags, ages in specs:
        deployment = replace(make_deployment(name), tags=tags)
        policy = AUDIT_POLICY.for_deployment(deployment)
        facts = store_facts(_backups(name, ages), START, policy.window_days)
        violations = judge(facts, release="11.3.0", policy=policy, now=START)
        targets.append(audited_target(deployment, "default", facts, violations, release="11.3.0", now=START))
    upgraded = replace(make_deployment("gis-us-1"), tags=("prod",))
    facts = store_facts(_backups("gis-us-1", [1, 25]), START, 7)
    violations = judge(facts, release="11.4.0", policy=AUDIT_POLICY.for_deployment(upgraded), now=START)
    targets.append(audited_target(upgraded, "default", facts, violations, release="11.4.0", now=START))
    targets.append(unknown(replace(make_deployment("gis-us-2"), tags=("prod",)), "", "permanent", HOSTILE, now=START))
    return targets


def audit_document() -> dict[str, Any]:
    return compliance_document(
        audit_targets(),
        audit_id="a-html",
        audited_at=START,
        finished_at=START + 5,
        inventory="fleet.toml",
        policy=AUDIT_POLICY.describe(),
    )


class _Page(HTMLParser):
    """What a test needs of a page: each chart's elements' attributes, the scripts, every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.chart = ""
        self.marks: dict[str, list[dict[str, str]]] = {}
        self.links: list[str] = []
        self.tags: Counter[str] = Counter()
        self.scripts: list[dict[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags[tag] += 1
        self.ids.add(values.get("id", ""))
        self.links += [v for k, v in values.items() if k in ("src", "href", "action", "xlink:href")]
        if tag == "script":
            self.scripts.append(values)
        if tag == "svg":
            self.chart = values.get("data-chart", "")
        if self.chart and tag in ("rect", "line"):
            self.marks.setdefault(self.chart, []).append({"tag": tag, **values})

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.chart = ""


def parsed(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def bars(page: _Page, chart: str) -> list[dict[str, str]]:
    return [m for m in page.marks.get(chart, []) if m["tag"] == "rect"]


def test_the_page_is_self_contained_and_allows_only_its_own_style_and_script() -> None:
    """No src or href anywhere (no CDN, no image, no font), no @import or url() in the style; the
    Content-Security-Policy allows no source but the inline style and script, whose hashes it names."""
    for html in (run_html(run_document()), compliance_html(audit_document())):
        page = parsed(html)
        assert page.links == [] and page.tags["link"] == page.tags["img"] == page.tags["iframe"] == 0
        assert not re.search(r"https?://", html)
        style = html.split("<style>", 1)[1].split("</style>", 1)[0]
        assert "@import" not in style and "url(" not in style
        script = html.rsplit("<script>", 1)[1].split("</script>", 1)[0]
        csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
        assert csp is not None
        policy = unescape(csp.group(1))
        assert policy.startswith("default-src 'none';") and "img-src 'none';" in policy
        for kind, text in (("style-src", style), ("script-src", script)):
            digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            assert f"{kind} 'sha256-{digest}';" in policy


def test_server_text_is_shown_as_text_and_never_as_markup() -> None:
    """A server error holding `<script>` and `<img onerror>`: escaped in the page, \\u003c-escaped in the JSON
    block; the page holds its two own script elements and no img."""
    for html in (run_html(run_document()), compliance_html(audit_document())):
        page = parsed(html)
        assert "window.pwned" in html and "<script>window.pwned" not in html and "<img" not in html
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt; &lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;" in html
        assert page.tags["img"] == 0 and [s.get("type") for s in page.scripts] == ["application/json", None]
        block = html.split('<script type="application/json" id="report-data">', 1)[1].split("</script>", 1)[0]
        assert "<" not in block and ">" not in block
        assert json.loads(block)["total"] in (len(FLEET), len(audit_targets()))


def test_the_run_page_has_its_verdict_sections_and_charts_with_the_documents_counts() -> None:
    """The one-line verdict; outcomes by tag, the durations' histogram and the timeline count what the
    document says; failures by reason; every target in the table; no readiness section for a run."""
    document = run_document()
    html = run_html(document)
    page = parsed(html)
    verdict = "8 of 13 backed up; 3 failed, 1 timed out, 1 skipped: gis-eu-3/default, gis-lab-3/default, "
    assert verdict + "gis-us-2/default and 2 more." in html
    sections = ['id="summary"', 'id="charts"', 'id="changes"', 'id="failures"', 'id="all-targets"']
    assert [html.index(s) for s in sections] == sorted(html.index(s) for s in sections)
    assert 'id="readiness"' not in html
    drawn: dict[str, dict[str, int]] = {}
    for bar in bars(page, "outcomes-by-tag"):
        drawn.setdefault(bar["data-row"], {})[bar["data-series"]] = int(bar["data-count"])
    assert drawn == document["summary"]["by_tag"]
    durations = [r["duration_s"] for r in document["targets"] if r["outcome"] == "succeeded"]
    histogram_bars = bars(page, "durations")
    assert sum(int(b["data-count"]) for b in histogram_bars) == len(durations) == 8
    for bar in histogram_bars:
        inside = [d for d in durations if float(bar["data-start"]) <= d < float(bar["data-end"])]
        assert int(bar["data-count"]) == len(inside)
    finished = Counter(r["outcome"] for r in document["targets"] if r["finished_at"])
    timeline: Counter[str] = Counter()
    for bar in bars(page, "timeline"):
        timeline[bar["data-series"]] += int(bar["data-count"])
    assert timeline == finished
    assert html.count('<tr data-key="') == len(FLEET)
    assert "Backup failed during stage &#39;Stage system configuration&#39;." in html
    assert re.search(r'<tr data-count="2"><td class="num">2</td><td>job_failed</td>', html)


def test_a_snapshot_page_opens_with_its_readiness_table() -> None:
    """kind snapshot: the readiness line and the table per deployment, before the charts."""
    document = run_document("snapshot")
    html = run_html(document)
    assert document["readiness"]["ready"] == 8
    assert "8 of 13 deployments ready for the upgrade; 5 not ready." in html
    assert html.index('id="readiness"') < html.index('id="charts"')
    assert html.count('<tr data-ready="no">') == 5 and html.count('<tr data-ready="yes">') == 8
    assert "Pre-upgrade snapshot r-html" in html


def test_the_audit_page_has_its_sections_and_charts_with_the_documents_counts() -> None:
    """The verdict line; the age chart with each target's own limit (the prod rule's 12 h, else 24 h); verdicts
    by tag; days covered; violations by control with the fix; what could not be read; every target."""
    document = audit_document()
    html = compliance_html(document)
    page = parsed(html)
    assert "2 of 7 targets compliant; 4 in violation, 1 unknown." in html
    sections = ['id="summary"', 'id="charts"', 'id="violations"', 'id="unknown"', 'id="all-targets"']
    assert [html.index(s) for s in sections] == sorted(html.index(s) for s in sections)
    ages = {(b["data-deployment"], b["data-max-age-hours"], b["data-age-hours"]) for b in bars(page, "age")}
    assert ages == {
        ("gis-eu-1", "12", "2"),
        ("gis-eu-2", "12", "16"),
        ("gis-lab-1", "24", "16"),
        ("gis-lab-2", "24", "30"),
        ("gis-lab-3", "24", ""),
        ("gis-us-1", "12", "1"),
    }
    assert bars(page, "age")[0]["data-deployment"] == "gis-lab-3"  # no good backup at all: first
    drawn: dict[str, dict[str, int]] = {}
    for bar in bars(page, "verdicts-by-tag"):
        drawn.setdefault(bar["data-row"], {})[bar["data-series"]] = int(bar["data-count"])
    assert drawn == {
        tag: {v: n for v, n in counts.items() if n} for tag, counts in document["summary"]["by_tag"].items()
    }
    covered = Counter(str(r["days_covered"]) for r in document["targets"] if r["days_covered"] is not None)
    assert {
        b["data-days"]: int(b["data-count"]) for b in bars(page, "days-covered") if b["data-count"] != "0"
    } == covered
    for control, count in document["summary"]["by_control"].items():
        if count:
            assert f'<h3 data-control="{control}" data-count="{count}">' in html
    assert "back it up now: orchestrator run --inventory fleet.toml --select name=gis-lab-2" in html
    assert html.count('<tr data-key="') == 7


def test_max_age_follows_the_policys_rules_or_says_it_draws_the_default() -> None:
    """Per target, the defaults then the rules selecting it (later ones win); a policy that does not read back
    draws the defaults' limit for every target, and says so."""
    limit, said = max_age_of(AUDIT_POLICY.describe())
    assert limit({"deployment": "a", "tags": ["prod"]}) == 12.0 and limit({"deployment": "b", "tags": []}) == 24.0
    assert "or its rule's" in said
    limit, said = max_age_of({"defaults": {"max_age_hours": 30.0}, "rules": [{"select": ["colour=red"]}]})
    assert limit({"deployment": "a", "tags": ["prod"]}) == 30.0 and "do not read" in said


@given(st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=1, max_size=200))
def test_every_value_falls_in_exactly_one_bin_of_round_width(values: list[float]) -> None:
    """The histogram's bins are contiguous, of a 1-2-5 width, and count every value once, in the bin that holds it."""
    chart = histogram("h", "h", values, "s")
    edges = [(float(r.data["data-start"]), float(r.data["data-end"])) for r in chart.rects]
    assert sum(int(r.data["data-count"]) for r in chart.rects) == len(values)
    assert all(a[1] == b[0] for a, b in pairwise(edges))
    assert edges[0][0] <= min(values) and max(values) < edges[-1][1] + 1e-6


@pytest.mark.parametrize(
    ("raw", "step"), [(0.0, 1.0), (0.07, 0.1), (0.3, 0.5), (1.0, 1.0), (1.2, 2.0), (7, 10), (45, 50)]
)
def test_nice_step_is_the_round_width_at_least_asked(raw: float, step: float) -> None:
    """1, 2 or 5 times a power of ten, never below what was asked."""
    assert nice_step(raw) == pytest.approx(step)


def test_the_html_files_are_written_beside_the_others_0600(tmp_path: Path) -> None:
    """report.html beside report.json, compliance.html beside compliance.json, each readable by its owner only."""
    folder = write_reports(fleet_result(tmp_path))
    audit_folder = write_compliance(audit_document(), tmp_path)
    assert mode_of(folder / "report.html") == mode_of(audit_folder / "compliance.html") == 0o600
    assert (folder / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "compliance.html" in {p.name for p in audit_folder.iterdir()}
