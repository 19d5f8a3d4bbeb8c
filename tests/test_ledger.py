"""The run ledger: intents on disk before creates, one run per ledger, resume after SIGKILL anywhere,
exactly one backup per target, and the commands over past runs (runs, report, retry)."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from orchestrator.cli import main
from orchestrator.errors import InputError
from orchestrator.events import Event, EventKind
from orchestrator.history import read_past
from orchestrator.ledger import SCHEMA_VERSION, Ledger, target_row
from orchestrator.memory import Remembered
from orchestrator.model import Deployment, Outcome, Phase, TargetState, build_targets
from orchestrator.recorder import LedgerWriter
from tests.test_cli_run import FAST, Simulator, _simulator
from tests.test_files import UMASKS, mode_of, umask_of

SECRET_PASSWORD = "hunter2-password"
SECRET_PASSCODE = "passcode-never-on-disk"


def _deployment(name: str = "gis-1") -> Deployment:
    return Deployment(
        name=name,
        url=f"https://{name}.example.com/arcgis",
        tags=("prod",),
        stores=("default", "offsite"),
        username="admin",
        password=SecretStr(SECRET_PASSWORD),
        passcode=SecretStr(SECRET_PASSCODE),
        retention_days=14,
        ca_bundle=None,
        verify_tls=True,
        source="test:1",
    )


def _targets() -> list[TargetState]:
    return build_targets([_deployment()], name_template="b-{deployment}-{store}", run_id="r1", started_at=1e9)


def _begin(ledger: Ledger, targets: list[TargetState], run_id: str = "r1") -> None:
    ledger.begin_run(
        run_id=run_id,
        kind="run",
        parent_run_id="",
        inventory="/inv.toml",
        settings={"concurrency": 3},
        started_at=1e9,
        targets=targets,
    )


def _get(simulator: Simulator, what: str) -> list[dict[str, Any]]:
    """The simulator's records of `what`, for this test's deployments only (all, for a fleet of its own)."""
    with urllib.request.urlopen(f"{simulator.base_url}/_simulator/{what}", timeout=5) as response:
        items: list[dict[str, Any]] = json.load(response)["items"]
    return [item for item in items if not simulator.deployments or item["deployment"] in simulator.deployments]


# -- the ledger itself --


def test_no_secret_reaches_a_ledger_row(tmp_path: Path) -> None:
    """Target rows carry names, URLs and outcomes; never the password or passcode the deployment holds."""
    ledger = Ledger.open(tmp_path / "l.sqlite3")
    targets = _targets()
    targets[0].notes.append("a note")
    _begin(ledger, targets)
    ledger.close()
    assert all(SECRET_PASSWORD not in str(v) and SECRET_PASSCODE not in str(v) for v in target_row("r1", targets[0]))
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("l.sqlite3*"))  # the WAL is merged on close
    assert SECRET_PASSWORD.encode() not in raw and SECRET_PASSCODE.encode() not in raw
    assert b"gis-1.example.com" in raw  # the check above would pass on an empty file: it is not empty


def test_a_second_run_on_the_same_ledger_is_refused(tmp_path: Path) -> None:
    """The run lock: a second holder is refused with who holds it; once released, the ledger is free."""
    first, second = Ledger.open(tmp_path / "l.sqlite3"), Ledger.open(tmp_path / "l.sqlite3")
    with first.lock("run-a"):
        assert second.active_run() == "run-a"
        with pytest.raises(InputError) as refused, second.lock("run-b"):
            pass
        assert f"run run-a, pid {os.getpid()}" in refused.value.problems[0]
        assert "--ledger PATH" in refused.value.problems[0]
    assert second.active_run() is None
    with second.lock("run-b"):
        assert first.active_run() == "run-b"


def _every_field_set() -> TargetState:
    """A target with every kept field away from its default, so a field the ledger drops cannot go unseen."""
    target = _targets()[1]
    target.create_intended, target.accepted_at, target.default_store = True, 1e9 + 3.5, True
    target.job_id, target.server_status, target.error_class, target.error = "j9", "FAILED", "job_failed", "disk full"
    target.attempts, target.polls, target.submitted_at, target.ran_s = 3, 7, 1e9 + 1.25, 42.5
    target.version, target.verified, target.facts_read_at = "11.3.0", True, 1e9 - 3600.0
    target.notes.extend(["first note", "second note"])
    target.outcome, target.finished_at = Outcome.FAILED, 1e9 + 60.0
    return target


def test_every_kept_field_of_the_record_round_trips_through_the_ledger(tmp_path: Path) -> None:
    """What the ledger writes of a target is what it reads back, field by field; the deployment as recorded
    (name, URL, tags, TLS), without its credentials; the fields of one run only are not kept."""
    ledger = Ledger.open(tmp_path / "l.sqlite3")
    target = _every_field_set()
    target.dr_mark, target.expected_s = 5.0, 9.0  # runtime only
    target.remembered = Remembered("11.3.0", "offsite", 1e9, "https://gis-1.example.com/arcgis")
    _begin(ledger, [target])
    (read,) = ledger.targets("r1")
    ledger.close()
    kept = {f.name for f in fields(TargetState)} - {"deployment", "phase", "dr_mark", "expected_s", "remembered"}
    assert {name: getattr(read, name) for name in kept} == {name: getattr(target, name) for name in kept}
    assert (read.deployment.name, read.deployment.url, read.deployment.tags, read.deployment.verify_tls) == (
        "gis-1", "https://gis-1.example.com/arcgis", ("prod",), True,
    )  # fmt: skip
    assert read.deployment.password.get_secret_value() == "" and read.deployment.passcode.get_secret_value() == ""
    assert (read.dr_mark, read.expected_s, read.remembered) == (None, None, None)
    assert read.phase is Phase.DONE  # read back ended


# The targets table's columns as schema 2 spelled them out by hand, in the order ledgers in the field have them,
# and the columns the upgrades to schemas 3, 4 and 5 append.
SCHEMA_5_COLUMNS = (
    "run_id TEXT NOT NULL", "idx INTEGER NOT NULL", "deployment TEXT NOT NULL", "url TEXT NOT NULL",
    "verify_tls INTEGER NOT NULL", "tags TEXT NOT NULL", "store TEXT NOT NULL", "backup_name TEXT NOT NULL",
    "retention_ms INTEGER", "create_intended INTEGER NOT NULL", "accepted_at REAL", "default_store INTEGER NOT NULL",
    "outcome TEXT NOT NULL", "job_id TEXT NOT NULL", "server_status TEXT NOT NULL", "error_class TEXT NOT NULL",
    "error TEXT NOT NULL", "attempts INTEGER NOT NULL", "polls INTEGER NOT NULL", "submitted_at REAL",
    "finished_at REAL", "notes TEXT NOT NULL", "ran_s REAL", "version TEXT NOT NULL DEFAULT ''",
    "verified INTEGER NOT NULL DEFAULT 0", "facts_read_at REAL",
)  # fmt: skip


@pytest.mark.parametrize("order", ["as schema 2 wrote it, upgraded", "reversed"])
def test_rows_are_read_by_name_whatever_the_order_of_the_columns_on_disk(tmp_path: Path, order: str) -> None:
    """A targets table created by hand in schema 2's column order, or in any other, reads every field right."""
    path = tmp_path / "l.sqlite3"
    columns = SCHEMA_5_COLUMNS if order.startswith("as schema 2") else tuple(reversed(SCHEMA_5_COLUMNS))
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE targets ({', '.join(columns)}, PRIMARY KEY (run_id, idx))")
    ledger = Ledger.open(path)
    target = _every_field_set()
    _begin(ledger, [target])
    (read,) = ledger.targets("r1")
    ledger.close()
    assert (read.index, read.deployment.name, read.deployment.tags, read.store, read.notes, read.ran_s) == (
        1, "gis-1", ("prod",), "offsite", target.notes, 42.5,
    )  # fmt: skip
    assert (read.outcome, read.error, read.accepted_at, read.create_intended) == (
        Outcome.FAILED, "disk full", 1e9 + 3.5, True,
    )  # fmt: skip


