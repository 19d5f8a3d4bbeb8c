"""What the commands do, as functions that take settings and return values: `run` (and `resume`, `retry`,
`snapshot`, a run with a preflight before and a verification after: `snapshot.py`), `plan`, `runs` and
`report`. The audit is `audit`'s. Nothing here prints or chooses an exit code; that is `cli`'s.

A run is prepared first (settings, inventory, targets: every problem an `InputError` before anything
is sent), then executed under the ledger's lock, its reports written whatever ends it.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio

from orchestrator import notify
from orchestrator.api import ArcGISClient, open_api_context
from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import InputError, RunCrashed
from orchestrator.events import Observer, retries_told_to
from orchestrator.files import private_dir
from orchestrator.history import finished_run, read_past, recall, resume_fingerprint, unfinished_run
from orchestrator.inventory import load_inventory, select
from orchestrator.ledger import Ledger, RunRecord, default_ledger_path, former_default_ledger_path
from orchestrator.metrics import check_metrics_file, write_run_metrics
from orchestrator.model import DEFAULT_STORE, Deployment, Outcome, RunResult, TargetState, build_targets, new_run_id
from orchestrator.preflight import Preflight, preflight
from orchestrator.recorder import LedgerWriter
from orchestrator.report import check_report_dir, readiness, report_document, write_reports
from orchestrator.runner import RunControl, run_fleet, settle_unfinished
from orchestrator.settings import (
    RunSettings,
    SnapshotSettings,
    load_command_settings,
    load_settings,
    snapshot_identity,
)
from orchestrator.shard import empty_shard_warning, in_shard, parse_shard
from orchestrator.snapshot import preflight_targets, verify_targets, write_inventories

T = TypeVar("T")

# How this command speaks, not what the run is: a resume or retry takes them from its own flags, variables
# and settings file, never from the run it comes from (a run made with --quiet is retried with log lines).
INVOCATION_ONLY: Final = ("quiet", "log_format", "notify", "notify_on")


@dataclass(slots=True)
class RunPlan:
    """A run about to start, or to be resumed: its settings, identity, targets and where it comes from."""

    settings: RunSettings
    run_id: str
    started_at: float
    targets: list[TargetState]
    inventory: str  # as the report names it
    inventory_key: str  # the inventory's absolute path: runs over one inventory are compared with each other
    kind: str = "run"  # run | retry | demo
    parent_run_id: str = ""
    resumed: bool = False
    as_read: tuple[tuple[Any, ...], ...] = ()  # a resumed run's rows as read, to see nobody changed them since
    warnings: tuple[str, ...] = ()  # about the inventory (a secret file others can read, say)

    @property
    def deployments(self) -> list[Deployment]:
        """Its deployments, once each, in inventory order."""
        return list({t.deployment.name: t.deployment for t in self.targets}.values())


@dataclass(frozen=True, slots=True)
class Finished:
    """A run that ended (or was cut short): its result, the report folder and the report's summary."""

    result: RunResult
    folder: Path
    summary: dict[str, Any]
    resumable: bool  # a job may still run on a server: `resume` carries the run on
    readiness: dict[str, Any] | None = None  # a snapshot's: ready and not ready deployments
    inventories: tuple[Path, ...] = ()  # a snapshot's ready.toml / not-ready.toml
    document: dict[str, Any] = field(default_factory=dict)  # what the report files say (for notifications)
    warnings: tuple[str, ...] = ()  # what went wrong after the run, without changing its outcome


# -- preparing a run --


def ledger_path(settings: RunSettings) -> Path:
    return settings.ledger or default_ledger_path(settings.report_dir)


def former_ledger_warning(settings: RunSettings) -> tuple[str, ...]:
    """A ledger at the former default place is never silently abandoned: while it is there (and no --ledger
    names one), every run and `runs` say where it is, and how to keep its history."""
    former, now = former_default_ledger_path(), ledger_path(settings)
    if settings.ledger is not None or not settings.record_ledger or not former.exists():
        return ()
    if not now.exists():
        keep = (
            f"move it there (mv {former}* {now.parent}/) before the next run, or go on using it with --ledger {former}"
        )
    else:  # both: moving one over the other would lose history
        keep = (f"its runs are still there (orchestrator runs --ledger {former}; resume or retry them with "
                f"--ledger {former}); once nothing there is left to resume, remove or archive it")  # fmt: skip
    return (f"a ledger of earlier versions is at {former}; runs are now recorded beside the reports, in {now}: {keep}",)


