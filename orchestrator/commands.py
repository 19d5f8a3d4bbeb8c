"""What `run`, `plan` and `demo` do, between the argument parser (`cli`) and the pipeline stages."""

from __future__ import annotations

import random
import signal
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
from tabulate import tabulate

from orchestrator.api import ArcGISClient, open_api_context, open_clients
from orchestrator.clock import Clock, SystemClock
from orchestrator.dr import dr_job_running
from orchestrator.errors import InputError, TargetError
from orchestrator.events import Observer, Observers, retries_told_to
from orchestrator.history import finished_run, read_past, resume_fingerprint, to_retry, unfinished_run
from orchestrator.inventory import load_inventory, select
from orchestrator.ledger import Ledger, default_ledger_path
from orchestrator.model import (
    Deployment,
    Outcome,
    RunResult,
    TargetState,
    build_targets,
    iso,
    new_run_id,
)
from orchestrator.progress import LiveProgress, LogObserver
from orchestrator.recorder import LedgerWriter
from orchestrator.report import (
    check_report_dir,
    report_document,
    summary_table,
    write_reports,
)
from orchestrator.runner import RunControl, run_fleet, settle_unfinished
from orchestrator.settings import RunSettings, load_settings


def prepare(flags: dict[str, Any], settings_file: Path | None) -> tuple[RunSettings, list[Deployment], str]:
    """Settings, the selected deployments and the inventory's name; `InputError` before anything is sent."""
    settings = load_settings(flags, settings_file)
    if settings.inventory is None:
        raise InputError(["no inventory: give --inventory FILE (or set ORCHESTRATOR_INVENTORY)"])
    inventory = load_inventory(settings.inventory)
    for warning in inventory.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return settings, select(inventory.deployments, settings.select), str(settings.inventory)


@dataclass(slots=True)
class RunPlan:
    """A run about to start, or to be resumed: its identity, its targets and where it comes from."""

    run_id: str
    started_at: float
    targets: list[TargetState]
    inventory: str  # as the report names it
    inventory_key: str  # the inventory's absolute path: runs over one inventory are compared with each other
    kind: str = "run"  # run | retry | demo
    parent_run_id: str = ""
    resumed: bool = False
    as_read: tuple[tuple[Any, ...], ...] = ()  # a resumed run's rows as read, to see nobody changed them since


def ledger_path(settings: RunSettings) -> Path:
    return settings.ledger or default_ledger_path()


def new_plan(
    settings: RunSettings,
    deployments: list[Deployment],
    inventory: str,
    clock: Clock,
    *,
    kind: str = "run",
    parent_run_id: str = "",
    inventory_key: str | None = None,
) -> RunPlan:
    started_at = clock.now()
    run_id = new_run_id(started_at, random.Random())
    targets = build_targets(deployments, name_template=settings.name_template, run_id=run_id, started_at=started_at)
    key = inventory_key if inventory_key is not None else str(Path(inventory).resolve())
    return RunPlan(run_id, started_at, targets, inventory, key, kind, parent_run_id)


async def run_and_report(
    settings: RunSettings, deployments: list[Deployment], inventory: str, *, clock: Clock | None = None
) -> RunResult:
    """A new fleet run over `deployments`, recorded in the ledger, with its report."""
    clock = clock or SystemClock()
    return await execute(settings, new_plan(settings, deployments, inventory, clock), clock=clock)


async def execute(settings: RunSettings, plan: RunPlan, *, clock: Clock | None = None) -> RunResult:
    """Run (or resume) a plan under the ledger's lock; write the reports and print where they are."""
    clock = clock or SystemClock()
    settings = _with_absolute_paths(settings)  # a resume or retry may start from another directory
    check_report_dir(settings.report_dir)
    ledger = Ledger.open(ledger_path(settings))
    try:
        with ledger.lock(plan.run_id):
            if plan.resumed:
                if (
                    resume_fingerprint(ledger.targets(plan.run_id)) != plan.as_read
                    or ledger.run(plan.run_id).state == "finished"
                ):
                    raise InputError([f"run {plan.run_id} changed while this resume was preparing; resume it again"])
                ledger.resume_run(plan.run_id, settings.public())
            else:
                ledger.begin_run(
                    run_id=plan.run_id,
                    kind=plan.kind,
                    parent_run_id=plan.parent_run_id,
                    inventory=plan.inventory_key,
                    settings=settings.public(),
                    started_at=plan.started_at,
                    targets=plan.targets,
                )
            past = read_past(ledger, plan.inventory_key, plan.started_at)
            for target in plan.targets:
                target.expected_s = past.expected_s.get(target.store_key)
            result, interrupted = await _run_with_display(settings, plan, clock, LedgerWriter(ledger, plan.run_id))
            ledger.end_run(
                plan.run_id,
                result.finished_at,
                result.stopped_reason,
                result.targets,
                # A job may still run on a server: the run stays resumable until it is followed to its end.
                state="interrupted" if interrupted or _any_interrupted(result.targets) else "finished",
            )
            result.changes = past.changes(result.targets)
    finally:
        ledger.close()
    document = report_document(result)  # built once: the files and the summary printed below
    folder = write_reports(result, document)
    summary = document["summary"]
    print(summary_table(summary))
    if result.stopped_reason:
        print(f"stopped submitting early: {result.stopped_reason}")
    if interrupted or _any_interrupted(result.targets):
        print(f"the run was cut short: `orchestrator resume {plan.run_id}` carries it on")
    print(f"run id: {plan.run_id}")
    print(f"report: {folder / 'report.md'} (also report.json, report.csv)")
    return result


