"""One contender's figures from the simulator's records and the contender's own, and the issue's targets.

Pure: everything measured comes in as arguments (records, stats, process accounting), a JSON-ready
dict goes out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .contenders import Contender, ContenderOutput
from .figures import (
    SimJob,
    TargetRecord,
    created_bound_s,
    deployment_chains,
    detection_lags,
    extrapolate_requests,
    extrapolate_wall_s,
    ideal_wall_s,
    observed_job_s,
    outcome_counts,
    ratio,
    requests_by_kind,
    spread,
)
from .fleet import FleetSpec
from .processes import Accounting

# Issue 16's targets: first nights at every one-store fleet size, the rest at 10,000 deployments.
FIRST_NIGHT_MEDIAN_POLLS_MAX: Final = 8.0
P95_LAG_SHARE_MAX: Final = 0.10
NIGHTLY_WALL_OVER_IDEAL_MAX: Final = 1.10
FIRST_NIGHT_WALL_OVER_IDEAL_MAX: Final = 1.25
NIGHTLY_REQUESTS_PER_TARGET_MAX: Final = 5.0
PEAK_RSS_MIB_MAX: Final = 150.0
CPU_MS_PER_REQUEST_MAX: Final = 0.4
CPU_RATIO_TO_BARE_MAX: Final = 1.5
ISSUE_FLEET: Final = 10_000


@dataclass(frozen=True, slots=True)
class Measured:
    """Everything one contender's run produced."""

    accounting: Accounting
    output: ContenderOutput
    jobs: Sequence[SimJob]  # the simulator's records of the jobs created in this run
    polls: Counter[str]  # job id -> job-resource requests the simulator answered
    stats_before: Mapping[str, Any]
    stats_after: Mapping[str, Any]
    simulator_startup_s: float


def _delta(after: Mapping[str, Any], before: Mapping[str, Any], key: str) -> float | None:
    if after.get(key) is None or before.get(key) is None:
        return None
    return float(after[key]) - float(before[key])


def durations_seen(jobs: Sequence[SimJob]) -> dict[str, list[float]]:
    """Each deployment's job durations from the simulator's records, in creation order."""
    by_deployment: dict[str, list[SimJob]] = {}
    for job in jobs:
        by_deployment.setdefault(job.deployment, []).append(job)
    return {d: [j.duration_s for j in sorted(js, key=lambda j: j.created_at)] for d, js in by_deployment.items()}


def fleet_durations(
    predicted: Mapping[str, Sequence[float]], seen: Mapping[str, Sequence[float]]
) -> tuple[dict[str, list[float]], float]:
    """Each deployment's durations: the simulator's records where the job ran, the seeded prediction
    for the rest; and the largest difference between a record and its prediction (0 when they agree)."""
    merged: dict[str, list[float]] = {}
    mismatch = 0.0
    for deployment, expected in predicted.items():
        recorded = list(seen.get(deployment, ()))
        mismatch = max([mismatch, *(abs(a - b) for a, b in zip(recorded, expected, strict=False))])
        merged[deployment] = recorded + list(expected[len(recorded) :])
    return merged, mismatch


def target_durations(
    targets: Sequence[TargetRecord], jobs: Sequence[SimJob], durations: Mapping[str, Sequence[float]]
) -> dict[tuple[str, str], float]:
    """(deployment, store) -> its job's duration: the record when the job ran, else the deployment's
    next unused duration (the simulator draws a deployment's durations in creation order)."""
    out = {(j.deployment, j.store): j.duration_s for j in jobs}
    used = Counter(j.deployment for j in jobs)
    for target in targets:
        key = (target.deployment, target.store)
        if key not in out:
            chain = durations.get(target.deployment, ())
            k = used[target.deployment]
            out[key] = chain[k] if k < len(chain) else (sum(chain) / len(chain) if chain else 0.0)
            used[target.deployment] += 1
    return out


