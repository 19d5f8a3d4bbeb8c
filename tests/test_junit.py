"""report.junit.xml and compliance.junit.xml: one case per target, failures and errors with their class and reason,
well-formed XML whatever a server's text holds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from orchestrator.audit.controls import AuditTarget, Control, StoreFacts, Verdict, Violation
from orchestrator.audit.policy import Policy
from orchestrator.audit.report import compliance_document, write_compliance
from orchestrator.dr import Backup
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.junit import run_junit, xml_text
from orchestrator.model import Outcome, RunResult, TargetState
from orchestrator.report import report_document, write_reports
from orchestrator.settings import RunSettings
from tests.conftest import make_deployment

START = 1_795_741_200.0  # 2026-11-27T01:00:00Z
HOSTILE = "<script>alert('x')</script> ]]> & \"quoted\" 'single' <![CDATA[ x ]]>"


def _target(index: int, name: str, store: str, outcome: Outcome, error: TargetError | None = None) -> TargetState:
    target = TargetState(index, make_deployment(name, (store,)), store, f"b-{name}", None, job_id=f"j{index}")
    target.submitted_at = START + 10
    if outcome is Outcome.FAILED or outcome is Outcome.TIMED_OUT:
        assert error is not None
        target.fail(error, START + 70)
    else:
        target.finish(outcome, START + 40, reason="" if outcome is Outcome.SUCCEEDED else f"the run {outcome.value}")
    return target


def _run(tmp_path: Path, kind: str = "run") -> RunResult:
    targets = [
        _target(0, "gis-1", "default", Outcome.SUCCEEDED),
        _target(1, "gis-2", "fs", Outcome.FAILED, TargetError(ErrorClass.JOB_FAILED, f"job failed: {HOSTILE}")),
        _target(2, "gis-3", "default", Outcome.TIMED_OUT, TargetError(ErrorClass.JOB_TIMED_OUT, "no end in 2 h")),
        _target(3, "gis-4", "default", Outcome.SKIPPED),
        _target(4, "gis-5", "default", Outcome.NOT_STARTED),
        _target(5, "gis-6", "default", Outcome.INTERRUPTED),
    ]
    return RunResult(
        "20261127T022000Z-abc123", START, START + 600, targets, RunSettings(report_dir=tmp_path), "i", kind=kind
    )


def _suite(path: Path) -> TestSuite:
    """The file's one suite, read by junitparser as a dashboard would (the file's root is that suite)."""
    assert path.read_text().splitlines()[1].startswith("<testsuite ")
    (suite,) = list(JUnitXml.fromfile(str(path)))
    return suite


def _by_class(suite: TestSuite) -> dict[str, TestCase]:
    return {case.classname: case for case in suite}


def test_a_run_is_one_suite_named_after_it_with_one_case_per_target_and_its_counts(tmp_path: Path) -> None:
    """Parsed back: the suite is the run, its counts are right, each target is one case (deployment, store)."""
    folder = write_reports(_run(tmp_path))
    suite = _suite(folder / "report.junit.xml")
    assert suite.name == "20261127T022000Z-abc123" and suite.timestamp == "2026-11-27T01:00:00Z"
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 2, 3, 0)
    assert suite.time == 600.0  # the run's wall time, not the sum of its targets'
    cases = list(suite)
    assert [(c.classname, c.name) for c in cases] == [
        ("gis-1", "default"), ("gis-2", "fs"), ("gis-3", "default"), ("gis-4", "default"), ("gis-5", "default"),
        ("gis-6", "default"),
    ]  # fmt: skip
    assert cases[0].is_passed and cases[0].time == 30.0 and cases[1].time == 60.0
    assert '<property name="kind" value="run" />' in (folder / "report.junit.xml").read_text()


def test_a_failure_carries_the_error_class_and_the_reason_and_hostile_text_stays_text(tmp_path: Path) -> None:
    """A failed target's <failure> has type = its error class and message = its reason, byte for byte,
    `<script>`, `]]>`, `&` and quotes included; the failure's text says where to look."""
    folder = write_reports(_run(tmp_path))
    cases = _by_class(_suite(folder / "report.junit.xml"))
    (failure,) = cases["gis-2"].result
    assert isinstance(failure, Failure)
    assert failure.type == "job_failed" and failure.message == f"job failed: {HOSTILE}"
    assert "job_id: j1\n" in failure.text and "backup_name: b-gis-2" in failure.text and HOSTILE in failure.text
    (timed_out,) = cases["gis-3"].result
    assert isinstance(timed_out, Failure) and timed_out.type == "job_timed_out" and timed_out.message == "no end in 2 h"
    assert "<script>" not in (folder / "report.junit.xml").read_text()  # escaped, never markup