@pytest.mark.anyio
async def test_an_intent_is_on_disk_before_intend_create_returns(tmp_path: Path) -> None:
    """`intend_create` returns only once another connection can read the intent; unchanged polls write nothing."""
    path = tmp_path / "l.sqlite3"
    ledger = Ledger.open(path)
    targets = _targets()
    _begin(ledger, targets)
    writer = LedgerWriter(ledger, "r1")
    reader = sqlite3.connect(path)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer.run)
        await writer.intend_create(targets[1])
        intended = reader.execute("SELECT idx FROM targets WHERE run_id='r1' AND create_intended=1").fetchall()
        assert intended == [(1,)]
        targets[1].job_id, targets[1].server_status = "j1", "EXECUTING"
        for _ in range(3):
            writer.on_event(Event(EventKind.POLLED, 0.0, targets[1]))
        targets[1].finish(Outcome.SUCCEEDED, 5.0)
        writer.on_event(Event(EventKind.FINISHED, 5.0, targets[1]))
        tasks.cancel_scope.cancel()  # stopping flushes what is queued
    steps = [kind for _, _, kind, _ in ledger.steps("r1")]
    assert steps == ["create_intended", "status", "finished"]
    assert reader.execute("SELECT outcome, job_id FROM targets WHERE idx=1").fetchone() == ("succeeded", "j1")


