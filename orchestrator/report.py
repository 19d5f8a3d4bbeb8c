"""The consolidated report: one row per target, in inventory order, as JSON, CSV and Markdown.

The Markdown is what a person reads in the morning: the verdict in one line, the summary, what changed
(and what keeps failing), failures with their reasons next, then a table of every target narrow enough to
read (the wide columns are in the CSV and JSON). Beside the run folders, `latest.json` names the latest run
and `index.json` / `index.md` list them all. Nothing here holds a secret: rows are built field by field
from the targets.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

from tabulate import tabulate

from orchestrator.errors import InputError
from orchestrator.files import UnsafePath, named_dir, open_private, private_dir, write_private
from orchestrator.model import Outcome, RunResult, TargetState, iso
from orchestrator.redact import redact_all
from orchestrator.untrusted import code_span, csv_cell, md_cell

_log = logging.getLogger(__name__)
OUTCOMES: Final = tuple(o.value for o in Outcome if o is not Outcome.PENDING)
SLOWEST: Final = 5
OUTCOME_WORDS: Final = {
    "failed": "failed",
    "timed_out": "timed out",
    "not_started": "not started",
    "interrupted": "interrupted",
    "skipped": "skipped",
}
VERDICT_NAMES: Final = 3  # targets named in the verdict line; the rest are counted
# The Markdown's table of every target: these columns (a snapshot's also `ready`), its error cut at
# MD_ERROR_CHARS; every column is in report.csv and report.json.
MD_COLUMNS: Final = ("deployment", "store", "outcome", "error_class", "error", "duration_s")
MD_ERROR_CHARS: Final = 100
INDEX_MAX: Final = 1000  # runs listed in REPORT_DIR/index.json and index.md, newest first


def _retention_date(target: TargetState) -> str:
    return iso(target.retention_ms / 1000) if target.retention_ms is not None else ""


# The report's columns, in order: each a header and what a target's record puts in it. The JSON rows, the
# CSV header and the Markdown table all come from this table.
REPORT_COLUMNS: Final[tuple[tuple[str, Callable[[TargetState], Any]], ...]] = (
    ("deployment", lambda t: t.deployment.name),
    ("url", lambda t: t.deployment.url),
    ("store", lambda t: t.store or "(default store)"),
    ("backup_name", attrgetter("backup_name")),
    ("job_id", attrgetter("job_id")),
    ("outcome", lambda t: t.outcome.value),
    ("server_status", attrgetter("server_status")),
    ("error_class", attrgetter("error_class")),
    ("error", attrgetter("error")),
    ("attempts", attrgetter("attempts")),
    ("polls", attrgetter("polls")),
    ("submitted_at", lambda t: iso(t.submitted_at)),
    ("finished_at", lambda t: iso(t.finished_at)),
    ("duration_s", attrgetter("duration_s")),
    ("retention_date", _retention_date),
    ("tls_verified", lambda t: t.deployment.verify_tls),
    ("tags", lambda t: list(t.deployment.tags)),  # a JSON list; `;`-joined in the CSV
)
COLUMNS: Final = tuple(header for header, _ in REPORT_COLUMNS)
# A snapshot's report adds the version each backup had to be of, and whether the target counts.
SNAPSHOT_COLUMNS: Final[tuple[tuple[str, Callable[[TargetState], Any]], ...]] = (
    *REPORT_COLUMNS,
    ("version", attrgetter("version")),
    ("ready", lambda t: is_ready(t)),
)


def is_ready(target: TargetState) -> bool:
    """A snapshot's target counts: it succeeded and its backup was verified."""
    return target.outcome is Outcome.SUCCEEDED and target.verified


def _why_not_ready(target: TargetState) -> str:
    if target.outcome is Outcome.SUCCEEDED:
        return "backed up, not verified: the snapshot was cut short; resume it"
    return target.error or target.outcome.value


def columns_of(kind: str) -> tuple[tuple[str, Callable[[TargetState], Any]], ...]:
    return SNAPSHOT_COLUMNS if kind == "snapshot" else REPORT_COLUMNS


