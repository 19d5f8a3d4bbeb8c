"""The fleet run: targets -> concurrent creates under limits -> one multiplexed poller -> outcomes.

`run_fleet` always returns a result with every target in it, whatever happened: a target that failed
is a value, an interrupted run still has an outcome and a reason for each target. It takes its clients
from a factory (`api.open_clients` for real deployments, an in-memory fake in tests).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Final

import anyio

from orchestrator.clock import Clock, SystemClock
from orchestrator.dr import DeploymentApi
from orchestrator.errors import TargetError, internal_error
from orchestrator.events import Event, EventKind, Observer, Observers
from orchestrator.model import Deployment, Outcome, RunResult, TargetState, run_timestamp
from orchestrator.poll import Poller
from orchestrator.recorder import LedgerWriter
from orchestrator.schedule import scouts_for
from orchestrator.settings import RunSettings
from orchestrator.submit import Gate, WorkerContext, back_up_deployment

ClientFactory = Callable[[Deployment], DeploymentApi]
_COUNTED_FAILED: Final = frozenset({Outcome.FAILED, Outcome.TIMED_OUT})  # what --max-failures counts
_CUT_SHORT: Final = frozenset({Outcome.SKIPPED, Outcome.NOT_STARTED, Outcome.INTERRUPTED})


class RunControl:
    """How the command line stops a run: `stop()` stops submitting and gives running jobs a grace
    period; `abort()` ends the run at once. Either way the result still covers every target."""

    def __init__(self) -> None:
        self.stop_requested = False
        self.abort_requested = False
        self._changed: anyio.Event | None = None  # made by the first waiter, inside the event loop

    def stop(self) -> None:
        self.stop_requested = True
        self._wake()

    def abort(self) -> None:
        self.stop_requested = self.abort_requested = True
        self._wake()

    async def stopped(self) -> None:
        """Returns once `stop()` (or `abort()`) has been called."""
        while not self.stop_requested:
            await self._next_change()

    async def aborted(self) -> None:
        while not self.abort_requested:
            await self._next_change()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _next_change(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()


@dataclass(slots=True)
class _Run:
    """What the workers of one run share beside their limits: the gate, the failures counted, the events."""

    targets: list[TargetState]
    settings: RunSettings
    clock: Clock
    observer: Observer
    gate: Gate
    failed: int  # counted as targets finish: a recount per finish is quadratic in the fleet

    def emit(self, kind: EventKind, target: TargetState | None = None, detail: str = "") -> None:
        self.observer.on_event(Event(kind, self.clock.now(), target, detail))

    def finished(self, target: TargetState) -> None:
        self.emit(EventKind.FINISHED, target)
        self.failed += target.outcome in _COUNTED_FAILED
        self.check_failure_budget()

    def check_failure_budget(self) -> None:
        if self.gate.open and self.settings.failure_budget.exceeded(self.failed, len(self.targets)):
            self.stop_submitting(f"the failure threshold ({self.settings.max_failures}) was reached")

    def stop_submitting(self, why: str, outcome: Outcome = Outcome.SKIPPED, detail: str = "") -> None:
        self.gate.close(why, outcome)  # the first reason stays: a closed gate does not change
        self.emit(EventKind.STOPPED_SUBMITTING, detail=detail or self.gate.reason)


async def run_fleet(
    targets: list[TargetState],
    settings: RunSettings,
    *,
    clients: ClientFactory,
    run_id: str,
    started_at: float,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    observer: Observer | None = None,
    control: RunControl | None = None,
    inventory: str = "",
    ledger: LedgerWriter | None = None,
) -> RunResult:
    """Back up every target; returns once each has an outcome. With a `ledger`, every step is recorded
    and each create's intent is on disk before the create is sent. Targets that already have an
    outcome (a resumed run) are left as they are; those with a job id are followed, not created."""
    clock = clock or SystemClock()
    rng = rng or random.Random()
    control = control or RunControl()
    observers = [o for o in (observer, ledger) if o is not None]
    failed = sum(1 for t in targets if t.outcome in _COUNTED_FAILED)  # a resumed run's earlier failures
    run = _Run(targets, settings, clock, Observers(*observers), Gate(), failed)
    deployments = len({t.deployment.name for t in targets})
    run.emit(EventKind.RUN_STARTED, detail=f"{len(targets)} targets on {deployments} deployments")
    run.check_failure_budget()  # a resumed run may have spent its budget before it was cut
    poller = Poller(
        clock=clock,
        rng=rng,
        first_look=settings.poll_initial,
        cap=settings.poll_max,
        on_poll=lambda target: run.emit(EventKind.POLLED, target, target.server_status),
        lag=settings.poll_lag,
        max_in_flight=2 * settings.concurrency,
        scouts=scouts_for(sum(1 for t in targets if not t.finished)),
    )
    worker_context = _worker_context(run, poller, rng, run_id, started_at, ledger)
    with anyio.CancelScope() as run_scope:
        async with anyio.create_task_group() as services:
            if ledger is not None:
                services.start_soon(ledger.run)
            services.start_soon(poller.run)
            services.start_soon(_stop_when_asked, control, run, poller, run_scope)
            services.start_soon(_end_when_aborted, control, run_scope)
            if settings.deadline is not None:
                left = started_at + settings.deadline - clock.now()  # a resumed run keeps its deadline
                services.start_soon(_stop_at_the_deadline, run, left)
            async with anyio.create_task_group() as workers:  # one per deployment, the longest expected first
                for group in longest_first(targets):
                    workers.start_soon(_back_up_guarded, group, clients(group[0].deployment), worker_context, run)
            # Every job has ended: the poller and the watchers stop, the ledger writer flushing as it does.
            services.cancel_scope.cancel()
    settle_unfinished(targets, clock.now(), run.gate.reason)
    cut_short = not run.gate.open and any(t.outcome in _CUT_SHORT for t in targets)
    result = RunResult(run_id, started_at, clock.now(), targets, settings, inventory, run.gate.why if cut_short else "")
    run.emit(EventKind.RUN_FINISHED, detail=result.stopped_reason)
    return result


async def _back_up_guarded(group: list[TargetState], api: DeploymentApi, context: WorkerContext, run: _Run) -> None:
    """One deployment's worker. An exception nothing foresaw (an answer no rule expected) fails that
    deployment's unfinished targets as `internal`, with its type and redacted message; the other
    deployments go on, as from any failure."""
    try:
        await back_up_deployment(group, api, context)
    except Exception as error:
        failure = internal_error(error)
        for target in group:
            if target.finished:
                continue
            if target.create_intended or target.job_id:  # its backup may exist: `resume` looks for it, follows it
                landed = TargetError(failure.error_class, f"{failure.message}; a create may have reached the server")
                target.finish(Outcome.INTERRUPTED, run.clock.now(), landed)
            else:
                target.fail(failure, run.clock.now())
            run.finished(target)


def _worker_context(
    run: _Run, poller: Poller, rng: random.Random, run_id: str, started_at: float, ledger: LedgerWriter | None
) -> WorkerContext:
    settings = run.settings

    def description(target: TargetState) -> str:
        return settings.description.format(
            run_id=run_id, timestamp=run_timestamp(started_at), deployment=target.deployment.name, store=target.store
        )

    return WorkerContext(
        poller=poller,
        gate=run.gate,
        running_limiter=anyio.CapacityLimiter(settings.max_running or math.inf),
        clock=run.clock,
        rng=rng,
        retry=settings.retry_policy,
        job_timeout=settings.job_timeout,
        description=description,
        passcode=lambda target: target.deployment.passcode.get_secret_value(),
        before_create=ledger.intend_create if ledger is not None else _nothing_to_record,
        on_submitted=lambda target: run.emit(EventKind.SUBMITTED, target),
        on_finished=run.finished,
        start_limiter=anyio.CapacityLimiter(settings.concurrency),
    )


def longest_first(targets: list[TargetState]) -> list[list[TargetState]]:
    """The targets by deployment, the deployments whose jobs are expected to take longest first. Pure.

    Started first, the longest jobs end no later than the run's shortest possible end (longest
    processing time first); a deployment with no past to go by comes before the known ones, as it may
    be the longest; otherwise the inventory's order is kept.
    """
    groups = [list(group) for _, group in groupby(targets, key=lambda t: t.deployment.name)]

    def expected(group: list[TargetState]) -> float:
        durations = [t.expected_s for t in group if not t.finished]
        return math.inf if any(d is None for d in durations) else sum(d for d in durations if d is not None)

    return sorted(groups, key=expected, reverse=True)


async def _stop_when_asked(control: RunControl, run: _Run, poller: Poller, run_scope: anyio.CancelScope) -> None:
    """Ctrl-C: nothing new is submitted; running jobs are followed for the grace period, then the run ends. A job
    held until the scouts show the fleet's durations is followed too: the grace period will not wait for them."""
    await control.stopped()
    poller.stop_holding()
    grace = run.settings.grace
    run.stop_submitting(
        "the run was interrupted",
        Outcome.NOT_STARTED,
        f"interrupted: following running jobs for {grace:g} s",
    )
    await run.clock.sleep(grace)
    run_scope.cancel()


async def _end_when_aborted(control: RunControl, run_scope: anyio.CancelScope) -> None:
    await control.aborted()
    run_scope.cancel()


async def _stop_at_the_deadline(run: _Run, left: float) -> None:
    await run.clock.sleep(max(0.0, left))
    run.stop_submitting(f"the run deadline ({run.settings.deadline:g} s) was reached")


async def _nothing_to_record(target: TargetState) -> None:
    return None


def settle_unfinished(targets: list[TargetState], now: float, not_started_reason: str = "") -> None:
    """After the run: a target without an outcome was cut short; say how."""
    for target in targets:
        if target.finished:
            continue
        if target.submitted_at is not None:
            job = f" (job {target.job_id})" if target.job_id else ""
            target.finish(
                Outcome.INTERRUPTED,
                now,
                reason=f"the run ended while the backup was in progress{job}; it may still complete on the server",
            )
        else:
            reason = not_started_reason or "the run ended before this target started"
            target.finish(Outcome.NOT_STARTED, now, reason=reason)
