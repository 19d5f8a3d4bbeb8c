"""Soak: the whole fleet run against the hostile profile; every target accounted for, and its cause checked."""

from __future__ import annotations

import io
import json
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from orchestrator.errors import ErrorClass
from orchestrator.inventory import Deployment
from orchestrator.report import write_reports
from orchestrator.runner import RunResult
from orchestrator.simulator import SimulatedFleet
from orchestrator.simulator.records import RequestRecord
from orchestrator.targets import Outcome, TargetState
from tests.test_runner import _assert_no_secret, backups_per_target, run, simulated

pytestmark = pytest.mark.anyio

SEED: Final = 20_05
JOBS_OF_A_SECOND: Final = {"dist": "uniform", "low": 0.6, "high": 1.4}
ALWAYS_DOWN: Final = (0.0, 86_400.0)  # seconds after the fleet starts: down for the whole run
RETRIES: Final = 6
TERMINAL: Final = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT})
NO_ANSWER_FAULTS: Final = frozenset({"reset", "hang", "lost_create"})
# Which injected faults can explain a transient error, by the start of its message.
TRANSIENT_CAUSES: Final = (
    ("HTTP 503", frozenset({"down", "http_503"})),
    ("HTTP 502", frozenset({"http_502", "late_5xx"})),
    ("HTTP 504", frozenset({"late_5xx"})),
    ("HTTP 429", frozenset({"http_429"})),
    ("connection lost", NO_ANSWER_FAULTS),
    ("no answer within", frozenset({"hang"})),
)


@dataclass(frozen=True, slots=True)
class Soak:
    """The shape of one soak: how many deployments, which are special, and time scaled down."""

    deployments: int
    two_stores_every: int  # every n-th deployment backs up two stores
    always_down: tuple[int, ...]  # deployments down for the whole run (on top of the profile's windows)
    wrong_credentials: tuple[int, ...]  # on top of the profile's share
    faults: dict[str, Any]  # overrides on top of the hostile profile
    run: dict[str, Any] = field(default_factory=dict)  # run settings on top of test_runner.run's

    def fleet(self) -> dict[str, Any]:
        specs: list[dict[str, Any]] = []
        for index in range(self.deployments):
            spec: dict[str, Any] = {"name": f"gis-{index:04d}"}
            if index % self.two_stores_every == 0:
                spec["stores"] = ["default", "offsite"]
            if index in self.always_down:
                spec["down"] = ALWAYS_DOWN
            if index in self.wrong_credentials:
                spec["wrong_credentials"] = True
            specs.append(spec)
        return {"deployments": specs, "profile": "hostile", "seed": SEED, "job_duration": JOBS_OF_A_SECOND}


SMALL: Final = Soak(
    deployments=60,
    two_stores_every=4,
    always_down=(7,),
    wrong_credentials=(11,),
    faults={"hang_s": 0.5, "down_after_s": 0.5, "down_for_s": 2.0, "down_fraction": 0.1},
)
BIG: Final = Soak(
    deployments=1000,
    two_stores_every=5,
    always_down=(17, 503, 911),
    wrong_credentials=(3, 404),
    faults={"hang_s": 1.0, "down_after_s": 2.0, "down_for_s": 4.0},
    run={"concurrency": 64, "poll_initial": 0.2, "poll_max": 0.6, "job_timeout": 30.0},
)


async def soak_run(tmp_path: Path, soak: Soak) -> tuple[SimulatedFleet, list[Deployment], RunResult, str, float]:
    """The fleet run of `soak` over real sockets; returns the fleet, the inventory, the result, the log
    and the run's wall time."""
    config = {**soak.fleet(), "faults": soak.faults}
    async with simulated(tmp_path, **config) as (fleet, deployments):
        log = io.StringIO()
        started = time.monotonic()
        result = await run(deployments, tmp_path, log=log, retries=RETRIES, **soak.run)
        wall = time.monotonic() - started
    return fleet, deployments, result, log.getvalue(), wall