def row(target: TargetState, kind: str = "run") -> dict[str, Any]:
    return {header: value(target) for header, value in columns_of(kind)}


@dataclass(frozen=True, slots=True)
class Readiness:
    """One deployment's answer, in a snapshot, to "may it be upgraded now?"."""

    deployment: str
    ready: bool
    version: str
    stores: tuple[str, ...]
    reasons: tuple[str, ...]  # why not: one per target that did not succeed


def readiness(targets: list[TargetState]) -> list[Readiness]:
    """Per deployment, in inventory order: ready when every one of its targets counts (`is_ready`). Pure."""
    answers = []
    for _, grouped in groupby(targets, key=lambda t: t.deployment.name):
        group = list(grouped)
        failing = [t for t in group if not is_ready(t)]
        answers.append(
            Readiness(
                deployment=group[0].deployment.name,
                ready=not failing,
                version=next((t.version for t in group if t.version), ""),
                stores=tuple(t.store or "(default store)" for t in group),
                reasons=tuple(f"{t.store or '(default store)'}: {_why_not_ready(t)}" for t in failing),
            )
        )
    return answers


def summarize(targets: list[TargetState]) -> dict[str, Any]:
    outcomes = Counter(t.outcome.value for t in targets)
    by_tag: dict[str, Counter[str]] = defaultdict(Counter)
    for target in targets:
        for tag in target.deployment.tags:
            by_tag[tag][target.outcome.value] += 1
    failures: dict[tuple[str, str], list[str]] = defaultdict(list)
    for target in targets:
        if target.outcome is not Outcome.SUCCEEDED:
            kind = target.error_class or target.outcome.value
            failures[(kind, target.error or target.outcome.value)].append(target.key)
    timed = [t for t in targets if t.duration_s is not None and t.outcome is Outcome.SUCCEEDED]
    slowest = sorted(timed, key=lambda t: t.duration_s or 0.0, reverse=True)[:SLOWEST]
    return {
        "total": len(targets),
        **{outcome: outcomes.get(outcome, 0) for outcome in OUTCOMES},
        "by_tag": {
            tag: {o: counts.get(o, 0) for o in OUTCOMES if counts.get(o)} for tag, counts in sorted(by_tag.items())
        },
        "slowest": [{"target": t.key, "duration_s": t.duration_s} for t in slowest],
        # verify_tls = false in the inventory: flagged in every report, so it is never forgotten
        "tls_not_verified": sorted({t.deployment.name for t in targets if not t.deployment.verify_tls}),
        "failures_by_reason": [
            {"error_class": error_class, "reason": reason, "count": len(keys), "targets": keys}
            for (error_class, reason), keys in sorted(failures.items(), key=lambda item: -len(item[1]))
        ],
    }


def report_document(result: RunResult) -> dict[str, Any]:
    """Everything the report files say, every string passed through the redaction layer."""
    document: dict[str, Any] = redact_all(_document(result))
    return document


def _document(result: RunResult) -> dict[str, Any]:
    summary = summarize(result.targets)
    document: dict[str, Any] = {
        "run_id": result.run_id,
        "kind": result.kind,
        "parent_run_id": result.parent_run_id,
        "started_at": iso(result.started_at),
        "finished_at": iso(result.finished_at),
        "inventory": result.inventory,
        "stopped_reason": result.stopped_reason,
        "settings": result.settings.public(),
        "verdict": run_verdict(summary),  # the run in one line, said alike in every form
        "summary": summary,
        "changes": result.changes,
        "targets": [row(t, result.kind) for t in result.targets],
    }
    if result.kind == "snapshot":
        answers = readiness(result.targets)
        document["readiness"] = {
            "ready": sum(a.ready for a in answers),
            "not_ready": sum(not a.ready for a in answers),
            "deployments": [asdict(a) for a in answers],
        }
    return document


def csv_text(rows: list[dict[str, Any]], kind: str = "run") -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[h for h, _ in columns_of(kind)], lineterminator="\n")
    writer.writeheader()
    writer.writerows({header: csv_cell(_flat(header, value)) for header, value in row.items()} for row in rows)
    return buffer.getvalue()