def contender_figures(
    spec: FleetSpec, contender: Contender, predicted: Mapping[str, Sequence[float]], measured: Measured
) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """The contender's row of the results, and its (polls, lag share) per detected job for the chart."""
    acct, output, jobs = measured.accounting, measured.output, measured.jobs
    durations, mismatch = fleet_durations(predicted, durations_seen(jobs))
    chains = list(deployment_chains(durations).values())
    ideal = ideal_wall_s(chains, contender.workers)
    ideal_fleet = ideal_wall_s(chains)
    targets = output.targets
    counts = outcome_counts(targets)
    detected = [t for t in targets if t.detected]
    capped = output.capped or (contender.cap_s is not None and len(detected) < len(targets))

    extrapolation = None
    if capped:
        extrapolation = extrapolate_wall_s(
            targets,
            target_durations(targets, jobs, durations),
            started_at=acct.started_at,
            workers=contender.workers or 1,
        )
    wall_extrapolated = extrapolation.wall_s if extrapolation else None
    headline = wall_extrapolated if capped and wall_extrapolated is not None else acct.wall_s

    by_endpoint = Counter({k: int(v) for k, v in measured.stats_after.get("requests_by_endpoint", {}).items()})
    by_endpoint.subtract({k: int(v) for k, v in measured.stats_before.get("requests_by_endpoint", {}).items()})
    requests = requests_by_kind(by_endpoint)
    requests_extrapolated = None
    if capped:
        requests_extrapolated = extrapolate_requests(
            requests["total"],
            requests["job"],
            jobs_started=len(jobs),
            job_s_observed=observed_job_s(jobs, acct.ended_at),
            targets=len(targets),
            job_s_all=sum(sum(chain) for chain in durations.values()),
        )

    jobs_by_id = {j.job_id: j for j in jobs}
    lags = detection_lags(jobs_by_id, targets)
    polls = [measured.polls.get(t.job_id, 0) for t in detected]
    share_of = {lag.job_id: lag.share for lag in lags}
    points = [(measured.polls.get(t.job_id, 0), share_of[t.job_id]) for t in detected if t.job_id in share_of]

    sim_cpu = _delta(measured.stats_after, measured.stats_before, "cpu_seconds")
    sim_cpu_proc = _delta(measured.stats_after, measured.stats_before, "proc_cpu_seconds")
    sim_busy = sim_cpu_proc if sim_cpu_proc is not None else sim_cpu
    created_bound = created_bound_s((j.completed_at for j in jobs), acct.started_at) if jobs else None
    first_sent = min((t.sent_at for t in targets if t.sent_at is not None), default=None)

    figures: dict[str, Any] = {
        "contender": contender.name,
        "settings": contender.settings(spec.scale),
        "workers": contender.workers,
        "exit_code": acct.exit_code,
        "killed_by_harness": acct.killed,
        "capped": capped,
        "wall_s": round(acct.wall_s, 3),  # measured: process start to exit
        "wall_s_extrapolated": round(wall_extrapolated, 3) if wall_extrapolated is not None else None,
        "wall_basis": "extrapolated" if capped and wall_extrapolated is not None else "measured",
        "wall_s_headline": round(headline, 3),
        "extrapolation": None
        if extrapolation is None
        else {
            "startup_s": round(extrapolation.startup_s, 3),
            "follow_overhead_s_per_target": round(extrapolation.follow_overhead_s, 4),
            "gap_s_per_target": round(extrapolation.gap_s, 4),
            "measured_targets": extrapolation.measured_targets,
        },
        "ideal_s": round(ideal, 3),
        "ideal_fleet_s": round(ideal_fleet, 3),
        "wall_over_ideal": _round(ratio(headline, ideal), 4),
        "wall_over_fleet_ideal": _round(ratio(headline, ideal_fleet), 4),
        "created_bound_s": _round(created_bound, 3),
        "wall_over_created_bound": _round(ratio(acct.wall_s, created_bound), 4),
        "first_create_after_s": _round(first_sent - acct.started_at if first_sent is not None else None, 3),
        "requests": requests,
        "requests_total_extrapolated": requests_extrapolated,
        # per target of the fleet (extrapolated for a capped contender)
        "requests_per_target": _round(ratio(requests_extrapolated or requests["total"], len(targets)), 3),
        "contender_requests": output.own_requests,
        # the simulator's job-resource requests per job, over the jobs whose end the contender recorded
        "polls_per_job": spread(polls).to_json(2),
        "polls_per_job_contender_count": spread(t.polls for t in detected).to_json(2),
        "detection_lag_s": spread(lag.seconds for lag in lags).to_json(4),
        "detection_lag_share": spread(lag.share for lag in lags).to_json(5),
        "detection_source": output.detection_source,
        "cpu_s": {
            "user": round(acct.user_s, 3),
            "sys": round(acct.sys_s, 3),
            "total": round(acct.cpu_s, 3),
            # per target it started (a capped contender started only some)
            "per_target_ms": _round(ratio(acct.cpu_s * 1000, sum(1 for t in targets if t.sent_at is not None)), 3),
        },
        "peak_rss_mib": round(acct.peak_rss_mib, 1),
        "simulator": {
            "startup_s": round(measured.simulator_startup_s, 3),
            "cpu_s": _round(sim_cpu, 3),
            "cpu_s_proc": _round(sim_cpu_proc, 3),
            "busy_share": _round(ratio(sim_busy, acct.wall_s), 4),
            "requests_per_s": _round(ratio(requests["total"], acct.wall_s), 1),
            "peak_rss_mib": measured.stats_after.get("peak_rss_mib"),
        },
        "targets": counts,
        "jobs_created": len(jobs),
        "durations_match_prediction": mismatch < 1e-6,
        "notes": output.notes,
    }
    return figures, points


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# -- the issue's targets --