# -- kill anywhere, then resume: exactly one backup per target --


SLICE = 5  # deployments per test, two stores each


@pytest.fixture(scope="module")
def _shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One fleet in another process for the module (killing a run leaves the servers up); each test gets
    deployments of its own, so what the server counts for them is that test's alone."""
    yield from _simulator(
        tmp_path_factory.mktemp("fleet"), "--deployments", "150", "--stores", "default,offsite",
        "--versions", "11.3=1,12.0=1,10.9=1", "--job-seconds", "0.4",
    )  # fmt: skip


_next_slice = itertools.count()


@pytest.fixture
def fleet(_shared_fleet: Simulator, tmp_path: Path) -> Simulator:
    """This test's slice of the shared fleet: an inventory (and its secrets) naming only its deployments."""
    first = next(_next_slice) * SLICE
    names = {f"gis-{index:04d}" for index in range(first, first + SLICE)}
    source = _shared_fleet.inventory
    head, *entries = source.read_text().split("[[deployments]]")
    mine = [entry for entry in entries if entry.split('"')[1] in names]
    assert len(mine) == SLICE, "the shared fleet is too small for this many tests"
    inventory = tmp_path / source.name
    inventory.write_text(head + "".join("[[deployments]]" + entry for entry in mine))
    shutil.copytree(source.with_suffix(".secrets"), tmp_path / source.with_suffix(".secrets").name)
    return replace(_shared_fleet, inventory=inventory, deployments=frozenset(names))


def _run_process(
    fleet: Simulator, tmp_path: Path, failpoint: str = "", *extra: str, inventory: str | None = None
) -> subprocess.Popen[str]:
    args = ["run", "--inventory", inventory or str(fleet.inventory), "--report-dir", str(tmp_path / "r"), *extra]
    return _orchestrator(*args, "--quiet", *FAST, failpoint=failpoint, cwd=tmp_path)


def _orchestrator(*args: str, failpoint: str = "", cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "ORCHESTRATOR_FAILPOINT": failpoint} if failpoint else dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
    )  # fmt: skip


