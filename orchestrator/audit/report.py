"""The compliance report: one row per target, in inventory order, as compliance.json, .csv and .md under
REPORT_DIR/audit-AUDIT_ID/.

The JSON rows, the CSV header and the Markdown's table all come from `COLUMNS`, one table of header and
value over `controls.AuditTarget`. The Markdown is for a person: the verdict first, the verdicts by tag,
then each control's violations with the command that fixes them, then what could not be read, then
every target. Every string passes the redaction layer; cells are made safe for a spreadsheet (CSV) and
for a Markdown viewer.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tabulate import tabulate

from orchestrator.audit.controls import AuditTarget, Control, StoreFacts, Verdict
from orchestrator.dr import Backup
from orchestrator.files import private_dir, write_private
from orchestrator.html_report import compliance_html
from orchestrator.model import iso
from orchestrator.redact import redact_all
from orchestrator.untrusted import code_span, csv_cell, md_cell

VERDICTS: Final = tuple(v.value for v in Verdict)


def _fact(read: Callable[[StoreFacts], Any]) -> Callable[[AuditTarget], Any]:
    return lambda t: read(t.facts) if t.facts is not None else None


def _of_last(read: Callable[[Backup], Any]) -> Callable[[AuditTarget], Any]:
    return _fact(lambda f: read(f.last_good) if f.last_good is not None else None)


def _of_newest(read: Callable[[Backup], Any]) -> Callable[[AuditTarget], Any]:
    return _fact(lambda f: read(f.newest) if f.newest is not None else None)


def _kept_until(backup: Backup) -> str:
    return "never" if backup.retention_until is None else iso(backup.retention_until)


def _age(target: AuditTarget) -> float | None:
    age = target.age_hours
    return round(age, 1) if age is not None else None


# The report's columns, in order: each a header and what a target puts in it (None: absent).
COLUMNS: Final[tuple[tuple[str, Callable[[AuditTarget], Any]], ...]] = (
    ("deployment", lambda t: t.deployment.name),
    ("url", lambda t: t.deployment.url),
    ("store", lambda t: t.store or "(default store)"),
    ("tags", lambda t: list(t.deployment.tags)),
    ("verdict", lambda t: t.verdict.value),
    ("violations", lambda t: [{"control": v.control.value, "reason": v.reason} for v in t.violations]),
    ("error_class", lambda t: t.error_class or None),
    ("error", lambda t: t.error or None),
    ("current_release", lambda t: t.current_release or None),
    ("last_good_backup", _of_last(lambda b: b.name)),
    ("last_good_completed_at", _of_last(lambda b: iso(b.completed_at) or None)),
    ("age_hours", _age),
    ("last_good_release", _of_last(lambda b: b.release or None)),
    ("last_good_retention_until", _of_last(_kept_until)),
    ("good_backups", _fact(lambda f: f.good_backups)),
    ("newest_backup", _of_newest(lambda b: b.name)),
    ("newest_backup_status", _of_newest(lambda b: b.status or None)),
    ("newest_backup_at", _of_newest(lambda b: iso(b.at) or None)),
    ("days_covered", _fact(lambda f: f.days_covered)),
)
HEADERS: Final = tuple(header for header, _ in COLUMNS)
_TABLE: Final = ("deployment", "store", "verdict", "current_release", "last_good_backup", "age_hours",
                 "last_good_release", "good_backups", "days_covered", "newest_backup_status")  # fmt: skip
# What fixes each control's violation; `{run}` is the command that backs the deployment up now.
FIXES: Final = {
    Control.RECENT: "back it up now: {run}",
    Control.RELEASE: "back it up at its current release: {run}",
    Control.RETENTION: "raise its `retention_days` in the inventory to at least the policy's, then {run}",
    Control.DEPTH: "keep the nightly run going until enough backups are kept (or raise their retention); now: {run}",
    Control.OFFSITE: "back it up to a store other than its default one (name it in its `stores` in the inventory; "
    "register one if it has none), then {run}",
}


def row(target: AuditTarget) -> dict[str, Any]:
    return {header: value(target) for header, value in COLUMNS}


def summarize(targets: list[AuditTarget]) -> dict[str, Any]:
    verdicts = Counter(t.verdict.value for t in targets)
    by_control = Counter(v.control.value for t in targets for v in t.violations)
    by_tag: dict[str, Counter[str]] = defaultdict(Counter)
    for target in targets:
        for tag in target.deployment.tags:
            by_tag[tag][target.verdict.value] += 1
    return {
        "targets": len(targets),
        **{verdict: verdicts.get(verdict, 0) for verdict in VERDICTS},
        "by_control": {control.value: by_control.get(control.value, 0) for control in Control},
        "by_tag": {tag: {v: counts.get(v, 0) for v in VERDICTS} for tag, counts in sorted(by_tag.items())},
    }


def compliance_document(
    targets: list[AuditTarget],
    *,
    audit_id: str,
    audited_at: float,
    finished_at: float,
    inventory: str,
    policy: dict[str, Any],
    selection: tuple[str, ...] = (),
    stopped_reason: str = "",
) -> dict[str, Any]:
    """Everything the compliance files say, every string passed through the redaction layer."""
    document: dict[str, Any] = redact_all(
        {
            "kind": "audit",
            "audit_id": audit_id,
            "audited_at": iso(audited_at),
            "finished_at": iso(finished_at),
            "inventory": inventory,
            "selection": list(selection),
            "stopped_reason": stopped_reason,
            "policy": policy,
            "summary": summarize(targets),
            "targets": [row(t) for t in targets],
        }
    )
    return document


def verdict_line(summary: dict[str, Any]) -> str:
    """The audit in one line, as a manager reads it."""
    line = f"{summary['compliant']} of {summary['targets']} targets compliant"
    others = [
        f"{summary[v]} {label}" for v, label in (("violation", "in violation"), ("unknown", "unknown")) if summary[v]
    ]
    return line + (f"; {', '.join(others)}" if others else "") + "."


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HEADERS, lineterminator="\n")
    writer.writeheader()
    for values in rows:
        writer.writerow({header: csv_cell(_flat(header, value)) for header, value in values.items()})
    return buffer.getvalue()


def _flat(header: str, value: Any) -> Any:
    if value is None:
        return ""
    if header == "violations":
        return "; ".join(f"{v['control']}: {v['reason']}" for v in value)
    if header == "tags":
        return ";".join(value)
    return value


def markdown_text(document: dict[str, Any]) -> str:
    summary, rows = document["summary"], document["targets"]
    lines = [
        f"# Compliance audit {document['audit_id']}",
        "",
        f"**{verdict_line(summary)}**",
        "",
        f"Audited {document['audited_at']}; inventory `{code_span(document['inventory'])}`; "
        f"policy: {md_cell(document['policy']['source'])}.",
    ]
    if document["stopped_reason"]:
        lines += ["", f"**The audit was cut short**: {md_cell(document['stopped_reason'])}."]
    counts = [(v, summary[v]) for v in VERDICTS] + [("**total**", summary["targets"])]
    lines += ["", "## Summary", "", tabulate(counts, headers=["verdict", "targets"], tablefmt="github")]
    if summary["by_tag"]:
        by_tag = [(md_cell(tag), *(c[v] for v in VERDICTS)) for tag, c in summary["by_tag"].items()]
        lines += ["", "## Verdicts by tag", "", tabulate(by_tag, headers=["tag", *VERDICTS], tablefmt="github")]
    lines += _violation_lines(rows, document["inventory"])
    lines += _unknown_lines(rows)
    table = [[md_cell(_flat(c, r[c])) for c in _TABLE] for r in rows]
    lines += ["", "## All targets", "", tabulate(table, headers=list(_TABLE), tablefmt="github"), ""]
    return "\n".join(lines)


def fix_command(inventory: str, deployment: str) -> str:
    """The command that backs one deployment up now, quoted for a shell."""
    return f"`orchestrator run --inventory {shlex.quote(inventory)} --select {shlex.quote('name=' + deployment)}`"


def _violation_lines(rows: list[dict[str, Any]], inventory: str) -> list[str]:
    lines = ["", "## Violations by control"]
    by_control: dict[str, list[tuple[dict[str, Any], str]]] = defaultdict(list)
    for r in rows:
        for violation in r["violations"]:
            by_control[violation["control"]].append((r, violation["reason"]))
    if not by_control:
        return [*lines, "", "None."]
    for control in Control:
        found = by_control.get(control.value)
        if not found:
            continue
        table = [
            (md_cell(r["deployment"]), md_cell(r["store"]), md_cell(reason),
             FIXES[control].format(run=fix_command(md_cell(inventory), md_cell(r["deployment"]))))
            for r, reason in found
        ]  # fmt: skip
        lines += ["", f"### {control.value} ({len(found)})", ""]
        lines.append(tabulate(table, headers=["deployment", "store", "reason", "fix"], tablefmt="github"))
    return lines


def _unknown_lines(rows: list[dict[str, Any]]) -> list[str]:
    unknown = [r for r in rows if r["verdict"] == Verdict.UNKNOWN.value]
    lines = ["", "## Unknown: could not be read"]
    if not unknown:
        return [*lines, "", "None: every target was read."]
    table = [(md_cell(r["deployment"]), md_cell(r["store"]), r["error_class"], md_cell(r["error"])) for r in unknown]
    return [*lines, "", tabulate(table, headers=["deployment", "store", "class", "error"], tablefmt="github")]


def page(document: dict[str, Any]) -> str:
    """compliance.html: the document drawn for a person (`html_report`), with the audit's verdict line and fixes."""
    inventory = document["inventory"]

    def fix(control: str, deployment: str) -> str:
        run = fix_command(inventory, deployment).strip("`")
        known = {c.value: c for c in Control}
        return FIXES[known[control]].format(run=run) if control in known else run

    return compliance_html(document, verdict=verdict_line(document["summary"]), fix=fix)


def write_compliance(document: dict[str, Any], report_dir: Path) -> Path:
    """Write compliance.json, .csv, .md, .junit.xml and .html under REPORT_DIR/audit-AUDIT_ID/; return that folder.
    The folder is the user's own (0700) and each file 0600, never written through a link (`files`)."""
    from orchestrator.junit import audit_junit

    folder = private_dir(report_dir / f"audit-{document['audit_id']}")
    write_private(folder / "compliance.json", json.dumps(document, indent=2) + "\n")
    write_private(folder / "compliance.csv", csv_text(document["targets"]))
    write_private(folder / "compliance.md", markdown_text(document))
    write_private(folder / "compliance.html", page(document))
    write_private(folder / "compliance.junit.xml", audit_junit(document))
    return folder
