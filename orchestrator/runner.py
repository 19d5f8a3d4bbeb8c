"""The fleet run: inventory -> concurrent creates under limits -> one multiplexed poller -> outcomes.

`run_fleet` always returns a result with every target in it, whatever happened: a target that failed
is a value, an interrupted run still has an outcome and a reason for each target.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Final

import anyio

from orchestrator.api import ArcGISClient, open_api_context
from orchestrator.backoff import Backoff
from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import TargetError
from orchestrator.events import Event, EventKind, Observer, Observers
from orchestrator.model import Deployment, Outcome, RunResult, TargetState, run_timestamp
from orchestrator.poll import Poller
from orchestrator.recorder import LedgerWriter
from orchestrator.settings import RunSettings
from orchestrator.submit import Gate, WorkerContext, back_up_deployment

Emit = Callable[[EventKind, TargetState | None, str], None]
_COUNTED_FAILED: Final = frozenset({Outcome.FAILED, Outcome.TIMED_OUT})  # what --max-failures counts


@dataclass(slots=True)
class RunControl:
    """How the command line stops a run: `stop()` stops submitting and gives running jobs a grace
    period; `abort()` ends the run at once. Either way the result still covers every target."""

    stop_requested: bool = False
    _stop: anyio.Event | None = None
    _scope: anyio.CancelScope | None = None

    def stop(self) -> None:
        self.stop_requested = True
        if self._stop is not None:
            self._stop.set()

    def abort(self) -> None:
        self.stop()
        if self._scope is not None:
            self._scope.cancel()


async def run_fleet(
    targets: list[TargetState],
    settings: RunSettings,
    *,
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
    observer = Observers(observer, ledger) if observer and ledger else (observer or ledger or Observers())
    control = control or RunControl()
    result = RunResult(run_id, started_at, started_at, targets, settings, inventory)
    gate = Gate()
    budget = settings.failure_budget

    def emit(kind: EventKind, target: TargetState | None = None, detail: str = "") -> None:
        observer.on_event(Event(kind, clock.now(), target, detail))

    # Counted as targets finish, not recounted each time: a recount per finish is quadratic in the fleet.
    failed = sum(1 for t in targets if t.outcome in _COUNTED_FAILED)  # a resumed run's earlier failures

    def check_failure_budget() -> None:
        if gate.open and budget.exceeded(failed, len(targets)):
            gate.close(f"not submitted: the failure threshold ({settings.max_failures}) was reached")
            emit(EventKind.STOPPED_SUBMITTING, detail=gate.reason)

    def on_finished(target: TargetState) -> None:
        nonlocal failed
        emit(EventKind.FINISHED, target)
        failed += target.outcome in _COUNTED_FAILED
        check_failure_budget()

    def on_retry(deployment: Deployment, error: TargetError, delay: float) -> None:
        emit(EventKind.RETRY, detail=f"{deployment.name}: {error.message}; retrying in {delay:.1f} s")

    deployments = len({t.deployment.name for t in targets})
    emit(EventKind.RUN_STARTED, detail=f"{len(targets)} targets on {deployments} deployments")
    check_failure_budget()  # a resumed run may have spent its budget before it was cut
    with anyio.CancelScope() as run_scope:
        control._scope, control._stop = run_scope, anyio.Event()
        if control.stop_requested:
            control._stop.set()
        async with open_api_context(settings, clock, rng, on_retry) as context:
            poller = Poller(
                backoff=Backoff(settings.poll_initial, settings.poll_factor, settings.poll_max),
                clock=clock,
                rng=rng,
                on_poll=lambda target: emit(EventKind.POLLED, target, target.server_status),
                lag=settings.poll_lag,
                max_in_flight=2 * settings.concurrency,
            )
            worker_context = WorkerContext(
                poller=poller,
                gate=gate,
                running_limiter=anyio.CapacityLimiter(settings.max_running or math.inf),
                clock=clock,
                rng=rng,
                retries=settings.retries,
                retry_backoff=Backoff(settings.retry_initial, 2.0, settings.retry_max),
                job_timeout=settings.job_timeout,
                description=lambda target: settings.description.format(
                    run_id=run_id,
                    timestamp=run_timestamp(started_at),
                    deployment=target.deployment.name,
                    store=target.store,
                ),
                passcode=lambda target: target.deployment.passcode.get_secret_value(),
                on_submitted=lambda target: emit(EventKind.SUBMITTED, target, ""),
                on_finished=on_finished,
                before_create=ledger.intend_create if ledger is not None else _nothing_to_record,
                start_limiter=anyio.CapacityLimiter(settings.concurrency),
            )
            async with anyio.create_task_group() as recording:
                if ledger is not None:
                    recording.start_soon(ledger.run)
                async with anyio.create_task_group() as polling:
                    polling.start_soon(poller.run)
                    async with anyio.create_task_group() as watchers:
                        watchers.start_soon(_watch_stop, control, control._stop, gate, settings, clock, run_scope, emit)
                        if settings.deadline is not None:
                            left = started_at + settings.deadline - clock.now()  # a resumed run keeps its deadline
                            watchers.start_soon(_watch_deadline, settings.deadline, left, gate, clock, emit)
                        async with anyio.create_task_group() as workers:
                            for group_targets in longest_first(targets):
                                client = ArcGISClient(group_targets[0].deployment, context)
                                workers.start_soon(back_up_deployment, group_targets, client, worker_context)
                        watchers.cancel_scope.cancel()
                    poller.close()
                recording.cancel_scope.cancel()  # the ledger writer flushes what is queued as it stops
    settle_unfinished(targets, clock.now(), gate.reason)
    result.finished_at = clock.now()
    cut_short = any(t.outcome in (Outcome.SKIPPED, Outcome.NOT_STARTED, Outcome.INTERRUPTED) for t in targets)
    result.stopped_reason = gate.reason if cut_short and not gate.open else ""
    emit(EventKind.RUN_FINISHED, detail=result.stopped_reason)
    return result


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


async def _watch_stop(
    control: RunControl,
    stop: anyio.Event,
    gate: Gate,
    settings: RunSettings,
    clock: Clock,
    run_scope: anyio.CancelScope,
    emit: Emit,
) -> None:
    await stop.wait()
    gate.close("not started: the run was interrupted", Outcome.NOT_STARTED)
    emit(EventKind.STOPPED_SUBMITTING, None, f"interrupted: following running jobs for {settings.grace:g} s")
    await clock.sleep(settings.grace)
    run_scope.cancel()


async def _nothing_to_record(target: TargetState) -> None:
    return None


async def _watch_deadline(deadline: float, left: float, gate: Gate, clock: Clock, emit: Emit) -> None:
    await clock.sleep(max(0.0, left))
    gate.close(f"not submitted: the run deadline ({deadline:g} s) was reached")
    emit(EventKind.STOPPED_SUBMITTING, None, gate.reason)


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