def _check(name: str, value: float | None, limit: float, *, at_most: bool, unit: str = "") -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "limit": limit, "met": False, "by": "not measured"}
    met = value <= limit if at_most else value >= limit
    if at_most:
        by = f"{value:.3g}{unit} vs at most {limit:.3g}{unit}: " + (
            f"{(limit - value) / limit:.0%} under" if met else f"{(value - limit) / limit:.0%} over"
        )
    else:
        by = f"{value:.3g}{unit} vs at least {limit:.3g}{unit}: " + (
            f"{(value - limit) / limit:.0%} above" if met else f"{(limit - value) / limit:.0%} short"
        )
    return {"target": name, "value": round(value, 4), "limit": limit, "met": met, "by": by}


def issue_targets(runs: Sequence[Mapping[str, Any]], client: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 16's targets, judged on the runs' figures and the client benchmark's (None: not run): a first
    night's polls and lag at every one-store fleet, the rest at the largest one-store fleet."""
    one_store = [run for run in runs if run["fleet"]["stores"] == 1]
    checks = []
    for run in one_store:
        contenders = {c["contender"]: c for c in run["contenders"]}
        first = contenders.get("orchestrator")
        if first is not None:
            checks += [
                {**check, "fleet": run["fleet"]["deployments"], "contender": "orchestrator"}
                for check in _first_night(first)
            ]
    largest = max(one_store, key=lambda run: run["fleet"]["deployments"], default=None)
    if largest is not None:
        contenders = {c["contender"]: c for c in largest["contenders"]}
        for name in ("orchestrator", "orchestrator-nightly"):
            if name in contenders:
                checks += [
                    {**check, "fleet": largest["fleet"]["deployments"], "contender": name}
                    for check in _at_scale(contenders[name], nightly=name == "orchestrator-nightly")
                ]
    if client is not None:
        checks += [{**check, "fleet": None, "contender": "client benchmark"} for check in _client(client)]
    return checks


def _first_night(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _check(
            "first night: median polls per job at most 8",
            figures["polls_per_job"]["median"],
            FIRST_NIGHT_MEDIAN_POLLS_MAX,
            at_most=True,
        ),
        _check(
            "first night: p95 detection lag at most 10% of the job",
            figures["detection_lag_share"]["p95"],
            P95_LAG_SHARE_MAX,
            at_most=True,
        ),
    ]


def _at_scale(figures: Mapping[str, Any], *, nightly: bool) -> list[dict[str, Any]]:
    requests = figures["requests"]["total"]
    cpu_ms_per_request = ratio(figures["cpu_s"]["total"] * 1000, requests) if requests else None
    checks = [
        _check("peak RSS at most 150 MiB", figures["peak_rss_mib"], PEAK_RSS_MIB_MAX, at_most=True, unit=" MiB"),
        _check(
            "CPU per request at most 0.4 ms (the whole run's CPU over its requests)",
            cpu_ms_per_request,
            CPU_MS_PER_REQUEST_MAX,
            at_most=True,
            unit=" ms",
        ),
    ]
    if nightly:
        return [
            _check(
                "nightly: wall at most 1.10 x ideal",
                figures["wall_over_ideal"],
                NIGHTLY_WALL_OVER_IDEAL_MAX,
                at_most=True,
            ),
            _check(
                "nightly: p95 detection lag at most 10% of the job",
                figures["detection_lag_share"]["p95"],
                P95_LAG_SHARE_MAX,
                at_most=True,
            ),
            _check(
                "nightly: requests per target at most 5",
                figures["requests_per_target"],
                NIGHTLY_REQUESTS_PER_TARGET_MAX,
                at_most=True,
            ),
            *checks,
        ]
    return [
        _check(
            "first night: wall at most 1.25 x ideal",
            figures["wall_over_ideal"],
            FIRST_NIGHT_WALL_OVER_IDEAL_MAX,
            at_most=True,
        ),
        *checks,
    ]


def _client(client: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _check(
            "CPU per request through our client at most 0.4 ms",
            client["modes"]["ours"]["cpu_ms_per_request"],
            CPU_MS_PER_REQUEST_MAX,
            at_most=True,
            unit=" ms",
        ),
        _check(
            "CPU per request at most 1.5 x bare aiohttp's",
            client["ratio"],
            CPU_RATIO_TO_BARE_MAX,
            at_most=True,
            unit="x",
        ),
    ]
