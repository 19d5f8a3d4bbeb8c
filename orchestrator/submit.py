"""Submitting backups, one deployment at a time per worker: sign in, find the stores, create, follow.

A deployment runs one DR job at a time (the server refuses more), so its stores are backed up one
after another; different deployments run in parallel, bounded by the run's limits. A create whose
answer never came is ambiguous: before creating again, the server is asked whether it took the first
one (its backup name in the store's list, or a DR job of ours). Creating again is safe in any case,
since the server refuses a second backup of the same name, but only reconciling tells us the first
one was ours.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio

from orchestrator.backoff import Backoff, retry_delay
from orchestrator.clock import Clock
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.poll import JobApi, Poller
from orchestrator.targets import DEFAULT_STORE, Outcome, Phase, TargetState

CLOCK_SKEW_S: Final = 300.0  # how far the server's clock may be from ours when matching a job to a create


class DeploymentApi(JobApi, Protocol):
    """What a worker needs of a deployment (the real one is `api.ArcGISClient`)."""

    async def token(self) -> str: ...

    async def detect_version(self) -> str: ...

    async def default_store(self) -> str: ...

    async def create_backup(
        self, store: str, name: str, passcode: str, description: str, retention_ms: int | None
    ) -> str: ...

    async def job_ids(self) -> list[str]: ...

    async def dr_status(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str  # "" when the backup was found already complete, or the job could not be identified
    already_complete: bool = False


@dataclass(slots=True)
class Gate:
    """Whether new backups may still be submitted, and why not."""

    open: bool = True
    reason: str = ""
    outcome: Outcome = Outcome.SKIPPED  # what an unsubmitted target becomes once closed

    def close(self, reason: str, outcome: Outcome = Outcome.SKIPPED) -> None:
        if self.open:
            self.open, self.reason, self.outcome = False, reason, outcome


@dataclass(slots=True)
class WorkerContext:
    poller: Poller
    gate: Gate
    running_limiter: anyio.CapacityLimiter
    clock: Clock
    rng: random.Random
    retries: int
    retry_backoff: Backoff
    job_timeout: float
    description: Callable[[TargetState], str]
    passcode: Callable[[TargetState], str]
    on_submitted: Callable[[TargetState], None]
    on_finished: Callable[[TargetState], None]


async def back_up_deployment(targets: list[TargetState], api: DeploymentApi, ctx: WorkerContext) -> None:
    """Every store of one deployment, one after another. Failures become outcomes, never exceptions."""
    for target in targets:
        target.phase = Phase.SIGNING_IN
    try:
        await api.token()
        await api.detect_version()
        for target in targets:
            if target.store == DEFAULT_STORE:
                target.store = await api.default_store()
    except TargetError as error:
        for target in targets:
            _end(target, ctx, error=error)
        return
    for target in targets:
        await _back_up_store(target, api, ctx)


async def _back_up_store(target: TargetState, api: DeploymentApi, ctx: WorkerContext) -> None:
    try:
        submitted = await submit(target, api, ctx)
    except TargetError as error:
        _end(target, ctx, error=error)
        return
    if submitted is None:
        _end(target, ctx, outcome=ctx.gate.outcome, reason=ctx.gate.reason)
        return
    try:  # submit returned holding a running-job slot: it is ours until the job ends
        target.job_id = submitted.job_id
        ctx.on_submitted(target)
        if submitted.already_complete:
            target.server_status = target.server_status or "COMPLETED"
            _end(target, ctx, outcome=Outcome.SUCCEEDED)
            return
        assert target.submitted_at is not None
        await ctx.poller.follow(target, api, give_up_at=target.submitted_at + ctx.job_timeout)
        ctx.on_finished(target)
    finally:
        ctx.running_limiter.release()


def _end(
    target: TargetState,
    ctx: WorkerContext,
    *,
    error: TargetError | None = None,
    outcome: Outcome | None = None,
    reason: str = "",
) -> None:
    if error is not None:
        target.fail(error, ctx.clock.now())
    else:
        assert outcome is not None
        target.finish(outcome, ctx.clock.now(), reason=reason)
    ctx.on_finished(target)


async def submit(target: TargetState, api: DeploymentApi, ctx: WorkerContext) -> Submitted | None:
    """Create the backup, retrying transient errors; reconcile before any retry that could duplicate it.

    Returns holding one slot of `ctx.running_limiter` (the caller releases it when the job ends), or
    None, holding nothing, when the gate closed first. The slot is given back during every backoff
    sleep, so a deployment waiting to retry does not keep another one from running.
    """
    first_attempt_at: float | None = None
    doubt = ""  # why an earlier attempt may have reached the server ("" while none may have)
    attempt = 0
    while True:
        await ctx.running_limiter.acquire()
        try:
            if not ctx.gate.open:
                ctx.running_limiter.release()
                return None
            outcome = await _attempt_create(target, api, ctx, first_attempt_at, doubt)
        except BaseException:
            ctx.running_limiter.release()
            raise
        if isinstance(outcome, Submitted):
            return outcome
        ctx.running_limiter.release()
        error = outcome
        first_attempt_at = first_attempt_at if first_attempt_at is not None else target.submitted_at
        doubt = doubt or (error.message if error.ambiguous else "")
        if not (error.transient and attempt < ctx.retries):
            raise error
        if not ctx.gate.open:  # stopped meanwhile: submit nothing more
            raise TargetError(error.error_class, f"{error.message}; not retried: {ctx.gate.reason}")
        delay = retry_delay(ctx.retry_backoff, attempt, ctx.rng, error.retry_after)
        attempt += 1
        await ctx.clock.sleep(delay)


async def _attempt_create(
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, first_attempt_at: float | None, doubt: str
) -> Submitted | TargetError:
    """One create request, and after any answer that leaves doubt, the reconciliation. Holds its slot."""
    target.phase = Phase.SUBMITTING
    target.attempts += 1
    if target.submitted_at is None:
        target.submitted_at = ctx.clock.now()
    since = first_attempt_at if first_attempt_at is not None else target.submitted_at
    try:
        job_id = await api.create_backup(
            target.store, target.backup_name, ctx.passcode(target), ctx.description(target), target.retention_ms
        )
        return Submitted(job_id)
    except TargetError as error:
        if not (doubt or error.ambiguous):
            return error
        found = await _reconcile(target, api, since)
        if found is not None:
            target.notes.append(f"create answer lost ({doubt or error.message}); the server had accepted it")
            return found
        if doubt and is_duplicate_name(error):
            # Only our own earlier create can have used this run's unique name: follow it by the list.
            target.notes.append(
                f"create answer lost ({doubt}); the retry found the name taken, so it had been accepted"
            )
            return Submitted("")
        return error


def is_duplicate_name(error: TargetError) -> bool:
    """The server's refusal of a backup name that already exists. Pure."""
    return error.error_class is ErrorClass.PERMANENT and "already exists" in error.message.lower()


