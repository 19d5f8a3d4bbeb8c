"""Submitting backups, one deployment at a time per worker: sign in, find the stores, create, follow.

A deployment runs one DR job at a time (the server refuses more), so its stores are backed up one
after another; different deployments run in parallel, bounded by the run's limits. A create whose
answer never came is ambiguous: before creating again, the server is asked whether it took the first
one (its backup name in the store's list, or a DR job of ours). Creating again is safe in any case,
since the server refuses a second backup of the same name, but only reconciling tells us the first
one was ours.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio

from orchestrator.api import CLOCK_SKEW_S, dr_status_is_ours, dr_status_started
from orchestrator.backoff import Backoff, retry_delay
from orchestrator.clock import Clock
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.failpoints import failpoint
from orchestrator.model import DEFAULT_STORE, Outcome, Phase, TargetState
from orchestrator.poll import JobApi, Poller

RESUME_LOOK_S: Final = 120.0  # a job resumed after its timeout passed is still followed this long


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

    @property
    def legacy(self) -> bool:
        """10.9: its DR status names no backup, and it has no jobs list."""
        ...


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str  # "" when the backup was found already complete, or the job could not be identified
    already_complete: bool = False


@dataclass(frozen=True, slots=True)
class Stopped:
    """Submitting stopped before this target's backup was created, and why."""

    reason: str


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
    before_create: Callable[[TargetState], Awaitable[None]]
    on_submitted: Callable[[TargetState], None]
    on_finished: Callable[[TargetState], None]
    # Deployments signing in at once. Without it, 10,000 deployments would each send their first
    # request, then each their second...: every create would wait for the whole fleet to sign in.
    start_limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(math.inf))


async def back_up_deployment(targets: list[TargetState], api: DeploymentApi, ctx: WorkerContext) -> None:
    """Every store of one deployment, one after another. Failures become outcomes, never exceptions.

    A resumed run passes targets as the ledger left them: those with an outcome are left alone, those
    with a job id are followed, not created again, and those with a recorded intent are looked for on
    the server before anything else.
    """
    targets = [target for target in targets if not target.finished]
    if not targets:
        return
    if not ctx.gate.open and not any(_maybe_on_server(target) for target in targets):
        for target in targets:  # stopped before this deployment's turn: not even a sign-in
            _end(target, ctx, outcome=ctx.gate.outcome, reason=ctx.gate.reason)
        return
    for target in targets:
        target.phase = Phase.SIGNING_IN
    try:
        async with ctx.start_limiter:
            await api.token()
            await api.detect_version()
            for target in targets:
                if target.store == DEFAULT_STORE:
                    target.store = await api.default_store()
    except TargetError as error:
        for target in targets:
            if _maybe_on_server(target):  # its backup may exist or be running: unknown, not failed
                reason = (
                    f"could not reach the deployment to follow this backup ({error.error_class.value}: "
                    f"{error.message}); `orchestrator resume` looks again"
                )
                _end(target, ctx, outcome=Outcome.INTERRUPTED, reason=reason)
            else:
                _end(target, ctx, error=error)
        return
    for target in targets:
        await _back_up_store(target, api, ctx)


def _maybe_on_server(target: TargetState) -> bool:
    """A target the run being resumed may already have created on the server."""
    return bool(target.job_id) or target.create_intended


async def _back_up_store(target: TargetState, api: DeploymentApi, ctx: WorkerContext) -> None:
    now = ctx.clock.now()
    if target.job_id:  # submitted by the run this one resumes: follow it, within the same job timeout
        await ctx.running_limiter.acquire()
        submitted = Submitted(target.job_id)
        accepted_at = target.job_started_at(now)
        # Resumed after the timeout passed (the morning after a reboot): still look long enough to see it end.
        give_up_at = max(accepted_at + ctx.job_timeout, now + RESUME_LOOK_S)
    else:
        try:
            outcome = await submit(target, api, ctx)
        except TargetError as error:
            _end(target, ctx, error=error)
            return
        if isinstance(outcome, Stopped):
            _end(target, ctx, outcome=ctx.gate.outcome, reason=outcome.reason)
            return
        submitted = outcome
        target.accepted_at = ctx.clock.now()  # retries and waits before it are not the job's time
        give_up_at = target.accepted_at + ctx.job_timeout
    try:  # holding a running-job slot: it is ours until the job ends
        target.job_id = submitted.job_id
        ctx.on_submitted(target)
        failpoint("after_submitted")
        if submitted.already_complete:
            target.server_status = target.server_status or "COMPLETED"
            _end(target, ctx, outcome=Outcome.SUCCEEDED)
            return
        await ctx.poller.follow(target, api, give_up_at=give_up_at)
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


RESUMED_DOUBT: Final = "the previous run ended before the create's answer was recorded"


