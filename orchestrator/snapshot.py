"""The pre-upgrade snapshot: a run that says exactly which deployments are safe to upgrade.

Around the run's own stages (`runner.run_fleet`) it adds:

    preflight  read-only, per deployment none of whose targets has started: sign in, read the version,
               check the stores and that no DR job runs; a deployment that fails is not snapshotted
    verify     after the jobs: each backup must be in its store's list as `completed`, of the version
               read in preflight (a backup restores only into its own release); one that is not fails
    readiness  a deployment is ready when every one of its targets succeeded, so was verified
               (`report.readiness`); `ready.toml` and `not-ready.toml` beside the report are
               inventories of each side
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Final

import anyio

from orchestrator.api import ArcGISClient
from orchestrator.dr import Backup, read_backups, same_release
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.inventory.subset import subset_document, write_subset
from orchestrator.model import Deployment, Outcome, TargetState
from orchestrator.preflight import preflight
from orchestrator.report import Readiness

READY_FILE: Final = "ready.toml"
NOT_READY_FILE: Final = "not-ready.toml"
Clients = Callable[[Deployment], ArcGISClient]


def _by_deployment(targets: list[TargetState]) -> list[list[TargetState]]:
    return [list(group) for _, group in groupby(targets, key=lambda t: t.deployment.name)]


async def preflight_targets(targets: list[TargetState], clients: Clients, now: float) -> None:
    """Preflight each deployment none of whose targets has started (a resumed snapshot leaves the others
    alone: their own job would be the DR job running). A deployment that fails has its targets failed
    with the reason; every checked target keeps the version read."""
    fresh = [g for g in _by_deployment(targets) if all(_untouched(t) for t in g)]
    checks = await preflight([group[0].deployment for group in fresh], clients)
    for group, check in zip(fresh, checks, strict=True):
        for target in group:
            target.version = check.version
            if not check.ok:
                reason = f"preflight: {'; '.join(check.problems)}; not snapshotted"
                target.finish(Outcome.FAILED, now, TargetError(ErrorClass(check.error_class), reason))


def _untouched(target: TargetState) -> bool:
    return not target.finished and not target.create_intended and not target.job_id


async def verify_targets(targets: list[TargetState], clients: Clients) -> None:
    """Each succeeded target's backup not yet verified is looked up in its store's list (each list read once,
    the deployments concurrently): not there, not `completed`, or of another release than the version read
    before, and the target fails with the reason; otherwise it is `verified`."""
    async with anyio.create_task_group() as checks:
        for group in _by_deployment([t for t in targets if t.outcome is Outcome.SUCCEEDED and not t.verified]):
            checks.start_soon(_verify_deployment, group, clients(group[0].deployment))


async def _verify_deployment(group: list[TargetState], client: ArcGISClient) -> None:
    try:
        await _verify_each(group, client)
    except Exception as error:  # an answer nothing foresaw: this deployment's targets, no one else's
        unverified = TargetError(ErrorClass.INTERNAL, f"the backup could not be verified ({type(error).__name__})")
        for target in group:
            if target.outcome is Outcome.SUCCEEDED and not target.verified:
                target.refute(unverified)


async def _verify_each(group: list[TargetState], client: ArcGISClient) -> None:
    listed: dict[str, dict[str, Backup]] = {}
    for target in group:
        try:
            if target.version and not client.version:
                client.version = target.version  # read in preflight: it also says which paths (10.9) to use
            version = target.version or await client.release()
            if target.store not in listed:
                listed[target.store] = {b.name: b for b in read_backups(await client.backups(target.store))}
            problem = _unrestorable(listed[target.store].get(target.backup_name), target, version)
        except TargetError as error:
            target.refute(TargetError(error.error_class, f"the backup could not be verified: {error.message}"))
            continue
        target.version = version
        if problem:
            target.refute(TargetError(ErrorClass.PERMANENT, problem))
        else:
            target.verified = True


def _unrestorable(backup: Backup | None, target: TargetState, version: str) -> str:
    """Why a snapshot's backup would not restore the deployment as it runs now ("" when it would). Pure."""
    where = f"backup {target.backup_name} in store {target.store}"
    if backup is None:
        return f"{where} is not in the store's list after its job completed"
    if not backup.good:
        return f"{where} is listed as {backup.status or 'no status'}, not completed"
    if not version:
        return f"{where}: the deployment's version is unknown, so its release cannot be checked"
    if not same_release(backup.release, version):
        return f"{where} is release {backup.release or '(none)'}, the deployment runs {version}: it cannot restore it"
    return ""


def write_inventories(folder: Path, inventory: Path, answers: list[Readiness], run_id: str) -> list[Path]:
    """ready.toml and not-ready.toml in the report folder, each written only when it has a deployment (an
    inventory without one is not valid)."""
    written = []
    for name, ready in ((READY_FILE, True), (NOT_READY_FILE, False)):
        names = {a.deployment for a in answers if a.ready is ready}
        if not names:
            continue
        side = "ready for the upgrade" if ready else "NOT ready for the upgrade: fix, then snapshot again"
        heading = f"Snapshot {run_id}: the deployments {side}.\nWritten from {inventory}; secrets by reference."
        write_subset(folder / name, subset_document(inventory, names), heading)
        written.append(folder / name)
    return written