async def _reconcile(target: TargetState, api: DeploymentApi, since: float) -> Submitted | None:
    """Did the server take our create? Its backup in the list, or a DR job of ours; None when not."""
    try:
        if target.backup_name in await api.backup_names(target.store):
            return Submitted("", already_complete=True)
        status = await api.dr_status()
    except TargetError:
        return None  # cannot tell: a new create is still safe (the server refuses a duplicate name)
    named, store = status.get("backupName"), status.get("backupStore", target.store)
    if isinstance(named, str) and (named != target.backup_name or store != target.store):
        return None  # the last DR job is someone else's
    try:
        job_id = await _find_our_job(target, api, since)
    except TargetError:
        job_id = ""
    if job_id:
        return Submitted(job_id)
    if named == target.backup_name:
        return Submitted("")  # ours, but its job id is unknown: follow it by the backups list
    return None


async def _find_our_job(target: TargetState, api: DeploymentApi, since: float) -> str:
    create_suffix = f"/stores/{target.store}/backups/create"
    for job_id in reversed((await api.job_ids())[-5:]):
        job = await api.job(job_id)
        uri, started = job.get("operationURI"), job.get("starttime")
        recent = isinstance(started, int | float) and started >= (since - CLOCK_SKEW_S) * 1000
        if isinstance(uri, str) and uri.endswith(create_suffix) and recent:
            return job_id
    return ""