def _by_deployment(fleet: SimulatedFleet) -> dict[str, list[RequestRecord]]:
    requests: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in fleet.requests:
        requests[record.deployment].append(record)
    return requests


def assert_soak(fleet: SimulatedFleet, deployments: list[Deployment], result: RunResult, log: str) -> None:
    """Everything a hostile run must still get right, checked against what the simulator saw."""
    targets = result.targets
    plans = {p.name: p for p in fleet.plans}
    requests = _by_deployment(fleet)
    faults_seen = {name: {r.fault for r in records if r.fault} for name, records in requests.items()}

    # Every target in the result exactly once, in inventory order; the report files say the same.
    expected = [(d.name, store) for d in deployments for store in d.stores or ("",)]
    assert [(t.deployment.name, t.store_key[1]) for t in targets] == expected
    assert [t.index for t in targets] == list(range(len(expected)))
    document = json.loads((write_reports(result) / "report.json").read_text())
    rows = [(r["deployment"], r["backup_name"], r["outcome"]) for r in document["targets"]]
    assert rows == [(t.deployment.name, t.backup_name, t.outcome.value) for t in targets]
    assert document["summary"]["total"] == len(expected)

    # Every target ended, and ended the way the simulator says it did.
    backups = backups_per_target(fleet)
    on_server = {(b["deployment"], b["backupStore"], b["backupName"]): b for b in fleet.backups()}
    jobs_by_id = {j["job_id"]: j for j in fleet.jobs()}
    jobs_by_name: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for job in fleet.jobs():
        jobs_by_name[(job["deployment"], job["store"], job["backup_name"])].append(job)
    for target in targets:
        name = target.deployment.name
        where = (name, target.store, target.backup_name)
        assert target.outcome in TERMINAL, (target.key, target.outcome, target.error)
        if target.outcome is Outcome.SUCCEEDED:
            assert where in backups, target.key
            assert on_server[where]["description"] == "fleet backup test-run", target.key
            if target.job_id:  # the job the report names is the one that made this backup
                job = jobs_by_id[target.job_id]
                assert (job["deployment"], job["store"], job["backup_name"]) == where, target.key
                assert job["final_status"] == "COMPLETED", target.key
        else:
            assert target.error_class in {c.value for c in ErrorClass}, (target.key, target.error_class)
            assert target.error, target.key
            _assert_cause(target, plans[name].down, faults_seen.get(name, set()), jobs_by_name[where])
        if any(job["final_status"] == "FAILED" for job in jobs_by_name[where]):
            assert target.error_class == ErrorClass.JOB_FAILED, (target.key, target.outcome, target.error)

    # Refused credentials fail their deployment once: one refused sign-in, no create, no retry storm.
    for plan in fleet.plans:
        if not plan.wrong_credentials:
            continue
        tokens = [r for r in requests[plan.name] if r.endpoint == "token"]
        refused = [r for r in tokens if not r.fault and r.error_code]
        mine = [t for t in targets if t.deployment.name == plan.name]
        assert len(refused) <= 1 and len(tokens) <= RETRIES + 1, (plan.name, [(r.fault, r.error_code) for r in tokens])
        assert not any(c.deployment == plan.name for c in fleet.creates), plan.name
        if refused:  # the server did judge the credentials
            assert all(t.error_class == "authentication" and "sign-in refused" in t.error for t in mine), plan.name
        else:  # the deployment never answered the sign-in: a transient failure, as for any other
            assert all(t.error_class == "transient" for t in mine), (plan.name, [t.error for t in mine])
    assert all(plans[t.deployment.name].wrong_credentials for t in targets if "sign-in refused" in t.error)

    # A deployment down for the whole run fails transiently after a bounded number of sign-in attempts.
    for plan in fleet.plans:
        if plan.down != ALWAYS_DOWN:
            continue
        mine = [t for t in targets if t.deployment.name == plan.name]
        assert all(t.outcome is Outcome.FAILED and t.error_class == "transient" for t in mine), plan.name
        assert all(t.error.startswith("HTTP 503") for t in mine), [t.error for t in mine]
        assert len(requests[plan.name]) <= RETRIES + 1, (plan.name, len(requests[plan.name]))

    # No backup created twice.
    accepted = Counter((c.deployment, c.store, c.backup_name) for c in fleet.creates if c.accepted)
    assert max(accepted.values(), default=1) == 1, [key for key, n in accepted.items() if n > 1]
    assert max(backups.values(), default=1) == 1
    ours = {(t.deployment.name, t.store, t.backup_name) for t in targets}
    assert set(backups) <= ours

    # No secret in any URL, report or log line.
    assert fleet.secrets_in_urls == 0
    assert set(fleet.token_sources) <= {"x-esri-authorization", "none"}
    _assert_no_secret(fleet, result, log)


