"""The fleet benchmark's harness (benchmarks/bench_fleet.py, benchmarks/fleetbench/).

Unit tests of its figures on hand-made records (ideal bounds, percentiles, detection lag, extrapolation of
a capped contender, the issue's targets), a check that the fleet's job durations are the same whatever
the order of the creates, and one small end-to-end run: 3 deployments at a tiny time scale, every
contender, every figure present. No assert on time.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator.config import fleet_from_mapping
from orchestrator.simulator.fleet import SimulatedFleet

ROOT = Path(__file__).resolve().parents[1]
# `benchmarks/` has no __init__.py: its packages are imported as the harness imports them, from there.
sys.path.insert(0, str(ROOT / "benchmarks"))

from fleetbench import figures  # noqa: E402
from fleetbench.contenders import contender, flags, scaled, targets_document  # noqa: E402
from fleetbench.figures import SimJob, TargetRecord  # noqa: E402
from fleetbench.fleet import FleetSpec, predicted_durations  # noqa: E402
from fleetbench.output import markdown, table_row  # noqa: E402
from fleetbench.summary import fleet_durations, issue_targets, target_durations  # noqa: E402

T0 = 1_800_000_000.0


def target(
    deployment: str,
    *,
    store: str = "default",
    sent: float | None = None,
    detected: float | None = None,
    outcome: str = "succeeded",
    job_id: str = "",
) -> TargetRecord:
    return TargetRecord(deployment, store, job_id or f"job-{deployment}-{store}", sent, detected, outcome, 0)


# -- percentiles --


def test_percentile_interpolates_between_ranks() -> None:
    assert figures.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert figures.percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert figures.percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert figures.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert figures.percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError, match="no values"):
        figures.percentile([], 50)


def test_spread_of_a_sample_and_of_nothing() -> None:
    assert figures.spread([1.0, 2.0, 3.0, 10.0]).to_json() == {"median": 2.5, "p95": 8.95, "max": 10.0, "n": 4}
    assert figures.spread([]).to_json() == {"median": None, "p95": None, "max": None, "n": 0}


# -- the ideal --


def test_ideal_serialises_each_deployment_and_spreads_work_over_workers() -> None:
    chains = figures.deployment_chains({"a": [10.0, 5.0], "b": [8.0], "c": [1.0]})
    assert chains == {"a": 15.0, "b": 8.0, "c": 1.0}
    assert figures.ideal_wall_s(chains.values()) == 15.0  # no cap: the longest deployment, stores in turn
    assert figures.ideal_wall_s(chains.values(), workers=1) == 24.0  # one at a time: the sum
    assert figures.ideal_wall_s(chains.values(), workers=2) == 15.0  # max(15, 24 / 2)
    assert figures.ideal_wall_s([4.0, 4.0, 4.0], workers=2) == 6.0  # max(4, 12 / 2)
    assert figures.ideal_wall_s([]) == 0.0


def test_created_bound_is_the_last_completion_after_the_start() -> None:
    assert figures.created_bound_s([T0 + 12.0, T0 + 30.5, T0 + 7.0], T0) == 30.5
    assert figures.created_bound_s([], T0) == 0.0


def test_list_schedule_gives_each_unit_to_the_first_free_worker() -> None:
    assert figures.list_schedule_s([3.0, 3.0, 3.0], 2) == 6.0
    assert figures.list_schedule_s([5.0, 1.0, 1.0, 1.0], 2) == 5.0
    assert figures.list_schedule_s([1.0, 1.0, 5.0], 2) == 6.0  # in order: the long one starts late
    assert figures.list_schedule_s([2.0, 3.0], 1) == 5.0
    assert figures.list_schedule_s([], 20) == 0.0


# -- requests, polls, lag --


def test_requests_by_kind_folds_legacy_paths_and_the_rest() -> None:
    counts = figures.requests_by_kind(
        {"token": 3, "create": 2, "legacy_create": 1, "job": 40, "backups": 2, "legacy_backups": 1, "root": 3}
    )
    assert counts == {"token": 3, "create": 3, "job": 40, "backups": 3, "other": 3, "total": 52}


def test_polls_per_job_by_the_job_id_in_the_path() -> None:
    paths = ["/gis-0000/admin/jobs/j1", "/gis-0000/admin/jobs/j1", "/gis-0001/admin/jobs/j2/"]
    assert figures.polls_per_job(paths) == {"j1": 2, "j2": 1}


def test_detection_lag_absolute_and_as_a_share_of_the_job() -> None:
    jobs = {
        "j1": SimJob("a", "default", "j1", T0, T0 + 10.0),
        "j2": SimJob("b", "default", "j2", T0 + 5.0, T0 + 25.0),
    }
    targets = [
        target("a", job_id="j1", sent=T0, detected=T0 + 11.0),
        target("b", job_id="j2", sent=T0 + 5.0, detected=T0 + 25.5, outcome="failed"),  # failed: detected too
        target("c", job_id="j3", sent=T0, detected=T0 + 3.0),  # no such job on the server
        target("d", job_id="j1", sent=T0, detected=None, outcome="abandoned"),  # never detected
    ]
    lags = figures.detection_lags(jobs, targets)
    assert [lag.job_id for lag in lags] == ["j1", "j2"]
    assert [lag.seconds for lag in lags] == pytest.approx([1.0, 0.5])
    assert [lag.share for lag in lags] == pytest.approx([0.1, 0.025])


def test_outcomes_are_counted_with_timed_out_as_failed() -> None:
    outcomes = ["succeeded", "succeeded", "failed", "timed_out", "not_started", "skipped", "abandoned"]
    counts = figures.outcome_counts(target(str(i), outcome=o) for i, o in enumerate(outcomes))
    assert counts == {"succeeded": 2, "failed": 2, "not_started": 2, "other": 1, "total": 7}


# -- extrapolation of a capped contender --


def test_worker_gaps_pair_each_create_with_the_detection_that_freed_its_worker() -> None:
    assert figures.worker_gaps([0.0, 12.0, 25.0], [11.0, 24.0], workers=1) == [1.0, 1.0]
    # two workers: each later create follows the detection just before it (its own worker's)
    assert figures.worker_gaps([0.0, 0.0, 10.5, 21.0], [10.0, 20.0], workers=2) == [0.5, 1.0]
    assert figures.worker_gaps([0.0, 0.0, 4.0, 9.5], [3.0, 4.0, 9.0], workers=2) == [0.0, 0.5]
    assert figures.worker_gaps([0.0], [], workers=1) == []


def test_sequential_extrapolation_sums_every_target_with_the_measured_overheads() -> None:
    durations = {("a", "default"): 10.0, ("b", "default"): 20.0, ("c", "default"): 30.0}
    # started 1 s after the process; each job detected 0.5 s after it ended; 0.25 s to the next create
    first_sent = T0 + 1.0
    first_detected = first_sent + 10.0 + 0.5
    second_sent = first_detected + 0.25
    second_detected = second_sent + 20.0 + 0.5
    targets = [
        target("a", sent=first_sent, detected=first_detected),
        target("b", sent=second_sent, detected=second_detected),
        target("c", outcome="not_started"),  # capped: never started, its duration known from the seed
    ]
    result = figures.extrapolate_wall_s(targets, durations, started_at=T0, workers=1)
    assert result is not None
    assert result.startup_s == pytest.approx(1.0)
    assert result.follow_overhead_s == pytest.approx(0.5)
    assert result.gap_s == pytest.approx(0.25)
    assert result.measured_targets == 2
    assert result.wall_s == pytest.approx(1.0 + (10 + 0.75) + (20 + 0.75) + (30 + 0.75))


def test_pool_extrapolation_schedules_deployments_on_its_workers() -> None:
    durations = {("a", "s1"): 4.0, ("a", "s2"): 4.0, ("b", "default"): 3.0, ("c", "default"): 1.0}
    targets = [
        target("a", store="s1", sent=T0, detected=T0 + 4.0),  # no overhead, no gap: a perfect worker
        target("a", store="s2", sent=T0 + 4.0, outcome="abandoned"),
        target("b", sent=T0, detected=T0 + 3.0),
        target("c", outcome="not_started"),
    ]
    result = figures.extrapolate_wall_s(targets, durations, started_at=T0, workers=2)
    assert result is not None
    # deployment a (4 + 4) on one worker; b (3) then c (1) on the other
    assert result.wall_s == pytest.approx(8.0)


def test_no_extrapolation_without_a_finished_target() -> None:
    targets = [target("a", sent=T0, outcome="abandoned"), target("b", outcome="not_started")]
    assert figures.extrapolate_wall_s(targets, {("a", "default"): 5.0}, started_at=T0, workers=1) is None


def test_requests_extrapolated_per_target_and_per_second_of_job_followed() -> None:
    # 2 jobs started, 10 requests that are not job polls (5 per target), 60 polls over 30 s of job life
    total = figures.extrapolate_requests(70, 60, jobs_started=2, job_s_observed=30.0, targets=10, job_s_all=300.0)
    assert total == 5 * 10 + 2 * 300
    assert figures.extrapolate_requests(5, 0, jobs_started=0, job_s_observed=0.0, targets=10, job_s_all=1.0) is None


def test_observed_job_time_stops_at_the_contenders_end() -> None:
    jobs = [SimJob("a", "default", "j1", T0, T0 + 10.0), SimJob("b", "default", "j2", T0 + 5.0, T0 + 50.0)]
    assert figures.observed_job_s(jobs, ended_at=T0 + 20.0) == pytest.approx(10.0 + 15.0)


def test_ratio_guards_missing_and_zero() -> None:
    assert figures.ratio(3.0, 2.0) == 1.5
    assert figures.ratio(None, 2.0) is None
    assert figures.ratio(3.0, 0.0) is None


# -- the fleet and its durations --


def test_fleet_durations_take_records_first_and_the_prediction_for_the_rest() -> None:
    predicted = {"a": [10.0, 20.0], "b": [5.0]}
    merged, mismatch = fleet_durations(predicted, {"a": [10.0]})
    assert merged == {"a": [10.0, 20.0], "b": [5.0]}
    assert mismatch == 0.0
    _, mismatch = fleet_durations(predicted, {"b": [5.5]})
    assert mismatch == pytest.approx(0.5)


def test_target_durations_follow_each_deployments_creation_order() -> None:
    jobs = [SimJob("a", "s2", "j1", T0, T0 + 7.0)]  # this contender ran store s2 first
    targets = [target("a", store="s1"), target("a", store="s2"), target("b")]
    assert target_durations(targets, jobs, {"a": [7.0, 9.0], "b": [3.0]}) == {
        ("a", "s2"): 7.0,
        ("a", "s1"): 9.0,
        ("b", "default"): 3.0,
    }


def test_fleet_file_is_the_fleet_the_mapping_describes() -> None:
    import tomllib

    spec = FleetSpec(deployments=5, stores=2, seed=3, scale=1 / 60)
    from_file = fleet_from_mapping(tomllib.loads(spec.toml()))
    assert from_file == fleet_from_mapping(spec.mapping())
    assert from_file.job_duration.median == pytest.approx(15.0)
    assert (from_file.job_duration.low, from_file.job_duration.high) == pytest.approx((2.0, 120.0))
    assert from_file.stores == ("default", "offsite")
    assert from_file.versions == {"11.3": 1.0}
    assert from_file.profile == "none"


def test_durations_are_the_same_whatever_the_order_of_the_creates() -> None:
    """What lets every contender meet the same fleet: a deployment's k-th job has the same duration
    however the creates of the fleet interleave."""
    spec = FleetSpec(deployments=4, stores=2, seed=5, scale=1 / 60)
    predicted = predicted_durations(spec)
    clock = ManualClock()
    fleet = SimulatedFleet(fleet_from_mapping(spec.mapping()), clock=clock, password="unused")
    seen: dict[str, list[float]] = {}
    for k in range(spec.stores):  # store by store across the fleet, deployments backwards
        for name in reversed(list(fleet.deployments)):
            deployment = fleet.deployments[name]
            deployment.settle(clock.now())
            job = deployment.create_backup(
                store=spec.store_names[1 - k],  # the second store first
                name=f"other-order-{k}",
                passcode="a-long-passcode",
                description="",
                retention="",
                username="admin",
                operation_uri="",
                now=clock.now(),
            )
            seen.setdefault(name, []).append(job.work_done_at - job.created_at)
        clock.advance(10_000.0)
    assert seen.keys() == predicted.keys()
    for name, chain in predicted.items():
        assert seen[name] == pytest.approx(chain), name
    assert all(2.0 <= d <= 120.0 for chain in predicted.values() for d in chain)


def test_targets_file_lists_every_store_of_the_inventory() -> None:
    inventory = """
