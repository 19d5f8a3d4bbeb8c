"""The figures of the fleet benchmark, as small pure functions over hand-checkable records.

Times are epoch seconds (the simulator and every contender stamp with `time.time()` on the same
machine), durations seconds. Nothing here does I/O.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

REQUEST_KINDS: Final = ("token", "create", "job", "backups", "other")
_KIND_OF_ENDPOINT: Final = {
    "token": "token",
    "create": "create",
    "legacy_create": "create",
    "job": "job",
    "backups": "backups",
    "legacy_backups": "backups",
}
DETECTED_OUTCOMES: Final = frozenset({"succeeded", "failed"})


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One target as a contender recorded it, whoever the contender."""

    deployment: str
    store: str
    job_id: str
    sent_at: float | None  # the create request was sent
    detected_at: float | None  # the contender recorded the job's end
    outcome: str  # succeeded | failed | timed_out | not_started | abandoned | interrupted | skipped
    polls: int  # the contender's own count of its job polls

    @property
    def detected(self) -> bool:
        return self.outcome in DETECTED_OUTCOMES and self.detected_at is not None


@dataclass(frozen=True, slots=True)
class SimJob:
    """One backup job as the simulator recorded it."""

    deployment: str
    store: str
    job_id: str
    created_at: float
    completed_at: float  # the server really finished the work

    @property
    def duration_s(self) -> float:
        return self.completed_at - self.created_at


@dataclass(frozen=True, slots=True)
class Spread:
    """Median, 95th percentile and maximum of a sample, and its size."""

    median: float | None
    p95: float | None
    max: float | None
    n: int

    def to_json(self, digits: int = 3) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, digits)

        return {"median": rounded(self.median), "p95": rounded(self.p95), "max": rounded(self.max), "n": self.n}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Iterable[float]) -> Spread:
    sample = list(values)
    if not sample:
        return Spread(None, None, None, 0)
    return Spread(percentile(sample, 50), percentile(sample, 95), max(sample), len(sample))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# -- the ideal --


