"""The poll schedule's pure parts: when to poll a job, how long it ran, what the scouts show of the fleet."""

from __future__ import annotations

import math
import random
import statistics
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.schedule import (
    EXPECTED_LEAD,
    FLEET_QUANTILE,
    JITTER,
    SCOUTS_MAX,
    SCOUTS_MIN,
    FleetSample,
    measured_run_time,
    next_poll_delay,
    quantile_of_survival,
    scouts_for,
)

FIRST_LOOK: Final = 1.0  # the default --poll-initial
CAP: Final = 60.0  # the default --poll-max
LAG: Final = 0.08  # the default --poll-lag


def _nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def simulate_polls(duration: float, not_before: float, rng: random.Random) -> tuple[int, float]:
    """(polls, detection lag) of one job of `duration` seconds under the schedule, as the poller runs it."""
    elapsed, polls = 0.0, 0
    while True:
        elapsed += next_poll_delay(elapsed, not_before, FIRST_LOOK, LAG, CAP, rng)
        polls += 1
        if elapsed >= duration:
            return polls, elapsed - duration


def test_a_job_nothing_is_known_of_is_first_polled_at_the_first_look_then_at_gaps_of_the_lag_share() -> None:
    """The first poll at --poll-initial (not a backoff that can overshoot a short job), then gaps that grow
    with the running time: at most LAG of it, at least its last tenth, never above the cap."""
    rng = random.Random(3)
    assert all(FIRST_LOOK <= next_poll_delay(0.0, 0.0, FIRST_LOOK, LAG, CAP, rng) <= FIRST_LOOK * (1 + LAG / 4)
               for _ in range(100))  # fmt: skip
    for elapsed in (1.0, 20.0, 500.0, 5000.0):
        gap = min(CAP, LAG * elapsed)
        delays = [next_poll_delay(elapsed, 0.0, FIRST_LOOK, LAG, CAP, rng) for _ in range(100)]
        assert all((1 - JITTER) * gap <= d <= gap for d in delays), elapsed


def test_a_job_is_not_polled_before_it_can_be_done() -> None:
    """Expected to run 500 s at least: the next poll is at 500 s (plus a little jitter), whatever the first look."""
    rng = random.Random(3)
    first = [next_poll_delay(10.0, 500.0, FIRST_LOOK, LAG, CAP, rng) for _ in range(100)]
    assert all(490 <= d <= 490 + LAG / 4 * 500 for d in first)
    assert next_poll_delay(0.01, 0.0, FIRST_LOOK, LAG, CAP, rng) >= FIRST_LOOK - 0.01  # never a busy loop


@settings(max_examples=500, deadline=None)
@given(duration=st.floats(min_value=1.0, max_value=7200.0), seed=st.integers(0, 2**32))
def test_a_job_nothing_is_known_of_is_seen_ended_within_the_lag_share_from_1_s_to_2_h(
    duration: float, seed: int
) -> None:
    """The defect of issue 16: a 24 s job was seen 51 s late, as nothing bounded the gap below --poll-initial.
    Now any job of 1 s to 2 h is seen ended at most LAG of its duration late."""
    _, lag = simulate_polls(duration, 0.0, random.Random(seed))
    assert lag <= LAG * duration + 1e-9


@settings(max_examples=300, deadline=None)
@given(
    duration=st.floats(min_value=1.0, max_value=7200.0),
    history_ratio=st.floats(min_value=0.5, max_value=1.25),
    seed=st.integers(0, 2**32),
)
def test_a_job_past_its_expected_start_is_seen_ended_within_the_lag_share(
    duration: float, history_ratio: float, seed: int
) -> None:
    """A job whose past duration is known (within 25 % of tonight's) is seen ended at most LAG of its duration late."""
    _, lag = simulate_polls(duration, EXPECTED_LEAD * duration * history_ratio, random.Random(seed))
    assert lag <= LAG * duration + 1e-9


@pytest.mark.parametrize(("duration", "most"), [(1.0, 1), (30.0, 48), (900.0, 95), (7200.0, 206)])
def test_a_job_nothing_is_known_of_costs_polls_that_grow_with_the_logarithm_of_its_length(
    duration: float, most: int
) -> None:
    """What following a scout costs: about ln(duration / first look) / ln(1 + LAG) polls, and past
    --poll-max / LAG (750 s) one per --poll-max."""
    polls = [simulate_polls(duration, 0.0, random.Random(seed))[0] for seed in range(20)]
    assert max(polls) <= most


