"""The report as JUnit XML, for dashboards that read test results (Jenkins, GitLab, Azure DevOps, ...).

Built with junitparser from the same document the JSON report is (`report.report_document`,
`audit.report.compliance_document`): one `<testsuite>` (the root) named after the run (or audit) id, with its counts,
and one `<testcase>` per target, in inventory order: `classname` the deployment, `name` the store (as the
report names it), `time` its duration where known.

    run       succeeded                                  passed
              failed, timed_out                          <failure type=ERROR_CLASS message=REASON>
              not_started, interrupted, skipped          <error type=ERROR_CLASS or OUTCOME message=REASON>
              (a snapshot's) succeeded but not verified  <error type="not_verified">
    audit     compliant                                  passed
              violation                                  <failure type=CONTROLS message=CONTROL: REASON; ...>
              unknown                                    <error type=ERROR_CLASS message=ERROR>

A target that got no backup because the run stopped or was cut short is an error, not a skip: every
dashboard shows a skipped test as harmless (green in Jenkins and GitLab), and a night without its backup is
not. A failure is "the job ran and did not work"; an error, "it never finished".

Server text is already cleaned of control characters, but XML 1.0 cannot hold some characters at all (most
of C0, lone surrogates, U+FFFE/U+FFFF): whatever a string holds, each of those becomes U+FFFD, and the
serializer escapes the rest (`<`, `&`, quotes, `]]>`), so the file is always well-formed.
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import Any, Final

from junitparser import Error, Failure, TestCase, TestSuite
from junitparser.junitparser import FinalResult

# Everything XML 1.0 cannot hold (its `Char` production's complement).
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_PASSED: Final = frozenset({"succeeded", "compliant"})
_FAILED: Final = frozenset({"failed", "timed_out"})
# What a failing run target's text tells, in order (absent ones left out).
_DETAIL: Final = ("outcome", "error_class", "error", "server_status", "backup_name", "job_id", "url", "attempts",
                  "polls", "submitted_at", "finished_at", "duration_s")  # fmt: skip
_AUDIT_DETAIL: Final = ("verdict", "error_class", "error", "url", "current_release", "last_good_backup",
                        "last_good_completed_at", "age_hours", "last_good_release", "good_backups",
                        "newest_backup", "newest_backup_status", "newest_backup_at")  # fmt: skip


def run_junit(document: dict[str, Any]) -> str:
    """report.junit.xml: a run's (a retry's, a demo's, a snapshot's) report document as JUnit XML."""
    snapshot = document["kind"] == "snapshot"
    cases = [_case(row["deployment"], row["store"], row["duration_s"], _run_result(row, snapshot))
             for row in document["targets"]]  # fmt: skip
    properties = {
        "kind": document["kind"],
        "inventory": document["inventory"],
        "parent_run_id": document.get("parent_run_id"),
        "stopped_reason": document.get("stopped_reason"),
    }
    return _xml(document["run_id"], document["started_at"], document["finished_at"], cases, properties)


def audit_junit(document: dict[str, Any]) -> str:
    """compliance.junit.xml: an audit's compliance document as JUnit XML."""
    cases = [_case(row["deployment"], row["store"], None, _audit_result(row)) for row in document["targets"]]
    properties = {
        "kind": "audit",
        "inventory": document["inventory"],
        "policy": document["policy"].get("source"),
        "stopped_reason": document.get("stopped_reason"),
    }
    return _xml(document["audit_id"], document["audited_at"], document["finished_at"], cases, properties)


def xml_text(value: Any) -> str:
    """`value` as text XML 1.0 can hold: each character it cannot, U+FFFD. Pure."""
    return _NOT_XML.sub("\ufffd", "" if value is None else str(value))


def _run_result(row: dict[str, Any], snapshot: bool) -> FinalResult | None:
    outcome = row["outcome"]
    if outcome in _PASSED:
        if snapshot and not row.get("ready", True):
            reason = "backed up, not verified: the snapshot was cut short; resume it"
            return _result(Error, "not_verified", reason, _detail(row, _DETAIL))
        return None
    kind = Failure if outcome in _FAILED else Error
    return _result(kind, row["error_class"] or outcome, row["error"] or outcome, _detail(row, _DETAIL))


def _audit_result(row: dict[str, Any]) -> FinalResult | None:
    verdict = row["verdict"]
    if verdict in _PASSED:
        return None
    if verdict == "violation":
        violations = row["violations"]
        controls = ",".join(v["control"] for v in violations)
        reasons = "; ".join(f"{v['control']}: {v['reason']}" for v in violations)
        lines = [f"{v['control']}: {v['reason']}" for v in violations]
        text = "\n".join([*lines, _detail(row, _AUDIT_DETAIL)])
        return _result(Failure, controls or verdict, reasons or verdict, text)
    return _result(Error, row["error_class"] or verdict, row["error"] or verdict, _detail(row, _AUDIT_DETAIL))


def _result(kind: type[FinalResult], type_: str, message: str, text: str) -> FinalResult:
    result = kind(xml_text(message), xml_text(type_))
    result.text = xml_text(text)
    return result


def _detail(row: dict[str, Any], names: tuple[str, ...]) -> str:
    return "\n".join(f"{name}: {row[name]}" for name in names if row.get(name) not in (None, ""))


def _case(deployment: str, store: str, time: float | None, result: FinalResult | None) -> TestCase:
    case = TestCase(xml_text(store), xml_text(deployment), time)
    if result is not None:
        case.result = [result]
    return case


def _xml(name: str, started_at: str, finished_at: str, cases: list[TestCase], properties: dict[str, Any]) -> str:
    """One `<testsuite>` as the root (every JUnit reader takes it, as it takes `<testsuites>`)."""
    suite = TestSuite(xml_text(name))
    suite.timestamp = xml_text(started_at)
    for key, value in properties.items():
        if value:
            suite.add_property(key, xml_text(value))
    suite.add_testcases(cases)  # counted once: add_testcase would count every case again each time
    wall = _seconds_between(started_at, finished_at)
    if wall is not None:  # the run's wall time, not the sum of its targets' (they run side by side)
        suite.time = wall
    buffer = io.BytesIO()
    suite.write(buffer)  # UTF-8, with its XML declaration
    return buffer.getvalue().decode("utf-8") + "\n"


def _seconds_between(start: str, end: str) -> float | None:
    try:
        return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except (TypeError, ValueError):
        return None
