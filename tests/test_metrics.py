"""The Prometheus textfile: the metrics parse back with their names, labels and values, the file is replaced
atomically, and each target's last good backup comes from the ledger across runs."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.audit.controls import AuditTarget, Control, StoreFacts, Verdict, Violation
from orchestrator.audit.policy import Policy
from orchestrator.audit.report import compliance_document
from orchestrator.dr import Backup
from orchestrator.errors import ErrorClass, InputError, TargetError
from orchestrator.ledger import Ledger
from orchestrator.metrics import check_metrics_file, write_audit_metrics, write_run_metrics
from orchestrator.model import Outcome, RunResult, TargetState, build_targets
from orchestrator.settings import RunSettings
from tests.conftest import make_deployment
from tests.test_files import umask_of

START = 1_795_741_200.0
HOSTILE = 'gis "eu"\\7\n} # <x>'  # quotes, a backslash, a newline, a brace: escaped by prometheus_client


def _samples(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the file, by sample name, as (labels, value)."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    (value,) = [v for have, v in samples[name] if all(have.get(k) == w for k, w in labels.items())]
    return value


def _result(report_dir: Path) -> RunResult:
    deployments = [make_deployment("gis-1", ("default",)), make_deployment(HOSTILE, ()), make_deployment("gis-3")]
    targets = build_targets(deployments, name_template="b-{deployment}-{store}", run_id="r2", started_at=START)
    ok, failed, not_started = targets
    ok.submitted_at = START + 5
    ok.finish(Outcome.SUCCEEDED, START + 65)
    failed.submitted_at = START + 5
    failed.fail(TargetError(ErrorClass.JOB_FAILED, "job failed"), START + 25)
    not_started.finish(Outcome.NOT_STARTED, START + 600)
    return RunResult("r2", START, START + 600, targets, RunSettings(report_dir=report_dir), "i.toml")


def test_a_run_writes_targets_by_outcome_its_times_and_each_target(tmp_path: Path) -> None:
    """Names, labels and values as parsed back by prometheus_client; a target's deployment name is kept as
    given, however hostile; a target that never succeeded has a last success at 0, so a "no good backup for
    26 h" alert fires for it too."""
    path = tmp_path / "arcgis_backup.prom"
    write_run_metrics(path, _result(tmp_path), {(HOSTILE, ""): START - 86_400.0})
    samples = _samples(path)
    assert _one(samples, "arcgis_backup_run_info", kind="run", run_id="r2") == 1
    assert {labels["outcome"]: value for labels, value in samples["arcgis_backup_targets"]} == {
        "succeeded": 1, "failed": 1, "timed_out": 0, "not_started": 1, "interrupted": 0, "skipped": 0,
    }  # fmt: skip
    assert _one(samples, "arcgis_backup_run_start_timestamp_seconds", kind="run") == START
    assert _one(samples, "arcgis_backup_run_end_timestamp_seconds", kind="run") == START + 600
    assert _one(samples, "arcgis_backup_run_duration_seconds", kind="run") == 600
    outcomes = {
        (labels["deployment"], labels["store"]): labels["outcome"]
        for labels, _ in samples["arcgis_backup_target_outcome"]
    }
    assert outcomes == {
        ("gis-1", "default"): "succeeded",
        (HOSTILE, "(default store)"): "failed",
        ("gis-3", "default"): "not_started",
    }
    last = {
        (labels["deployment"], labels["store"]): v
        for labels, v in samples["arcgis_backup_last_success_timestamp_seconds"]
    }
    # gis-1: tonight's success (not yet in the ledger read); the hostile one: its older success, found by its
    # store key (a default store as ""); gis-3: never succeeded, 0
    assert last == {
        ("gis-1", "default"): START + 65, (HOSTILE, "(default store)"): START - 86_400.0, ("gis-3", "default"): 0
    }  # fmt: skip
    jobs = {
        (labels["deployment"], labels["store"]): v for labels, v in samples["arcgis_backup_last_job_duration_seconds"]
    }
    assert jobs == {("gis-1", "default"): 60.0, (HOSTILE, "(default store)"): 20.0}


def _ledger_run(ledger: Ledger, run_id: str, started_at: float, outcome: Outcome) -> list[TargetState]:
    targets = build_targets(
        [make_deployment("gis-1", ()), make_deployment("gis-2", ("fs",))],
        name_template="b",
        run_id=run_id,
        started_at=started_at,
    )
    ledger.begin_run(
        run_id=run_id, kind="run", parent_run_id="", inventory="/inv.toml", settings={}, started_at=started_at,
        targets=targets,
    )  # fmt: skip
    for target in targets:
        target.store = "resolved-store" if target.default_store else target.store  # what the run learnt
        target.submitted_at = started_at + 1
        if target.deployment.name == "gis-1":
            target.finish(outcome, started_at + 61)
        else:
            target.finish(Outcome.SUCCEEDED, started_at + 31)
    ledger.end_run(run_id, started_at + 100, "", targets)
    return targets