def deployment_chains(durations: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each deployment's jobs back to back: a deployment runs one DR job at a time, its stores in turn."""
    return {deployment: sum(jobs) for deployment, jobs in durations.items()}


def ideal_wall_s(chains: Iterable[float], workers: int | None = None) -> float:
    """The lower bound of the wall time: the longest deployment chain, and with W workers (one
    deployment at a time each) also the whole work spread evenly, max(max_d, sum_d / W)."""
    lengths = list(chains)
    if not lengths:
        return 0.0
    longest = max(lengths)
    return longest if workers is None else max(longest, sum(lengths) / workers)


def created_bound_s(completed_at: Iterable[float], started_at: float) -> float:
    """The earliest a contender could have finished given when its creates reached the server:
    the last job's completion (created_at + duration), from the contender's start."""
    ends = list(completed_at)
    return max(ends) - started_at if ends else 0.0


def list_schedule_s(units: Sequence[float], workers: int) -> float:
    """Makespan of `units` (in this order) on `workers`: each unit goes to the first worker free."""
    if workers < 1:
        raise ValueError("at least one worker")
    free_at = [0.0] * min(workers, max(1, len(units)))
    for unit in units:
        heapq.heapreplace(free_at, free_at[0] + unit)
    return max(free_at)


# -- requests and polls --


def requests_by_kind(by_endpoint: Mapping[str, int]) -> dict[str, int]:
    """The simulator's requests by endpoint, as token / create / job (polls) / backups (lists) / other."""
    counts = dict.fromkeys(REQUEST_KINDS, 0)
    for endpoint, count in by_endpoint.items():
        counts[_KIND_OF_ENDPOINT.get(endpoint, "other")] += count
    counts["total"] = sum(counts[kind] for kind in REQUEST_KINDS)
    return counts


def job_of_poll(path: str) -> str:
    """The job id a job poll names: `/<deployment>/admin/jobs/<job id>`."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def polls_per_job(job_poll_paths: Iterable[str]) -> Counter[str]:
    return Counter(job_of_poll(path) for path in job_poll_paths)


# -- detection lag --


@dataclass(frozen=True, slots=True)
class Lag:
    job_id: str
    seconds: float  # contender detected - simulator completed
    share: float  # of the job's duration


def detection_lags(jobs: Mapping[str, SimJob], targets: Iterable[TargetRecord]) -> list[Lag]:
    """For every target whose end the contender recorded: its lag after the simulator completed it."""
    lags = []
    for target in targets:
        job = jobs.get(target.job_id)
        if job is None or not target.detected or target.detected_at is None:
            continue
        seconds = target.detected_at - job.completed_at
        lags.append(Lag(target.job_id, seconds, seconds / job.duration_s if job.duration_s > 0 else math.inf))
    return lags


# -- extrapolation of a capped contender --


@dataclass(frozen=True, slots=True)
class Extrapolation:
    wall_s: float
    startup_s: float  # process start to its first create
    follow_overhead_s: float  # mean per target: detected - sent - job duration (create, polls, lag)
    gap_s: float  # mean per target: a worker's previous detection to its next create (sign-in, ...)
    measured_targets: int  # targets the means come from


def worker_gaps(sent: Sequence[float], detected: Sequence[float], workers: int) -> list[float]:
    """Idle time of a worker between two targets. The first `workers` creates start the workers; each
    later one follows the latest detection not yet followed (a freed worker takes its next target at
    once, so its own detection is the one just before), and the gap is the time between them."""
    events = sorted([(at, 0) for at in detected] + [(at, 1) for at in sent])  # a tie: the detection first
    freed: list[float] = []
    gaps: list[float] = []
    starts = 0
    for at, is_send in events:
        if not is_send:
            freed.append(at)
        elif starts < workers:
            starts += 1
        elif freed:
            gaps.append(at - freed.pop())
    return gaps


def extrapolate_wall_s(
    targets: Sequence[TargetRecord],
    durations: Mapping[tuple[str, str], float],
    *,
    started_at: float,
    workers: int,
) -> Extrapolation | None:
    """What a capped contender's whole run would have taken: its measured start-up, then every target
    (in its order, a deployment's targets in one worker, one after another) taking the target's job
    duration plus the mean overhead measured on the targets it finished, list-scheduled on its workers.
    None when it finished no target to measure."""
    done = [t for t in targets if t.detected and t.sent_at is not None and (t.deployment, t.store) in durations]
    sent = [t.sent_at for t in targets if t.sent_at is not None]
    if not done or not sent:
        return None
    follow = [
        (t.detected_at or 0.0) - (t.sent_at or 0.0) - durations[(t.deployment, t.store)]
        for t in done  # both set: filtered above
    ]
    gaps = worker_gaps(sent, [t.detected_at for t in done if t.detected_at is not None], workers)
    follow_s = sum(follow) / len(follow)
    gap_s = sum(gaps) / len(gaps) if gaps else 0.0
    units: dict[str, float] = {}
    for target in targets:
        duration = durations.get((target.deployment, target.store), 0.0)
        units[target.deployment] = units.get(target.deployment, 0.0) + duration + follow_s + gap_s
    startup_s = min(sent) - started_at
    wall = startup_s + list_schedule_s(list(units.values()), workers)
    return Extrapolation(wall, startup_s, follow_s, gap_s, len(done))


def extrapolate_requests(
    total: int, job_polls: int, *, jobs_started: int, job_s_observed: float, targets: int, job_s_all: float
) -> int | None:
    """A capped contender's requests over the whole fleet: its requests other than job polls per target
    started, for every target; and its job polls per second of job it followed, for every job's duration.
    None when it started no job."""
    if jobs_started <= 0 or job_s_observed <= 0:
        return None
    return round((total - job_polls) / jobs_started * targets + job_polls / job_s_observed * job_s_all)


def observed_job_s(jobs: Iterable[SimJob], ended_at: float) -> float:
    """Seconds of job life a contender could follow before it ended: each job from its creation to
    its completion or the contender's end, whichever came first."""
    return sum(max(0.0, min(job.completed_at, ended_at) - job.created_at) for job in jobs)


def outcome_counts(targets: Iterable[TargetRecord]) -> dict[str, int]:
    """succeeded / failed (timed out included) / not_started (skipped included) / other."""
    folded = {"timed_out": "failed", "skipped": "not_started"}
    counts = Counter(folded.get(t.outcome, t.outcome) for t in targets)
    out = {key: counts.pop(key, 0) for key in ("succeeded", "failed", "not_started")}
    out["other"] = sum(counts.values())
    out["total"] = sum(out.values())
    return out
