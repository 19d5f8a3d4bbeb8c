"""The compliance audit: which targets have a good, recent, restorable, kept backup, and why not.

    prepare_audit  settings, inventory, policy, selection: every problem an `InputError`, nothing sent
    run_audit      read the fleet (`survey`, read-only), judge each target (`controls`), write the
                   compliance report (`report`); returns the values the CLI shows

Its modules: `policy` (what each deployment is held to), `controls` (the pure rules and the audit's
record, `AuditTarget`), `survey` (the reading), `report` (compliance.json, .csv, .md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from orchestrator import notify
from orchestrator.api import open_api_context
from orchestrator.audit.controls import AuditTarget, Verdict, unknown
from orchestrator.audit.policy import Policy, load_policy
from orchestrator.audit.report import compliance_document, verdict_line, write_compliance
from orchestrator.audit.survey import INTERRUPTED, Found, survey
from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import InputError
from orchestrator.inventory import load_inventory, select
from orchestrator.metrics import check_metrics_file, write_audit_metrics
from orchestrator.model import DEFAULT_STORE, Deployment, new_run_id
from orchestrator.report import check_report_dir
from orchestrator.runner import RunControl
from orchestrator.settings import AuditSettings, load_command_settings
from orchestrator.shard import empty_shard_warning, in_shard, parse_shard

__all__ = ["AuditPlan", "AuditTarget", "Audited", "Policy", "Verdict", "prepare_audit", "run_audit", "verdict_line"]


@dataclass(frozen=True, slots=True)
class AuditPlan:
    settings: AuditSettings
    deployments: tuple[Deployment, ...]
    policy: Policy
    inventory: str  # as the report names it
    warnings: tuple[str, ...] = ()

    @property
    def targets(self) -> int:
        return sum(len(d.stores) or 1 for d in self.deployments)


@dataclass(frozen=True, slots=True)
class Audited:
    """An audit that ended: every target with its verdict, where the report is, its summary."""

    audit_id: str
    targets: list[AuditTarget]
    folder: Path
    summary: dict[str, Any]
    interrupted: bool
    document: dict[str, Any] = field(default_factory=dict)  # what the report files say (for notifications)
    warnings: tuple[str, ...] = ()  # what went wrong after the audit, without changing its verdicts


def prepare_audit(flags: dict[str, Any], settings_file: Path | None) -> AuditPlan:
    """Settings, inventory, policy and selection, each checked: every problem at once, before any request."""
    settings = load_command_settings(AuditSettings, flags, settings_file)
    notify.refuse_unusable(settings.notify)
    if settings.inventory is None:
        raise InputError(["no inventory: give --inventory FILE (or set ORCHESTRATOR_INVENTORY)"])
    problems: list[str] = []
    warnings: tuple[str, ...] = ()
    deployments: list[Deployment] = []
    try:
        inventory = load_inventory(settings.inventory)
        warnings = inventory.warnings
        deployments = select(inventory.deployments, settings.select)
        if settings.shard is not None:  # after the selection: every shard of a fleet selects alike
            shard = parse_shard(settings.shard, {})
            selected, deployments = len(deployments), in_shard(deployments, shard)
            warnings += () if deployments else (empty_shard_warning(shard, selected),)
    except InputError as error:
        problems += error.problems
        warnings += error.warnings
    policy = Policy()
    try:
        if settings.policy is not None:
            policy = load_policy(settings.policy, in_inventory=False)
        elif not problems:  # an inventory that could not be read is not read again for its [policy]
            policy = load_policy(settings.inventory, in_inventory=True)
    except InputError as error:
        problems += error.problems
    if problems:
        raise InputError(problems, warnings)
    check_report_dir(settings.report_dir)
    if settings.metrics_file is not None:
        check_metrics_file(settings.metrics_file)
    return AuditPlan(settings, tuple(deployments), policy, str(settings.inventory), warnings)


async def run_audit(plan: AuditPlan, *, clock: Clock | None = None, control: RunControl | None = None) -> Audited:
    """Read and judge every target, then write the compliance report. `control.stop()` ends the reading at
    once: what was read is judged, the rest is `unknown` (interrupted)."""
    clock, control = clock or SystemClock(), control or RunControl()
    audited_at = clock.now()
    audit_id = new_run_id(audited_at, random.Random())
    found: Found = {}
    async with (
        open_api_context(plan.settings, clock, random.Random()) as context,
        anyio.create_task_group() as group,
    ):

        async def stop_when_asked() -> None:
            await control.stopped()
            group.cancel_scope.cancel()

        group.start_soon(stop_when_asked)
        await survey(plan.deployments, plan.policy, context, now=audited_at, found=found)
        group.cancel_scope.cancel()
    interrupted = control.stop_requested
    targets = [
        found.get((d.name, store))
        or unknown(d, store, INTERRUPTED, "the audit was interrupted before this target was read", now=audited_at)
        for d in plan.deployments
        for store in d.stores or (DEFAULT_STORE,)
    ]
    document = compliance_document(
        targets,
        audit_id=audit_id,
        audited_at=audited_at,
        finished_at=clock.now(),
        inventory=plan.inventory,
        policy=plan.policy.describe(),
        selection=plan.settings.select,
        stopped_reason="interrupted (Ctrl-C or SIGTERM)" if interrupted else "",
    )
    if plan.settings.shard is not None:  # which shard of the fleet, for `report merge`
        document["shard"] = plan.settings.shard
    folder = write_compliance(document, plan.settings.report_dir)
    warnings: tuple[str, ...] = ()
    if plan.settings.metrics_file is not None:
        try:
            write_audit_metrics(plan.settings.metrics_file, document)
        except OSError as error:
            warnings = (f"metrics file {plan.settings.metrics_file}: not written ({error})",)
    return Audited(audit_id, targets, folder, document["summary"], interrupted, document, warnings)
