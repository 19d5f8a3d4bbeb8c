"""Submitting backups, one deployment at a time per worker: sign in, find the stores, create, follow.

A deployment's version and default store are read first, unless an earlier run's are remembered (`memory`):
then its create is its first request, and one refused in a way that contradicts them has them read again.

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
from orchestrator.dr import (
    DeploymentApi,
    dr_status_is_ours,
    dr_status_started,
    is_duplicate_name,
    is_legacy,
    is_our_create_job,
)
from orchestrator.errors import TargetError
from orchestrator.failpoints import failpoint
from orchestrator.guard import last_word, reached
from orchestrator.memory import Facts, Remembered, changed, contradicts, facts_of
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
        await clock.sleep_unless(self._closed, seconds)


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
    going = Going(needs_default=any(target.store == DEFAULT_STORE for target in targets))
    maybe_on_server = any(_maybe_on_server(target) for target in targets)
    # Its backup may be on the server already: its version is read, never remembered (its job is followed by
    # that version's paths, with no create first to contradict a stale memory).
    if not maybe_on_server:
        going.memory = targets[0].remembered
        going.facts = facts_of(going.memory, needs_default_store=going.needs_default)
        if going.facts is not None:
            api.version = going.facts.version  # the create is the first request: it signs in
    # Read here, before the first create, unless a cap on running jobs keeps a queue to hold its place in (then
    # it reads in its first create's slot). A worker waiting for its turn to sign in waits shallow here: 10,000
    # waiting inside their creates took 18 MB more.
    if going.facts is None and (maybe_on_server or ctx.running_limiter.total_tokens == math.inf):
        try:
            await _learn(targets[0], api, ctx, going)
        except _NotRead as failed:
            for target in targets:
                if _maybe_on_server(target):  # its backup may exist or be running: unknown, not failed
                    reason = (
                        f"could not reach the deployment to follow this backup ({failed.error.error_class.value}: "
                        f"{failed.error.message}); `orchestrator resume` looks again"
                    )
                    _end(target, ctx, outcome=Outcome.INTERRUPTED, reason=reason)
                else:
                    _end(target, ctx, error=failed.error)
            return
    for target in targets:
        try:
            await back_up_store(target, api, ctx, going)
        except _NotRead as failed:  # one refused sign-in fails the deployment: never tried again per store
            for left in targets:
                if not left.finished:
                    _end(left, ctx, error=failed.error)
            return


@dataclass(slots=True)
class Going:
    """What one deployment's worker goes by: `facts`, remembered (`memory`) or read. Under a cap on running jobs,
    unremembered ones are read in its first create's running slot: a deployment that reads keeps its place in the
    queue for running slots (longest first, `runner.longest_first`), rather than coming after every remembered
    one."""

    needs_default: bool = False  # a target of it backs up its default store
    facts: Facts | None = None  # None until read
    memory: Remembered | None = None  # what earlier runs read, even if too old to go by (then compared)


class _NotRead(Exception):
    """Reading a deployment's facts failed: the error every target of it ends with."""

    def __init__(self, error: TargetError) -> None:
        super().__init__(error.message)
        self.error = error


async def _read_facts(api: DeploymentApi, clock: Clock, *, needs_default: bool) -> Facts:
    """The deployment's version and, when asked for, its default store, as the server says them now (the first
    request signs in)."""
    version = await api.detect_version()
    default_store = await api.default_store() if needs_default else ""
    return Facts(version, default_store, clock.now())


async def _learn(target: TargetState, api: DeploymentApi, ctx: WorkerContext, going: Going) -> Facts:
    """The facts the worker goes by, read now if need be (within a start slot: deployments sign in a few at a
    time); a memory they differ from is said. `_NotRead` when they cannot be read."""
    if going.facts is not None:
        return going.facts
    try:
        async with ctx.start_limiter:
            going.facts = await _read_facts(api, ctx.clock, needs_default=going.needs_default)
    except TargetError as error:
        raise _NotRead(error) from None
    difference = (
        "" if going.memory is None else changed(going.memory, going.facts, default_store_used=going.needs_default)
    )
    if difference:
        target.notes.append(f"remembered from an earlier run, read again from the server: {difference}")
    return going.facts


