"""One poller for every running backup job.

Each job has its own next-poll time (`schedule.next_poll_delay`, pure): no poll before the job can be
done (its own duration in earlier runs, from the ledger; else what the fleet's quickest jobs took in
this run), then polls at gaps of at most `poll_lag` of its running time, so its end is seen at most
`poll_lag` of its duration late. While nothing is known of the fleet, a few jobs (the scouts) are
followed from their first second and the others are held, unpolled, until the scouts show how long
jobs take (`schedule.FleetSample`). The poller sleeps until the earliest poll (or until a new job
arrives), polls what is due, and decides with `judge_job`, a pure function. A job that says COMPLETED
is confirmed by finding its backup in the store's list (11.4 says COMPLETED before the backup exists);
a missing `result` is fine (12.0). Unknown or missing statuses, UNAVAILABLE and transient errors are
tolerated until the job timeout. No limiter is held while waiting: the only one, on HTTP requests,
lives inside the client.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from orchestrator.clock import Clock
from orchestrator.dr import JobApi, Verdict, dr_status_is_ours, dr_status_message, judge_job
from orchestrator.errors import ErrorClass, TargetError, internal_error
from orchestrator.failpoints import failpoint
from orchestrator.model import Outcome, Phase, TargetState
from orchestrator.schedule import EXPECTED_LEAD, SCOUTS_MIN, FleetSample, measured_run_time, next_poll_delay
from orchestrator.untrusted import shown


@dataclass(eq=False)
class _Followed:
    target: TargetState
    api: JobApi
    give_up_at: float
    confirming: bool
    measurable: bool  # accepted in this process and followed by its job id: its running time can be measured
    key: int  # its own number in this poller
    done: anyio.Event = field(default_factory=anyio.Event)
    last_not_done_at: float | None = None  # the latest poll that found the job not done yet
    entry: int = 0  # the heap entry that stands for it: an older one, left in the heap, is skipped
    scout: bool = False  # followed from its first second, for the fleet's sake (`schedule.FleetSample`)
    held: bool = False  # waiting, unpolled, for the scouts to show how long jobs take
    was_held: bool = False  # its first poll came when released: done by then says nothing of its running time


OnPoll = Callable[[TargetState], None]


class Poller:
    """Follows every submitted job to its end; `follow` returns when the target has its outcome."""

    def __init__(
        self,
        *,
        clock: Clock,
        rng: random.Random,
        first_look: float = 1.0,
        cap: float = 60.0,
        on_poll: OnPoll | None = None,
        lag: float = 0.08,
        max_in_flight: float = math.inf,
        scouts: int = SCOUTS_MIN,
    ) -> None:
        self._first_look = first_look
        self._cap = cap
        self._lag = lag
        # Polls under way at once. More would only queue for a request slot, each a task with its
        # stack: at 10,000 jobs coming due together, tens of MB. The rest wait in the heap, as entries.
        self._max_in_flight = max_in_flight
        self._fleet = FleetSample(scouts)
        self._held: dict[int, _Followed] = {}  # by key, in the order held
        self._holding = True  # False once submitting stopped: every job is then followed as it is
        self._started = clock.now()
        self._clock = clock
        self._rng = rng
        self._on_poll = on_poll
        self._due: list[tuple[float, int, _Followed]] = []
        self._sequence = 0
        self._in_flight = 0
        self._wake = anyio.Event()
        self._waiting = 0  # jobs in the heap or held, each once
        self.peak_followed = 0

    @property
    def followed(self) -> int:
        return self._waiting + self._in_flight

    @property
    def held(self) -> int:
        """Jobs waiting, unpolled, for the scouts to show how long the fleet's jobs take."""
        return len(self._held)

    @property
    def fleet_quantile(self) -> float | None:
        """How long the quickest of this run's jobs take, once the scouts have shown it (seconds)."""
        return self._fleet.known

    @property
    def next_due(self) -> float | None:
        """When the next poll is due (None when no job waits): for tests that step a manual clock."""
        while self._due and self._due[0][2].entry != self._due[0][1]:
            heapq.heappop(self._due)  # superseded: the job was released from hold and pushed again
        return self._due[0][0] if self._due else None

    async def follow(self, target: TargetState, api: JobApi, give_up_at: float) -> None:
        """Poll the target's job (or, without a job id, its store's list) until it ends or times out."""
        accepted_here = target.accepted_at is not None and target.accepted_at >= self._started
        self._sequence += 1
        followed = _Followed(
            target, api, give_up_at, confirming=not target.job_id, measurable=accepted_here, key=self._sequence
        )
        target.phase = Phase.CONFIRMING if followed.confirming else Phase.RUNNING
        self._waiting += 1
        if target.expected_s is None and self._fleet.known is None and not followed.confirming and self._holding:
            if followed.measurable and self._fleet.wants_scout():
                followed.scout = True
                self._fleet.enlist(followed.key, target.job_started_at(self._clock.now()))
            elif followed.measurable:
                self._hold(followed)
        self._push(self._next_poll_at(followed), followed)
        self.peak_followed = max(self.peak_followed, self.followed)
        await followed.done.wait()

    def stop_holding(self) -> None:
        """Ctrl-C: the scouts may not show the fleet within the grace period, so no job waits for them any
        longer; a held one is followed from now as one nothing is known of."""
        self._holding = False
        self._release_held()

    def _hold(self, followed: _Followed) -> None:
        """Not polled until the scouts show how long jobs take, or until its give-up time."""
        followed.held = followed.was_held = True
        self._held[followed.key] = followed

    def _release_held(self) -> None:
        """Every held job gets its place in the schedule: the fleet's durations are known, or waited for no more."""
        held, self._held = self._held, {}
        for followed in held.values():
            followed.held = False
            self._push(self._next_poll_at(followed), followed)

    def _enlist_a_held_one(self) -> None:
        """A scout ended without showing the fleet's durations: the longest-held job takes its place."""
        if self._held and self._fleet.wants_scout():
            followed = self._held.pop(next(iter(self._held)))
            followed.held, followed.scout = False, True
            self._fleet.enlist(followed.key, followed.target.job_started_at(self._clock.now()))
            self._push(self._next_poll_at(followed), followed)

    def _push(self, at: float, followed: _Followed) -> None:
        earliest = self.next_due is None or at < self._due[0][0]
        self._sequence += 1
        followed.entry = self._sequence
        heapq.heappush(self._due, (at, self._sequence, followed))
        if earliest:  # the loop sleeps until the earliest poll: only a new earliest one needs it awake
            self._wake.set()

    async def run(self) -> None:
        """Polls what is due, for as long as the run lasts: its owner cancels it once every job has ended."""
        async with anyio.create_task_group() as polls:
            while True:
                self._wake = anyio.Event()  # reset before looking, so no push can be missed
                now = self._clock.now()
                while (due := self.next_due) is not None and due <= now and self._in_flight < self._max_in_flight:
                    _, _, followed = heapq.heappop(self._due)
                    if followed.held:  # its give-up time came while held: looked at all the same
                        followed.held = False
                        del self._held[followed.key]
                    self._waiting -= 1
                    self._in_flight += 1
                    polls.start_soon(self._poll, followed)
                saturated = self._in_flight >= self._max_in_flight  # a finishing poll wakes the loop
                due = self.next_due
                delay = due - now if due is not None and not saturated else None
                await self._clock.sleep_unless(self._wake, delay)

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
            self._ended(followed)
            return
        now = self._clock.now()
        if now >= followed.give_up_at:
            if not await self._backup_listed(followed):  # a last look: the job may have ended unseen
                target.fail(_timed_out(followed, self._clock), self._clock.now())
            self._ended(followed)
            return
        self._waiting += 1
        self._push(self._next_poll_at(followed), followed)

    def _ended(self, followed: _Followed) -> None:
        """The job has its outcome: a scout's tells the fleet's durations (or makes room for another scout)."""
        if followed.scout:
            target, now = followed.target, self._clock.now()
            measured = target.outcome is Outcome.SUCCEEDED and target.ran_s is not None
            running_time = target.ran_s if measured and target.ran_s is not None else now - target.job_started_at(now)
            if self._fleet.ended(followed.key, running_time, measured, now):
                self._release_held()
            else:
                self._enlist_a_held_one()
        followed.done.set()
        self._wake.set()

    def _next_poll_at(self, followed: _Followed) -> float:
        """When to poll this job next (its give-up time while it is held), never after its give-up time."""
        if followed.held:
            return followed.give_up_at
        target, now = followed.target, self._clock.now()
        started = target.job_started_at(now)
        not_before = self._expected_at_least(target)
        delay = next_poll_delay(now - started, not_before, self._first_look, self._lag, self._cap, self._rng)
        return min(now + delay, followed.give_up_at)

    def _expected_at_least(self, target: TargetState) -> float:
        """How long the job will run at least, as far as anything tells (0: nothing does)."""
        if target.expected_s is not None:
            return EXPECTED_LEAD * target.expected_s
        return self._fleet.known or 0.0

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
            # Held, then found done by its first poll: how long it ran is unknown (the hold is not its time).
            unknown = followed.was_held and followed.last_not_done_at is None
            if followed.measurable and target.job_id and not unknown:
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
