"""Backoff is a pure, capped, jittered formula; Retry-After is honoured in both of its forms."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backoff import MAX_RETRY_AFTER, Backoff, parse_retry_after, retry_delay

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
