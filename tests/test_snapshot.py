"""The pre-upgrade snapshot end to end against the simulator: preflight keeps broken deployments out, every
backup is verified against the version read before, and ready.toml / not-ready.toml are inventories that
`plan` loads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator import usecases
from orchestrator.cli import exit_code, main
from orchestrator.events import Event, EventKind
from orchestrator.inventory import load_inventory
from orchestrator.model import Outcome
from orchestrator.runner import RunControl
from orchestrator.simulator import SimulatedFleet, serve_fleet
from orchestrator.simulator.config import fleet_from_mapping
from orchestrator.simulator.inventory_file import write_inventory
from tests.conftest import PASSWORD, Admin

pytestmark = pytest.mark.anyio
QUICK = {"dist": "uniform", "low": 0.2, "high": 0.5}
FLAGS = {
    "poll_initial": 0.05, "poll_max": 0.3, "retry_initial": 0.02, "retry_max": 0.2, "request_timeout": 3.0,
    "job_timeout": 15.0, "grace": 0.0,
}  # fmt: skip


@asynccontextmanager
async def fleet_with_inventory(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[SimulatedFleet, Any, Path]]:
    config.setdefault("job_duration", QUICK)
    config.setdefault("versions", {"11.3": 1})
    fleet = SimulatedFleet(fleet_from_mapping(config), password=PASSWORD)
    async with serve_fleet(fleet) as sim:
        path = tmp_path / "fleet.toml"
        write_inventory(path, fleet.plans, {p.name: sim.url_of(p.name) for p in fleet.plans}, password=PASSWORD)
        yield fleet, sim, path


def snapshot_plan(inventory: Path, tmp_path: Path, **flags: Any) -> usecases.RunPlan:
    given = {"inventory": inventory, "report_dir": tmp_path / "reports", "purpose": "upgrade to 12.0", **FLAGS}
    return usecases.prepare_run({**given, **flags}, None, kind="snapshot")


async def test_a_snapshot_says_exactly_which_deployments_are_ready(tmp_path: Path) -> None:
    """Wrong credentials and a running DR job fail preflight (nothing submitted to them), a failed job and a
    missing store make their deployments not ready, the rest are ready; exit 1; both inventories load."""
    specs = [
        {"name": "gis-ok"},
        {"name": "gis-two", "stores": ["default", "s3"]},
        {"name": "gis-creds", "wrong_credentials": True},
        {"name": "gis-busy", "job_duration": {"dist": "fixed", "value": 60}},
        {"name": "gis-fails", "faults": {"job_failure": 1.0}},
        {"name": "gis-store"},
    ]
    async with fleet_with_inventory(tmp_path, deployments=specs) as (fleet, sim, inventory):
        inventory.write_text(
            inventory.read_text().replace(
                'name = "gis-store"\n', 'name = "gis-store"\nstores = ["default", "missing"]\n'
            )
        )
        async with aiohttp.ClientSession() as session:
            busy = Admin(session, sim, "gis-busy")
            await busy.sign_in()
            assert "jobid" in await busy.create("someone-elses-backup")
        plan = snapshot_plan(inventory, tmp_path, retention_days=3)
        finished = await usecases.execute(plan)
        creates = {(c.deployment, c.store) for c in fleet.creates if c.accepted}
        backups = {b["backupName"]: b for b in fleet.backups()}
    outcomes = {t.key: (t.outcome.value, t.error_class) for t in finished.result.targets}
    assert outcomes["gis-ok/default"] == ("succeeded", "")
    assert outcomes["gis-two/default"] == outcomes["gis-two/s3"] == ("succeeded", "")
    assert outcomes["gis-creds/(default store)"] == ("failed", "authentication")
    assert outcomes["gis-busy/(default store)"] == ("failed", "transient")
    assert outcomes["gis-fails/default"] == ("failed", "job_failed")
    assert outcomes["gis-store/default"][0] == outcomes["gis-store/missing"][0] == "failed"
    assert ("gis-busy", "default") in creates and sum(1 for c in fleet.creates if c.deployment == "gis-busy") == 1
    assert not any(c.deployment in ("gis-creds", "gis-store") for c in fleet.creates)  # preflight: never submitted
    by_key = {t.key: t for t in finished.result.targets}
    assert "preflight: a DR job is running (someone-elses-backup)" in by_key["gis-busy/(default store)"].error
    assert "no store 'missing'" in by_key["gis-store/missing"].error
    ok = by_key["gis-ok/default"]
    assert ok.backup_name.startswith("pre-upgrade-") and ok.backup_name.endswith("-gis-ok") and ok.version == "11.3.0"
    assert backups[ok.backup_name]["description"] == "pre-upgrade: upgrade to 12.0"
    assert ok.retention_ms is not None and abs(ok.retention_ms / 1000 - finished.result.started_at - 3 * 86_400) < 1
    assert exit_code(finished.result) == 1
    assert finished.readiness is not None and (finished.readiness["ready"], finished.readiness["not_ready"]) == (2, 4)
    ready, not_ready = (finished.folder / "ready.toml", finished.folder / "not-ready.toml")
    assert finished.inventories == (ready, not_ready)
    assert [d.name for d in load_inventory(ready).deployments] == ["gis-ok", "gis-two"]
    assert [d.name for d in load_inventory(not_ready).deployments] == [
        "gis-creds",
        "gis-busy",
        "gis-fails",
        "gis-store",
    ]
    assert load_inventory(not_ready).deployments[-1].stores == ("default", "missing")
    assert main(["plan", "--inventory", str(ready)]) == 0 and main(["plan", "--inventory", str(not_ready)]) == 0
    document = json.loads((finished.folder / "report.json").read_text())
    assert document["kind"] == "snapshot" and document["targets"][0]["ready"] is True
    assert document["targets"][0]["version"] == "11.3.0"
    assert "## Ready for the upgrade" in (finished.folder / "report.md").read_text()
    assert "ready" in (finished.folder / "report.csv").read_text().splitlines()[0]


async def test_a_backup_of_another_release_does_not_count(tmp_path: Path) -> None:
    """A backup listed with a release other than the version read in preflight cannot restore the deployment:
    the target fails, its deployment is not ready, and every deployment ready means exit 0 otherwise."""
    async with fleet_with_inventory(tmp_path, count=2, quirks={"backup_release_suffix": "-patched"}) as (_, _, inv):
        finished = await usecases.execute(snapshot_plan(inv, tmp_path))
    assert [t.outcome for t in finished.result.targets] == [Outcome.FAILED] * 2
    assert (
        "is release 11.3.0-patched, the deployment runs 11.3.0: it cannot restore it"
        in finished.result.targets[0].error
    )
    assert not (finished.folder / "ready.toml").exists() and (finished.folder / "not-ready.toml").exists()
    async with fleet_with_inventory(tmp_path / "good", count=2) as (_, _, inv):
        finished = await usecases.execute(snapshot_plan(inv, tmp_path))
    assert exit_code(finished.result) == 0 and not (finished.folder / "not-ready.toml").exists()


class StopOnSubmit:
    def __init__(self, control: RunControl) -> None:
        self.control = control

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.SUBMITTED:
            self.control.stop()


async def test_an_interrupted_snapshot_is_resumed_as_a_snapshot(tmp_path: Path) -> None:
    """Cut after its first submission, a snapshot resumes with its purpose and retention, verifies every
    backup and writes its inventories."""
    async with fleet_with_inventory(tmp_path, count=3) as (fleet, _, inventory):
        plan = snapshot_plan(inventory, tmp_path, retention_days=0)
        control = RunControl()
        cut = await usecases.execute(plan, observer=StopOnSubmit(control), control=control)
        assert cut.resumable and cut.inventories == ()
        resumed = await usecases.execute(usecases.prepare_resume(plan.run_id, {}, None))
        backups = {b["backupName"]: b for b in fleet.backups()}
    assert resumed.result.kind == "snapshot" and resumed.result.settings.public()["purpose"] == "upgrade to 12.0"
    assert all(t.outcome is Outcome.SUCCEEDED for t in resumed.result.targets)
    assert all(backups[t.backup_name]["retentionDate"] == -1 for t in resumed.result.targets)  # 0: never expires
    assert len(backups) == 3 and resumed.inventories == (resumed.folder / "ready.toml",)


def test_a_snapshot_needs_a_purpose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "fleet.toml"
    inventory.write_text('[[deployments]]\nname = "a"\nurl = "https://127.0.0.1:9/a"\n')
    assert main(["snapshot", "--inventory", str(inventory)]) == 2
    assert "say why with --purpose TEXT" in capsys.readouterr().err


class Answers:
    """A deployment's answers to the verification, as plain values (the real client is tested above)."""

    def __init__(self, deployment: Any, listed: Any) -> None:
        self.deployment, self.listed, self.version = deployment, listed, ""

    async def release(self) -> str:
        return "11.3"

    async def backups(self, store: str) -> Any:
        if isinstance(self.listed, Exception):
            raise self.listed
        return self.listed


