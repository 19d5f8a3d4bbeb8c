"""Prometheus metrics of a run (a retry, a snapshot) or an audit, for node_exporter's textfile collector.

Each write builds its own `CollectorRegistry` of gauges and renders it with prometheus_client (which escapes
the label values: deployment and store names are kept as given, whatever they hold), then replaces the file
atomically (`write_textfile`). The names follow Prometheus' conventions: `arcgis_backup_` and snake_case,
seconds and epoch seconds (`_seconds`, `_timestamp_seconds`), one series per target labelled `deployment`
and `store` (the store as the reports name it).

A run's metrics (`write_run_metrics`), every series labelled with the run's `kind` (run, retry, demo,
snapshot), so that two commands writing two files never collide in the collector:

    arcgis_backup_run_info{run_id}                       1
    arcgis_backup_targets{outcome}                       targets by outcome (every outcome, 0 included)
    arcgis_backup_run_start_timestamp_seconds            when it started, ended, and how long it took
    arcgis_backup_run_end_timestamp_seconds
    arcgis_backup_run_duration_seconds
    arcgis_backup_target_outcome{deployment,store,outcome}     1, for the outcome each target had
    arcgis_backup_last_success_timestamp_seconds{deployment,store}   its latest successful backup (the
                                                         ledger's, this run's included); none if it never had one
    arcgis_backup_last_job_duration_seconds{deployment,store}  its job in this run, first create to end, if any

An audit's (`write_audit_metrics`, from the compliance document):

    arcgis_backup_compliance{deployment,store,verdict}   1, for each target's verdict
    arcgis_backup_newest_good_age_seconds{deployment,store}        its newest good backup's age at the audit
    arcgis_backup_newest_good_timestamp_seconds{deployment,store}  and when it completed (none without one)
    arcgis_backup_audit_targets{verdict}                 targets by verdict (0 included)
    arcgis_backup_audit_violations{control}              violations by control
    arcgis_backup_audit_start_timestamp_seconds, arcgis_backup_audit_end_timestamp_seconds
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from orchestrator.errors import InputError
from orchestrator.model import Outcome, RunResult, TargetState

PREFIX: Final = "arcgis_backup"
# Readable by node_exporter, which runs as a user of its own, and written by this user only. Nothing in the
# file is secret (names, outcomes, times: no URL, no server text); its folder decides who reaches it.
METRICS_FILE_MODE: Final = 0o644
SUFFIX: Final = ".prom"  # the textfile collector reads only these
_OUTCOMES: Final = tuple(o.value for o in Outcome if o is not Outcome.PENDING)
_SURROGATES: Final = re.compile(r"[\ud800-\udfff]")
_TARGET: Final = ("deployment", "store")

# An audit's verdicts, as its document spells them (`audit.controls.Verdict`): read from the document, so
# this module needs nothing of the audit's package (which imports it).
VERDICTS: Final = ("compliant", "violation", "unknown")


def write_run_metrics(path: Path, result: RunResult, last_success: Mapping[tuple[str, str], float]) -> None:
    """Write a run's (a retry's, a snapshot's) metrics to `path`, atomically. `last_success`: each target's
    latest success by `model.store_key`, as `Ledger.last_successes` reads it; this run's successes count
    whether or not it was read after the run was recorded."""
    registry = CollectorRegistry(auto_describe=True)
    kind = ("kind",)

    def gauge(name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", documentation, (*kind, *labels), registry=registry)

    run = result.kind
    gauge("run_info", "The latest run written here", "run_id").labels(run, result.run_id).set(1)
    by_outcome = gauge("targets", "Targets of the run by outcome", "outcome")
    for outcome in _OUTCOMES:
        by_outcome.labels(run, outcome).set(sum(t.outcome.value == outcome for t in result.targets))
    gauge("run_start_timestamp_seconds", "When the run started").labels(run).set(result.started_at)
    gauge("run_end_timestamp_seconds", "When the run ended").labels(run).set(result.finished_at)
    duration = gauge("run_duration_seconds", "How long the run took, start to end")
    duration.labels(run).set(max(0.0, result.finished_at - result.started_at))
    outcome_of = gauge("target_outcome", "1 for the outcome each target had in the run", *_TARGET, "outcome")
    succeeded_at = gauge(
        "last_success_timestamp_seconds", "When the target's latest successful backup finished, in any run", *_TARGET
    )
    job = gauge("last_job_duration_seconds", "The target's job in this run, first create to end", *_TARGET)
    for target in result.targets:
        labels = (run, _label(target.deployment.name), _label(_store(target)))
        outcome_of.labels(*labels, target.outcome.value).set(1)
        latest = _latest_success(target, last_success.get(target.store_key))
        # 0 for never: "no good backup for 26 h" then fires for a target that never had one, too.
        succeeded_at.labels(*labels).set(latest if latest is not None else 0)
        if target.duration_s is not None:
            job.labels(*labels).set(target.duration_s)
    write_textfile(path, registry)


def write_audit_metrics(path: Path, document: dict[str, Any]) -> None:
    """Write an audit's metrics to `path`, atomically, from its compliance document
    (`audit.report.compliance_document`)."""
    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", documentation, labels, registry=registry)

    audited_at = _epoch(document["audited_at"])
    if audited_at is not None:
        gauge("audit_start_timestamp_seconds", "When the audit started").set(audited_at)
    if (finished_at := _epoch(document["finished_at"])) is not None:
        gauge("audit_end_timestamp_seconds", "When the audit ended").set(finished_at)
    summary = document["summary"]
    by_verdict = gauge("audit_targets", "Targets of the audit by verdict", "verdict")
    for verdict in VERDICTS:
        by_verdict.labels(verdict).set(summary.get(verdict, 0))
    by_control = gauge("audit_violations", "Violations by control", "control")
    for control, count in summary.get("by_control", {}).items():
        by_control.labels(control).set(count)
    verdict_of = gauge("compliance", "1 for each target's verdict", *_TARGET, "verdict")
    age = gauge("newest_good_age_seconds", "How old the target's newest good backup was at the audit", *_TARGET)
    completed = gauge("newest_good_timestamp_seconds", "When the target's newest good backup completed", *_TARGET)
    for row in document["targets"]:
        labels = (_label(row["deployment"]), _label(row["store"]))
        verdict_of.labels(*labels, row["verdict"]).set(1)
        good_at = _epoch(row["last_good_completed_at"])
        if good_at is None:
            continue
        completed.labels(*labels).set(good_at)
        if audited_at is not None:
            age.labels(*labels).set(max(0.0, audited_at - good_at))  # a server clock ahead is not the future
    write_textfile(path, registry)


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """The registry in Prometheus' text format at `path`, replaced atomically: a scrape sees the previous file
    or this one, never half of one; if writing fails the previous file stays and no temporary is left.

    Not `prometheus_client.write_to_textfile`: its temporary, beside the file, has a name anyone can predict
    (`PATH.PID.THREAD`), is opened through whatever link is planted there and truncates it, takes its mode from
    the umask (0666 under umask 0) and is never synced, so a power cut after the rename can leave an empty
    file. Here: a new hidden file in the same folder (the rename stays on one filesystem), created
    O_EXCL|O_NOFOLLOW 0600, written, made METRICS_FILE_MODE, fsynced, renamed over `path` (a rename replaces
    a name and follows no link), the folder fsynced. Its name does not end in .prom: never collected."""
    data = generate_latest(registry)
    folder = path.parent
    temporary = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), METRICS_FILE_MODE)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
    with suppress(OSError):  # the rename itself survives a power cut (not every filesystem allows this)
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def check_metrics_file(path: Path) -> None:
    """Refuse a metrics file that cannot be written or would never be collected, before anything is sent."""
    if path.suffix != SUFFIX:
        raise InputError([f"metrics file {path}: node_exporter reads only *{SUFFIX} files; name it so"])
    if not path.parent.is_dir():
        raise InputError([f"metrics file {path}: no folder {path.parent} (node_exporter's textfile directory)"])
    if path.is_dir():
        raise InputError([f"metrics file {path}: is a folder; name a file in it"])
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError([f"metrics file {path}: cannot write in {path.parent}; choose a folder this user may write"])


def _store(target: TargetState) -> str:
    return target.store or "(default store)"  # as the reports name it


def _label(value: Any) -> str:
    """A label value as given; only lone surrogates, which no UTF-8 file can hold, become U+FFFD."""
    return _SURROGATES.sub("\ufffd", str(value))


def _latest_success(target: TargetState, recorded: float | None) -> float | None:
    """The newer of the ledger's latest success and this run's own, if it succeeded. Pure."""
    tonight = target.finished_at if target.outcome is Outcome.SUCCEEDED else None
    known = [t for t in (recorded, tonight) if t is not None]
    return max(known) if known else None


def _epoch(iso: str | None) -> float | None:
    """A report's ISO 8601 time (`model.iso`) as epoch seconds; None for none or a value that is not one."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None