def test_a_fleet_of_known_jobs_takes_few_polls_each_and_is_seen_ended_promptly() -> None:
    """1,000 jobs of 2 min to 2 h (median 15 min), each within about 10 % of its last night: median polls at
    most 6, and 95 % of jobs seen ended within 10 % of their duration (what the fleet benchmark aims at)."""
    rng = random.Random(2026)
    polls, lag_shares = [], []
    for _ in range(1000):
        last_night = min(max(rng.lognormvariate(math.log(900), 0.5), 120.0), 7200.0)
        tonight = last_night * rng.lognormvariate(0.0, 0.1)
        count, lag = simulate_polls(tonight, EXPECTED_LEAD * last_night, rng)
        polls.append(count)
        lag_shares.append(lag / tonight)
    assert statistics.median(polls) <= 6, statistics.median(polls)
    assert _nearest_rank(lag_shares, 0.95) < 0.10


@pytest.mark.parametrize(
    ("last_not_done_at", "seen_done_at", "ran"),
    [(580.0, 630.0, 480.0), (None, 630.0, 530.0), (90.0, 95.0, 0.0)],
    ids=["seen running: up to the last such poll", "done by its first poll: at most until then", "never negative"],
)
def test_measured_run_time(last_not_done_at: float | None, seen_done_at: float, ran: float) -> None:
    assert measured_run_time(100.0, last_not_done_at, seen_done_at) == ran


@pytest.mark.parametrize(("targets", "scouts"), [(1, SCOUTS_MIN), (100, SCOUTS_MIN), (5000, 100), (10**6, SCOUTS_MAX)])
def test_scouts_are_a_small_share_of_the_run_within_bounds(targets: int, scouts: int) -> None:
    assert scouts_for(targets) == scouts


@pytest.mark.parametrize(
    ("observed", "share", "expected"),
    [
        ([(10.0, True)] + [(50.0, False)] * 19, 0.05, 10.0),  # 1 of 20 ended: the quickest 5 % take 10 s
        ([(10.0, True)] + [(50.0, False)] * 20, 0.05, None),  # 1 of 21: under 5 %, not known yet
        ([(5.0, False)] * 10 + [(10.0, True)] + [(50.0, False)] * 9, 0.1, 10.0),  # a job cut short at 5 s leaves
        # the risk set; it says nothing of later durations, so 1 of the 10 still running at 10 s is 10 %
        ([(30.0, True), (10.0, True), (20.0, True)], 0.5, 20.0),  # all ended: the plain nearest-rank quantile
        ([(10.0, False), (10.0, True)], 0.5, 10.0),  # at equal times an end counts before a censoring
        ([], 0.05, None),
        # a plain quantile of the ended ones would say 10 s; 18 jobs still running at 11 s say otherwise
        ([(10.0, True), (12.0, True)] + [(11.0, False)] * 18, 0.1, 12.0),
    ],
)
def test_the_fleet_quantile_counts_running_jobs_as_still_running(
    observed: list[tuple[float, bool]], share: float, expected: float | None
) -> None:
    """Kaplan-Meier: the first jobs to end are the quickest, and do not pass for the whole fleet."""
    assert quantile_of_survival(observed, share) == expected


def test_the_quickest_ending_first_do_not_pass_for_the_fleet() -> None:
    """Ten quick jobs end while 190 others still run: their durations are the quickest 5 %, not the fleet's
    median; a plain quantile of the ended ones would say the fleet takes 10 s."""
    observed = [(10.0, True)] * 10 + [(11.0, False)] * 190
    assert quantile_of_survival(observed, FLEET_QUANTILE) == 10.0
    assert quantile_of_survival(observed, 0.5) is None


def test_a_fleet_sample_knows_the_quantile_once_enough_scouts_have_ended() -> None:
    """Twenty scouts: the first success is the quickest 5 %; a failure before it only leaves the risk set."""
    sample = FleetSample(20)
    for key in range(20):
        sample.enlist(key, started_at=0.0)
    assert sample.wants_scout() is False and sample.known is None
    assert sample.ended(0, 30.0, measured=False, now=30.0) is False  # failed at 30 s: says it ran that long
    assert sample.wants_scout() is True  # its place can be taken
    sample.enlist(20, started_at=30.0)
    assert sample.ended(1, 100.0, measured=True, now=100.0) is True
    assert sample.known == 100.0
    assert sample.wants_scout() is False
    assert sample.ended(2, 5.0, measured=True, now=101.0) is False  # known once, fixed for the run
    assert sample.known == 100.0