def new_plan(
    settings: RunSettings,
    deployments: list[Deployment],
    inventory: str,
    *,
    clock: Clock | None = None,
    kind: str = "run",
    parent_run_id: str = "",
    inventory_key: str | None = None,
    warnings: tuple[str, ...] = (),
) -> RunPlan:
    started_at = (clock or SystemClock()).now()
    run_id = new_run_id(started_at, random.Random())
    if isinstance(settings, SnapshotSettings):  # a snapshot is kept as long as it says, not as nightly ones are
        deployments = [replace(d, retention_days=settings.retention_days or None) for d in deployments]
    targets = build_targets(deployments, name_template=settings.name_template, run_id=run_id, started_at=started_at)
    key = inventory_key if inventory_key is not None else str(Path(inventory).resolve())
    return RunPlan(
        _with_absolute_paths(settings), run_id, started_at, targets, inventory, key, kind, parent_run_id,
        warnings=(*warnings, *former_ledger_warning(settings)),
    )  # fmt: skip


def prepare_run(
    flags: dict[str, Any],
    settings_file: Path | None,
    *,
    clock: Clock | None = None,
    name: str | None = None,
    kind: str = "run",
    inventory_key: str | None = None,
) -> RunPlan:
    """A new run over the inventory's selected deployments; `InputError` before anything is sent. `name`
    and `inventory_key`: how the report names the inventory, and what runs are compared with (default:
    its path). `kind` "snapshot": a pre-upgrade snapshot (`snapshot`), with its own settings."""
    settings = _identified(load_command_settings(settings_model(kind), flags, settings_file), flags)
    notify.refuse_unusable(settings.notify)
    if isinstance(settings, SnapshotSettings) and not settings.purpose:
        raise InputError(["snapshot: say why with --purpose TEXT (e.g. --purpose 'upgrade to 12.0, wave 1'); "
                          "it becomes each backup's description"])  # fmt: skip
    if settings.inventory is None:
        raise InputError(["no inventory: give --inventory FILE (or set ORCHESTRATOR_INVENTORY)"])
    inventory = load_inventory(settings.inventory)
    with _warning_too(inventory.warnings):
        deployments = select(inventory.deployments, settings.select)
    warnings = inventory.warnings
    if settings.shard is not None:  # after the selection: every shard of a fleet selects alike
        shard = parse_shard(settings.shard, {})
        selected, deployments = len(deployments), in_shard(deployments, shard)
        warnings += () if deployments else (empty_shard_warning(shard, selected),)
    return new_plan(
        settings, deployments, name or str(settings.inventory), clock=clock, kind=kind, inventory_key=inventory_key,
        warnings=warnings,
    )  # fmt: skip


def _identified(settings: RunSettings, chosen: dict[str, Any]) -> RunSettings:
    """A snapshot's settings with its own name and description (`settings.snapshot_identity`)."""
    return snapshot_identity(settings, chosen) if isinstance(settings, SnapshotSettings) else settings


def settings_model(kind: str) -> type[RunSettings]:
    """The settings a run of this kind has (as recorded in the ledger, for resume, retry and report)."""
    return SnapshotSettings if kind == "snapshot" else RunSettings