def _go_by(target: TargetState, facts: Facts) -> None:
    """The target's store, if the default one, and what it goes by, as the ledger keeps it (a target resumed or
    snapshotted keeps what it went by, or its preflight read)."""
    if target.store == DEFAULT_STORE:
        target.store = facts.default_store
    if target.facts_read_at is None:
        target.version = target.version or facts.version
        target.facts_read_at = facts.read_at


def _maybe_on_server(target: TargetState) -> bool:
    """A target the run being resumed may already have created on the server."""
    return bool(target.job_id) or target.create_intended


async def back_up_store(
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, going: Going | None = None
) -> None:
    """One target: its backup submitted, then its job followed to the end, holding a running-job slot. `going`:
    what its worker goes by (read first if need be; a remembered one read again when an answer contradicts it);
    None: the target's store and the client's paths are already right."""
    try:
        async with submission(target, api, ctx, going) as submitted:
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
async def submission(
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, going: Going | None = None
) -> AsyncIterator[Submitted | Stopped]:
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
            step = await _next_step(target, api, ctx, attempts, going)
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
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, attempts: _Attempts, going: Going | None = None
) -> Submitted | TargetError | Stopped:
    """With a running slot held: the next create or, once submitting has stopped, the last word on it. The
    deployment's facts are read first unless known. A create refused as a remembered fact's contradiction has
    them read again and, if they changed, is sent again at once (a step of its own: the refusal counts for
    nothing)."""
    if not ctx.gate.open:
        if attempts.possibly_created is not None:  # an earlier create may have landed: looked for, followed
            found = await _look_for_earlier_create(target, api, attempts.possibly_created)
            if found is not None:
                return found
        if attempts.last_error is None:
            return Stopped(ctx.gate.reason)
        return Stopped(f"{ctx.gate.reason} (the last create attempt: {attempts.last_error.message})")
    facts = None if going is None else await _learn(target, api, ctx, going)
    if not ctx.gate.open:  # closed while the facts were read: the last word, as above
        return await _next_step(target, api, ctx, attempts, going)
    if facts is not None:
        _go_by(target, facts)
    outcome = await _attempt_create(target, api, ctx, attempts.possibly_created)
    if facts is not None and facts.remembered:
        if isinstance(outcome, Submitted):
            facts.remembered = False  # its store and its paths held
        elif contradicts(outcome):
            again = await _read_again(target, api, ctx, facts, outcome)
            if again is None:
                return await _next_step(target, api, ctx, attempts, going)  # no longer remembered: once only
            outcome = again
    if isinstance(outcome, TargetError):
        attempts.met(outcome, ctx.retry, ctx.clock.now())
        why = attempts.possibly_created
        if why is not None and attempts.spent:  # a last look before giving up
            return await _look_for_earlier_create(target, api, why) or outcome
    return outcome


async def _read_again(
    target: TargetState, api: DeploymentApi, ctx: WorkerContext, facts: Facts, refused: TargetError
) -> TargetError | None:
    """`refused` may say that the remembered facts are out of date: read them from the server. None when they
    changed what the create asks (its store, or its paths), and the target now goes by them; otherwise the error
    that stands: `refused`, or the one reading them met (then they stay in doubt: a retry reads them again)."""
    try:
        fresh = await _read_facts(api, ctx.clock, needs_default=target.default_store)
    except TargetError as error:
        return error
    facts.remembered = False
    api.version = fresh.version
    moved = target.default_store and fresh.default_store != target.store
    other_paths = is_legacy(fresh.version) != is_legacy(facts.version)
    was = Facts(facts.version, target.store if target.default_store else "", facts.read_at)
    facts.version, facts.read_at = fresh.version, fresh.read_at
    facts.default_store = fresh.default_store or facts.default_store
    target.version, target.facts_read_at = fresh.version, fresh.read_at
    if not (moved or other_paths):
        return refused
    difference = changed(was, fresh, default_store_used=target.default_store)
    target.notes.append(f"remembered from an earlier run, found stale ({refused.message}); read again: {difference}")
    if other_paths and api.legacy and target.dr_mark is None:
        target.dr_mark = await _dr_mark(api)  # 10.9 now: its DR status tells our job by this (`_attempt_create`)
    if moved:
        target.store = fresh.default_store
        if target.create_intended:
            await ctx.before_create(target)  # the intent again, naming the store it now goes to
    return None


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