async def test_an_answer_that_breaks_verification_fails_only_its_own_deployment() -> None:
    """An exception nothing foresaw while one deployment is verified fails its targets (`internal`), and the
    next deployment is verified as usual."""
    from orchestrator.model import build_targets
    from orchestrator.snapshot import verify_targets
    from tests.conftest import make_deployment

    targets = build_targets([make_deployment("broken"), make_deployment("fine")], name_template="b-{deployment}",
                            run_id="r", started_at=1e9)  # fmt: skip
    for target in targets:
        target.outcome, target.version = Outcome.SUCCEEDED, "11.3.0"
    listed = [{"backupName": "b-fine", "status": "completed", "release": "11.3", "completeTime": 1_000_000_000_000}]
    answers = {
        "broken": Answers(targets[0].deployment, ValueError("odd")),
        "fine": Answers(targets[1].deployment, listed),
    }
    await verify_targets(targets, lambda deployment: answers[deployment.name])  # type: ignore[arg-type,return-value]
    assert (targets[0].outcome, targets[0].error_class) == (Outcome.FAILED, "internal")
    assert "could not be verified (ValueError)" in targets[0].error
    assert targets[1].outcome is Outcome.SUCCEEDED and targets[1].verified


async def test_every_version_10_9_included_can_be_ready_and_the_csv_is_safe(tmp_path: Path) -> None:
    """10.9 has only the legacy paths: its backups are verified there too, so every deployment of a mixed
    fleet is ready; a report cell a spreadsheet would run as a formula is written as text."""
    versions = {"10.9": 1, "10.9.1": 1, "11.4": 1, "12.0": 1}
    async with fleet_with_inventory(tmp_path, count=8, seed=2, versions=versions) as (fleet, _, inventory):
        finished = await usecases.execute(snapshot_plan(inventory, tmp_path, name_template="=cmd-{deployment}"))
        seen = {p.version for p in fleet.plans}
    assert "10.9" in seen and exit_code(finished.result) == 0, [(t.key, t.error) for t in finished.result.targets]
    assert all(t.verified for t in finished.result.targets)
    csv_lines = (finished.folder / "report.csv").read_text().splitlines()
    assert all(",'=cmd-gis-" in line for line in csv_lines[1:])