def prepare_resume(run_id: str | None, flags: dict[str, Any], settings_file: Path | None) -> RunPlan:
    """The plan that carries an unfinished run on: its targets as the ledger left them, same settings."""
    if flags.get("select"):
        raise InputError(["resume: --select does not apply; a resumed run keeps its targets (see `retry`)"])
    resumable = _read_ledger(flags, settings_file, lambda ledger: unfinished_run(ledger, run_id))
    record = resumable.record
    base = _without(record.settings, "inventory", *INVOCATION_ONLY)
    settings = _identified(load_command_settings(settings_model(record.kind), flags, settings_file, base),
                           {**base, **flags})  # fmt: skip
    notify.refuse_unusable(settings.notify)
    inventory_path = settings.inventory or Path(record.inventory)
    inventory = load_inventory(inventory_path)
    deployments = {d.name: d for d in inventory.deployments}
    missing = sorted({t.deployment.name for t in resumable.targets} - set(deployments))
    if missing:
        raise InputError(
            [f"{inventory_path}: run {record.run_id} has deployments no longer in it: {', '.join(missing)}; "
             "restore them, or give the inventory the run used with --inventory"],
            inventory.warnings,
        )  # fmt: skip
    targets = [replace(t, deployment=deployments[t.deployment.name]) for t in resumable.targets]
    return RunPlan(
        _with_absolute_paths(settings), record.run_id, record.started_at, targets, str(inventory_path),
        record.inventory, record.kind, record.parent_run_id, resumed=True, as_read=resumable.as_read,
        warnings=inventory.warnings,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NothingToRetry:
    """Every target of the run (that the selection keeps) succeeded."""

    warnings: tuple[str, ...] = ()


def prepare_retry(
    run_id: str, flags: dict[str, Any], settings_file: Path | None, *, clock: Clock | None = None
) -> RunPlan | NothingToRetry:
    """A new run over the targets of `run_id` that did not succeed, its deployments matched by name in the
    inventory as it is now (`retried_deployments`), since a retry comes after a fix. A deployment gone from
    the inventory is a warning; an `InputError` only when nothing is left to retry."""
    record, recorded = _read_ledger(flags, settings_file, lambda ledger: finished_run(ledger, run_id))
    base = _without(record.settings, "inventory", "select", "metrics_file", *INVOCATION_ONLY)  # not the night
    settings = _identified(load_command_settings(settings_model(record.kind), flags, settings_file, base),
                           {**base, **flags})  # fmt: skip
    notify.refuse_unusable(settings.notify)
    inventory_path = settings.inventory or Path(record.inventory)
    if all(t.outcome is Outcome.SUCCEEDED for t in recorded):
        return NothingToRetry()
    inventory = load_inventory(inventory_path)
    with _warning_too(inventory.warnings):
        selected = select(inventory.deployments, settings.select)
    deployments, changed = retried_deployments(recorded, selected, run_id)
    gone = [] if settings.select else _gone(recorded, {d.name for d in inventory.deployments})
    if not deployments and gone:
        raise InputError(
            [f"{inventory_path}: the deployments to retry are no longer in it: {', '.join(gone)}; restore them, "
             "or give the inventory the run used with --inventory"],
            (*inventory.warnings, *changed),
        )  # fmt: skip
    if not deployments:
        return NothingToRetry((*inventory.warnings, *changed))
    if gone:
        changed.append(f"{inventory_path}: not retried, no longer in it: {', '.join(gone)} (failed in run {run_id})")
    kind = "snapshot" if record.kind == "snapshot" else "retry"  # a snapshot retried is a snapshot still
    return new_plan(
        settings, deployments, str(inventory_path), clock=clock, kind=kind, parent_run_id=run_id,
        inventory_key=record.inventory, warnings=(*inventory.warnings, *changed),
    )  # fmt: skip


def retried_deployments(
    recorded: list[TargetState], selected: list[Deployment], run_id: str
) -> tuple[list[Deployment], list[str]]:
    """What a retry of `run_id` redoes, as the inventory is now, and what changed in it since. Pure.

    Deployments are matched by name, with their current address, TLS and credentials (a fixed password is
    simply used). A deployment none of whose targets failed is not retried. Targets are matched by
    `model.store_key` (the default store as itself, whatever it resolved to): a deployment that names the
    same stores redoes those that did not succeed; one whose stores changed redoes each of its current stores
    that did not succeed in that run (a new store included), and a note says so.
    """
    before: dict[str, dict[str, bool]] = {}  # deployment -> store key -> succeeded
    recorded_as: dict[str, Deployment] = {}
    for target in recorded:
        before.setdefault(target.deployment.name, {})[target.store_key[1]] = target.outcome is Outcome.SUCCEEDED
        recorded_as.setdefault(target.deployment.name, target.deployment)
    deployments: list[Deployment] = []
    changed: list[str] = []
    for deployment in selected:
        was = before.get(deployment.name)
        if was is None or all(was.values()):
            continue
        now = deployment.stores or (DEFAULT_STORE,)
        again = [store for store in now if not was.get(store, False)]
        if set(now) != set(was):
            redo = _store_names(again) or "nothing (the stores it names now succeeded then)"
            changed.append(f"{deployment.name}: stores now {_store_names(now)} (were {_store_names(was)}); "
                           f"retrying {redo}")  # fmt: skip
        then = recorded_as[deployment.name]
        moved = [what for what in ("url", "verify_tls") if getattr(then, what) != getattr(deployment, what)]
        if moved:
            changed.append(f"{deployment.name}: {' and '.join(moved)} changed since run {run_id}; "
                           "retried as the inventory says now")  # fmt: skip
        if again:  # its default store alone: asked of the server, as in the run
            deployments.append(replace(deployment, stores=tuple(store for store in again if store != DEFAULT_STORE)))
    return deployments, changed


def _store_names(stores: Iterable[str]) -> str:
    return ", ".join(store or "(default store)" for store in stores)


def _gone(recorded: list[TargetState], names: set[str]) -> list[str]:
    """The deployments with a target that did not succeed that the inventory no longer has, in run order."""
    failed = (t.deployment.name for t in recorded if t.outcome is not Outcome.SUCCEEDED)
    return [name for name in dict.fromkeys(failed) if name not in names]


def _read_ledger(flags: dict[str, Any], settings_file: Path | None, read: Callable[[Ledger], T]) -> T:
    """One question to the ledger the flags, the variables or the settings file name."""
    settings = load_settings({k: v for k, v in flags.items() if k in ("ledger", "report_dir")}, settings_file)
    path = ledger_path(settings)
    if not path.exists():
        hint = "; give --report-dir DIR (the ledger is DIR/ledger.sqlite3) or --ledger PATH"
        raise InputError([f"no ledger at {path}{hint}", *former_ledger_warning(settings)])
    ledger = Ledger.open(path)
    try:
        return read(ledger)
    finally:
        ledger.close()


@contextmanager
def _warning_too(warnings: tuple[str, ...]) -> Iterator[None]:
    """An `InputError` in the block carries the inventory's warnings as well: they are shown either way."""
    try:
        yield
    except InputError as error:
        raise InputError(error.problems, (*warnings, *error.warnings)) from None


def _with_absolute_paths(settings: RunSettings) -> RunSettings:
    """A resume or retry may start from another directory: the ledger keeps absolute paths."""
    paths = {name: getattr(settings, name) for name in ("inventory", "report_dir", "ledger")}
    return settings.model_copy(update={k: v.resolve() for k, v in paths.items() if v is not None})


def _without(settings: dict[str, Any], *names: str) -> dict[str, Any]:
    """A past run's settings minus those a resume or retry takes from elsewhere (the ledger's own record)."""
    return {k: v for k, v in settings.items() if k not in names}


# -- running --


async def execute(
    plan: RunPlan, *, observer: Observer | None = None, control: RunControl | None = None, clock: Clock | None = None
) -> Finished:
    """Run (or resume) a plan under the ledger's lock, recording every step; write the reports.

    Whatever breaks the run, the reports are written with what is known of every target: an unforeseen
    error is then raised as `RunCrashed` (its cause the error); the ledger keeps the run unfinished, so
    `resume` can carry it on.
    """
    settings, clock, control = plan.settings, clock or SystemClock(), control or RunControl()
    check_report_dir(settings.report_dir)
    if settings.metrics_file is not None:
        check_metrics_file(settings.metrics_file)
    try:  # the run's own folder too, before anything is sent: a link planted there is refused now
        private_dir(settings.report_dir / plan.run_id)
    except OSError as error:
        raise InputError([f"report folder: {error}"]) from None
    with _ledger_of(settings) as path:
        return await _execute(plan, path, clock, observer, control)


@contextmanager
def _ledger_of(settings: RunSettings) -> Iterator[Path]:
    """The ledger a run records in: beside the reports (or --ledger); with --no-ledger, a throwaway one,
    so the run works the same and keeps nothing."""
    if settings.record_ledger:
        yield ledger_path(settings)
        return
    with tempfile.TemporaryDirectory(prefix="orchestrator-no-ledger-") as scratch:
        yield Path(scratch) / "ledger.sqlite3"


async def _execute(plan: RunPlan, path: Path, clock: Clock, observer: Observer | None, control: RunControl) -> Finished:
    ledger = Ledger.open(path)
    try:
        with ledger.lock(plan.run_id):
            _record_the_start(ledger, plan)
            past = read_past(ledger, plan.inventory_key, plan.started_at)
            # A snapshot reads every deployment's version afresh: its backups must be of the version it runs now.
            remember_for = None if plan.kind == "snapshot" else plan.settings.remember_for
            recall(past, plan.targets, remember_for=remember_for, now=clock.now())
            try:
                result = await _run(plan, clock, observer, control, LedgerWriter(ledger, plan.run_id))
            except Exception as crash:
                raise RunCrashed(_write_what_is_known(plan, clock, crash) / "report.md", crash) from crash
            except BaseException as stopped:  # cancelled from outside: the report still, then on it goes
                _write_what_is_known(plan, clock, stopped)
                raise
            resumable = result.jobs_may_still_run or (control.stop_requested and _left_to_do(plan.kind, result))
            state = "interrupted" if resumable else "finished"
            ledger.end_run(plan.run_id, result.finished_at, result.stopped_reason, result.targets, state=state)
            result.changes = past.changes(result.targets)
            last_successes = ledger.last_successes(plan.inventory_key) if plan.settings.metrics_file else {}
    finally:
        ledger.close()
    document = report_document(result)  # built once: the files, and the summary the caller shows
    folder = write_reports(result, document)
    warnings: tuple[str, ...] = ()
    if plan.settings.metrics_file is not None:
        try:  # the backups are done: a metrics file that cannot be written is said, not a failed run
            write_run_metrics(plan.settings.metrics_file, result, last_successes)
        except OSError as error:
            warnings = (f"metrics file {plan.settings.metrics_file}: not written ({error})",)
    inventories: tuple[Path, ...] = ()
    if plan.kind == "snapshot" and not resumable:
        answers = readiness(result.targets)
        inventories = tuple(write_inventories(folder, Path(plan.inventory), answers, plan.run_id))
    ready = document.get("readiness")
    return Finished(result, folder, document["summary"], resumable, ready, inventories, document, warnings)


def _left_to_do(kind: str, result: RunResult) -> bool:
    """Whether a stopped run left work for `resume`: a target never started, or a snapshot's backup not
    verified. (One whose every job ended during the grace period is simply finished.)"""
    return any(
        t.outcome is Outcome.NOT_STARTED or (kind == "snapshot" and t.outcome is Outcome.SUCCEEDED and not t.verified)
        for t in result.targets
    )


def _record_the_start(ledger: Ledger, plan: RunPlan) -> None:
    if not plan.resumed:
        ledger.begin_run(
            run_id=plan.run_id,
            kind=plan.kind,
            parent_run_id=plan.parent_run_id,
            inventory=plan.inventory_key,
            settings=plan.settings.public(),
            started_at=plan.started_at,
            targets=plan.targets,
        )
        return
    changed = resume_fingerprint(ledger.targets(plan.run_id)) != plan.as_read
    if changed or ledger.run(plan.run_id).state == "finished":
        raise InputError([f"run {plan.run_id} changed while this resume was preparing; resume it again"])
    ledger.resume_run(plan.run_id, plan.settings.public())


async def _run(
    plan: RunPlan, clock: Clock, observer: Observer | None, control: RunControl, ledger: LedgerWriter
) -> RunResult:
    on_retry = retries_told_to(observer, clock) if observer is not None else None
    snapshot = plan.kind == "snapshot"
    deadline = plan.started_at + plan.settings.deadline if plan.settings.deadline is not None else None
    async with open_api_context(plan.settings, clock, random.Random(), on_retry, deadline) as context:
        known: dict[str, ArcGISClient] = {}

        def clients(deployment: Deployment) -> ArcGISClient:
            """One client per deployment for the whole run: a snapshot's stages share its token and version."""
            if deployment.name not in known:
                known[deployment.name] = ArcGISClient(deployment, context)
            return known[deployment.name]

        if snapshot:
            await _unless_stopped(control, preflight_targets(plan.targets, clients, clock.now()))
        result = await run_fleet(
            plan.targets,
            plan.settings,
            clients=clients,
            run_id=plan.run_id,
            started_at=plan.started_at,
            clock=clock,
            observer=observer,
            control=control,
            inventory=plan.inventory,
            ledger=ledger,
        )
        if snapshot and not control.stop_requested:
            await _unless_stopped(control, verify_targets(result.targets, clients))
    result.kind, result.parent_run_id = plan.kind, plan.parent_run_id
    return result


async def _unless_stopped(control: RunControl, stage: Coroutine[Any, Any, None]) -> None:
    """A stage of its own (a snapshot's preflight or verification), ended at once by Ctrl-C / SIGTERM: what
    it did not reach stays as it was (not started, not verified) for `resume`."""
    async with anyio.create_task_group() as group:

        async def stop_when_asked() -> None:
            await control.stopped()
            group.cancel_scope.cancel()

        group.start_soon(stop_when_asked)
        await stage
        group.cancel_scope.cancel()


def _write_what_is_known(plan: RunPlan, clock: Clock, crash: BaseException) -> Path:
    cause = _innermost(crash)  # the type only: an unforeseen exception's text could hold anything
    settle_unfinished(plan.targets, clock.now(), f"the run stopped on an internal error ({type(cause).__name__})")
    salvaged = RunResult(
        plan.run_id, plan.started_at, clock.now(), plan.targets, plan.settings, plan.inventory, "the run crashed",
        kind=plan.kind, parent_run_id=plan.parent_run_id,
    )  # fmt: skip
    return write_reports(salvaged)


def _innermost(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


# -- plan --


def preview(plan: RunPlan) -> list[TargetState]:
    """The plan's targets as `plan` shows them: named as a run starting now would name them, but for its
    run id (RUNID), which only the run itself gets. Pure."""
    return build_targets(
        plan.deployments, name_template=plan.settings.name_template, run_id="RUNID", started_at=plan.started_at
    )


async def check_deployments(settings: RunSettings, deployments: list[Deployment]) -> list[Preflight]:
    """Sign in to each deployment and read its version, stores and DR status; never submits anything."""
    async with open_api_context(settings, SystemClock(), random.Random()) as context:
        return await preflight(deployments, lambda deployment: ArcGISClient(deployment, context))


# -- the ledger's commands: runs, report --


@dataclass(frozen=True, slots=True)
class Runs:
    """The latest runs in a ledger, and the one holding it right now (if any)."""

    ledger: Path
    runs: list[RunRecord]
    active: str | None
    warnings: tuple[str, ...] = ()


def list_runs(flags: dict[str, Any], limit: int) -> Runs:
    def read(ledger: Ledger) -> Runs:
        return Runs(ledger.path, ledger.runs(limit), ledger.active_run())

    settings = load_settings({k: v for k, v in flags.items() if k in ("ledger", "report_dir")})
    if not ledger_path(settings).exists():  # nothing recorded there yet: say so, and where
        return Runs(ledger_path(settings), [], None, former_ledger_warning(settings))
    return replace(_read_ledger(flags, None, read), warnings=former_ledger_warning(settings))


def resolve_run_id(run_id: str, flags: dict[str, Any]) -> str:
    """The run id that `run_id` names in the ledger the flags name: itself, "latest" (the run started last) or an
    unambiguous start of one; `InputError` listing the candidates otherwise (`Ledger.resolve`)."""
    return _read_ledger(flags, None, lambda ledger: ledger.resolve(run_id))


def rewrite_report(run_id: str, flags: dict[str, Any]) -> Path:
    """The reports of a past run, written again from the ledger alone (no inventory, no secrets needed).
    `run_id` may be "latest" or an unambiguous start of one."""

    def read(ledger: Ledger) -> RunResult:
        found = ledger.resolve(run_id)  # "latest", or a start of a run id
        record, targets = ledger.run(found), ledger.targets(found)
        # The run's own settings, as recorded: today's environment has no say in yesterday's report.
        model = settings_model(record.kind)
        recorded = {k: v for k, v in record.settings.items() if k in model.model_fields}
        settings = model.model_validate({**recorded, **{k: v for k, v in flags.items() if k == "report_dir"}})
        ended = [t.finished_at for t in targets if t.finished_at is not None]
        result = RunResult(
            found, record.started_at, record.finished_at or max(ended, default=record.started_at), targets,
            settings, record.inventory, record.stopped_reason, kind=record.kind, parent_run_id=record.parent_run_id,
        )  # fmt: skip
        result.changes = read_past(ledger, record.inventory, record.started_at).changes(targets)
        return result

    result = _read_ledger(flags, None, read)
    check_report_dir(result.settings.report_dir)
    return write_reports(result)
