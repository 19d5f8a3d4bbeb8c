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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import anyio

from orchestrator.backoff import Retry
from orchestrator.clock import Clock
from orchestrator.dr import DeploymentApi, dr_status_is_ours, dr_status_started, is_duplicate_name, is_our_create_job
from orchestrator.errors import TargetError
from orchestrator.failpoints import failpoint
from orchestrator.guard import last_word, reached
from orchestrator.model import DEFAULT_STORE, Outcome, Phase, TargetState
from orchestrator.poll import Poller

RESUME_LOOK_S: Final = 120.0  # a job resumed after its timeout passed is still followed this long
RESUMED_CUT: Final = "the previous run ended before the create's answer was recorded"


@dataclass(frozen=True, slots=True)
class Submitted:
    """The target's backup is on the server: its job to follow ("" when the backup was found already
    complete, or its job could not be identified: then its store's list is followed)."""

    job_id: str
    already_complete: bool = False
    resumed: bool = False  # the job of the run being resumed: followed, never created again


@dataclass(frozen=True, slots=True)
class Stopped:
    """Submitting stopped before this target's backup was created, and why."""

    reason: str


@dataclass(slots=True)
class Gate:
    """Whether new backups may still be submitted, and why not."""

    open: bool = True
    reason: str = ""  # said of each target left unsubmitted ("not submitted: the run deadline ... was reached")
    outcome: Outcome = Outcome.SKIPPED  # what an unsubmitted target becomes once closed
    why: str = ""  # said of the run ("the run deadline ... was reached")

    _closed: anyio.Event | None = field(default=None, repr=False, compare=False)  # made by the first waiter

    def close(self, why: str, outcome: Outcome = Outcome.SKIPPED) -> None:
        """Submit nothing more, because of `why`; a target left unsubmitted becomes `outcome`, saying so."""
        if self.open:
            prefix = "not started" if outcome is Outcome.NOT_STARTED else "not submitted"
            self.open, self.why, self.reason, self.outcome = False, why, f"{prefix}: {why}", outcome
            if self._closed is not None:
                self._closed.set()

    async def sleep(self, clock: Clock, seconds: float) -> None:
        """Wait `seconds` on `clock`, or less: until the gate closes (a create waiting to be retried is not
        retried after the deadline, nor kept waiting by Ctrl-C)."""
        if not self.open:
            return
        if self._closed is None:
            self._closed = anyio.Event()
        closed = self._closed
        async with anyio.create_task_group() as race:

            async def sleep_then_stop() -> None:
                await clock.sleep(seconds)
                race.cancel_scope.cancel()

            async def closed_then_stop() -> None:
                await closed.wait()
                race.cancel_scope.cancel()

            race.start_soon(sleep_then_stop)
            race.start_soon(closed_then_stop)


@dataclass(slots=True)
class WorkerContext:
    poller: Poller
    gate: Gate
    running_limiter: anyio.CapacityLimiter
    clock: Clock
    rng: random.Random
    retry: Retry  # of creates refused transiently
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
            await api.detect_version()  # the first request signs in
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
        await back_up_store(target, api, ctx)


def _maybe_on_server(target: TargetState) -> bool:
    """A target the run being resumed may already have created on the server."""
    return bool(target.job_id) or target.create_intended


async def back_up_store(target: TargetState, api: DeploymentApi, ctx: WorkerContext) -> None:
    """One target: its backup submitted, then its job followed to the end, holding a running-job slot."""
    try:
        async with submission(target, api, ctx) as submitted:
            if isinstance(submitted, Submitted):
                await _follow(target, api, ctx, submitted)
    except TargetError as error:  # the last refusal of its create
        _end(target, ctx, error=error)
        return
    if isinstance(submitted, Stopped):
        _end(target, ctx, outcome=ctx.gate.outcome, reason=submitted.reason)


async def _follow(target: TargetState, api: DeploymentApi, ctx: WorkerContext, submitted: Submitted) -> None:
    now = ctx.clock.now()
    if submitted.resumed:
        # Within the same job timeout; resumed after it passed (the morning after a reboot), still long
        # enough to see the job end.
        give_up_at = max(target.job_started_at(now) + ctx.job_timeout, now + RESUME_LOOK_S)
    else:
        target.accepted_at = now  # retries and waits before it are not the job's time
        give_up_at = now + ctx.job_timeout
    target.job_id = submitted.job_id
    ctx.on_submitted(target)
    failpoint("after_submitted")
    if submitted.already_complete:
        target.server_status = target.server_status or "COMPLETED"
        _end(target, ctx, outcome=Outcome.SUCCEEDED)
        return
    await ctx.poller.follow(target, api, give_up_at=give_up_at)
    ctx.on_finished(target)


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


