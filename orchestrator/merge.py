"""`report merge DIR...`: one consolidated report over the reports of several runs (the shards of a fleet).

    find_report      a run folder, an audit folder, or a report folder (its `latest.json`) -> the report file
    merged_document  the documents read, checked (one kind, no target twice, every shard once), as one document
    write_merged     every format a run (or an audit) writes, under REPORT_DIR/merged-ID/

The merged summary, failures by reason and tables by tag are computed again from the merged rows (never added
up from the reports' own summaries), the same way `report.summarize` and `audit.report.summarize` compute them.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any, Final

from orchestrator.audit import report as audit_report
from orchestrator.audit.controls import Control
from orchestrator.errors import InputError
from orchestrator.files import private_dir, write_private
from orchestrator.model import new_run_id
from orchestrator.report import OUTCOMES, SLOWEST, csv_text, markdown_text, run_verdict
from orchestrator.shard import Shard, parse_shard

REPORT_FILES: Final = ("report.json", "compliance.json")
DEFAULT_STORE_NAME: Final = "(default store)"


def find_report(folder: Path) -> Path:
    """The report file `folder` names: its own report.json or compliance.json, or, for a report folder, that of
    the run its `latest.json` names."""
    for name in REPORT_FILES:
        if (folder / name).is_file():
            return folder / name
    latest = folder / "latest.json"
    if latest.is_file():
        named = _read_json(latest)
        run = folder / str(named.get("folder") or named.get("run_id") or "")
        if run != folder and (run / "report.json").is_file():
            return run / "report.json"
        raise InputError([f"{latest}: names {run}, which holds no report.json"])
    raise InputError([f"{folder}: no report.json, compliance.json nor latest.json; give a run's folder "
                      "(REPORT_DIR/RUN_ID), an audit's (REPORT_DIR/audit-ID) or a report folder"])  # fmt: skip


def _read_json(path: Path) -> dict[str, Any]:
    try:
        read = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError([f"{path}: cannot be read ({error.strerror})"]) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError([f"{path}: not JSON ({error})"]) from None
    if not isinstance(read, dict) or not isinstance(read.get("targets", []), list):
        raise InputError([f"{path}: not a report of this tool"])
    return read


def read_reports(folders: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Each folder's report file and its document."""
    found = [find_report(folder) for folder in folders]
    return [(path, _read_json(path)) for path in found]


def shard_of(document: dict[str, Any]) -> Shard | None:
    """The shard a report was of (a run's settings record it; an audit's document), or None."""
    recorded = document.get("shard") or (document.get("settings") or {}).get("shard")
    return parse_shard(str(recorded), {}) if recorded else None