def test_a_target_that_failed_tonight_keeps_the_time_of_its_older_success(tmp_path: Path) -> None:
    """Two runs in the ledger: gis-1 succeeded in the first and failed in the second; its last success is the
    first run's, matched by its store key whatever its default store resolved to."""
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    try:
        _ledger_run(ledger, "r1", START - 86_400, Outcome.SUCCEEDED)
        tonight = _ledger_run(ledger, "r2", START, Outcome.FAILED)
        _ledger_run(ledger, "other", START, Outcome.SUCCEEDED)  # another inventory's run: not counted...
        ledger._db.execute("UPDATE runs SET inventory = '/other.toml' WHERE run_id = 'other'")
        last = ledger.last_successes("/inv.toml")
    finally:
        ledger.close()
    assert last == {("gis-1", ""): START - 86_400 + 61, ("gis-2", "fs"): START + 31}
    result = RunResult("r2", START, START + 100, tonight, RunSettings(report_dir=tmp_path), "/inv.toml")
    path = tmp_path / "m.prom"
    write_run_metrics(path, result, last)
    samples = _samples(path)
    assert _one(samples, "arcgis_backup_last_success_timestamp_seconds", deployment="gis-1") == START - 86_400 + 61
    assert _one(samples, "arcgis_backup_target_outcome", deployment="gis-1", store="resolved-store") == 1


def _audit_document() -> dict[str, Any]:
    good = Backup("nightly", "completed", "11.3.0", START - 7200, START - 3600, None)
    facts = StoreFacts(last_good=good, newest=good, good_backups=1, days_covered=1)
    old = StoreFacts(last_good=None, newest=None, good_backups=0, days_covered=0)
    targets = [
        AuditTarget(make_deployment("gis-1"), "default", Verdict.COMPLIANT, START, facts=facts),
        AuditTarget(
            make_deployment(HOSTILE), "fs", Verdict.VIOLATION, START, (Violation(Control.RECENT, "none"),), facts=old
        ),
        AuditTarget(make_deployment("gis-3"), "default", Verdict.UNKNOWN, START, (), "unreachable", "refused"),
    ]
    return compliance_document(
        targets, audit_id="a1", audited_at=START, finished_at=START + 9, inventory="i", policy=Policy().describe()
    )


def test_an_audit_writes_each_verdict_the_newest_good_age_and_the_counts(tmp_path: Path) -> None:
    """Per target its verdict (1) and, where it has a good backup, its age at the audit; counts by verdict."""
    path = tmp_path / "audit.prom"
    write_audit_metrics(path, _audit_document())
    samples = _samples(path)
    verdicts = {
        (labels["deployment"], labels["store"]): (labels["verdict"], v)
        for labels, v in samples["arcgis_backup_compliance"]
    }
    assert verdicts == {
        ("gis-1", "default"): ("compliant", 1),
        (HOSTILE, "fs"): ("violation", 1),
        ("gis-3", "default"): ("unknown", 1),
    }
    assert [(labels, v) for labels, v in samples["arcgis_backup_newest_good_age_seconds"]] == [
        ({"deployment": "gis-1", "store": "default"}, 3600.0)
    ]
    assert _one(samples, "arcgis_backup_newest_good_timestamp_seconds", deployment="gis-1") == START - 3600
    assert {labels["verdict"]: v for labels, v in samples["arcgis_backup_audit_targets"]} == {
        "compliant": 1, "violation": 1, "unknown": 1,
    }  # fmt: skip
    assert _one(samples, "arcgis_backup_audit_violations", control="recent") == 1
    assert _one(samples, "arcgis_backup_audit_end_timestamp_seconds") == START + 9


def test_the_file_is_replaced_atomically_from_a_private_temporary_in_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is from a new file in the same folder (one filesystem), not named *.prom (never collected),
    already complete and written by its owner only; the result is readable by node_exporter, whatever the umask."""
    renames: list[tuple[Path, Path, int, str]] = []
    real_replace = os.replace

    def spy(source: Any, destination: Any) -> None:
        source = Path(source)
        renames.append((source, Path(destination), stat.S_IMODE(os.stat(source).st_mode), source.read_text()))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "arcgis_backup.prom"
    with umask_of(0):
        write_audit_metrics(path, _audit_document())
    ((source, destination, mode, text),) = renames
    assert source.parent == destination.parent == tmp_path and destination == path
    assert not source.name.endswith(".prom") and source.name.startswith(".")
    assert mode == 0o644 and text == path.read_text() and "arcgis_backup_compliance" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arcgis_backup.prom"]


def test_a_write_that_fails_leaves_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape never sees a partial file: when the write breaks, the previous metrics are still there, whole."""
    path = tmp_path / "arcgis_backup.prom"
    write_audit_metrics(path, _audit_document())
    before = path.read_text()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_run_metrics(path, _result(tmp_path), {})
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arcgis_backup.prom"]


def test_a_link_planted_at_a_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    """The temporary is created new (O_EXCL|O_NOFOLLOW) under an unpredictable name: a link planted beside the
    file, at the name prometheus_client's own writer would use, is left untouched, as is what it points to."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "arcgis_backup.prom"
    (tmp_path / f"arcgis_backup.prom.{os.getpid()}.1").symlink_to(victim)
    write_audit_metrics(path, _audit_document())
    assert victim.read_text() == "precious\n" and "arcgis_backup_compliance" in path.read_text()


def test_a_metrics_file_that_would_not_be_collected_or_written_is_refused_before_the_run(tmp_path: Path) -> None:
    """Not *.prom, no such folder, a folder: an InputError naming the fix, before anything is sent."""
    check_metrics_file(tmp_path / "ok.prom")
    for bad, words in (
        (tmp_path / "metrics.txt", "only *.prom"),
        (tmp_path / "missing" / "m.prom", "no folder"),
    ):
        with pytest.raises(InputError, match=words.replace("*", r"\*")):
            check_metrics_file(bad)
    (tmp_path / "dir.prom").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_metrics_file(tmp_path / "dir.prom")
