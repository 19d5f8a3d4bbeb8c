"""The poller's decisions and schedule, driven by a manual clock and an in-memory deployment."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.backoff import Backoff
from orchestrator.clock import ManualClock
from orchestrator.dr import Verdict, judge_job
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import Outcome, TargetState
from orchestrator.poll import (
    EXPECTED_LEAD,
    Poller,
    measured_run_time,
    next_poll_delay,
    quantile,
)
from tests.conftest import make_deployment

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("body", "verdict", "status"),
    [
        ({"status": "COMPLETED", "result": {"stages": []}}, Verdict.CONFIRM, "COMPLETED"),
        ({"status": "COMPLETED"}, Verdict.CONFIRM, "COMPLETED"),  # 12.0: no result is fine
        ({"status": "completed"}, Verdict.CONFIRM, "completed"),
        ({"status": "EXECUTING"}, Verdict.WAIT, "EXECUTING"),
        ({"status": "UNAVAILABLE"}, Verdict.WAIT, "UNAVAILABLE"),
        ({"status": "SOMETHING NEW"}, Verdict.WAIT, "SOMETHING NEW"),
        ({}, Verdict.WAIT, ""),
        ({"status": 42}, Verdict.WAIT, ""),
        ({"status": "FAILED", "messages": ["disk full"]}, Verdict.FAILED, "FAILED"),
        ({"status": "CANCELLED"}, Verdict.FAILED, "CANCELLED"),
        ({"status": "TIMED OUT"}, Verdict.FAILED, "TIMED OUT"),
    ],
)
def test_judge_job(body: dict[str, Any], verdict: Verdict, status: str) -> None:
    assert judge_job(body)[:2] == (verdict, status)


def test_failure_reason_carries_the_messages() -> None:
    assert judge_job({"status": "FAILED", "messages": ["disk full", {"message": "retry later"}]})[2] == (
        "disk full; retry later"
    )
    assert "without messages" in judge_job({"status": "FAILED"})[2]


BACKOFF: Final = Backoff(5, 2, 60)
LAG: Final = 0.08


@pytest.mark.parametrize("polls", range(8))
def test_with_nothing_known_a_job_backs_off_exponentially_with_full_jitter(polls: int) -> None:
    rng = random.Random(polls)
    delays = [next_poll_delay(30.0, polls, None, BACKOFF, LAG, rng) for _ in range(200)]
    assert all(0 <= d <= BACKOFF.ceiling(polls) for d in delays)
    assert min(delays) < BACKOFF.ceiling(polls) / 4 < BACKOFF.ceiling(polls) * 3 / 4 < max(delays)  # full jitter


def test_a_job_is_not_polled_before_it_can_be_done_then_at_gaps_that_grow_with_its_running_time() -> None:
    rng = random.Random(3)
    first = [next_poll_delay(10.0, 0, 500.0, BACKOFF, LAG, rng) for _ in range(100)]
    assert all(490 <= d <= 490 + LAG / 4 * 500 for d in first)
    for elapsed in (100.0, 500.0, 700.0, 5000.0):
        gap = min(BACKOFF.cap, LAG * elapsed)
        delays = [next_poll_delay(elapsed, 3, 80.0, BACKOFF, LAG, rng) for _ in range(100)]
        assert all(0.75 * gap <= d <= gap for d in delays), elapsed
    assert next_poll_delay(0.5, 0, 0.1, BACKOFF, LAG, rng) >= 0.75 * BACKOFF.initial * 0.2  # never a busy loop


def _simulate_polls(duration: float, not_before: float | None, rng: random.Random) -> tuple[int, float]:
    """(polls, detection lag) of one job of `duration` seconds under the schedule, as the poller runs it."""
    elapsed, polls = 0.0, 0
    while True:
        elapsed += next_poll_delay(elapsed, polls, not_before, BACKOFF, LAG, rng)
        polls += 1
        if elapsed >= duration:
            return polls, elapsed - duration


@settings(max_examples=300, deadline=None)
@given(
    duration=st.floats(min_value=60.0, max_value=7000.0),  # real backups take minutes
    history_ratio=st.floats(min_value=0.8, max_value=1.25),
    seed=st.integers(0, 2**32),
)
def test_a_job_past_its_expected_start_is_seen_ended_within_the_lag_share(
    duration: float, history_ratio: float, seed: int
) -> None:
    """A job whose past duration is known (within 25 %) is seen ended at most LAG of its duration late.

    (Below poll_initial * 0.2 / LAG, 12.5 s here, the shortest gap is what bounds the lag.)"""
    expected = duration * history_ratio
    _, lag = _simulate_polls(duration, EXPECTED_LEAD * expected, random.Random(seed))
    assert lag <= LAG * duration


def test_a_fleet_of_known_jobs_takes_few_polls_each_and_is_seen_ended_promptly() -> None:
    """1,000 jobs of 2 min to 2 h (median 15 min), each within about 10 % of its last night: median polls at
    most 6, and 95 % of jobs seen ended within 10 % of their duration (what the fleet benchmark aims at)."""
    rng = random.Random(2026)
    polls, lag_shares = [], []
    for _ in range(1000):
        last_night = min(max(rng.lognormvariate(math.log(900), 0.5), 120.0), 7200.0)
        tonight = last_night * rng.lognormvariate(0.0, 0.1)
        count, lag = _simulate_polls(tonight, EXPECTED_LEAD * last_night, rng)
        polls.append(count)
        lag_shares.append(lag / tonight)
    assert statistics.median(polls) <= 6, statistics.median(polls)
    assert quantile(sorted(lag_shares), 0.95) < 0.10


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([1.0], 0.1, 1.0),
        ([1.0, 2.0, 3.0], 0.5, 2.0),
        ([float(n) for n in range(1, 101)], 0.1, 10.0),
        ([1.0, 2.0], 1.0, 2.0),
        ([1.0, 2.0], 0.0, 1.0),
    ],
)
def test_quantile_is_the_nearest_rank(values: list[float], share: float, expected: float) -> None:
    assert quantile(values, share) == expected


@dataclass
class FakeJob:
    """A job's server-side story as a function of time."""

    reports_completed_at: float
    backup_at: float
    fails: bool = False
    blips: set[int] = field(default_factory=set)  # poll numbers answering UNAVAILABLE
    errors: dict[int, TargetError] = field(default_factory=dict)  # poll numbers failing