def test_a_target_that_got_no_backup_is_an_error_not_a_skip(tmp_path: Path) -> None:
    """Skipped, not started, interrupted: <error> with the outcome as its type (a skip shows green in dashboards)."""
    cases = _by_class(_suite(write_reports(_run(tmp_path)) / "report.junit.xml"))
    for deployment, outcome in (("gis-4", "skipped"), ("gis-5", "not_started"), ("gis-6", "interrupted")):
        (error,) = cases[deployment].result
        assert isinstance(error, Error) and error.type == outcome and error.message == f"the run {outcome}"


def test_a_snapshot_target_backed_up_but_not_verified_is_an_error(tmp_path: Path) -> None:
    """In a snapshot only a verified backup counts: one cut short before its check is not a pass."""
    result = _run(tmp_path, kind="snapshot")
    result.targets[0].verified = False
    cases = _by_class(_suite(write_reports(result) / "report.junit.xml"))
    (error,) = cases["gis-1"].result
    assert isinstance(error, Error) and error.type == "not_verified" and "resume it" in error.message


def test_text_xml_cannot_hold_becomes_a_replacement_and_the_file_stays_well_formed(tmp_path: Path) -> None:
    """Control characters and a lone surrogate that reach the document (they are cleaned before, but not by this
    module): each becomes U+FFFD, and the file parses."""
    document = report_document(_run(tmp_path))
    document["targets"][1]["error"] = "a\x00b\x1b[2J\x0bc\ud800d\ufffe" + HOSTILE
    document["targets"][1]["deployment"] = "gis-\x07two"
    (suite,) = list(JUnitXml.fromstring(run_junit(document).encode("utf-8")))
    case = list(suite)[1]
    assert case.classname == "gis-\ufffdtwo"
    (failure,) = case.result
    assert failure.message == "a\ufffdb\ufffd[2J\ufffdc\ufffdd\ufffd" + HOSTILE


@given(st.text())
def test_any_text_makes_well_formed_xml_and_reads_back_as_sent(text: str) -> None:
    """Whatever a reason holds, the message parses back as `xml_text` of it."""
    document: dict[str, Any] = {
        "kind": "run", "run_id": text, "inventory": text, "started_at": "", "finished_at": "",
        "targets": [{"deployment": text, "store": text, "duration_s": None, "outcome": "failed",
                     "error_class": "permanent", "error": text}],
    }  # fmt: skip
    (suite,) = list(JUnitXml.fromstring(run_junit(document).encode("utf-8")))
    (case,) = list(suite)
    (failure,) = case.result
    assert failure.message == (xml_text(text) or "failed") and case.classname == xml_text(text)


def _audit_targets() -> list[AuditTarget]:
    good = Backup("nightly-1", "completed", "11.3.0", START - 3600, START - 3000, None)
    facts = StoreFacts(last_good=good, newest=good, good_backups=1, days_covered=1)
    violations = (
        Violation(Control.RECENT, f"newest good backup is 40.2 h old (policy: 24 h) {HOSTILE}"),
        Violation(Control.RELEASE, "newest good backup is release 11.2.0, the deployment runs 11.3.0"),
    )
    return [
        AuditTarget(make_deployment("gis-1"), "default", Verdict.COMPLIANT, START, facts=facts),
        AuditTarget(make_deployment("gis-2"), "fs", Verdict.VIOLATION, START, violations, facts=facts),
        AuditTarget(replace(make_deployment("gis-3")), "default", Verdict.UNKNOWN, START, (), "unreachable", "refused"),
    ]


def test_an_audit_is_one_case_per_target_a_violation_a_failure_and_unknown_an_error(tmp_path: Path) -> None:
    """compliance.junit.xml: violation -> <failure> naming the violated controls and their reasons; unknown ->
    <error> with its class and reason; the suite named after the audit, with its counts."""
    document = compliance_document(
        _audit_targets(),
        audit_id="a1",
        audited_at=START,
        finished_at=START + 5,
        inventory="i",
        policy=Policy().describe(),
    )
    suite = _suite(write_compliance(document, tmp_path) / "compliance.junit.xml")
    assert suite.name == "a1" and (suite.tests, suite.failures, suite.errors, suite.skipped) == (3, 1, 1, 0)
    assert suite.time == 5.0
    cases = _by_class(suite)
    assert [c.name for c in suite] == ["default", "fs", "default"] and cases["gis-1"].is_passed
    (failure,) = cases["gis-2"].result
    assert isinstance(failure, Failure) and failure.type == "recent,release"
    assert failure.message.startswith(
        "recent: newest good backup is 40.2 h old (policy: 24 h) " + HOSTILE + "; release:"
    )
    assert "release: newest good backup is release 11.2.0" in failure.text
    (error,) = cases["gis-3"].result
    assert isinstance(error, Error) and (error.type, error.message) == ("unreachable", "refused")