def test_an_unverified_success_is_not_ready() -> None:
    """A snapshot cut before its verification: its backups exist, but no deployment is called ready."""
    from orchestrator.model import build_targets
    from orchestrator.report import readiness
    from tests.conftest import make_deployment

    (target,) = build_targets([make_deployment("a")], name_template="b", run_id="r", started_at=1e9)
    target.outcome = Outcome.SUCCEEDED
    (answer,) = readiness([target])
    assert not answer.ready and "not verified" in answer.reasons[0]
    target.verified = True
    assert readiness([target])[0].ready


def test_the_nightly_runs_name_and_description_do_not_leak_into_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settings file or variables the nightly run uses leave a snapshot's names and description alone;
    flags given to the snapshot itself still win."""
    inventory = tmp_path / "fleet.toml"
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret\n")
    secret.chmod(0o600)
    inventory.write_text('[defaults]\nusername = "a"\npassword_file = "secret"\npasscode_file = "secret"\n\n'
                         '[[deployments]]\nname = "a"\nurl = "https://127.0.0.1:9/a"\n')  # fmt: skip
    shared = tmp_path / "settings.toml"
    shared.write_text('name_template = "nightly-{deployment}"\n')
    monkeypatch.setenv("ORCHESTRATOR_DESCRIPTION", "nightly {run_id}")
    flags = {"inventory": inventory, "purpose": "wave {1}"}
    settings = usecases.prepare_run(flags, shared, kind="snapshot").settings
    assert (settings.name_template, settings.description) == (
        "pre-upgrade-{timestamp}-{deployment}",
        "pre-upgrade: wave {{1}}",
    )
    settings = usecases.prepare_run({**flags, "name_template": "x-{deployment}"}, shared, kind="snapshot").settings
    assert settings.name_template == "x-{deployment}"