def _any_interrupted(targets: list[TargetState]) -> bool:
    return any(target.outcome is Outcome.INTERRUPTED for target in targets)


def _with_absolute_paths(settings: RunSettings) -> RunSettings:
    paths = {name: getattr(settings, name) for name in ("inventory", "report_dir", "ledger")}
    return settings.model_copy(update={k: v.resolve() for k, v in paths.items() if v is not None})


async def _run_with_display(
    settings: RunSettings, plan: RunPlan, clock: Clock, ledger: LedgerWriter
) -> tuple[RunResult, bool]:
    """The fleet run with its display and signal handling; (result, whether it was interrupted)."""
    targets, run_id = plan.targets, plan.run_id
    control = RunControl()
    live = sys.stderr.isatty() and not settings.quiet and settings.log_format == "text"
    observers: list[Observer] = []
    if not settings.quiet and not live:
        observers.append(LogObserver(json_lines=settings.log_format == "json"))
    progress = LiveProgress(targets, clock) if live else None
    if progress is not None:
        observers.append(progress)
    if not settings.quiet:
        deployments = len({t.deployment.name for t in targets})
        verb = "resuming run" if plan.resumed else "run"
        print(f"{verb} {run_id}: {len(targets)} targets on {deployments} deployments", file=sys.stderr)
    try:
        async with anyio.create_task_group() as signals:
            signals.start_soon(_watch_signals, control, settings.grace)
            on_retry = retries_told_to(Observers(*observers), clock)
            with progress if progress is not None else nullcontext():
                async with open_clients(settings, clock, random.Random(), on_retry) as clients:
                    result = await run_fleet(
                        targets,
                        settings,
                        clients=clients,
                        run_id=run_id,
                        started_at=plan.started_at,
                        clock=clock,
                        observer=Observers(*observers),
                        control=control,
                        inventory=plan.inventory,
                        ledger=ledger,
                    )
            signals.cancel_scope.cancel()
    except BaseException as crash:
        # Whatever broke the run, what is known about every target still goes into the report; the
        # ledger keeps the run unfinished, so `resume` can carry it on.
        cause = _innermost(crash)  # the type only: an unforeseen exception's text could hold anything
        settle_unfinished(targets, clock.now(), f"the run stopped on an internal error ({type(cause).__name__})")
        salvaged = RunResult(run_id, plan.started_at, clock.now(), targets, settings, plan.inventory, "the run crashed")
        folder = write_reports(salvaged)
        print(f"the run stopped early; report of what is known: {folder / 'report.md'}", file=sys.stderr)
        raise
    result.kind, result.parent_run_id = plan.kind, plan.parent_run_id
    return result, control.stop_requested


