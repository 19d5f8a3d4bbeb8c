"""Backoff is a pure, capped, jittered formula; Retry-After is honoured in both of its forms; transient
errors are retried for a time budget, the count only a guard beside it."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backoff import MAX_RETRY_AFTER, Backoff, Retry, parse_retry_after, retry_delay, retryable
from orchestrator.errors import ErrorClass, TargetError

backoffs = st.builds(Backoff, initial=st.floats(0, 100), factor=st.floats(1, 10), cap=st.floats(0, 10_000))


@given(backoffs, st.integers(0, 10_000), st.integers(0, 2**32))
def test_delay_is_never_negative_nor_above_the_cap(backoff: Backoff, attempt: int, seed: int) -> None:
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0 <= delay <= backoff.ceiling(attempt) <= backoff.cap


@given(backoffs, st.integers(0, 200))
def test_ceiling_grows_monotonically_until_the_cap(backoff: Backoff, attempt: int) -> None:
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1)


def test_ceiling_examples() -> None:
    backoff = Backoff(initial=2, factor=2, cap=60)
    assert [backoff.ceiling(n) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]
    assert Backoff(0, 2, 60).ceiling(5) == 0


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(3)
    draws = [Backoff(10, 2, 10).delay(0, rng) for _ in range(2000)]
    assert min(draws) < 1 and max(draws) > 9


def test_retry_after_wins_over_the_backoff_and_is_bounded() -> None:
    backoff = Backoff(1, 2, 30)
    assert retry_delay(backoff, 3, random.Random(0), 7.0) == 7.0
    assert retry_delay(backoff, 3, random.Random(0), 10**9) == MAX_RETRY_AFTER
    assert 0 <= retry_delay(backoff, 3, random.Random(0), None) <= 8


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 27, 1, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now) == 120
    later = format_datetime(datetime(2026, 11, 27, 1, 1, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now) == 90
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# -- the retry policy: stepped by attempt and by time elapsed, never by sleeping --

RETRY: Final = Retry(retries=100, backoff=Backoff(1, 2, 30), budget=300.0)


def _error(error_class: ErrorClass = ErrorClass.TRANSIENT, retry_after: float | None = None) -> TargetError:
    return TargetError(error_class, "HTTP 503 Service Unavailable", retry_after=retry_after)


def test_a_transient_error_is_retried_until_the_budget_is_spent_not_after_a_few_attempts() -> None:
    """Attempt 40 at 299 s is retried; nothing is retried once the budget is spent, whatever the count."""
    assert RETRY.again(_error(), attempt=40, elapsed=299.0)
    assert not RETRY.again(_error(), attempt=0, elapsed=300.0)
    assert not RETRY.again(_error(), attempt=3, elapsed=1_000.0)


def test_the_count_is_an_upper_bound_beside_the_budget() -> None:
    """`retries` still caps the attempts (a server asking for no wait at all); 0 retries nothing."""
    policy = Retry(retries=3, backoff=Backoff(0, 2, 0), budget=300.0)
    assert [policy.again(_error(), n, elapsed=1.0) for n in range(5)] == [True, True, True, False, False]
    assert not Retry(0, Backoff(1, 2, 30), 300.0).again(_error(), 0, 0.0)


@pytest.mark.parametrize(
    ("error_class", "retried"),
    [(ErrorClass.TRANSIENT, True), (ErrorClass.UNREACHABLE, True)]
    + [(c, False) for c in ErrorClass if c not in (ErrorClass.TRANSIENT, ErrorClass.UNREACHABLE)],
)
def test_only_what_may_go_away_by_itself_is_retried(error_class: ErrorClass, retried: bool) -> None:
    """Transient errors and attempts that did not reach the deployment are retried; nothing else is."""
    assert retryable(_error(error_class)) is retried
    assert RETRY.again(_error(error_class), 0, 0.0) is retried


def test_the_last_retry_comes_at_the_end_of_the_budget_never_after_it() -> None:
    """A backoff draw longer than what is left is cut to it: one last try when the budget ends."""
    policy = Retry(retries=100, backoff=Backoff(30, 2, 30), budget=300.0)
    assert policy.delay(_error(), 10, random.Random(1), elapsed=299.5) <= 0.5
    assert policy.delay(_error(), 10, random.Random(1), elapsed=0.0) <= 30


def test_a_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    """A server (or an open circuit) asking for a wait that ends after the budget is not waited for."""
    assert RETRY.again(_error(retry_after=60.0), 0, elapsed=240.0)
    assert RETRY.delay(_error(retry_after=60.0), 0, random.Random(0), elapsed=240.0) == 60.0
    assert not RETRY.again(_error(retry_after=60.0), 0, elapsed=240.5)
    assert not RETRY.again(_error(ErrorClass.UNREACHABLE, retry_after=90.0), 5, elapsed=250.0)


def test_a_zero_budget_retries_nothing_and_no_budget_leaves_the_count_to_decide() -> None:
    assert not Retry(100, Backoff(1, 2, 30), 0.0).again(_error(), 0, 0.0)
    unbounded = Retry(4, Backoff(1, 2, 30))
    assert unbounded.again(_error(), 3, elapsed=1e9) and not unbounded.again(_error(), 4, elapsed=0.0)


@given(
    st.integers(0, 10_000),
    st.floats(0, 400),
    st.one_of(st.none(), st.floats(0, 10**6)),
    st.integers(0, 2**32),
)
def test_a_planned_retry_never_waits_past_the_budget(
    attempt: int, elapsed: float, after: float | None, seed: int
) -> None:
    """Whatever the attempt, the time elapsed and the server's Retry-After: a retry allowed starts within the
    budget, after a wait that is never negative."""
    error = _error(retry_after=after)
    if RETRY.again(error, attempt, elapsed):
        delay = RETRY.delay(error, attempt, random.Random(seed), elapsed)
        assert delay >= 0 and elapsed + delay <= RETRY.budget