def _assert_cause(
    target: TargetState, down: tuple[float, float] | None, faults: set[str], jobs: list[dict[str, Any]]
) -> None:
    """A non-success names a cause the simulator really produced."""
    error, kind = target.error, target.error_class
    if kind == ErrorClass.JOB_FAILED:
        assert any(j["final_status"] in ("FAILED", "CANCELLED") for j in jobs), (target.key, error)
        return
    if kind == ErrorClass.TRANSIENT:
        causes = next((c for prefix, c in TRANSIENT_CAUSES if error.startswith(prefix)), None)
        assert causes is not None, (target.key, error)
        assert causes & faults, (target.key, error, faults)
        if causes == {"down"} or (error.startswith("HTTP 503") and "http_503" not in faults):
            assert down is not None, target.key
        return
    if kind == ErrorClass.AUTHENTICATION:
        assert "sign-in refused" in error, (target.key, error)
        return
    raise AssertionError(f"{target.key}: unexpected {target.outcome.value} ({kind}: {error})")


def summary(fleet: SimulatedFleet, result: RunResult, wall: float) -> str:
    outcomes = Counter(t.outcome.value for t in result.targets)
    classes = Counter(t.error_class for t in result.targets if t.error_class)
    per_deployment = Counter(r.deployment for r in fleet.requests)
    per_target = sorted(
        per_deployment[name] / sum(1 for t in result.targets if t.deployment.name == name) for name in per_deployment
    )
    busiest = per_deployment.most_common(3)
    lines = [
        f"{len(result.targets)} targets on {len(fleet.plans)} deployments in {wall:.1f} s",
        f"outcomes: {dict(outcomes)}; failures by class: {dict(classes)}",
        f"requests: {sum(fleet.request_counts.values())} {dict(fleet.request_counts.most_common())}",
        f"faults injected: {dict(fleet.fault_counts.most_common())}",
        f"creates: {len(fleet.creates)} sent, {sum(c.accepted for c in fleet.creates)} accepted, "
        f"{sum(c.response_lost for c in fleet.creates)} answers lost or late",
        f"requests per target: median {statistics.median(per_target):.1f}, max {per_target[-1]:.1f}; "
        f"busiest deployments {busiest}",
    ]
    return "\n".join(lines)


async def test_hostile_fleet_small(tmp_path: Path) -> None:
    """60 hostile deployments: every target ends, for a reason the simulator confirms; no duplicate, no secret."""
    fleet, deployments, result, log, wall = await soak_run(tmp_path, SMALL)
    print(summary(fleet, result, wall))
    assert_soak(fleet, deployments, result, log)


@pytest.mark.soak
async def test_soak_hostile_fleet(tmp_path: Path) -> None:
    """1,000 hostile deployments (every fifth with two stores): the same, at fleet scale, in a few minutes."""
    fleet, deployments, result, log, wall = await soak_run(tmp_path, BIG)
    print(summary(fleet, result, wall))
    assert_soak(fleet, deployments, result, log)