def _innermost(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _watch_signals(control: RunControl, grace: float) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for _ in received:
            if not control.stop_requested:
                print(
                    f"\nstopping: nothing new is submitted; running jobs are followed for {grace:g} s "
                    "(Ctrl-C again to stop at once; the report is written either way)",
                    file=sys.stderr,
                )
                control.stop()
            else:
                print("\nstopping now; writing the report", file=sys.stderr)
                control.abort()


async def plan(settings: RunSettings, deployments: list[Deployment], check: bool) -> bool:
    """Print what a run would do; with `check`, verify each deployment read-only. True when all is well."""
    targets = build_targets(
        deployments, name_template=settings.name_template, run_id="RUNID", started_at=SystemClock().now()
    )
    print(
        tabulate(
            [
                (
                    t.deployment.name,
                    t.deployment.url,
                    t.store or "(default, asked at run time)",
                    t.backup_name,
                    ",".join(t.deployment.tags),
                )
                for t in targets
            ],
            headers=["deployment", "url", "store", "backup name", "tags"],
        )
    )
    print(
        f"\n{len(targets)} targets on {len(deployments)} deployments; concurrency {settings.concurrency} requests, "
        f"max running jobs {settings.max_running or 'no cap'}, poll {settings.poll_initial:g}..{settings.poll_max:g} s "
        f"x{settings.poll_factor:g}, job timeout {settings.job_timeout:g} s, deadline "
        f"{settings.deadline or 'none'}, max failures {settings.max_failures or 'none'}, retries {settings.retries}"
    )
    if not check:
        return True
    results: dict[str, tuple[str, str]] = {}
    async with (
        open_api_context(settings, SystemClock(), random.Random()) as context,
        anyio.create_task_group() as checks,
    ):
        for deployment in deployments:
            checks.start_soon(_check_deployment, ArcGISClient(deployment, context), results)
    rows = [(d.name, *results[d.name]) for d in deployments]
    print()
    print(tabulate(rows, headers=["deployment", "version", "check"]))
    return all(verdict == "ok" for _, _, verdict in rows)


async def _check_deployment(client: ArcGISClient, results: dict[str, tuple[str, str]]) -> None:
    """Sign in, read the stores and the DR status; never submits anything."""
    deployment = client.deployment
    try:
        version = await client.detect_version()
        stores = {str(s.get("name")): s for s in await client.store_list()}
        wanted = list(deployment.stores) or [await client.default_store()]
        problems = [f"no store {name!r} (has: {', '.join(sorted(stores))})" for name in wanted if name not in stores]
        status = await client.dr_status()
        if dr_job_running(status):
            problems.append(f"a DR job is running ({status.get('backupName') or 'unnamed'})")
        results[deployment.name] = (version, "; ".join(problems) or "ok")
    except TargetError as error:
        results[deployment.name] = (client.version or "?", f"{error.error_class.value}: {error.message}")


async def demo(count: int, profile: str, seed: int, report_dir: Path, quiet: bool) -> RunResult:
    """A real fleet run against a built-in simulated fleet, on loopback."""
    from orchestrator.simulator import SimulatedFleet, serve_fleet
    from orchestrator.simulator.config import fleet_from_mapping
    from orchestrator.simulator.inventory_file import write_inventory

    fleet = SimulatedFleet(
        fleet_from_mapping(
            {
                "count": count,
                "profile": profile,
                "seed": seed,
                "job_duration": {"dist": "lognormal", "median": 3.0, "sigma": 0.4, "low": 1.0, "high": 12.0},
            },
            source="demo",
        )
    )
    with tempfile.TemporaryDirectory(prefix="orchestrator-demo-") as scratch:
        async with serve_fleet(fleet) as sim:
            inventory_path = Path(scratch) / "demo-inventory.toml"
            urls = {plan.name: sim.url_of(plan.name) for plan in fleet.plans}
            write_inventory(inventory_path, fleet.plans, urls, password=fleet.password)
            # Simulated jobs last seconds, not hours: polls, retries and timeouts are scaled down alike.
            flags = {
                "inventory": inventory_path,
                "report_dir": report_dir,
                "poll_initial": 0.5,
                "poll_max": 3.0,
                "job_timeout": 60.0,
                "retry_initial": 0.2,
                "retry_max": 2.0,
                "request_timeout": 5.0,
                "connect_timeout": 2.0,
                "read_timeout": 5.0,
                "grace": 5.0,
                "quiet": quiet,
                "ledger": report_dir / "demo-ledger.sqlite3",  # demo runs stay out of the real ledger
            }
            settings, deployments, _ = prepare(flags, None)
            if not quiet:
                print(
                    f"demo: a simulated fleet of {count} deployments ({profile} profile) on {sim.base_url}",
                    file=sys.stderr,
                )
            clock = SystemClock()
            name = f"built-in simulated fleet ({count} deployments, {profile})"
            plan = new_plan(settings, deployments, name, clock, kind="demo", inventory_key=f"demo:{count}:{profile}")
            return await execute(settings, plan, clock=clock)
    raise AssertionError("unreachable")  # pragma: no cover


# -- the ledger's commands: resume, retry, runs, report --


def _open_ledger(flags: dict[str, Any], settings_file: Path | None) -> tuple[RunSettings, Ledger]:
    settings = load_settings({k: v for k, v in flags.items() if k == "ledger"}, settings_file)
    return settings, Ledger.open(ledger_path(settings))


def prepare_resume(
    run_id: str | None, flags: dict[str, Any], settings_file: Path | None
) -> tuple[RunSettings, RunPlan]:
    """The plan that carries an unfinished run on: its targets as the ledger left them, same settings."""
    if flags.get("select"):
        raise InputError(["resume: --select does not apply; a resumed run keeps its targets (see `retry`)"])
    _, ledger = _open_ledger(flags, settings_file)
    try:
        resumable = unfinished_run(ledger, run_id)
    finally:
        ledger.close()
    record, recorded = resumable.record, resumable.targets
    settings = load_settings(flags, settings_file, base=_without(record.settings, "inventory"))
    inventory_path = settings.inventory or Path(record.inventory)
    deployments = {d.name: d for d in _load_inventory(inventory_path)}
    missing = sorted({t.deployment.name for t in recorded} - set(deployments))
    if missing:
        raise InputError(
            [f"{inventory_path}: run {record.run_id} has deployments no longer in it: {', '.join(missing)}; "
             "restore them, or give the inventory the run used with --inventory"]
        )  # fmt: skip
    targets = [replace(t, deployment=deployments[t.deployment.name]) for t in recorded]
    inventory = str(inventory_path)
    plan = RunPlan(
        record.run_id,
        record.started_at,
        targets,
        inventory,
        record.inventory,
        record.kind,
        record.parent_run_id,
        resumed=True,
        as_read=resumable.as_read,
    )
    return settings, plan


def prepare_retry(
    run_id: str, flags: dict[str, Any], settings_file: Path | None, clock: Clock
) -> tuple[RunSettings, RunPlan | None]:
    """A new run over exactly the targets of `run_id` that did not succeed; None when every one did."""
    _, ledger = _open_ledger(flags, settings_file)
    try:
        record, recorded = finished_run(ledger, run_id)
    finally:
        ledger.close()
    settings = load_settings(flags, settings_file, base=_without(record.settings, "inventory", "select"))
    inventory_path = settings.inventory or Path(record.inventory)
    again = to_retry(recorded)
    if not again:
        return settings, None
    deployments = []
    for deployment in select(list(_load_inventory(inventory_path)), settings.select):
        if deployment.name not in again:
            continue
        # A deployment backed up to its default store keeps asking for it; named stores are narrowed.
        stores = tuple(s for s in deployment.stores if s in again[deployment.name]) if deployment.stores else ()
        if deployment.stores and not stores:
            continue  # its stores were renamed since: nothing of that run to redo here
        deployments.append(replace(deployment, stores=stores))
    missing = sorted(set(again) - {d.name for d in deployments}) if not settings.select else []
    if not deployments:
        return settings, None
    if missing:
        raise InputError([f"{inventory_path}: deployments to retry are no longer in it: {', '.join(missing)}"])
    plan = new_plan(
        settings,
        deployments,
        str(inventory_path),
        clock,
        kind="retry",
        parent_run_id=run_id,
        inventory_key=record.inventory,
    )
    return settings, plan


def _load_inventory(path: Path) -> tuple[Deployment, ...]:
    inventory = load_inventory(path)
    for warning in inventory.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return inventory.deployments


def list_runs(flags: dict[str, Any], limit: int) -> None:
    _, ledger = _open_ledger(flags, None)
    try:
        records, active = ledger.runs(limit), ledger.active_run()
    finally:
        ledger.close()
    if not records:
        print(f"no runs yet in {ledger.path}")
        return
    rows = []
    for record in records:
        state = record.state
        if record.run_id == active:
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
    print(tabulate(rows, headers=headers))
    print(f"\nledger: {ledger.path}")


def rewrite_report(run_id: str, flags: dict[str, Any]) -> Path:
    """The reports of a past run, written again from the ledger alone (no inventory, no secrets needed)."""
    _, ledger = _open_ledger(flags, None)
    try:
        record = ledger.run(run_id)
        targets = ledger.targets(run_id)
        # The run's own settings, as recorded: today's environment has no say in yesterday's report.
        recorded = {k: v for k, v in record.settings.items() if k in RunSettings.model_fields}
        settings = RunSettings.model_validate({**recorded, **{k: v for k, v in flags.items() if k == "report_dir"}})
        ended = [t.finished_at for t in targets if t.finished_at is not None]
        result = RunResult(
            run_id,
            record.started_at,
            record.finished_at or max(ended, default=record.started_at),
            targets,
            settings,
            record.inventory,
            record.stopped_reason,
            kind=record.kind,
            parent_run_id=record.parent_run_id,
        )
        result.changes = read_past(ledger, record.inventory, record.started_at).changes(targets)
    finally:
        ledger.close()
    check_report_dir(settings.report_dir)
    return write_reports(result)


def _without(settings: dict[str, Any], *names: str) -> dict[str, Any]:
    """A past run's settings minus those a resume or retry takes from elsewhere (the ledger's own record)."""
    return {k: v for k, v in settings.items() if k not in names}