class FakeDeployment:
    def __init__(self, clock: ManualClock, jobs: dict[str, FakeJob]) -> None:
        self.clock = clock
        self.jobs = jobs
        self.polls: dict[str, list[float]] = {job_id: [] for job_id in jobs}

    async def job(self, job_id: str) -> dict[str, Any]:
        story = self.jobs[job_id]
        self.polls[job_id].append(self.clock.now())
        number = len(self.polls[job_id])
        if number in story.errors:
            raise story.errors[number]
        if number in story.blips:
            return {"status": "UNAVAILABLE"}
        if self.clock.now() < story.reports_completed_at:
            return {"status": "EXECUTING"}
        return {"status": "FAILED", "messages": ["boom"]} if story.fails else {"status": "COMPLETED"}

    async def backup_names(self, store: str) -> set[str]:
        return {f"backup-{job_id}" for job_id, s in self.jobs.items() if self.clock.now() >= s.backup_at}

    async def dr_status(self) -> dict[str, Any]:
        return {}  # these jobs are followed by their ids: the DR status is never needed


async def _let_tasks_run() -> None:
    """Give every ready task its turn (the fake deployment answers without real I/O)."""
    for _ in range(30):
        await anyio.lowlevel.checkpoint()


async def _follow_all(
    jobs: dict[str, FakeJob], *, give_up_after: float = 1000.0, expected: dict[str, float] | None = None
) -> tuple[list[TargetState], FakeDeployment, ManualClock, Poller]:
    """Follow every job with one poller, stepping the manual clock whenever every task is waiting."""
    clock = ManualClock(start=0.0)
    api = FakeDeployment(clock, jobs)
    poller = Poller(backoff=Backoff(5, 2, 60), clock=clock, rng=random.Random(7))
    targets = []
    for index, job_id in enumerate(jobs):
        target = TargetState(index, make_deployment(), "default", f"backup-{job_id}", None, job_id=job_id)
        target.submitted_at = target.accepted_at = 0.0
        target.expected_s = (expected or {}).get(job_id)
        targets.append(target)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)

        async def follow_everything() -> None:
            async with anyio.create_task_group() as follows:
                for target in targets:
                    follows.start_soon(poller.follow, target, api, give_up_after)
            tg.cancel_scope.cancel()  # every job followed has ended

        tg.start_soon(follow_everything)
        with anyio.fail_after(30):
            while not all(t.finished for t in targets) or poller.followed:
                await _let_tasks_run()
                due = poller.next_due
                clock.advance(max(due - clock.now(), 0.0) if due is not None else 0.5)
    return targets, api, clock, poller


