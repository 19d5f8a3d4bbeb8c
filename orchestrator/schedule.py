"""When to poll a running job: pure functions over plain numbers, and what this run's first jobs showed.

Every job is followed on one rule (`next_poll_delay`): no poll before it can be done, then polls at gaps
of at most `lag` times its running time, so the poll that sees its end comes at most `lag` of its
duration late, whatever its length, and the polls it costs grow with the logarithm of how long it runs
past its first poll. What differs is where the first poll goes:

- a job whose duration the ledger knows: at `EXPECTED_LEAD` of it;
- a job nothing is known of, on a run whose fleet has shown how long its jobs take: where the quickest
  `FLEET_QUANTILE` of them had ended (`FleetSample.known`);
- before that, a few jobs (the scouts) are followed from their first second, and the others are held,
  not polled, until the scouts have shown it. A fleet's jobs are alike: a handful measured closely spares
  thousands of polls of the rest.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final

EXPECTED_LEAD: Final = 0.8  # a job with a known past duration is first polled at this share of it
FLEET_QUANTILE: Final = 0.05  # a job with no past waits for what the quickest 5 % of the fleet's jobs took
SCOUT_SHARE: Final = 0.02  # jobs followed closely while nothing is known: this share of the run's targets ...
SCOUTS_MIN: Final = 20  # ... at least this many (the first one to end is then near the quickest 5 %) ...
SCOUTS_MAX: Final = 200  # ... and no more: 200 measure the quickest 5 % to within about 2 % of the fleet
JITTER: Final = 0.1  # each gap is drawn from its last tenth: jobs started together do not poll together


def next_poll_delay(
    elapsed: float, not_before: float, first_look: float, lag: float, cap: float, rng: random.Random
) -> float:
    """Seconds until the next poll of a job that has run `elapsed` seconds. Pure but for `rng`.

    `not_before`: how long the job can be expected to run at least (its first poll comes then, or at
    `first_look` if that is later). After it, each gap is at most `lag` times the running time (and at
    most `cap`), so a job that ends between two polls is seen at most `lag` of its duration late; no gap
    is shorter than `lag` times `first_look`, so a young job is never polled in a loop.
    """
    start = max(not_before, first_look)
    if elapsed < start:
        return start - elapsed + rng.uniform(0.0, lag / 4) * start
    gap = min(cap, lag * max(elapsed, first_look))
    return rng.uniform(1.0 - JITTER, 1.0) * gap


def measured_run_time(started: float, last_not_done_at: float | None, seen_done_at: float) -> float:
    """How long a job ran, for the schedule of later ones. Pure.

    From its start to the last poll that found it not done: a little short of the truth (by at most
    one gap, `poll_lag` of it), never long, so an expectation built on it cannot grow night after night.
    A job done by its first poll only tells it took at most until then: that upper bound, which shrinks
    with every night the job keeps being done early, so a job that got quicker is soon polled earlier.
    """
    return max(0.0, (last_not_done_at if last_not_done_at is not None else seen_done_at) - started)


def scouts_for(targets: int) -> int:
    """How many jobs to follow closely while nothing is known of the fleet's durations. Pure."""
    return max(SCOUTS_MIN, min(SCOUTS_MAX, math.ceil(SCOUT_SHARE * targets)))


def quantile_of_survival(observed: list[tuple[float, bool]], share: float) -> float | None:
    """The `share` quantile of how long jobs run, from jobs still running (their running time so far, False)
    and ended ones (their running time, True when it is a measured end), by Kaplan-Meier; None until
    enough have ended to say. Pure.

    A job still running counts for every duration below its running time and for none above it, so the
    quickest jobs, which end first, do not pass for the whole fleet."""
    at_risk = len(observed)
    surviving = 1.0
    for running_time, ended in sorted(observed, key=lambda o: (o[0], not o[1])):
        if ended:
            surviving *= 1.0 - 1.0 / at_risk
            if 1.0 - surviving >= share - 1e-12:
                return running_time
        at_risk -= 1
    return None


@dataclass(slots=True)
class FleetSample:
    """The jobs followed from their start while nothing was known (the scouts), and what they showed."""

    size: int
    quantile_share: float = FLEET_QUANTILE
    _started: dict[int, float] = field(default_factory=dict)  # a scout's key -> when its job started
    _ended: dict[int, tuple[float, bool]] = field(default_factory=dict)  # key -> (running time, measured)
    _known: float | None = None  # the quantile, once the scouts have shown it (then fixed for the run)

    @property
    def known(self) -> float | None:
        """How long the quickest `quantile_share` of the fleet's jobs run (None: not known yet)."""
        return self._known

    @property
    def running(self) -> int:
        return len(self._started) - len(self._ended)

    def wants_scout(self) -> bool:
        """Whether a job nothing is known of should be followed closely (else it is held)."""
        return self._known is None and self.running < self.size

    def enlist(self, key: int, started_at: float) -> None:
        self._started[key] = started_at

    def ended(self, key: int, running_time: float, measured: bool, now: float) -> bool:
        """A scout's job ended, after `running_time` (`measured`: it succeeded and its time was measured;
        else it failed or timed out, which says only that it ran that long). True when this made the
        fleet's quantile known."""
        if key not in self._started or key in self._ended or self._known is not None:
            return False
        self._ended[key] = (running_time, measured)
        observed = [self._ended.get(k, (now - started, False)) for k, started in self._started.items()]
        self._known = quantile_of_survival(observed, self.quantile_share)
        return self._known is not None
