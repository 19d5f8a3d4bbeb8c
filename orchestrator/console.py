"""What the command line shows, as text built from the use cases' values: the run's summary, the plan,
the checks, the runs in a ledger. Pure; `cli` prints it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Final

from tabulate import tabulate

from orchestrator.audit import Audited, verdict_line
from orchestrator.model import Outcome, TargetState, iso
from orchestrator.preflight import Preflight
from orchestrator.redact import redact
from orchestrator.report import OUTCOMES
from orchestrator.settings import RunSettings
from orchestrator.usecases import Finished, Runs

_FAILURES_LISTED: Final = 10  # failures named at the end of a run; the report has them all


def finished_lines(finished: Finished) -> list[str]:
    """The end of a run: its counts, why it stopped early, how to carry it on, where its report is."""
    result = finished.result
    lines = [summary_table(finished.summary), *_failure_lines(result.targets)]
    if result.stopped_reason:
        lines.append(_stopped_line(result.stopped_reason, result.targets))
    if finished.resumable:
        lines.append(f"the run was cut short: `orchestrator resume {result.run_id}` carries it on")
    lines += readiness_lines(finished)
    lines += [
        f"run id: {result.run_id}",
        f"report: {finished.folder / 'report.html'} (also report.md, .json, .csv, .junit.xml)",
    ]
    return lines


def _failure_lines(targets: list[TargetState]) -> list[str]:
    """The failed and timed-out targets, the first few by name with their class and reason."""
    failed = [t for t in targets if t.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)]
    if not failed:
        return []
    lines = ["failures:"]
    for target in failed[:_FAILURES_LISTED]:
        reason = " ".join(target.error.split()) or target.outcome.value
        lines.append(redact(f"  {target.key}: {target.error_class or target.outcome.value}: {reason}"))
    if len(failed) > _FAILURES_LISTED:
        lines.append(f"  ... and {len(failed) - _FAILURES_LISTED} more, see the report")
    return lines


def _stopped_line(reason: str, targets: list[TargetState]) -> str:
    """Why submitting stopped, said of the run, and what that left, counted."""
    counts = Counter(t.outcome for t in targets)
    left = [
        f"{counts[outcome]} {label}"
        for outcome, label in (
            (Outcome.INTERRUPTED, "interrupted while running"),
            (Outcome.NOT_STARTED, "not started"),
            (Outcome.SKIPPED, "not submitted"),
        )
        if counts[outcome]
    ]
    return f"stopped submitting early: {redact(reason)}" + (f" ({', '.join(left)})" if left else "")


def readiness_lines(finished: Finished) -> list[str]:
    """A snapshot's answer: how many deployments may be upgraded, which may not and why, and the inventories."""
    readiness = finished.readiness
    if readiness is None:
        return []
    total = readiness["ready"] + readiness["not_ready"]
    lines = [f"ready for the upgrade: {readiness['ready']} of {total} deployments"]
    for answer in [a for a in readiness["deployments"] if not a["ready"]][:10]:
        lines.append(f"  not ready: {answer['deployment']}: {'; '.join(answer['reasons'])}")
    if readiness["not_ready"] > 10:
        lines.append(f"  ... and {readiness['not_ready'] - 10} more (see the report)")
    lines += [f"inventory of {path.stem.replace('-', ' ')}: {path}" for path in finished.inventories]
    return lines


def summary_table(summary: dict[str, Any]) -> str:
    counts = [(outcome, summary[outcome]) for outcome in OUTCOMES if summary[outcome]] + [("total", summary["total"])]
    return tabulate(counts, headers=["outcome", "targets"], tablefmt="simple")


def plan_text(settings: RunSettings, targets: list[TargetState], deployments: int) -> str:
    """The targets a run would have, and the limits it would run under."""
    rows = [
        (t.deployment.name, t.deployment.url, t.store or "(default, asked at run time)", t.backup_name,
         ",".join(t.deployment.tags))
        for t in targets
    ]  # fmt: skip
    table = tabulate(rows, headers=["deployment", "url", "store", "backup name", "tags"])
    limits = (
        f"{len(targets)} targets on {deployments} deployments; concurrency {settings.concurrency} requests, "
        f"max running jobs {settings.max_running or 'no cap'}, poll from {settings.poll_initial:g} s, gaps up to "
        f"{settings.poll_lag:.0%} of a job's running time and {settings.poll_max:g} s, "
        f"job timeout {settings.job_timeout:g} s, deadline "
        f"{settings.deadline or 'none'}, max failures {settings.max_failures or 'none'}, retries {settings.retries}"
    )
    return f"{table}\n\n{limits}"


def checks_table(checks: list[Preflight]) -> str:
    return tabulate(
        [(c.deployment, c.version or "?", c.verdict) for c in checks], headers=["deployment", "version", "check"]
    )


def runs_text(listing: Runs) -> str:
    """The latest runs of a ledger, with their counts and what can be done with each."""
    if not listing.runs:
        return f"no runs yet in {listing.ledger}"
    rows = []
    for record in listing.runs:
        state = record.state
        if record.run_id == listing.active:
            state = "running now"
        elif state == "running":
            state = "killed: resume it"
        elif state == "interrupted":
            state = "interrupted: resume it"
        counts = record.outcomes
        others = sum(n for o, n in counts.items() if o not in ("succeeded", "failed", "timed_out"))
        rows.append(
            (
                record.run_id,
                record.kind + (f" of {record.parent_run_id}" if record.parent_run_id else ""),
                state + (f" ({record.resumes}x resumed)" if record.resumes else ""),
                iso(record.started_at),
                sum(counts.values()),
                counts.get("succeeded", 0),
                counts.get("failed", 0) + counts.get("timed_out", 0),
                others,
                Path(record.inventory).name,
            )
        )
    headers = ["run id", "kind", "state", "started", "targets", "ok", "failed", "other", "inventory"]
    return f"{tabulate(rows, headers=headers)}\n\nledger: {listing.ledger}"


def audit_lines(audited: Audited) -> list[str]:
    """The end of an audit: its verdict in one line, the counts, the controls failed, where its report is."""
    summary = audited.summary
    counts = [(v, summary[v]) for v in ("compliant", "violation", "unknown") if summary[v]]
    lines = [tabulate([*counts, ("total", summary["targets"])], headers=["verdict", "targets"], tablefmt="simple")]
    failed = [f"{control} {count}" for control, count in summary["by_control"].items() if count]
    if failed:
        lines.append(f"violations by control: {', '.join(failed)}")
    if audited.interrupted:
        lines.append("the audit was interrupted: targets not read are reported unknown")
    lines += [
        verdict_line(summary),
        f"audit id: {audited.audit_id}",
        f"report: {audited.folder / 'compliance.html'} (also compliance.md, .json, .csv, .junit.xml)",
    ]
    return lines