def check_mergeable(reports: Sequence[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
    """The reports in merge order (by shard, when sharded); `InputError` with every reason they cannot be merged."""
    problems: list[str] = []
    if not reports:
        raise InputError(["report merge: name at least one run folder or report folder"])
    kinds = {str(document.get("kind", "run")) for _, document in reports}
    if len(kinds) > 1:
        listed = ", ".join(f"{path} ({document.get('kind', 'run')})" for path, document in reports)
        problems.append(f"reports of different kinds ({', '.join(sorted(kinds))}) cannot be merged: {listed}")
    seen: dict[tuple[str, str], Path] = {}
    for path, document in reports:
        for row in document.get("targets", []):
            key = (str(row.get("deployment")), str(row.get("store")))
            if key in seen:
                problems.append(f"{key[0]}/{key[1]} is in both {seen[key]} and {path}: merge each run once")
            else:
                seen[key] = path
    shards = [(path, shard_of(document)) for path, document in reports]
    ordered = list(reports)
    if any(shard is not None for _, shard in shards):
        problems += _shard_problems(shards)
        ordered = sorted(reports, key=lambda item: (shard_of(item[1]) or Shard(-1, 0)).index)
    if problems:
        raise InputError(problems)
    return ordered


def _shard_problems(shards: list[tuple[Path, Shard | None]]) -> list[str]:
    unsharded = [str(path) for path, shard in shards if shard is None]
    if unsharded:
        return [f"some reports are of a shard and these are not: {', '.join(unsharded)}"]
    counts = {shard.count for _, shard in shards if shard is not None}
    if len(counts) > 1:
        return [f"reports of shards of different counts (N = {', '.join(map(str, sorted(counts)))}): merge the "
                "shards of one fleet run"]  # fmt: skip
    count = counts.pop()
    problems = []
    where: dict[int, list[str]] = defaultdict(list)
    for path, shard in shards:
        if shard is not None:
            where[shard.index].append(str(path))
    twice = [(k, paths) for k, paths in where.items() if len(paths) > 1]
    problems += [f"shard {k}/{count} is given twice: {', '.join(paths)}" for k, paths in twice]
    missing = [f"{k}/{count}" for k in range(count) if k not in where]
    if missing:
        problems.append(f"shard(s) {', '.join(missing)} missing: give the report folder of every shard")
    return problems


def run_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`report.summarize`'s summary, computed from report rows. Pure."""
    outcomes = Counter(str(r["outcome"]) for r in rows)
    by_tag: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        for tag in r.get("tags") or ():
            by_tag[tag][r["outcome"]] += 1
    failures: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        if r["outcome"] != "succeeded":
            kind = r.get("error_class") or r["outcome"]
            failures[(kind, r.get("error") or r["outcome"])].append(_key(r))
    timed = [r for r in rows if r.get("duration_s") is not None and r["outcome"] == "succeeded"]
    slowest = sorted(timed, key=lambda r: float(r["duration_s"]), reverse=True)[:SLOWEST]
    return {
        "total": len(rows),
        **{outcome: outcomes.get(outcome, 0) for outcome in OUTCOMES},
        "by_tag": {
            tag: {o: counts.get(o, 0) for o in OUTCOMES if counts.get(o)} for tag, counts in sorted(by_tag.items())
        },
        "slowest": [{"target": _key(r), "duration_s": r["duration_s"]} for r in slowest],
        "tls_not_verified": sorted({str(r["deployment"]) for r in rows if r.get("tls_verified") is False}),
        "failures_by_reason": [
            {"error_class": error_class, "reason": reason, "count": len(keys), "targets": keys}
            for (error_class, reason), keys in sorted(failures.items(), key=lambda item: -len(item[1]))
        ],
    }


def _key(row: dict[str, Any]) -> str:
    return f"{row['deployment']}/{row.get('store') or DEFAULT_STORE_NAME}"


def readiness_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A snapshot's readiness, per deployment, from its rows (as `report.readiness`). Pure."""
    answers = []
    for deployment, grouped in groupby(rows, key=lambda r: r["deployment"]):
        group = list(grouped)
        failing = [r for r in group if not r.get("ready")]
        answers.append(
            {
                "deployment": deployment,
                "ready": not failing,
                "version": next((r["version"] for r in group if r.get("version")), ""),
                "stores": [r["store"] for r in group],
                "reasons": [f"{r['store']}: {_why_not_ready(r)}" for r in failing],
            }
        )
    ready = sum(a["ready"] for a in answers)
    return {"ready": ready, "not_ready": len(answers) - ready, "deployments": answers}


def _why_not_ready(row: dict[str, Any]) -> str:
    if row["outcome"] == "succeeded":
        return "backed up, not verified: the snapshot was cut short; resume it"
    return str(row.get("error") or row["outcome"])


def audit_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`audit.report.summarize`'s summary, computed from compliance rows. Pure."""
    verdicts = Counter(str(r["verdict"]) for r in rows)
    by_control = Counter(str(v["control"]) for r in rows for v in r.get("violations") or ())
    by_tag: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        for tag in r.get("tags") or ():
            by_tag[tag][r["verdict"]] += 1
    return {
        "targets": len(rows),
        **{verdict: verdicts.get(verdict, 0) for verdict in audit_report.VERDICTS},
        "by_control": {control.value: by_control.get(control.value, 0) for control in Control},
        "by_tag": {tag: {v: counts.get(v, 0) for v in audit_report.VERDICTS} for tag, counts in sorted(by_tag.items())},
    }


def merged_document(reports: Sequence[tuple[Path, dict[str, Any]]], merge_id: str) -> dict[str, Any]:
    """One document over `reports` (checked by `check_mergeable`), with the id `merge_id`."""
    ordered = check_mergeable(reports)
    documents = [document for _, document in ordered]
    rows = [row for document in documents for row in document.get("targets", [])]
    first = documents[0]
    sources = [
        {"report": str(path), "id": document.get("run_id") or document.get("audit_id"),
         "shard": str(shard) if (shard := shard_of(document)) else None}
        for path, document in ordered
    ]  # fmt: skip
    stopped = [f"{s['id']}: {d['stopped_reason']}" for s, d in zip(sources, documents, strict=True)
               if d.get("stopped_reason")]  # fmt: skip
    inventory = ", ".join(dict.fromkeys(str(d.get("inventory", "")) for d in documents))
    if first.get("kind") == "audit":
        summary = audit_summary(rows)
        return {
            "kind": "audit",
            "audit_id": merge_id,
            "audited_at": min(str(d["audited_at"]) for d in documents),
            "finished_at": max(str(d["finished_at"]) for d in documents),
            "inventory": inventory,
            "selection": first.get("selection", []),
            "stopped_reason": "; ".join(stopped),
            "policy": first.get("policy", {}),
            "merged_from": sources,
            "summary": summary,
            "targets": rows,
        }
    summary = run_summary(rows)
    settings = {k: v for k, v in (first.get("settings") or {}).items() if k != "shard"}
    document: dict[str, Any] = {
        "run_id": merge_id,
        "kind": first.get("kind", "run"),
        "parent_run_id": "",
        "started_at": min(str(d["started_at"]) for d in documents),
        "finished_at": max(str(d["finished_at"]) for d in documents),
        "inventory": inventory,
        "stopped_reason": "; ".join(stopped),
        "settings": settings,
        "merged_from": sources,
        "verdict": run_verdict(summary),
        "summary": summary,
        "changes": {},
        "targets": rows,
    }
    if document["kind"] == "snapshot":
        document["readiness"] = readiness_of(rows)
    return document


def write_merged(document: dict[str, Any], report_dir: Path) -> Path:
    """Every format of the document's kind under REPORT_DIR/<its id>/ (each file 0600, never through a link)."""
    from orchestrator.html_report import run_html
    from orchestrator.junit import audit_junit, run_junit

    if document["kind"] == "audit":
        folder = private_dir(report_dir / document["audit_id"])
        write_private(folder / "compliance.json", json.dumps(document, indent=2) + "\n")
        write_private(folder / "compliance.csv", audit_report.csv_text(document["targets"]))
        write_private(folder / "compliance.md", audit_report.markdown_text(document))
        write_private(folder / "compliance.html", audit_report.page(document))
        write_private(folder / "compliance.junit.xml", audit_junit(document))
        return folder
    folder = private_dir(report_dir / document["run_id"])
    write_private(folder / "report.json", json.dumps(document, indent=2) + "\n")
    write_private(folder / "report.csv", csv_text(document["targets"], document["kind"]))
    write_private(folder / "report.md", markdown_text(document))
    write_private(folder / "report.html", run_html(document))
    write_private(folder / "report.junit.xml", run_junit(document))
    return folder


def merge_reports(
    folders: Sequence[Path], report_dir: Path, *, now: float, rng: random.Random
) -> tuple[Path, dict[str, Any]]:
    """Read, check, merge and write: the merged report's folder, REPORT_DIR/merged-ID/, and its document."""
    document = merged_document(read_reports(folders), f"merged-{new_run_id(now, rng)}")
    return write_merged(document, report_dir), document


__all__ = [
    "audit_summary",
    "check_mergeable",
    "find_report",
    "merge_reports",
    "merged_document",
    "read_reports",
    "run_summary",
    "write_merged",
]
