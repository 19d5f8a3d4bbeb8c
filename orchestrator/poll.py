"""One poller for every running backup job.

Each job has its own next-poll time (`next_poll_delay`, pure): a job with an expected end (its own
duration in earlier runs, from the ledger, or else how long this run's jobs have been taking) is not
polled before it can be done, then at gaps that grow with its running time, so a poll comes at most
`poll_lag` of the job's duration after its end; a job with nothing known backs off exponentially with
full jitter, capped. The poller sleeps until the earliest poll (or until a new job arrives), polls
what is due, and decides with `judge_job`, a pure function. A job that says COMPLETED is confirmed
by finding its backup in the store's list (11.4 says COMPLETED before the backup exists); a missing
`result` is fine (12.0). Unknown or missing statuses, UNAVAILABLE and transient errors are tolerated
until the job timeout. No limiter is held while waiting: the only one, on HTTP requests, lives inside
the client.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import anyio

from orchestrator.backoff import Backoff
from orchestrator.clock import Clock
from orchestrator.dr import JobApi, Verdict, dr_status_is_ours, dr_status_message, judge_job
from orchestrator.errors import ErrorClass, TargetError, internal_error
from orchestrator.failpoints import failpoint
from orchestrator.model import Outcome, Phase, TargetState
from orchestrator.untrusted import shown

EXPECTED_LEAD: Final = 0.8  # a job with a known past duration is first polled at this share of it
FLEET_QUANTILE: Final = 0.05  # with no past of its own, a job waits for what the quickest 5 % of this run took
FLEET_SAMPLES: Final = 10  # ... once this many jobs of this run have succeeded
_LAG_FLOOR: Final = 0.2  # the shortest gap, as a share of poll_initial: a young job is not polled in a loop


def next_poll_delay(
    elapsed: float, polls: int, not_before: float | None, backoff: Backoff, lag: float, rng: random.Random
) -> float:
    """Seconds until the next poll of a job that has run `elapsed` seconds and been polled `polls` times.

    `not_before`: how long the job can be expected to run at least (None: nothing known). Before it,
    no poll. After it, the gap is at most `lag` times the running time, so the poll that sees the end
    comes at most `lag` of the job's duration late, and the number of polls grows with the logarithm
    of the duration, not with the duration. Never more than `backoff.cap`. Pure but for `rng`, whose
    jitter keeps jobs started together from polling together.
    """
    if not_before is None:
        return backoff.delay(polls, rng)
    if elapsed < not_before:
        return not_before - elapsed + rng.uniform(0.0, lag / 4) * not_before
    gap = min(backoff.cap, max(backoff.initial * _LAG_FLOOR, lag * elapsed))
    return rng.uniform(0.75, 1.0) * gap


def measured_run_time(started: float, last_not_done_at: float | None, seen_done_at: float) -> float:
    """How long a job ran, for the schedule of later ones. Pure.

    From its start to the last poll that found it not done: a little short of the truth (by at most
    one gap, `poll_lag` of it), never long, so an expectation built on it cannot grow night after night.
    A job done by its first poll only tells it took at most until then: that upper bound, which shrinks
    with every night the job keeps being done early, so a job that got quicker is soon polled earlier.
    """
    return max(0.0, (last_not_done_at if last_not_done_at is not None else seen_done_at) - started)


def quantile(ordered: list[float], share: float) -> float:
    """The `share` quantile of a sorted, non-empty list (nearest rank). Pure."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


@dataclass(eq=False)
class _Followed:
    target: TargetState
    api: JobApi
    give_up_at: float
    confirming: bool
    measurable: bool  # accepted in this process and followed by its job id: its running time can be measured
    done: anyio.Event = field(default_factory=anyio.Event)
    last_not_done_at: float | None = None  # the latest poll that found the job not done yet


OnPoll = Callable[[TargetState], None]