[defaults]
username = "admin"
password_file = "x.secrets/password"

[[deployments]]
name = "gis-0000"
url = "http://127.0.0.1:5000/gis-0000"

[[deployments]]
name = "gis-0001"
url = "http://127.0.0.1:5000/gis-0001"
stores = ["default", "offsite"]
"""
    document = targets_document(inventory, FleetSpec(2, 2, 1, 1 / 60))
    assert document["password_env"] == "BENCH_PASSWORD" and document["passcode_env"] == "BENCH_PASSCODE"
    assert [(t["deployment"], t["store"], t["url"]) for t in document["targets"]] == [
        ("gis-0000", "default", "http://127.0.0.1:5000/gis-0000"),
        ("gis-0001", "default", "http://127.0.0.1:5000/gis-0001"),
        ("gis-0001", "offsite", "http://127.0.0.1:5000/gis-0001"),
    ]
    assert len({t["backup_name"] for t in document["targets"]}) == 3


def test_time_settings_are_scaled_in_one_place() -> None:
    settings = scaled({"poll_initial": 5.0, "poll_max": 60.0}, 1 / 60)
    assert settings == {"poll_initial": pytest.approx(5 / 60), "poll_max": 1.0}
    assert flags({"poll_max": 1.0, "job_timeout": 125.0}) == ["--poll-max", "1", "--job-timeout", "125"]
    assert contender("threadpool", 300.0).workers == 20
    assert contender("sequential").workers == 1
    assert contender("orchestrator").workers is None
    with pytest.raises(ValueError, match="unknown contender"):
        contender("cron")


# -- the issue's targets and the table --


def figures_of(name: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "contender": name,
        "workers": {"orchestrator": None, "orchestrator-nightly": None, "sequential": 1, "threadpool": 20}[name],
        "capped": False,
        "wall_s": 100.0,
        "wall_s_headline": 100.0,
        "wall_basis": "measured",
        "ideal_s": 95.0,
        "wall_over_ideal": 100 / 95,
        "created_bound_s": 98.0,
        "requests": {"token": 1, "create": 1, "job": 8, "backups": 1, "other": 1, "total": 12},
        "requests_total_extrapolated": None,
        "polls_per_job": {"median": 6.0, "p95": 9.0, "max": 12.0, "n": 10},
        "detection_lag_s": {"median": 0.5, "p95": 1.0, "max": 2.0, "n": 10},
        "detection_lag_share": {"median": 0.02, "p95": 0.05, "max": 0.2, "n": 10},
        "cpu_s": {"user": 1.0, "sys": 0.5, "total": 1.5, "per_target_ms": 1.5},
        "peak_rss_mib": 100.0,
        "simulator": {"cpu_s": 2.0, "cpu_s_proc": 2.1, "busy_share": 0.021},
        "targets": {"succeeded": 10, "failed": 0, "not_started": 0, "other": 0, "total": 10},
    }
    return {**row, **overrides}


def _run_of(deployments: int, *contenders: dict[str, Any], stores: int = 1) -> dict[str, Any]:
    return {"fleet": {"deployments": deployments, "stores": stores, "targets": deployments * stores},
            "contenders": list(contenders)}  # fmt: skip


def test_issue_targets_judge_first_nights_at_every_size_and_the_rest_at_the_largest_fleet() -> None:
    """Issue 16: a first night's polls and lag at 100, 1,000 and 10,000 deployments; the nightly run's lag, wall
    and requests, the first night's wall, RSS and CPU per request at 10,000; the client benchmark's two."""
    runs = [
        _run_of(100, figures_of("orchestrator", polls_per_job={"median": 9.0, "p95": 20.0, "max": 30.0, "n": 100})),
        _run_of(1_000, figures_of("orchestrator")),
        _run_of(
            10_000,
            figures_of("orchestrator", peak_rss_mib=160.0),
            figures_of("orchestrator-nightly", requests_per_target=4.5),
        ),
        _run_of(1_000, figures_of("orchestrator", peak_rss_mib=999.0), stores=2),  # not judged: two stores
    ]
    client = {"modes": {"ours": {"cpu_ms_per_request": 0.45}}, "ratio": 1.4}
    checks = {(c["fleet"], c["contender"], c["target"]): c for c in issue_targets(runs, client)}
    assert len(checks) == 6 + 3 + 5 + 2
    polls_100 = checks[(100, "orchestrator", "first night: median polls per job at most 8")]
    assert not polls_100["met"] and "12% over" in polls_100["by"]
    assert checks[(1_000, "orchestrator", "first night: median polls per job at most 8")]["met"]
    rss = checks[(10_000, "orchestrator", "peak RSS at most 150 MiB")]
    assert not rss["met"] and rss["value"] == 160.0
    assert checks[(10_000, "orchestrator-nightly", "nightly: requests per target at most 5")]["met"]
    cpu = checks[(10_000, "orchestrator", "CPU per request at most 0.4 ms (the whole run's CPU over its requests)")]
    assert cpu["value"] == pytest.approx(1500 / 12) and not cpu["met"]
    assert not checks[(None, "client benchmark", "CPU per request through our client at most 0.4 ms")]["met"]
    assert checks[(None, "client benchmark", "CPU per request at most 1.5 x bare aiohttp's")]["met"]


def test_issue_targets_need_the_orchestrator() -> None:
    assert issue_targets([_run_of(100, figures_of("sequential"))], None) == []


def test_extrapolated_figures_are_marked_in_the_table() -> None:
    row = table_row(figures_of("sequential", capped=True, wall_basis="extrapolated", wall_s_headline=1_750.0))
    assert row[1].startswith("≈1,750.0 (extrapolated; measured 100.0")
    assert row[3].startswith("≈")
    measured = table_row(figures_of("orchestrator"))
    assert measured[1] == "100.0" and "≈" not in "".join(measured)


def test_markdown_names_the_fleet_size_each_target_was_judged_at() -> None:
    document = {
        "scenario": "quick",
        "date": "2026-11-28T00:00:00+00:00",
        "machine": {"platform": "Linux", "cpu_count": 2, "python": "3.11"},
        "seed": 1,
        "scale": 1 / 60,
        "scale_text": "1/60",
        "harness_wall_s": 200.0,
        "runs": [
            {
                "fleet": {
                    "deployments": 100,
                    "stores": 1,
                    "targets": 100,
                    "job_duration_s": {"median": 15.0, "p95": 30.0, "max": 60.0, "n": 100},
                    "job_duration_sum_s": 1_750.0,
                    "ideal_s": 60.0,
                },
                "contenders": [figures_of("orchestrator")],
                "errors": [{"contender": "threadpool", "error": "exit code 2"}],
            }
        ],
        "issue_targets": {
            "issue_sets_them_at": 10_000,
            "checks": [
                {"target": "t", "met": False, "by": "9 vs at most 8", "fleet": 100, "contender": "orchestrator"}
            ],
        },
    }
    text = markdown(document)
    assert "## 100 deployments, one store each (100 targets)" in text
    assert "- 100 deployments, orchestrator: **missed**: t: 9 vs at most 8" in text
    assert "**threadpool failed**: exit code 2" in text


# -- one small run, end to end --

FIGURES = (
    "wall_s",
    "wall_s_headline",
    "wall_basis",
    "ideal_s",
    "ideal_fleet_s",
    "wall_over_ideal",
    "created_bound_s",
    "requests",
    "requests_per_target",
    "polls_per_job",
    "detection_lag_s",
    "detection_lag_share",
    "cpu_s",
    "peak_rss_mib",
    "simulator",
    "targets",
)


def _present(spread: dict[str, Any], keys: Sequence[str] = ("median", "p95", "max")) -> bool:
    return all(isinstance(spread[key], int | float) and math.isfinite(spread[key]) for key in keys)


@pytest.mark.slow
def test_a_small_run_has_every_figure_for_every_contender(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_fleet.py"), "--deployments", "3", "--scale", "1/2400"]
    command += ["--sequential-cap", "0", "--out-dir", str(tmp_path), "--name", "e2e", "--no-client"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "fleet-e2e.json").read_text(encoding="utf-8"))
    assert document["seed"] == 1 and document["scale"] == pytest.approx(1 / 2400)
    assert {"platform", "cpu_count", "python"} <= set(document["machine"])
    (run,) = document["runs"]
    assert run["errors"] == []
    assert run["fleet"]["targets"] == 3
    assert [c["contender"] for c in run["contenders"]] == [
        "orchestrator",
        "orchestrator-nightly",
        "sequential",
        "threadpool",
    ]
    for figures_row in run["contenders"]:
        name = figures_row["contender"]
        assert set(FIGURES) <= set(figures_row), name
        assert figures_row["targets"]["succeeded"] == 3, name
        assert figures_row["durations_match_prediction"], name
        assert figures_row["wall_basis"] == "measured" and figures_row["wall_s"] > 0, name
        assert figures_row["wall_over_ideal"] >= 1.0, name  # a lower bound is a lower bound
        requests = figures_row["requests"]
        assert requests["token"] >= 3 and requests["create"] == 3 and requests["job"] >= 3, name
        assert figures_row["polls_per_job"]["n"] == 3 and _present(figures_row["polls_per_job"]), name
        assert figures_row["detection_lag_s"]["n"] == 3 and _present(figures_row["detection_lag_s"]), name
        assert figures_row["detection_lag_s"]["median"] >= 0, name
        assert _present(figures_row["detection_lag_share"]), name
        assert figures_row["cpu_s"]["total"] > 0 and figures_row["peak_rss_mib"] > 0, name
        assert figures_row["simulator"]["cpu_s"] is not None, name
    orchestrator = run["contenders"][0]
    assert orchestrator["requests"]["backups"] >= 3  # it confirms each backup in its store's list
    assert orchestrator["detection_source"].startswith("the run ledger")
    checks = document["issue_targets"]["checks"]
    # the first night's two at its size; at the largest (its only) fleet, 3 of the first night's, 5 of the nightly's
    assert len(checks) == 2 + 3 + 5 and all(isinstance(c["met"], bool) for c in checks)
    nightly = run["contenders"][1]
    assert nightly["settings"]["night"] == 2 and nightly["jobs_created"] == 3  # only its own night's jobs
    text = (tmp_path / "fleet-e2e.md").read_text(encoding="utf-8")
    assert "| orchestrator" in text and "| sequential" in text and "| threadpool (20 workers)" in text
    if find_spec("matplotlib") is not None:
        assert (tmp_path / "fleet-e2e-polls-vs-lag.png").stat().st_size > 0