async def submit(target: TargetState, api: DeploymentApi, ctx: WorkerContext) -> Submitted | Stopped:
    """Create the backup, retrying transient errors; reconcile before any create that could duplicate it.

    Returns `Submitted` holding one slot of `ctx.running_limiter` (the caller releases it when the job
    ends), or `Stopped`, holding nothing, when submitting stopped before the backup was created. The
    slot is given back during every backoff sleep, so a deployment waiting to retry does not keep
    another one from running.
    """
    # Why an earlier create may have reached the server ("" while none may have): a lost answer in
    # this run, or an intent on record from a run that was cut off.
    doubt = RESUMED_DOUBT if target.create_intended else ""
    attempt = 0
    last_error: TargetError | None = None
    while True:
        await ctx.running_limiter.acquire()
        try:
            outcome = await _next_step(target, api, ctx, doubt, last_error, attempt)
        except BaseException:
            ctx.running_limiter.release()
            raise
        if isinstance(outcome, Submitted):
            return outcome  # holding the slot
        ctx.running_limiter.release()
        if isinstance(outcome, Stopped):
            return outcome
        last_error = outcome
        doubt = _doubt_after(doubt, outcome)
        if not _retryable(outcome, attempt, ctx):
            raise outcome
        if ctx.gate.open:
            delay = retry_delay(ctx.retry_backoff, attempt, ctx.rng, outcome.retry_after)
            attempt += 1
            await ctx.clock.sleep(delay)
        # else: the next step, with the gate closed, gives the last word without a create


async def _next_step(
    target: TargetState,
    api: DeploymentApi,
    ctx: WorkerContext,
    doubt: str,
    last_error: TargetError | None,
    attempt: int,
) -> Submitted | TargetError | Stopped:
    """With a running slot held: the next create or, once submitting has stopped, the last word on it."""
    if not ctx.gate.open:
        if doubt:  # an earlier create may have landed: it is looked for, and followed if it did
            found = await _reconciled(target, api, doubt)
            if found is not None:
                return found
        if last_error is None:
            return Stopped(ctx.gate.reason)
        return Stopped(f"{ctx.gate.reason} (the last create attempt: {last_error.message})")
    outcome = await _attempt_create(target, api, ctx, doubt)
    if isinstance(outcome, TargetError):
        doubt = _doubt_after(doubt, outcome)
        if doubt and not _retryable(outcome, attempt, ctx):  # a last look before giving up
            return await _reconciled(target, api, doubt) or outcome
    return outcome


def _doubt_after(doubt: str, error: TargetError) -> str:
    """Why an earlier create may have reached the server, now that `error` answered one. Pure."""
    return doubt or (error.message if error.ambiguous else "")


def _retryable(error: TargetError, attempt: int, ctx: WorkerContext) -> bool:
    return error.transient and attempt < ctx.retries


async def _attempt_create(
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, doubt: str
) -> Submitted | TargetError:
    """One create, preceded by a reconciliation when an earlier one may have reached the server."""
    target.phase = Phase.SUBMITTING
    if doubt:
        found = await _reconciled(target, api, doubt)
        if found is not None:
            return found
    if api.legacy and target.dr_mark is None and not target.create_intended:
        target.dr_mark = await _dr_mark(api)
    target.attempts += 1
    if target.submitted_at is None:
        target.submitted_at = ctx.clock.now()
    if not target.create_intended:
        await ctx.before_create(target)  # on disk before the server can possibly see the create
    failpoint("before_create")
    try:
        job_id = await api.create_backup(
            target.store, target.backup_name, ctx.passcode(target), ctx.description(target), target.retention_ms
        )
    except TargetError as error:
        if doubt and is_duplicate_name(error):
            # Only our own earlier create can have used this run's unique name: follow it by the list.
            target.notes.append(f"create answer lost ({doubt}); the retry found the name taken, so it was accepted")
            return Submitted("")
        if is_duplicate_name(error):
            hint = "another run used this name (put {run_id} in --name-template to keep names apart)"
            return TargetError(error.error_class, f"{error.message}; {hint}", code=error.code)
        return error
    failpoint("after_create")
    return Submitted(job_id)


async def _dr_mark(api: DeploymentApi) -> float | None:
    """The start of the DR job the status describes now (0.0: none); None when it cannot be read."""
    try:
        return dr_status_started(await api.dr_status())
    except TargetError:
        return None


async def _reconciled(target: TargetState, api: DeploymentApi, doubt: str) -> Submitted | None:
    found = await _reconcile(target, api, target.submitted_at if target.submitted_at is not None else 0.0)
    if found is not None:
        target.notes.append(f"create answer lost ({doubt}); the server had accepted it")
    return found


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
    ours = dr_status_is_ours(status, target.backup_name, target.store, target.dr_mark)
    if isinstance(status.get("backupName"), str) and not ours:
        return None  # the last DR job is someone else's
    try:
        job_id = await _find_our_job(target, api, since)
    except TargetError:
        job_id = ""
    if job_id:
        return Submitted(job_id)
    if ours:  # its job id is unknown (or 10.9, which has no jobs list): follow it by the backups list
        return Submitted("")
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