def _flat(header: str, value: Any) -> Any:
    return ";".join(value) if header == "tags" and isinstance(value, list) else value


def run_verdict(summary: Mapping[str, Any]) -> str:
    """The run in one line, as a manager reads it: "198 of 200 backed up; 2 failed: gis-7/default, gis-9/raster."
    (the first VERDICT_NAMES targets that did not succeed named, the rest counted). report.md and report.html
    both open with it."""
    if not summary["total"]:
        return "No targets."
    line = f"{summary['succeeded']} of {summary['total']} backed up"
    others = [f"{summary[o]} {word}" for o, word in OUTCOME_WORDS.items() if summary.get(o)]
    if not others:
        return line + "."
    names = [name for f in summary.get("failures_by_reason", ()) for name in f["targets"]]
    named = ", ".join(names[:VERDICT_NAMES]) + (
        f" and {len(names) - VERDICT_NAMES} more" if len(names) > VERDICT_NAMES else ""
    )
    return f"{line}; {', '.join(others)}" + (f": {named}." if named else ".")


def markdown_text(document: dict[str, Any]) -> str:
    """What a person reads in the morning: the summary, what changed, the failures by reason, every target."""
    headers = [*MD_COLUMNS, "ready"] if document["kind"] == "snapshot" else list(MD_COLUMNS)
    title = "Pre-upgrade snapshot" if document["kind"] == "snapshot" else "Backup run"
    rows = [[md_cell(_cut(r[c]) if c == "error" else r[c]) for c in headers] for r in document["targets"]]
    elsewhere = [h for h, _ in columns_of(document["kind"]) if h not in headers]
    lines = [
        f"# {title} {document['run_id']}",
        "",
        f"**{md_cell(document['verdict'])}**",
        "",
        f"Started {document['started_at']}, finished {document['finished_at']}; "
        f"inventory `{code_span(document['inventory'])}`.",
        *_readiness_lines(document.get("readiness")),
        *_summary_lines(document),
        *_changes_lines(document["changes"]),
        *_failure_lines(document["summary"]),
        "",
        "## All targets",
        "",
        tabulate(rows, headers=headers, tablefmt="github"),
        "",
        f"Errors cut at {MD_ERROR_CHARS} characters. The other columns ({', '.join(elsewhere)}) and each error "
        "in full are in report.csv and report.json.",
        "",
    ]
    return "\n".join(lines)


def _cut(text: Any) -> Any:
    if isinstance(text, str) and len(text) > MD_ERROR_CHARS:
        return text[: MD_ERROR_CHARS - 3] + "..."
    return text


def _readiness_lines(readiness: dict[str, Any] | None) -> list[str]:
    """A snapshot's answer first: which deployments may be upgraded, and why the others may not."""
    if readiness is None:
        return []
    total = readiness["ready"] + readiness["not_ready"]
    lines = ["", "## Ready for the upgrade", "", f"**{readiness['ready']} of {total} deployments ready.**", ""]
    rows = [
        (md_cell(a["deployment"]), "yes" if a["ready"] else "**no**", md_cell(a["version"] or "?"),
         md_cell(", ".join(a["stores"])), md_cell("; ".join(a["reasons"])))
        for a in readiness["deployments"]
    ]  # fmt: skip
    lines.append(tabulate(rows, headers=["deployment", "ready", "version", "stores", "why not"], tablefmt="github"))
    return lines