def _killed(process: subprocess.Popen[str]) -> None:
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _assert_exactly_once(fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """After the resume: every target one row, succeeded; one accepted create and one backup per target."""
    out = capsys.readouterr().out
    run_id = out.split("run id: ")[1].split()[0]
    report: dict[str, Any] = json.loads((tmp_path / "r" / run_id / "report.json").read_text())
    rows = report["targets"]
    assert len(rows) == 2 * SLICE and len({(r["deployment"], r["store"]) for r in rows}) == 2 * SLICE
    assert all(r["outcome"] == "succeeded" for r in rows), [(r["deployment"], r["store"], r["error"]) for r in rows]
    _assert_one_backup_each(fleet)
    names = {(r["deployment"], r["store"]): r["backup_name"] for r in rows}
    assert {(b["deployment"], b["backupStore"]): b["backupName"] for b in _get(fleet, "backups")} == names
    return report


def _assert_one_backup_each(fleet: Simulator) -> None:
    """On the server: one accepted create and one backup for each of the test's targets."""
    accepted = Counter((c["deployment"], c["store"]) for c in _get(fleet, "creates") if c["accepted"])
    assert set(accepted.values()) == {1} and len(accepted) == 2 * SLICE, accepted
    backups = Counter((b["deployment"], b["backupStore"]) for b in _get(fleet, "backups"))
    assert set(backups.values()) == {1} and len(backups) == 2 * SLICE, backups


@pytest.mark.parametrize(
    "failpoint",
    [
        "before_create:3",  # the intent is on disk, the create never sent
        "after_create:1",  # the server accepted the create; its job id was never recorded
        "after_submitted:3",  # the job id is known, maybe not yet committed
        "while_following:6",  # jobs running, some finished
    ],
)
def test_killed_at_any_point_then_resumed_every_target_has_exactly_one_backup(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], failpoint: str
) -> None:
    """SIGKILL at a named point of the run, then `resume`: no target lost, none backed up twice."""
    process = _run_process(fleet, tmp_path, failpoint)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert main(["runs"]) == 0
    assert "killed: resume it" in capsys.readouterr().out
    assert main(["resume"]) == 0
    report = _assert_exactly_once(fleet, tmp_path, capsys)
    if failpoint.startswith("after_create"):  # the one the server took without us knowing was found
        assert any("the server had accepted it" in note or "was accepted" in note for note in _notes(report))


def _notes(report: dict[str, Any]) -> list[str]:
    ledger = Ledger.open(Path(os.environ["ORCHESTRATOR_LEDGER"]))
    try:
        return [note for target in ledger.targets(report["run_id"]) for note in target.notes]
    finally:
        ledger.close()


# Moments nobody chose: the N-th pass through any failpoint, N drawn once from a fixed seed. A slice of ten
# targets passes the failpoints at least 40 times (each target: before and after its create, once submitted,
# polled at least once), so every N below is reached: the kill always lands mid-run.
ARBITRARY_MOMENTS = sorted(random.Random(20261201).sample(range(1, 41), 3))


@pytest.mark.parametrize("moment", ARBITRARY_MOMENTS)
def test_killed_at_an_arbitrary_moment_then_resumed(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], moment: int
) -> None:
    """SIGKILL at a moment nobody chose, as a reboot would: the resume still makes one backup per target."""
    _killed(_run_process(fleet, tmp_path, f"any:{moment}"))
    assert main(["resume"]) == 0
    _assert_exactly_once(fleet, tmp_path, capsys)


def _interrupt_a_run(fleet: Simulator, tmp_path: Path, failpoint: str) -> None:
    """A run stopped by Ctrl-C with no grace at `failpoint` (while jobs run): exit 3, the report written."""
    process = _run_process(fleet, tmp_path, f"{failpoint}:sigint", "--grace", "0")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert "stopping: nothing new is submitted" in err


