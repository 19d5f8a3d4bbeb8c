"""Backoff as pure formulas: exponential with full jitter, capped, and Retry-After honoured; and the retry
policy of transient errors as a value, bounded by time first and by a count of attempts second.

Tested by stepping the attempt number and the time elapsed, with a seeded `random.Random`, never by sleeping.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

from orchestrator.errors import ErrorClass, TargetError

MAX_RETRY_AFTER: Final = 600.0  # a server asking for more than 10 minutes is not waited for longer


@dataclass(frozen=True, slots=True)
class Backoff:
    """`initial * factor ** attempt`, capped at `cap`; `delay` draws uniformly below it (full jitter)."""

    initial: float
    factor: float
    cap: float

    def ceiling(self, attempt: int) -> float:
        """The largest delay of attempt `attempt` (0-based), before jitter."""
        if self.initial <= 0:
            return 0.0
        # Compare exponents, not powers, so a large attempt number never overflows.
        try:
            grown = self.initial * self.factor ** min(attempt, 1024)
        except OverflowError:
            return self.cap
        return min(self.cap, grown)

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


def retry_delay(backoff: Backoff, attempt: int, rng: random.Random, retry_after: float | None) -> float:
    """The wait before retry `attempt`: the server's Retry-After when it gave one, else the backoff draw."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
    return backoff.delay(attempt, rng)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), at most
    `MAX_RETRY_AFTER`; None when absent or unreadable (a header is the server's word, not a command)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone accepts "²", which int() refuses
        return min(float(int(value[:12])) if len(value) <= 12 else MAX_RETRY_AFTER, MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def retryable(error: TargetError) -> bool:
    """Whether an error may go away by itself: transient, or an attempt that did not reach the deployment
    (a connection never made, or its circuit open), which a deployment coming back up ends."""
    return error.transient or error.error_class is ErrorClass.UNREACHABLE


@dataclass(frozen=True, slots=True)
class Retry:
    """How transient errors are retried: for up to `budget` seconds from the first attempt, and at most
    `retries` times after it, each retry after `delay` (the server's Retry-After, or a draw of the backoff,
    cut to what is left of the budget). The caller sleeps, holding nothing.

    The budget decides; the count is a guard against a server that asks for no wait at all. A retry is
    never planned past the budget: a Retry-After (or an open circuit's cooldown) that ends after it gives up
    at once, rather than waiting for nothing.
    """

    retries: int
    backoff: Backoff
    budget: float = math.inf  # seconds from the first attempt's start

    def left(self, elapsed: float) -> float:
        """Seconds of the budget left `elapsed` seconds after the first attempt began (never negative)."""
        return max(0.0, self.budget - elapsed)

    def again(self, error: TargetError, attempt: int, elapsed: float = 0.0) -> bool:
        """Whether attempt `attempt` (0-based), failing with `error` `elapsed` seconds after the first attempt
        began, is worth another one."""
        if not retryable(error) or attempt >= self.retries:
            return False
        left = self.left(elapsed)
        wanted = error.retry_after
        return left > 0 and (wanted is None or min(max(wanted, 0.0), MAX_RETRY_AFTER) <= left)

    def delay(self, error: TargetError, attempt: int, rng: random.Random, elapsed: float = 0.0) -> float:
        """The wait before the next attempt: never beyond the budget, so its last retry comes at its end."""
        return min(retry_delay(self.backoff, attempt, rng, error.retry_after), self.left(elapsed))