async def test_a_completed_job_succeeds_once_its_backup_is_listed() -> None:
    [target], api, _, _ = await _follow_all({"j1": FakeJob(reports_completed_at=600, backup_at=600)})
    assert target.outcome is Outcome.SUCCEEDED and target.server_status == "COMPLETED"
    assert target.finished_at is not None and 600 <= target.finished_at <= 660  # at most one capped interval late
    # Backoff with full jitter below a 60 s cap: a mean gap of about 30 s once grown, where Esri's
    # fixed 10 s interval would poll 60 times.
    assert len(api.polls["j1"]) <= 30


async def test_polls_back_off_exponentially_up_to_the_cap() -> None:
    _, api, _, _ = await _follow_all({"j1": FakeJob(reports_completed_at=900, backup_at=900)})
    times = api.polls["j1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap <= 60 for gap in gaps)  # never more than the cap
    assert times[0] <= 5  # the first poll comes within poll_initial


async def test_11_4_early_completed_waits_for_the_backup() -> None:
    [target], _, _, _ = await _follow_all({"j1": FakeJob(reports_completed_at=0, backup_at=300)})
    assert target.outcome is Outcome.SUCCEEDED
    assert target.finished_at is not None and target.finished_at >= 300


async def test_unavailable_unknown_and_transient_errors_are_tolerated() -> None:
    story = FakeJob(
        reports_completed_at=200,
        backup_at=200,
        blips={1, 2},
        errors={3: TargetError(ErrorClass.TRANSIENT, "HTTP 503"), 4: TargetError(ErrorClass.PERMANENT, "garbage")},
    )
    [target], _, _, _ = await _follow_all({"j1": story})
    assert target.outcome is Outcome.SUCCEEDED


async def test_a_failed_job_fails_with_its_messages() -> None:
    [target], _, _, _ = await _follow_all({"j1": FakeJob(reports_completed_at=50, backup_at=10**9, fails=True)})
    assert target.outcome is Outcome.FAILED
    assert (target.error_class, target.error) == ("job_failed", "boom")


async def test_a_job_that_never_ends_times_out_on_time() -> None:
    [target], _, _, _ = await _follow_all({"j1": FakeJob(10**9, 10**9)}, give_up_after=400)
    assert target.outcome is Outcome.TIMED_OUT and target.error_class == "job_timed_out"
    assert target.finished_at == 400
    assert "EXECUTING" in target.error


async def test_completed_without_backup_times_out_with_a_clear_reason() -> None:
    [target], _, _, _ = await _follow_all({"j1": FakeJob(0, 10**9)}, give_up_after=120)
    assert target.outcome is Outcome.TIMED_OUT
    assert "said COMPLETED but backup" in target.error


async def test_authentication_failure_ends_the_target() -> None:
    story = FakeJob(100, 100, errors={1: TargetError(ErrorClass.AUTHENTICATION, "498 Invalid token.")})
    [target], _, _, _ = await _follow_all({"j1": story})
    assert target.outcome is Outcome.FAILED and target.error_class == "authentication"


async def test_a_vanished_job_is_confirmed_by_the_backups_list() -> None:
    story = FakeJob(100, 100, errors={1: TargetError(ErrorClass.CONFIGURATION, "404 Job does not exist")})
    [target], api, _, _ = await _follow_all({"j1": story})
    assert target.outcome is Outcome.SUCCEEDED
    assert len(api.polls["j1"]) == 1
    assert "confirming by the backups list" in target.notes[0]


async def test_one_poller_follows_many_jobs_each_on_its_own_schedule() -> None:
    jobs = {f"j{n}": FakeJob(reports_completed_at=10 * n, backup_at=10 * n) for n in range(1, 31)}
    targets, _, _, poller = await _follow_all(jobs)
    assert all(t.outcome is Outcome.SUCCEEDED for t in targets)
    assert poller.peak_followed == 30
    for target in targets:
        story = jobs[target.job_id]
        assert target.finished_at is not None and target.finished_at - story.backup_at <= 61


POLL_INITIAL, POLL_FACTOR, POLL_MAX = 5.0, 2.0, 60.0  # the Backoff(5, 2, 60) that `_follow_all` polls with


async def test_poll_gaps_grow_by_the_factor_up_to_the_cap() -> None:
    """The gap after a job's n-th poll is at most initial * factor**n, capped at poll_max, so later gaps are longer."""
    _, api, _, _ = await _follow_all({"j1": FakeJob(reports_completed_at=3000, backup_at=3000)}, give_up_after=4000)
    times = api.polls["j1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    ceilings = [min(POLL_INITIAL * POLL_FACTOR**n, POLL_MAX) for n in range(1, len(gaps) + 1)]
    assert times[0] <= POLL_INITIAL
    for gap, ceiling in zip(gaps, ceilings, strict=True):
        assert 0 < gap <= ceiling
    early, late = statistics.fmean(gaps[:2]), statistics.fmean(gaps[4:])  # ceilings 10, 20 | 60
    assert late > 20 and late > 1.5 * early  # a constant interval would keep them alike


class _LimitedDeployment(FakeDeployment):
    """A FakeDeployment whose every request takes one slot of a shared limiter, as the real client's do,
    counting the requests started and not yet answered."""

    def __init__(self, clock: ManualClock, jobs: dict[str, FakeJob], limiter: anyio.CapacityLimiter) -> None:
        super().__init__(clock, jobs)
        self.limiter = limiter
        self.pending = 0
        self.peak_pending = 0

    def _start(self) -> None:
        self.pending += 1
        self.peak_pending = max(self.peak_pending, self.pending)

    async def job(self, job_id: str) -> dict[str, Any]:
        self._start()
        try:
            async with self.limiter:
                await anyio.lowlevel.checkpoint()
                return await super().job(job_id)
        finally:
            self.pending -= 1

    async def backup_names(self, store: str) -> set[str]:
        self._start()
        try:
            async with self.limiter:
                await anyio.lowlevel.checkpoint()
                return await super().backup_names(store)
        finally:
            self.pending -= 1


async def test_the_poller_holds_no_limiter_while_jobs_wait() -> None:
    """While every followed job waits for its next poll no request slot is held or queued for, and each job is
    polled only when due, so requests never pile up."""
    clock = ManualClock(start=0.0)
    jobs = {f"j{n}": FakeJob(reports_completed_at=200 + 10 * n, backup_at=200 + 10 * n) for n in range(8)}
    limiter = anyio.CapacityLimiter(1)
    api = _LimitedDeployment(clock, jobs, limiter)
    poller = Poller(backoff=Backoff(POLL_INITIAL, POLL_FACTOR, POLL_MAX), clock=clock, rng=random.Random(7))
    targets = []
    for index, job_id in enumerate(jobs):
        target = TargetState(index, make_deployment(), "default", f"backup-{job_id}", None, job_id=job_id)
        target.submitted_at = 0.0
        targets.append(target)
    all_waiting = 0  # moments when every job was followed and waiting for its next poll
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)

        async def follow_everything() -> None:
            async with anyio.create_task_group() as follows:
                for target in targets:
                    follows.start_soon(poller.follow, target, api, 1000.0)
            tg.cancel_scope.cancel()  # every job followed has ended

        tg.start_soon(follow_everything)
        with anyio.fail_after(30):
            while not all(t.finished for t in targets) or poller.followed:
                await _let_tasks_run()
                assert (limiter.borrowed_tokens, limiter.statistics().tasks_waiting, api.pending) == (0, 0, 0)
                if poller.followed == len(jobs) and poller.next_due is not None:
                    all_waiting += 1
                due = poller.next_due
                clock.advance(max(due - clock.now(), 0.0) if due is not None else 0.5)
    assert all(t.outcome is Outcome.SUCCEEDED for t in targets)
    assert all_waiting >= 10
    polled_at = Counter(moment for times in api.polls.values() for moment in times)
    assert max(polled_at.values()) == 1  # each job at its own (jittered) due time, never all at once
    assert api.peak_pending == 1  # so no request ever queued behind another


class _StatusOnly(FakeDeployment):
    """A deployment whose job id was lost: only the backups list and the DR status can tell."""

    def __init__(self, clock: ManualClock, status: dict[str, Any]) -> None:
        super().__init__(clock, {})
        self.status = status

    async def dr_status(self) -> dict[str, Any]:
        return self.status


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ({"backupName": "lost-one", "backupStore": "default", "state": "failed", "message": "disk full"}, "failed"),
        ({"backupName": "someone-else", "backupStore": "default", "state": "failed"}, "timed_out"),
        ({"backupName": "lost-one", "backupStore": "offsite", "state": "failed"}, "timed_out"),
        ({"backupName": "lost-one", "backupStore": "default", "state": "running"}, "timed_out"),
    ],
)
async def test_a_job_without_an_id_fails_when_the_dr_status_says_ours_failed(
    status: dict[str, Any], outcome: str
) -> None:
    """Followed by the list alone, a backup the DR status names as failed fails at once, not after the timeout."""
    clock = ManualClock(start=0.0)
    api = _StatusOnly(clock, status)
    poller = Poller(backoff=Backoff(5, 2, 60), clock=clock, rng=random.Random(7))
    target = TargetState(0, make_deployment(), "default", "lost-one", None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        tg.start_soon(poller.follow, target, api, 300.0)
        while not target.finished:
            await _let_tasks_run()
            clock.advance(1.0)
        tg.cancel_scope.cancel()  # every job followed has ended
    assert target.outcome.value == outcome
    if outcome == "failed":
        assert target.error == "the DR status says this backup failed: disk full" and clock.now() < 60


async def test_a_job_with_a_known_past_is_polled_a_few_times_near_its_end() -> None:
    """Last night it ran 600 s: no poll before 480 s, then a few, the last at most 8 % of its duration late."""
    [target], api, _, _ = await _follow_all(
        {"j1": FakeJob(reports_completed_at=630, backup_at=630)}, expected={"j1": 600.0}
    )
    assert target.outcome is Outcome.SUCCEEDED
    assert min(api.polls["j1"]) >= EXPECTED_LEAD * 600
    assert len(api.polls["j1"]) <= 6  # with nothing known: about 20 (test_a_completed_job_succeeds...)
    assert target.finished_at is not None and target.finished_at - 630 <= LAG * 630


async def test_jobs_with_no_past_learn_from_the_ones_that_ended_in_this_run() -> None:
    """Once ten jobs of the run have succeeded, the others are polled at gaps that grow with their running time
    (the lag rule), no longer at full-jitter draws below the cap."""
    quick = {f"q{n}": FakeJob(reports_completed_at=100, backup_at=100) for n in range(10)}
    slow = {f"s{n}": FakeJob(reports_completed_at=900, backup_at=900) for n in range(2)}
    targets, api, _, _ = await _follow_all({**quick, **slow})
    learned_at = max(t.finished_at or 0.0 for t in targets if t.job_id in quick)
    for job_id in slow:
        times = api.polls[job_id]
        gaps = [(b - a, a) for a, b in itertools.pairwise(times) if a > learned_at]
        assert len(gaps) >= 5
        assert all(gap >= 0.75 * min(BACKOFF.cap, LAG * at) - 1e-6 for gap, at in gaps), gaps


@pytest.mark.parametrize(
    ("last_not_done_at", "seen_done_at", "ran"),
    [(580.0, 630.0, 480.0), (None, 630.0, 530.0), (90.0, 95.0, 0.0)],
    ids=["seen running: up to the last such poll", "done by its first poll: at most until then", "never negative"],
)
def test_measured_run_time(last_not_done_at: float | None, seen_done_at: float, ran: float) -> None:
    assert measured_run_time(100.0, last_not_done_at, seen_done_at) == ran


async def test_the_running_time_is_measured_short_never_long_and_11_4_early_completed_counts_as_running() -> None:
    """The measure the next runs rely on: up to the last poll that found the job not done, which includes an
    11.4 COMPLETED whose backup is not listed yet, so it is at most one gap short of the truth."""
    targets, _, _, _ = await _follow_all(
        {
            "plain": FakeJob(reports_completed_at=600, backup_at=600),
            "early": FakeJob(reports_completed_at=5, backup_at=600),  # 11.4: COMPLETED long before its backup
        }
    )
    for target in targets:
        assert target.ran_s is not None and target.finished_at is not None
        assert target.ran_s < 600 <= target.finished_at, target.job_id
        assert target.ran_s >= 600 - BACKOFF.cap  # one gap short at most (backups-list checks included)


async def test_a_job_accepted_before_the_poller_started_is_not_measured() -> None:
    """A resumed job's clock ran while the machine was down: its time would mislead every later run."""
    clock = ManualClock(start=10_000.0)
    api = FakeDeployment(clock, {"j1": FakeJob(reports_completed_at=0.0, backup_at=0.0)})
    poller = Poller(backoff=BACKOFF, clock=clock, rng=random.Random(1))
    target = TargetState(0, make_deployment(), "default", "backup-j1", None, job_id="j1")
    target.submitted_at = target.accepted_at = 0.0  # accepted long before this process started
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        tg.start_soon(poller.follow, target, api, 20_000.0)
        with anyio.fail_after(10):
            while not target.finished:
                await _let_tasks_run()
                due = poller.next_due
                if due is not None:
                    clock.advance(max(due - clock.now(), 0.0))
        tg.cancel_scope.cancel()  # every job followed has ended
    assert target.outcome is Outcome.SUCCEEDED and target.ran_s is None


async def test_at_most_max_in_flight_polls_are_under_way_and_the_rest_wait_their_turn() -> None:
    """Twelve jobs due at once, two polls at a time: never a third under way, and every job still ends."""
    clock = ManualClock(start=0.0)

    class SlowAnswers(FakeDeployment):
        in_flight = peak = 0

        async def job(self, job_id: str) -> dict[str, Any]:
            SlowAnswers.in_flight += 1
            SlowAnswers.peak = max(SlowAnswers.peak, SlowAnswers.in_flight)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            SlowAnswers.in_flight -= 1
            return await super().job(job_id)

    jobs = {f"j{n}": FakeJob(reports_completed_at=0.0, backup_at=0.0) for n in range(12)}
    api = SlowAnswers(clock, jobs)
    poller = Poller(backoff=BACKOFF, clock=clock, rng=random.Random(2), max_in_flight=2)
    targets = [TargetState(n, make_deployment(), "default", f"backup-{j}", None, job_id=j) for n, j in enumerate(jobs)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        async with anyio.create_task_group() as follows:
            for target in targets:
                follows.start_soon(poller.follow, target, api, 100.0)
            with anyio.fail_after(10):
                while not all(t.finished for t in targets):
                    await _let_tasks_run()
                    clock.advance(10.0)  # every first poll (within poll_initial, 5 s) comes due at once
        tg.cancel_scope.cancel()  # every job followed has ended
    assert all(t.outcome is Outcome.SUCCEEDED for t in targets)
    assert SlowAnswers.peak == 2