def _summary_lines(document: dict[str, Any]) -> list[str]:
    summary = document["summary"]
    lines = ["", "## Summary", ""]
    counts = [(o, summary[o]) for o in OUTCOMES if summary[o]] + [("**total**", summary["total"])]
    lines.append(tabulate(counts, headers=["outcome", "targets"], tablefmt="github"))
    if document["stopped_reason"]:
        lines += ["", f"**Submitting stopped early**: {md_cell(document['stopped_reason'])}."]
    if summary["tls_not_verified"]:
        names = md_cell(", ".join(summary["tls_not_verified"]))
        lines += ["", f"**TLS not verified** (`verify_tls = false` in the inventory) for: {names}."]
    if summary["by_tag"]:
        tags = sorted(summary["by_tag"].items())
        seen = [o for o in OUTCOMES if any(counts.get(o) for _, counts in tags)]  # no column of zeros
        by_tag = [(md_cell(tag), *(counts.get(o, 0) for o in seen)) for tag, counts in tags]
        lines += ["", "By tag:", "", tabulate(by_tag, headers=["tag", *seen], tablefmt="github")]
    return lines


def _failure_lines(summary: dict[str, Any]) -> list[str]:
    lines = ["", "## Failures and other non-successes", ""]
    if summary["failures_by_reason"]:
        failures = [
            (
                f["count"],
                f["error_class"],
                md_cell(f["reason"]),
                md_cell(", ".join(f["targets"][:10]) + (" ..." if f["count"] > 10 else "")),
            )
            for f in summary["failures_by_reason"]
        ]
        lines.append(tabulate(failures, headers=["targets", "class", "reason", "which"], tablefmt="github"))
    else:
        lines.append("None: every target succeeded.")
    if summary["slowest"]:
        slowest = ", ".join(f"{md_cell(s['target'])} ({s['duration_s']:.1f} s)" for s in summary["slowest"])
        lines += ["", f"Slowest successful targets: {slowest}"]
    return lines


def _changes_lines(changes: dict[str, Any]) -> list[str]:
    if not changes:
        return ["", "## Since the previous run", "", "No earlier finished run over this inventory to compare with."]
    lines = ["", "## Since the previous run", "", f"Compared with run {changes['previous_run_id']}."]
    still = changes.get("still_failing", [])
    if still:
        lines += ["", f"**Still failing** ({len(still)}):", ""]
        lines += [
            f"- {md_cell(c['target'])}: {still_failing_text(c)}: {md_cell(c['error'] or c['outcome'])}" for c in still
        ]
    if not (changes["newly_failing"] or changes["recovered"] or changes["slower"]):
        if still:
            return [*lines, "", "Nothing else changed: no target newly failing or recovered, none markedly slower."]
        return [*lines, "", "No target changed: the same ones succeeded, none markedly slower."]
    if changes["newly_failing"]:
        lines += ["", f"**Newly failing** ({len(changes['newly_failing'])}):", ""]
        lines += [f"- {md_cell(c['target'])}: {c['outcome']}: {md_cell(c['error'])}" for c in changes["newly_failing"]]
    if changes["recovered"]:
        lines += ["", f"**Recovered** ({len(changes['recovered'])}):", ""]
        lines += [f"- {md_cell(c['target'])} (was {c['previous_outcome']})" for c in changes["recovered"]]
    if slower := changes["slower"]:
        lines += ["", f"**Markedly slower** ({len(changes['slower'])}):", ""]
        lines += [
            f"- {md_cell(c['target'])}: {c['duration_s']:.1f} s (was {c['previous_duration_s']:.1f} s)" for c in slower
        ]
    return lines


def still_failing_text(change: Mapping[str, Any]) -> str:
    """ "failing 2 runs in a row (since 2026-11-30T02:00:00Z)" for a `changes.still_failing` entry."""
    since = f" (since {change['since']})" if change.get("since") else ""
    return f"failing {change['runs']} runs in a row{since}"


def write_reports(result: RunResult, document: dict[str, Any] | None = None) -> Path:
    """Write report.json, .csv, .md, .junit.xml and .html under REPORT_DIR/RUN_ID/; return that
    folder. `document`: the run's `report_document`, when the caller has built it already.
    The folder is the user's own (0700) and each file 0600, never written through a link (`files`).
    Then the run's entry in REPORT_DIR's index of runs, and `latest.json` if it is the latest run there."""
    from orchestrator.html_report import run_html  # here: html_report imports this module
    from orchestrator.junit import run_junit

    folder = private_dir(result.settings.report_dir / result.run_id)
    document = document if document is not None else report_document(result)
    write_private(folder / "report.json", json.dumps(document, indent=2) + "\n")
    write_private(folder / "report.csv", csv_text(document["targets"], result.kind))
    write_private(folder / "report.md", markdown_text(document))
    write_private(folder / "report.html", run_html(document))
    write_private(folder / "report.junit.xml", run_junit(document))
    write_index(result.settings.report_dir, document)
    return folder


