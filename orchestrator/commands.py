"""What `run`, `plan` and `demo` do, between the argument parser (`cli`) and the pipeline stages."""

from __future__ import annotations

import random
import signal
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import anyio
from tabulate import tabulate

from orchestrator.api import ArcGISClient, dr_job_running, open_api_context
from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import InputError, TargetError
from orchestrator.events import Observer, Observers
from orchestrator.inventory import Deployment, load_inventory, select
from orchestrator.progress import LiveProgress, LogObserver
from orchestrator.report import check_report_dir, report_document, summary_table, write_reports
from orchestrator.runner import RunControl, RunResult, new_run_id, run_fleet, settle_unfinished
from orchestrator.settings import RunSettings, load_settings
from orchestrator.targets import build_targets


def prepare(flags: dict[str, Any], settings_file: Path | None) -> tuple[RunSettings, list[Deployment], str]:
    """Settings, the selected deployments and the inventory's name; `InputError` before anything is sent."""
    settings = load_settings(flags, settings_file)
    if settings.inventory is None:
        raise InputError(["no inventory: give --inventory FILE (or set ORCHESTRATOR_INVENTORY)"])
    inventory = load_inventory(settings.inventory)
    for warning in inventory.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return settings, select(inventory.deployments, settings.select), str(settings.inventory)


async def run_and_report(
    settings: RunSettings, deployments: list[Deployment], inventory: str, *, clock: Clock | None = None
) -> RunResult:
    """The fleet run with its display and signal handling; writes the reports and prints where they are."""
    clock = clock or SystemClock()
    rng = random.Random()
    started_at = clock.now()
    run_id = new_run_id(started_at, rng)
    targets = build_targets(deployments, name_template=settings.name_template, run_id=run_id, started_at=started_at)
    control = RunControl()
    live = sys.stderr.isatty() and not settings.quiet and settings.log_format == "text"
    observers: list[Observer] = []
    if not settings.quiet and not live:
        observers.append(LogObserver(json_lines=settings.log_format == "json"))
    progress = LiveProgress(targets, clock) if live else None
    if progress is not None:
        observers.append(progress)
    check_report_dir(settings.report_dir)
    if not settings.quiet:
        print(f"run {run_id}: {len(targets)} targets on {len(deployments)} deployments", file=sys.stderr)
    try:
        async with anyio.create_task_group() as signals:
            signals.start_soon(_watch_signals, control, settings.grace)
            with progress if progress is not None else nullcontext():
                result = await run_fleet(
                    targets,
                    settings,
                    run_id=run_id,
                    started_at=started_at,
                    clock=clock,
                    rng=rng,
                    observer=Observers(*observers),
                    control=control,
                    inventory=inventory,
                )
            signals.cancel_scope.cancel()
    except BaseException as crash:
        # Whatever broke the run, what is known about every target still goes into the report.
        cause = _innermost(crash)  # the type only: an unforeseen exception's text could hold anything
        settle_unfinished(targets, clock.now(), f"the run stopped on an internal error ({type(cause).__name__})")
        salvaged = RunResult(run_id, started_at, clock.now(), targets, settings, inventory, "the run crashed")
        folder = write_reports(salvaged)
        print(f"the run stopped early; report of what is known: {folder / 'report.md'}", file=sys.stderr)
        raise
    folder = write_reports(result)
    summary = report_document(result)["summary"]
    print(summary_table(summary))
    if result.stopped_reason:
        print(f"stopped submitting early: {result.stopped_reason}")
    print(f"run id: {run_id}")
    print(f"report: {folder / 'report.md'} (also report.json, report.csv)")
    return result


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
        await client.token()
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
                "grace": 5.0,
                "quiet": quiet,
            }
            settings, deployments, _ = prepare(flags, None)
            if not quiet:
                print(
                    f"demo: a simulated fleet of {count} deployments ({profile} profile) on {sim.base_url}",
                    file=sys.stderr,
                )
            return await run_and_report(
                settings, deployments, f"built-in simulated fleet ({count} deployments, {profile})"
            )
    raise AssertionError("unreachable")  # pragma: no cover