class Poller:
    """Follows every submitted job to its end; `follow` returns when the target has its outcome."""

    def __init__(
        self,
        *,
        backoff: Backoff,
        clock: Clock,
        rng: random.Random,
        on_poll: OnPoll | None = None,
        lag: float = 0.08,
        max_in_flight: float = math.inf,
    ) -> None:
        self._backoff = backoff
        self._lag = lag
        # Polls under way at once. More would only queue for a request slot, each a task with its
        # stack: at 10,000 jobs coming due together, tens of MB. The rest wait in the heap, as entries.
        self._max_in_flight = max_in_flight
        self._durations: list[float] = []  # of this run's succeeded jobs, sorted: what the fleet takes
        self._started = clock.now()
        self._clock = clock
        self._rng = rng
        self._on_poll = on_poll
        self._due: list[tuple[float, int, _Followed]] = []
        self._sequence = 0
        self._in_flight = 0
        self._wake = anyio.Event()
        self.peak_followed = 0

    @property
    def followed(self) -> int:
        return len(self._due) + self._in_flight

    @property
    def next_due(self) -> float | None:
        """When the next poll is due (None when no job waits): for tests that step a manual clock."""
        return self._due[0][0] if self._due else None

    async def follow(self, target: TargetState, api: JobApi, give_up_at: float) -> None:
        """Poll the target's job (or, without a job id, its store's list) until it ends or times out."""
        accepted_here = target.accepted_at is not None and target.accepted_at >= self._started
        followed = _Followed(target, api, give_up_at, confirming=not target.job_id, measurable=accepted_here)
        target.phase = Phase.CONFIRMING if followed.confirming else Phase.RUNNING
        self._push(self._next_poll_at(followed), followed)
        await followed.done.wait()

    def _push(self, at: float, followed: _Followed) -> None:
        earliest = not self._due or at < self._due[0][0]
        self._sequence += 1
        heapq.heappush(self._due, (at, self._sequence, followed))
        self.peak_followed = max(self.peak_followed, self.followed)
        if earliest:  # the loop sleeps until the earliest poll: only a new earliest one needs it awake
            self._wake.set()

    async def run(self) -> None:
        """Polls what is due, for as long as the run lasts: its owner cancels it once every job has ended."""
        async with anyio.create_task_group() as polls:
            while True:
                self._wake = anyio.Event()  # reset before looking, so no push can be missed
                now = self._clock.now()
                while self._due and self._due[0][0] <= now and self._in_flight < self._max_in_flight:
                    _, _, followed = heapq.heappop(self._due)
                    self._in_flight += 1
                    polls.start_soon(self._poll, followed)
                saturated = self._in_flight >= self._max_in_flight  # a finishing poll wakes the loop
                delay = self._due[0][0] - now if self._due and not saturated else None
                await self._sleep_or_wake(delay)

    async def _sleep_or_wake(self, delay: float | None) -> None:
        wake = self._wake
        async with anyio.create_task_group() as race:

            async def sleep_then_stop() -> None:
                assert delay is not None
                await self._clock.sleep(delay)
                race.cancel_scope.cancel()

            async def wake_then_stop() -> None:
                await wake.wait()
                race.cancel_scope.cancel()

            if delay is not None:
                race.start_soon(sleep_then_stop)
            race.start_soon(wake_then_stop)

    async def _poll(self, followed: _Followed) -> None:
        target = followed.target
        try:
            finished = await self._check(followed)
        except Exception as error:  # an answer nothing foresaw: this job's end here, never the poller's
            failure = internal_error(error)
            stopped = TargetError(failure.error_class, f"{failure.message}; its job may still complete on the server")
            target.finish(Outcome.INTERRUPTED, self._clock.now(), stopped)  # `resume` follows it again
            finished = True
        finally:
            self._in_flight -= 1
            if self._in_flight == self._max_in_flight - 1:
                self._wake.set()  # the loop may be waiting for a free poll to start the due ones
        if self._on_poll is not None:
            self._on_poll(target)
        if finished:
            self._learn(target)
            followed.done.set()
            self._wake.set()
            return
        now = self._clock.now()
        if now >= followed.give_up_at:
            if not await self._backup_listed(followed):  # a last look: the job may have ended unseen
                target.fail(_timed_out(followed, self._clock), self._clock.now())
            followed.done.set()
            self._wake.set()
            return
        self._push(self._next_poll_at(followed), followed)

    def _next_poll_at(self, followed: _Followed) -> float:
        """When to poll this job next, but never after the moment we would give up."""
        target, now = followed.target, self._clock.now()
        started = target.job_started_at(now)
        not_before = self._expected_at_least(target)
        delay = next_poll_delay(now - started, target.polls, not_before, self._backoff, self._lag, self._rng)
        return min(now + delay, followed.give_up_at)

    def _expected_at_least(self, target: TargetState) -> float | None:
        """How long the job will run at least, as far as anything tells; None below the first poll's ceiling,
        where the backoff is the better guide."""
        if target.expected_s is not None:
            at_least: float | None = EXPECTED_LEAD * target.expected_s
        elif len(self._durations) >= FLEET_SAMPLES:
            at_least = quantile(self._durations, FLEET_QUANTILE)
        else:
            at_least = None
        return at_least if at_least is not None and at_least >= self._backoff.initial else None

    def _learn(self, target: TargetState) -> None:
        """A job's measured running time: what the jobs with no past of their own can expect."""
        if target.outcome is Outcome.SUCCEEDED and target.ran_s is not None:
            bisect.insort(self._durations, target.ran_s)

    async def _check(self, followed: _Followed) -> bool:
        """One look at the job; True once the target has its outcome."""
        target = followed.target
        target.polls += 1
        # Times are taken as a request is sent, not as its answer is read: a busy event loop may read
        # an answer seconds late, and a running time measured from that would grow with the load.
        asked_at = self._clock.now()
        if not followed.confirming:
            try:
                body = await followed.api.job(target.job_id)
            except TargetError as error:
                if error.error_class is ErrorClass.AUTHENTICATION:
                    target.fail(error, self._clock.now())
                    return True
                if error.error_class is ErrorClass.CONFIGURATION:
                    followed.confirming = True  # the job resource vanished: the store's list tells the truth
                    target.notes.append(f"job resource unreadable ({error.message}); confirming by the backups list")
                return False
            failpoint("while_following")
            verdict, status, reason = judge_job(body)
            if status:
                target.server_status = shown(status, 60)  # the server's word, as people and files will see it
            if verdict is Verdict.FAILED:
                target.fail(TargetError(ErrorClass.JOB_FAILED, reason), self._clock.now())
                return True
            if verdict is Verdict.WAIT:
                if status.strip().upper() != "UNAVAILABLE":
                    followed.last_not_done_at = asked_at
                return False
            followed.confirming = True
        target.phase = Phase.CONFIRMING
        listed_at = self._clock.now()
        try:
            names = await followed.api.backup_names(target.store)
        except TargetError as error:
            if error.error_class is ErrorClass.AUTHENTICATION:
                target.fail(error, self._clock.now())
                return True
            return False
        if target.backup_name in names:
            if followed.measurable and target.job_id:
                target.ran_s = measured_run_time(target.job_started_at(asked_at), followed.last_not_done_at, asked_at)
            target.finish(Outcome.SUCCEEDED, self._clock.now())
            return True
        followed.last_not_done_at = listed_at  # said COMPLETED, but its backup is not there yet (11.4)
        if not target.job_id:  # no job to ask (its id was lost): the DR status may tell how it ended
            return await self._status_says_failed(followed)
        return False

    async def _status_says_failed(self, followed: _Followed) -> bool:
        """Whether the DR status names this target's backup as failed; if so, the target failed."""
        target = followed.target
        try:
            status = await followed.api.dr_status()
        except TargetError:
            return False
        ours = dr_status_is_ours(status, target.backup_name, target.store, target.dr_mark)
        if not (ours and status.get("state") == "failed"):
            return False
        reason = f"the DR status says this backup failed: {dr_status_message(status)}"
        target.fail(TargetError(ErrorClass.JOB_FAILED, reason), self._clock.now())
        return True

    async def _backup_listed(self, followed: _Followed) -> bool:
        """Whether the target's backup is in its store's list; if so, it succeeded. Errors count as no."""
        target = followed.target
        try:
            listed = target.backup_name in await followed.api.backup_names(target.store)
        except Exception:  # a refusal, or an answer nothing foresaw: either way, not seen listed
            return False
        if listed:
            target.notes.append("its backup was found in the store's list when the job timeout came")
            target.finish(Outcome.SUCCEEDED, self._clock.now())
        return listed


def _timed_out(followed: _Followed, clock: Clock) -> TargetError:
    target = followed.target
    waited = clock.now() - (target.submitted_at or clock.now())
    if followed.confirming and target.server_status.upper() == "COMPLETED":
        reason = (
            f"the job said COMPLETED but backup {target.backup_name!r} did not appear in store "
            f"{target.store!r} within {waited:.0f} s"
        )
    else:
        reason = f"no end after {waited:.0f} s (last status {target.server_status or 'unknown'})"
    return TargetError(ErrorClass.JOB_TIMED_OUT, reason)