def index_entry(document: Mapping[str, Any]) -> dict[str, Any]:
    """A run as REPORT_DIR's index and `latest.json` list it. Pure."""
    summary = document["summary"]
    return {
        "run_id": document["run_id"],
        "folder": document["run_id"],  # relative to the report folder
        "kind": document["kind"],
        "started_at": document["started_at"],
        "finished_at": document["finished_at"],
        "verdict": document["verdict"],
        "counts": {o: summary[o] for o in ("total", *OUTCOMES) if summary[o]},
    }


def updated_index(entries: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`entries` with `entry` in (replacing the same run's), newest start first, at most INDEX_MAX. Pure."""
    others = [e for e in entries if isinstance(e, dict) and e.get("run_id") != entry["run_id"]]
    ordered = sorted([*others, entry], key=lambda e: str(e.get("started_at", "")), reverse=True)
    return ordered[:INDEX_MAX]


def write_index(report_dir: Path, document: Mapping[str, Any]) -> None:
    """REPORT_DIR/index.json and index.md (every run, newest first) with this run in, and REPORT_DIR/latest.json
    ({"run_id", "folder", "finished_at", "kind"}) naming the run started last. Plain files, each written
    atomically and 0600 (`files.write_private`: never a link). An index that does not read is started again."""
    folder = named_dir(report_dir).resolve()  # the folder named may be a link (the user chose it)
    entries: list[dict[str, Any]] = []
    try:
        with os.fdopen(open_private(folder / "index.json", os.O_RDONLY), encoding="utf-8") as handle:
            read = json.loads(handle.read())
        entries = list(read.get("runs", [])) if isinstance(read, dict) else []
    except (OSError, ValueError):
        entries = []
    runs = updated_index(entries, index_entry(document))
    latest = {k: runs[0].get(k) for k in ("run_id", "folder", "finished_at", "kind")}
    try:
        write_private(folder / "index.json", json.dumps({"runs": runs}, indent=2) + "\n")
        write_private(folder / "index.md", index_markdown(runs))
        write_private(folder / "latest.json", json.dumps(latest, indent=2) + "\n")
    except UnsafePath as error:  # e.g. a shared report folder of another user's: the run's own reports are written
        _log.warning("%s: no index of runs nor latest.json written (%s)", folder, error)


def index_markdown(runs: list[dict[str, Any]]) -> str:
    """index.md: one line per run, newest first, with its verdict and a link to its report.md."""
    table = [
        (f"[{md_cell(r.get('run_id'))}]({md_cell(r.get('folder'))}/report.md)", md_cell(r.get("kind")),
         md_cell(r.get("started_at")), md_cell(r.get("verdict")))
        for r in runs
    ]  # fmt: skip
    return "\n".join(
        ["# Runs", "", tabulate(table, headers=["run", "kind", "started", "verdict"], tablefmt="github"), ""]
    )


def check_report_dir(report_dir: Path) -> None:
    """Refuse a report folder that cannot be written, before the run sends anything. The folder named may be a
    link (the user chose it); made when missing, it is 0700 (`files.named_dir`)."""
    try:
        named_dir(report_dir)
        with tempfile.NamedTemporaryFile(dir=report_dir, prefix=".write-check-"):
            pass
    except UnsafePath as error:
        raise InputError(
            [f"report_dir {report_dir}: cannot write there (it {error.problem}); choose another with --report-dir"]
        ) from None
    except OSError as error:
        raise InputError(
            [f"report_dir {report_dir}: cannot write there ({error.strerror}); choose another with --report-dir"]
        ) from None