def test_a_run_stopped_with_ctrl_c_is_resumed_too(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C (with no grace) leaves the run `interrupted`; resume follows its jobs and starts the rest."""
    _interrupt_a_run(fleet, tmp_path, "after_submitted:3")
    assert main(["runs"]) == 0
    assert "interrupted: resume it" in capsys.readouterr().out
    assert main(["resume"]) == 0
    _assert_exactly_once(fleet, tmp_path, capsys)


def test_ctrl_c_then_a_killed_resume_then_another_resume(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Targets cut short by Ctrl-C stay to be carried on even when the resume that reopened them is killed."""
    _interrupt_a_run(fleet, tmp_path, "after_submitted:2")
    _killed(_orchestrator("resume", failpoint="before_create:1"))
    assert main(["resume"]) == 0
    _assert_exactly_once(fleet, tmp_path, capsys)


def _an_hour_passes(fleet: Simulator) -> None:
    """As if the machine had been down for an hour since the last run was killed: the jobs it started have
    ended on the server, and its start, its targets' submissions and acceptances are an hour further in the
    past (the deadline and the job timeouts count from them)."""
    deadline = time.monotonic() + 30
    while any(job["running"] for job in _get(fleet, "jobs")):  # a condition awaited, not a time slept
        assert time.monotonic() < deadline, "the killed run's jobs never ended"
        time.sleep(0.05)
    with closing(sqlite3.connect(os.environ["ORCHESTRATOR_LEDGER"])) as db, db:
        db.execute("UPDATE runs SET started_at = started_at - 3600")
        db.execute("UPDATE targets SET submitted_at = submitted_at - 3600, accepted_at = accepted_at - 3600")


def test_a_resume_after_the_deadline_still_follows_the_create_the_server_took(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between "accepted" and "job id recorded", resumed after the deadline: found and followed, not
    skipped; then `retry` redoes only what was skipped, so no target gets a second backup."""
    _killed(_run_process(fleet, tmp_path, "after_create:1", "--deadline", "600", "--max-running", "1"))
    _an_hour_passes(fleet)
    assert main(["resume"]) == 3  # the deadline stopped submissions
    run_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    rows = json.loads((tmp_path / "r" / run_id / "report.json").read_text())["targets"]
    ((created, store),) = {(c["deployment"], c["store"]) for c in _get(fleet, "creates")}  # the one create sent
    taken = [r for r in rows if (r["deployment"], r["store"]) == (created, store)]
    others = [r for r in rows if (r["deployment"], r["store"]) != (created, store)]
    assert [r["outcome"] for r in taken] == ["succeeded"], taken
    assert {r["outcome"] for r in others} == {"skipped"}
    assert all("the run deadline (600 s) was reached" in r["error"] for r in others)
    assert main(["retry", run_id, "--deadline", "6000", "--max-running", "0"]) == 0
    _assert_one_backup_each(fleet)


def test_a_deployment_unreachable_at_resume_leaves_its_backups_to_the_next_resume(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Jobs known but the deployments unreachable on resume: `interrupted`, not failed, and the run stays
    resumable; `retry` refuses an unfinished run (it could back a target up twice)."""
    _killed(_run_process(fleet, tmp_path, "while_following:2"))
    os.kill(fleet.pid, signal.SIGSTOP)  # an outage: the deployments neither answer nor refuse
    try:
        code = main(["resume", "--request-timeout", "0.5", "--connect-timeout", "0.5", "--retries", "0"])
    finally:
        os.kill(fleet.pid, signal.SIGCONT)
    assert code == 1
    out = capsys.readouterr().out
    run_id = out.split("run id: ")[1].split()[0]
    assert f"`orchestrator resume {run_id}` carries it on" in out
    rows = json.loads((tmp_path / "r" / run_id / "report.json").read_text())["targets"]
    outcomes = Counter(r["outcome"] for r in rows)
    # Created before the kill: "interrupted" (may exist on the server); never started: "failed" (unreachable).
    assert outcomes["interrupted"] >= SLICE and set(outcomes) <= {"interrupted", "failed"}, outcomes
    assert all("`orchestrator resume` looks again" in r["error"] for r in rows if r["outcome"] == "interrupted")
    assert main(["retry", run_id]) == 2
    assert "is unfinished" in capsys.readouterr().err
    # The jobs are followed now; what failed to sign in during the outage stays failed, until retried.
    assert main(["resume"]) == (1 if outcomes["failed"] else 0)
    capsys.readouterr()
    assert main(["retry", run_id, "--report-dir", str(tmp_path / "r")]) == 0  # the run is finished now
    _assert_one_backup_each(fleet)


def test_a_resume_long_after_the_job_timeout_still_sees_the_jobs_end(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The morning after: the job timeout passed while the machine was down, yet jobs that completed are
    found completed, not timed out."""
    _killed(_run_process(fleet, tmp_path, "while_following:2", "--job-timeout", "600"))
    _an_hour_passes(fleet)
    assert main(["resume"]) == 0
    report = _assert_exactly_once(fleet, tmp_path, capsys)
    assert not [r for r in report["targets"] if "no end after" in r["error"]]


def test_resume_from_another_directory_with_a_relative_inventory(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started as `--inventory fleet.toml` is resumed from anywhere: the ledger keeps absolute paths."""
    _killed(_run_process(fleet, tmp_path, "after_create:2", inventory=fleet.inventory.name))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["resume"]) == 0
    _assert_exactly_once(fleet, tmp_path, capsys)


# -- runs, report, retry, and what changed since the last run --


@pytest.fixture
def shaky_fleet(tmp_path: Path) -> Iterator[Simulator]:
    """Three deployments; one fails every backup job."""
    fleet_file = tmp_path / "fleet-file.toml"
    fleet_file.write_text(
        'count = 3\nversions = { "11.3" = 1 }\njob_duration = { dist = "fixed", value = 0.3 }\n'
        '[[deployments]]\nname = "broken"\nfaults = { job_failure = 1.0 }\n'
    )
    yield from _simulator(tmp_path, "--fleet", str(fleet_file))


def test_runs_report_retry_and_changes(
    shaky_fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`runs` lists a run with its counts; `report` rewrites it from the ledger alone; `retry` redoes
    only what did not succeed; the next run over the inventory says what changed."""
    base = ["--inventory", str(shaky_fleet.inventory), "--report-dir", str(tmp_path / "r"), "--quiet", *FAST]
    base += ["--name-template", "b-{run_id}-{deployment}"]  # runs a second apart: {timestamp} alone would clash
    assert main(["run", *base]) == 1
    first_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    first = json.loads((tmp_path / "r" / first_id / "report.json").read_text())
    assert first["changes"] == {}  # nothing to compare with yet

    assert main(["runs"]) == 0
    listing = capsys.readouterr().out
    assert first_id in listing and "finished" in listing

    rewritten_dir = tmp_path / "again"
    assert main(["report", first_id, "--report-dir", str(rewritten_dir)]) == 0
    rewritten = json.loads((rewritten_dir / first_id / "report.json").read_text())
    assert rewritten["targets"] == first["targets"] and rewritten["summary"] == first["summary"]

    assert main(["retry", first_id, "--select", "name=gis-*"]) == 0  # --select narrows what is retried
    assert "nothing to retry" in capsys.readouterr().out
    assert main(["retry", first_id, "--quiet", "--report-dir", str(tmp_path / "r")]) == 1
    retry_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    retried = json.loads((tmp_path / "r" / retry_id / "report.json").read_text())
    assert [t["deployment"] for t in retried["targets"]] == ["broken"]
    assert retried["kind"] == "retry" and retried["parent_run_id"] == first_id
    assert retried["settings"]["poll_initial"] == 0.1  # the first run's settings, not the defaults

    assert main(["run", *base, "--select", "name=gis-*"]) == 0
    capsys.readouterr()
    assert main(["run", *base]) == 1
    last_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    last = json.loads((tmp_path / "r" / last_id / "report.json").read_text())
    assert last["changes"]["previous_run_id"] != first_id  # compared with the run just before it
    assert [c["target"] for c in last["changes"]["newly_failing"]] == []
    markdown = (tmp_path / "r" / last_id / "report.md").read_text()
    assert "## Since the previous run" in markdown


def test_each_target_expects_the_duration_of_its_latest_successes(
    shaky_fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a run, the ledger tells the next one how long each target's job ran, as the poller measured it;
    a target that only failed has no expectation."""
    base = ["--inventory", str(shaky_fleet.inventory), "--report-dir", str(tmp_path / "r"), "--quiet", *FAST]
    base += ["--name-template", "b-{run_id}-{deployment}"]
    assert main(["run", *base]) == 1
    run_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    ledger = Ledger.open(Path(os.environ["ORCHESTRATOR_LEDGER"]))
    try:
        inventory_key = ledger.run(run_id).inventory
        expected = read_past(ledger, inventory_key, before=time.time() + 1).expected_s
        rows = ledger.targets(run_id)
        assert read_past(ledger, inventory_key, before=ledger.run(run_id).started_at).expected_s == {}
    finally:
        ledger.close()
    assert sorted(expected) == [("gis-0000", ""), ("gis-0001", ""), ("gis-0002", "")]  # "broken" never succeeded
    for row in rows:  # as measured: never more than from acceptance to the moment it was seen ended
        if row.deployment.name != "broken":
            assert row.ran_s is not None and row.accepted_at is not None and row.finished_at is not None
            assert 0 < row.ran_s <= row.finished_at - row.accepted_at
            assert expected[(row.deployment.name, "")] == row.ran_s


def test_a_ledger_of_the_previous_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    """A version-1 ledger (before `ran_s`) keeps its history: the column is added, the runs stay readable."""
    path = tmp_path / "v1.sqlite3"
    Ledger.open(path).close()
    with sqlite3.connect(path) as db:  # back to what version 1 wrote
        db.execute("ALTER TABLE targets DROP COLUMN ran_s")
        db.execute("ALTER TABLE targets DROP COLUMN version")
        db.execute("ALTER TABLE targets DROP COLUMN verified")
        db.execute("ALTER TABLE targets DROP COLUMN facts_read_at")
        db.execute(
            "INSERT INTO runs (run_id, kind, parent_run_id, inventory, settings, started_at, state) "
            "VALUES ('r1', 'run', '', 'inv', '{}', 1.0, 'finished')"
        )
        db.execute("PRAGMA user_version = 1")
    ledger = Ledger.open(path)
    try:
        assert ledger.run("r1").state == "finished" and ledger.targets("r1") == []
    finally:
        ledger.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {column[1] for column in db.execute("PRAGMA table_info(targets)")}
        assert {"ran_s", "version", "facts_read_at"} <= columns


def test_resume_refuses_a_finished_run_and_retry_has_nothing_to_do(
    shaky_fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished run is not resumed (retry is the way); retrying a run with nothing failed does nothing."""
    base = ["--inventory", str(shaky_fleet.inventory), "--report-dir", str(tmp_path / "r"), "--quiet", *FAST]
    assert main(["run", *base, "--select", "name=gis-*"]) == 0
    run_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    assert main(["resume", run_id]) == 2
    assert f"orchestrator retry {run_id}" in capsys.readouterr().err
    assert main(["retry", run_id]) == 0
    assert "nothing to retry" in capsys.readouterr().out
    assert main(["report", "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err


@pytest.mark.parametrize("schema", [2, 3, 4])
def test_an_older_ledger_gains_the_snapshot_and_memory_columns_and_its_rows_read_their_defaults(
    tmp_path: Path, schema: int
) -> None:
    """Rows written before `version` (schema 3), `verified` (schema 4) or `facts_read_at` (schema 5) existed read
    back with the record's defaults, not NULL."""
    path = tmp_path / "old.sqlite3"
    ledger = Ledger.open(path)
    _begin(ledger, [_every_field_set()])
    ledger.close()
    with sqlite3.connect(path) as db:
        if schema == 2:
            db.execute("ALTER TABLE targets DROP COLUMN version")
        if schema <= 3:
            db.execute("ALTER TABLE targets DROP COLUMN verified")
        db.execute("ALTER TABLE targets DROP COLUMN facts_read_at")
        db.execute(f"PRAGMA user_version = {schema}")
    ledger = Ledger.open(path)
    try:
        (read,) = ledger.targets("r1")
    finally:
        ledger.close()
    assert read.version == ("" if schema == 2 else "11.3.0") and read.verified is (schema == 4)
    assert read.facts_read_at is None and read.ran_s == 42.5


def test_a_ledger_of_another_schema_is_refused_not_misread(tmp_path: Path) -> None:
    """A ledger written by another version is refused, naming the fix, before anything is written to it."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY)")
    with pytest.raises(InputError) as refused:
        Ledger.open(path)
    assert "written by another version" in refused.value.problems[0] and "--ledger" in refused.value.problems[0]
    Ledger.open(tmp_path / "new.sqlite3").close()
    Ledger.open(tmp_path / "new.sqlite3").close()  # its own schema: opened again without complaint


# -- the ledger's files: private, never through a link --


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_the_ledger_its_wal_shm_and_lock_are_0600_in_a_0700_folder(tmp_path: Path, mask: int) -> None:
    """The ledger names every deployment and run (and the lock, the run id): only its owner reads them,
    whatever the umask; SQLite's -wal and -shm files follow the ledger's own mode."""
    path = tmp_path / "state" / "app" / "l.sqlite3"
    with umask_of(mask):
        ledger = Ledger.open(path)
        try:
            with ledger.lock("r1"):
                _begin(ledger, _targets())
                files = sorted(p.name for p in path.parent.iterdir())
                modes = {name: mode_of(path.parent / name) for name in files}
        finally:
            ledger.close()
    assert files == ["l.sqlite3", "l.sqlite3-shm", "l.sqlite3-wal", "l.sqlite3.lock"]
    assert set(modes.values()) == {0o600}
    assert mode_of(tmp_path / "state") == mode_of(path.parent) == 0o700


def test_a_ledger_left_readable_by_an_older_version_is_made_0600(tmp_path: Path) -> None:
    """A ledger (and the -wal, -shm a killed run left) written 0644 before this version is tightened on open."""
    path = tmp_path / "l.sqlite3"
    Ledger.open(path).close()
    for name in ("l.sqlite3", "l.sqlite3-wal", "l.sqlite3-shm"):
        (tmp_path / name).touch()
        os.chmod(tmp_path / name, 0o644)
    Ledger.open(path).close()
    assert mode_of(path) == 0o600
    assert all(mode_of(p) == 0o600 for p in tmp_path.glob("l.sqlite3-*"))


@pytest.mark.parametrize("name", ["l.sqlite3", "l.sqlite3-wal", "l.sqlite3-shm"])
def test_a_link_planted_at_the_ledger_is_refused_and_its_target_unchanged(tmp_path: Path, name: str) -> None:
    """A link where the ledger (or its -wal, -shm) goes is refused before SQLite opens anything, naming the
    path and the fix; the file it points at is unchanged."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / name).symlink_to(victim)
    with pytest.raises(InputError) as refused:
        Ledger.open(tmp_path / "l.sqlite3")
    (problem,) = refused.value.problems
    assert problem.startswith(f"ledger {tmp_path / name}: is a symbolic link") and "--ledger PATH" in problem
    assert victim.read_text() == "precious\n"


def test_a_link_planted_at_the_ledger_lock_is_refused_and_its_target_unchanged(tmp_path: Path) -> None:
    """The lock file (which names the run) is never opened through a link: a planted one is refused before
    the run starts, and the file it points at is neither truncated nor written."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    ledger = Ledger.open(tmp_path / "l.sqlite3")
    (tmp_path / "l.sqlite3.lock").symlink_to(victim)
    try:
        with pytest.raises(InputError) as refused, ledger.lock("r1"):
            pass
    finally:
        ledger.close()
    (problem,) = refused.value.problems
    assert problem.startswith(f"ledger lock {tmp_path / 'l.sqlite3.lock'}: is a symbolic link")
    assert "remove it" in problem and "--ledger PATH" in problem
    assert victim.read_text() == "precious\n"


def test_looking_at_who_holds_the_ledger_never_follows_or_blocks_on_what_was_planted(tmp_path: Path) -> None:
    """`orchestrator runs` asks who holds the ledger: a FIFO or a link at the lock is reported, never opened."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger.open(path)
    try:
        os.mkfifo(path.with_name("ledger.sqlite3.lock"))
        assert ledger.active_run() == "?"  # would block forever reading a FIFO
        path.with_name("ledger.sqlite3.lock").unlink()
        victim = tmp_path / "victim"
        victim.write_text("run someone-else, pid 1\n")
        path.with_name("ledger.sqlite3.lock").symlink_to(victim)
        assert ledger.active_run() == "?"
    finally:
        ledger.close()