@dataclass(slots=True)
class _Attempts:
    """What the create attempts of one target have met so far."""

    started_at: float | None = None  # the first attempt: the retry budget counts from here
    queued: float = 0.0  # seconds since then spent waiting for a running-job slot, which the budget leaves out
    retries: int = 0  # retries made after transient refusals
    # Why an earlier create may have reached the server (None while none can have): a lost answer in this
    # run, or an intent on record from a run that was cut off.
    possibly_created: str | None = None
    last_error: TargetError | None = None
    reached_once: bool = False  # some attempt reached the deployment (see `guard.last_word`)
    spent: bool = False  # the retry policy allows no further attempt: the last error is the outcome

    def elapsed(self, now: float) -> float:
        """Seconds of the retry budget used: since the first attempt, less the waits for a running slot."""
        return 0.0 if self.started_at is None else now - self.started_at - self.queued

    def met(self, error: TargetError, retry: Retry, now: float) -> None:
        self.last_error = error
        self.reached_once = self.reached_once or reached(error)
        self.spent = not retry.again(error, self.retries, self.elapsed(now))  # decided once, here
        if self.possibly_created is None and error.ambiguous:
            self.possibly_created = error.message


@asynccontextmanager
async def submission(target: TargetState, api: DeploymentApi, ctx: WorkerContext) -> AsyncIterator[Submitted | Stopped]:
    """The target's backup created (or found, or the resumed run's job), holding one slot of
    `ctx.running_limiter` while the caller follows it; or `Stopped`, holding nothing, when submitting
    stopped before the backup was created. A transient refusal is retried after a backoff sleep, the
    slot given back meanwhile, so a deployment waiting to retry does not keep another from running;
    reconciled first whenever an earlier create may have landed. The last refusal is raised."""
    if target.job_id:  # submitted by the run this one resumes: followed, not created
        async with ctx.running_limiter:
            yield Submitted(target.job_id, resumed=True)
        return
    attempts = _Attempts(possibly_created=RESUMED_CUT if target.create_intended else None)
    while True:
        asked_at = ctx.clock.now()
        async with ctx.running_limiter:
            if attempts.started_at is None:
                attempts.started_at = ctx.clock.now()
            else:
                attempts.queued += ctx.clock.now() - asked_at
            step = await _next_step(target, api, ctx, attempts)
            if isinstance(step, Submitted):
                yield step
                return
        if isinstance(step, Stopped):
            yield step
            return
        if attempts.spent:
            raise last_word(step, attempts.reached_once)
        if ctx.gate.open:
            delay = ctx.retry.delay(step, attempts.retries, ctx.rng, attempts.elapsed(ctx.clock.now()))
            attempts.retries += 1
            await ctx.gate.sleep(ctx.clock, delay)  # cut short when submitting stops (deadline, Ctrl-C)
        # else (or once it closed): the next step gives the last word without a create


async def _next_step(
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, attempts: _Attempts
) -> Submitted | TargetError | Stopped:
    """With a running slot held: the next create or, once submitting has stopped, the last word on it."""
    if not ctx.gate.open:
        if attempts.possibly_created is not None:  # an earlier create may have landed: looked for, followed
            found = await _look_for_earlier_create(target, api, attempts.possibly_created)
            if found is not None:
                return found
        if attempts.last_error is None:
            return Stopped(ctx.gate.reason)
        return Stopped(f"{ctx.gate.reason} (the last create attempt: {attempts.last_error.message})")
    outcome = await _attempt_create(target, api, ctx, attempts.possibly_created)
    if isinstance(outcome, TargetError):
        attempts.met(outcome, ctx.retry, ctx.clock.now())
        why = attempts.possibly_created
        if why is not None and attempts.spent:  # a last look before giving up
            return await _look_for_earlier_create(target, api, why) or outcome
    return outcome


async def _attempt_create(
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, possibly_created: str | None
) -> Submitted | TargetError:
    """One create, preceded by a reconciliation when an earlier one may have reached the server."""
    target.phase = Phase.SUBMITTING
    if possibly_created is not None:
        found = await _look_for_earlier_create(target, api, possibly_created)
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
        if not is_duplicate_name(error):
            return error
        if possibly_created is not None:
            # Only our own earlier create can have used this run's unique name: follow it by the list.
            target.notes.append(
                f"create answer lost ({possibly_created}); the retry found the name taken, so it was accepted"
            )
            return Submitted("")
        hint = "another run used this name (put {run_id} in --name-template to keep names apart)"
        return TargetError(error.error_class, f"{error.message}; {hint}", code=error.code)
    failpoint("after_create")
    return Submitted(job_id)


async def _dr_mark(api: DeploymentApi) -> float | None:
    """The start of the DR job the status describes now (0.0: none); None when it cannot be read."""
    try:
        return dr_status_started(await api.dr_status())
    except TargetError:
        return None


async def _look_for_earlier_create(target: TargetState, api: DeploymentApi, why: str) -> Submitted | None:
    """The earlier create, if the server took it (noted on the target with `why` it was in doubt)."""
    found = await _find_on_server(target, api, target.submitted_at if target.submitted_at is not None else 0.0)
    if found is not None:
        target.notes.append(f"create answer lost ({why}); the server had accepted it")
    return found


async def _find_on_server(target: TargetState, api: DeploymentApi, since: float) -> Submitted | None:
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
    for job_id in reversed((await api.job_ids())[-5:]):
        if is_our_create_job(await api.job(job_id), target.store, since):
            return job_id
    return ""
