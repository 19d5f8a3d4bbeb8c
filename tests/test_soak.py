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

import anyio
import pytest

from orchestrator.errors import ErrorClass
from orchestrator.model import Deployment, Outcome, RunResult, TargetState
from orchestrator.report import write_reports
from orchestrator.simulator import SimulatedFleet
from orchestrator.simulator.records import RequestRecord
from tests.test_runner import _assert_no_secret, backups_per_target, run, simulated

pytestmark = pytest.mark.anyio

SEED: Final = 2005
JOBS_OF_A_SECOND: Final = {"dist": "uniform", "low": 0.6, "high": 1.4}
# Versions by deployment index; nine long, so every fifth deployment (two stores) meets each version.
VERSIONS: Final = ("11.3", "11.4", "12.0", "11.5", "10.9", "11.3", "10.9.1", "12.0", "11.4")
ALWAYS_DOWN: Final = (0.0, 86_400.0)  # seconds after the fleet starts: down for the whole run
RETRIES: Final = 6
TERMINAL: Final = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT})
EVERY_FAULT: Final = frozenset(
    {"http_502", "http_503", "http_429", "reset", "hang", "down", "lost_create", "late_5xx", "unavailable"}
)
NO_ANSWER_FAULTS: Final = frozenset({"reset", "hang", "lost_create"})
# Which injected faults can explain a transient error, by the start of its message.
TRANSIENT_CAUSES: Final = (
    ("HTTP 503", frozenset({"down", "http_503"})),
    ("HTTP 502", frozenset({"http_502", "late_5xx"})),
    ("HTTP 504", frozenset({"late_5xx"})),
    ("HTTP 429", frozenset({"http_429"})),
    ("connection lost", NO_ANSWER_FAULTS),
    ("no answer within", frozenset({"hang"})),
    ("throttled", frozenset({"down", "http_503", "http_429"})),  # a pacing wait longer than the budget left
)


@dataclass(frozen=True, slots=True)
class Soak:
    """The shape of one soak: how many deployments, which are special, time scaled down, a time budget."""

    deployments: int
    two_stores_every: int  # every n-th deployment backs up two stores
    always_down: tuple[int, ...]  # deployments down for the whole run (besides the profile's windows)
    wrong_credentials: tuple[int, ...]  # besides the profile's share
    faults: dict[str, Any]  # overrides on top of the hostile profile
    budget_s: float  # the run must end within this
    run: dict[str, Any] = field(default_factory=dict)  # settings on top of test_runner.run's

    def fleet(self) -> dict[str, Any]:
        specs: list[dict[str, Any]] = []
        for index in range(self.deployments):
            version = VERSIONS[index % len(VERSIONS)]
            spec: dict[str, Any] = {"name": f"gis-{index:04d}", "version": version}
            if index % self.two_stores_every == 0:
                spec["stores"] = ["default", "offsite"]
            if index in self.always_down:
                spec["down"] = ALWAYS_DOWN
            if index in self.wrong_credentials:
                spec["wrong_credentials"] = True
            specs.append(spec)
        return {
            "deployments": specs,
            "profile": "hostile",
            "seed": SEED,
            "job_duration": JOBS_OF_A_SECOND,
            "faults": self.faults,
        }


SMALL: Final = Soak(
    deployments=60,
    two_stores_every=4,
    always_down=(7,),
    wrong_credentials=(11,),
    faults={"hang_s": 0.3, "down_after_s": 0.5, "down_for_s": 1.5, "down_fraction": 0.1},
    budget_s=60.0,
)
BIG: Final = Soak(
    deployments=1000,
    two_stores_every=5,
    always_down=(17, 503, 911),
    wrong_credentials=(3, 404),
    faults={"hang_s": 1.0, "down_after_s": 2.0, "down_for_s": 4.0},
    budget_s=180.0,
    run={"concurrency": 64, "poll_initial": 0.2, "poll_max": 0.6, "job_timeout": 30.0},
)


# `make soak-full`: the compass's scale, every fault at once, retries by time as shipped (scaled to a
# simulated second: transient faults are outlasted, only deployments down for the whole run may fail).
FULL: Final = Soak(
    deployments=10_000,
    two_stores_every=5,
    always_down=(17, 503, 911, 4242, 9001),
    wrong_credentials=(3, 404, 7777),
    faults={"hang_s": 1.0, "down_after_s": 2.0, "down_for_s": 4.0},
    budget_s=1800.0,
    run={
        "concurrency": 128,
        "poll_initial": 0.5,
        "poll_max": 2.0,
        "job_timeout": 60.0,
        "retry_for": 30.0,
        "retries": 100,
        "request_timeout": 5.0,
    },
)
RESULTS: Final = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


@dataclass(slots=True)
class SoakRun:
    fleet: SimulatedFleet
    deployments: list[Deployment]
    result: RunResult
    log: str
    wall_s: float


async def soak_run(tmp_path: Path, soak: Soak) -> SoakRun:
    """The fleet run of `soak` over real sockets, within its time budget."""
    async with simulated(tmp_path, **soak.fleet()) as (fleet, deployments):
        log = io.StringIO()
        started = time.monotonic()
        try:
            with anyio.fail_after(soak.budget_s):
                result = await run(deployments, tmp_path, log=log, **{"retries": RETRIES, **soak.run})
        except TimeoutError:
            stats = {k: v for k, v in fleet.stats().items() if k in ("requests", "requests_by_endpoint", "creates")}
            print(f"the run did not end within {soak.budget_s:g} s; the simulator saw {stats}")
            raise
        return SoakRun(fleet, deployments, result, log.getvalue(), time.monotonic() - started)


def assert_soak(soaked: SoakRun, attempts: int = RETRIES + 1) -> None:
    """Everything a hostile run must still get right, checked against what the simulator saw. `attempts`: the
    most tries one request may have (a count's, or what a time budget allows)."""
    fleet, targets = soaked.fleet, soaked.result.targets
    plans = {p.name: p for p in fleet.plans}
    requests: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in fleet.requests:
        requests[record.deployment].append(record)
    faults_seen = {name: {str(r.fault) for r in records if r.fault} for name, records in requests.items()}

    # Every target in the result exactly once, in inventory order; the report file says the same.
    expected = [(d.name, store) for d in soaked.deployments for store in d.stores or ("",)]
    assert [(t.deployment.name, t.store_key[1]) for t in targets] == expected
    assert [t.index for t in targets] == list(range(len(expected)))
    document = json.loads((write_reports(soaked.result) / "report.json").read_text())
    rows = [(r["deployment"], r["backup_name"], r["outcome"]) for r in document["targets"]]
    assert rows == [(t.deployment.name, t.backup_name, t.outcome.value) for t in targets]
    assert document["summary"]["total"] == len(expected)

    # Every target ended, as the simulator says it did, and a failure names a cause the simulator produced.
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
                assert (job["deployment"], job["store"], job["backup_name"], job["final_status"]) == (
                    *where,
                    "COMPLETED",
                ), target.key
        else:
            assert target.error_class and target.error, target.key
            assert where not in backups, f"{target.key} reported {target.outcome.value}, yet its backup exists"
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
        assert len(refused) <= 1 and len(tokens) <= attempts, (plan.name, [(r.fault, r.error_code) for r in tokens])
        assert not any(c.deployment == plan.name for c in fleet.creates), plan.name
        if refused:  # the server judged the credentials
            assert all(t.error_class == "authentication" and "sign-in refused" in t.error for t in mine), plan.name
        else:  # it never answered the sign-in: a transient failure, as for any other deployment
            assert all(t.error_class == "transient" for t in mine), (plan.name, [t.error for t in mine])

    # A deployment down for the whole run fails transiently after a bounded number of sign-in attempts.
    for plan in fleet.plans:
        if plan.down == ALWAYS_DOWN:
            mine = [t for t in targets if t.deployment.name == plan.name]
            assert all(t.error_class == "transient" and t.error.startswith(("HTTP 503", "throttled")) for t in mine), (
                plan.name
            )
            assert len(requests[plan.name]) <= attempts, (plan.name, len(requests[plan.name]))

    # Signing in never runs away: at most one sign-in per other request, besides a sign-in's own retries.
    for name, records in requests.items():
        sign_ins = sum(r.endpoint == "token" for r in records)
        assert sign_ins <= len(records) - sign_ins + attempts, (name, sign_ins, len(records))

    # No backup created twice.
    accepted = Counter((c.deployment, c.store, c.backup_name) for c in fleet.creates if c.accepted)
    assert max(accepted.values(), default=1) == 1, [key for key, n in accepted.items() if n > 1]
    assert max(backups.values(), default=1) == 1
    assert set(backups) <= {(t.deployment.name, t.store, t.backup_name) for t in targets}

    # No secret in any URL, report or log line.
    assert fleet.secrets_in_urls == 0
    assert set(fleet.token_sources) <= {"x-esri-authorization", "none"}
    _assert_no_secret(fleet, soaked.result, soaked.log)


def _assert_cause(
    target: TargetState, down: tuple[float, float] | None, faults: set[str], jobs: list[dict[str, Any]]
) -> None:
    """A non-success names a cause the simulator really produced on that deployment."""
    error, kind = target.error, target.error_class
    if kind == ErrorClass.JOB_FAILED:
        assert any(j["final_status"] in ("FAILED", "CANCELLED") for j in jobs), (target.key, error)
    elif kind == ErrorClass.TRANSIENT:
        causes = next((c for prefix, c in TRANSIENT_CAUSES if error.startswith(prefix)), frozenset())
        assert causes & faults, (target.key, error, faults)
        if error.startswith("HTTP 503") and "http_503" not in faults:
            assert down is not None, target.key
    elif kind == ErrorClass.UNREACHABLE:  # the circuit breaker opened after connection failures in a row
        assert NO_ANSWER_FAULTS & faults, (target.key, error, faults)
    elif kind == ErrorClass.AUTHENTICATION:
        assert "sign-in refused" in error, (target.key, error)
    else:
        raise AssertionError(f"{target.key}: unexpected {target.outcome.value} ({kind}: {error})")


def summary(soaked: SoakRun) -> str:
    fleet, targets = soaked.fleet, soaked.result.targets
    outcomes = Counter(t.outcome.value for t in targets)
    classes = Counter(t.error_class for t in targets if t.error_class)
    per_deployment = Counter(r.deployment for r in fleet.requests)
    targets_of = Counter(t.deployment.name for t in targets)
    per_target = sorted(per_deployment[name] / targets_of[name] for name in targets_of)
    total = sum(fleet.request_counts.values())
    lines = [
        f"{len(targets)} targets on {len(fleet.plans)} deployments in {soaked.wall_s:.1f} s",
        f"outcomes: {dict(outcomes)}; failures by class: {dict(classes)}",
        f"requests: {total}, by kind {dict(fleet.request_counts.most_common())}",
        f"sign-ins: {fleet.request_counts['token']} ({fleet.request_counts['token'] / max(total, 1):.0%} of requests)",
        f"faults injected: { {str(fault): n for fault, n in fleet.fault_counts.most_common()} }",
        f"creates: {len(fleet.creates)} sent, {sum(c.accepted for c in fleet.creates)} accepted, "
        f"{sum(c.response_lost for c in fleet.creates)} of them answered late or not at all",
        f"requests per target: median {statistics.median(per_target):.1f}, max {per_target[-1]:.1f}; "
        f"busiest deployments {per_deployment.most_common(3)}",
    ]
    return "\n".join(lines)


async def test_hostile_fleet_small(tmp_path: Path) -> None:
    """60 hostile deployments: every target ends, for a reason the simulator confirms; no duplicate, no secret."""
    soaked = await soak_run(tmp_path, SMALL)
    print(summary(soaked))
    assert_soak(soaked)
    assert len({str(f) for f in soaked.fleet.fault_counts}) >= 6  # the hostile profile did its job


@pytest.mark.soak
async def test_soak_hostile_fleet(tmp_path: Path) -> None:
    """1,000 hostile deployments (every fifth with two stores): the same checks at fleet scale, in minutes."""
    soaked = await soak_run(tmp_path, BIG)
    print(summary(soaked))
    assert_soak(soaked)
    assert {str(f) for f in soaked.fleet.fault_counts} >= EVERY_FAULT


@pytest.mark.soak_full
async def test_soak_full_fleet(tmp_path: Path) -> None:
    """10,000 hostile deployments with every fault at once: every target reported with a confirmed cause, no
    duplicate backup, and no deployment that only met transient faults ends failed (retries by time)."""
    soaked = await soak_run(tmp_path, FULL)
    text = summary(soaked)
    print(text)
    # Retries by time: a 30 s budget of backoff from 1 s (doubling, full jitter) and the pacing a 503 asks for
    # allow a dozen or so tries of one request, not a count's 7.
    assert_soak(soaked, attempts=20)
    assert {str(f) for f in soaked.fleet.fault_counts} >= EVERY_FAULT
    always_down = {f"gis-{index:04d}" for index in FULL.always_down}
    transient_only = [
        t.key for t in soaked.result.targets
        if t.outcome is not Outcome.SUCCEEDED and t.error_class in ("transient", "unreachable")
        and t.deployment.name not in always_down
    ]  # fmt: skip
    figures = {
        "deployments": FULL.deployments,
        "targets": len(soaked.result.targets),
        "wall_s": round(soaked.wall_s, 1),
        "outcomes": dict(Counter(t.outcome.value for t in soaked.result.targets)),
        "failures_by_class": dict(Counter(t.error_class for t in soaked.result.targets if t.error_class)),
        "transient_only_failed": len(transient_only),
        "duplicate_backups": 0,  # assert_soak refuses any
        "faults_injected": {str(fault): n for fault, n in soaked.fleet.fault_counts.most_common()},
        "requests": sum(soaked.fleet.request_counts.values()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak-full.json").write_text(json.dumps(figures, indent=2) + "\n")
    (RESULTS / "soak-full.md").write_text(f"# make soak-full\n\n```\n{text}\n```\n\n" + "\n".join(
        f"- {key}: {value}" for key, value in figures.items()) + "\n")  # fmt: skip
    assert transient_only == [], transient_only[:20]


# -- bugs the soak found, each pinned by a small test --


@pytest.mark.parametrize("version", ["11.3", "10.9"])
async def test_a_lost_create_whose_job_failed_is_not_created_again(tmp_path: Path, version: str) -> None:
    """Every create answer lost and every job failing: each target ends job_failed after one create."""
    config = {"versions": {version: 1}, "job_duration": {"dist": "fixed", "value": 0.1}}
    async with simulated(tmp_path, count=3, faults={"lost_create": 1.0, "job_failure": 1.0}, **config) as (
        fleet,
        deployments,
    ):
        result = await run(deployments, tmp_path)
    accepted = Counter((c.deployment, c.store, c.backup_name) for c in fleet.creates if c.accepted)
    assert [(t.outcome, t.error_class) for t in result.targets] == [(Outcome.FAILED, "job_failed")] * 3, [
        t.error for t in result.targets
    ]
    assert sorted(accepted.values()) == [1, 1, 1], accepted


async def test_a_long_wait_for_a_request_slot_does_not_turn_into_endless_sign_ins(tmp_path: Path) -> None:
    """40 deployments through one request slot (a 4 s queue) with 1 s tokens: every token bought gets used."""
    fleet_config: dict[str, Any] = {
        "count": 40,
        "versions": {"11.3": 1},
        "job_duration": {"dist": "fixed", "value": 0.3},
        "faults": {"token_lifetime_s": 1.0, "latency": {"dist": "fixed", "value": 0.1}},
    }
    async with simulated(tmp_path, **fleet_config) as (fleet, deployments):
        with anyio.move_on_after(10):
            await run(deployments, tmp_path, concurrency=1)
    sign_ins = fleet.request_counts["token"]
    others = sum(fleet.request_counts.values()) - sign_ins
    print(f"in 10 s: {sign_ins} sign-ins, {others} other requests, {len(fleet.creates)} creates")
    # No sign-in loop: a request signs in at most twice (ahead of its renewal time, and once more in its
    # own slot if the token expired while it queued), and the second token is used at once.
    assert sign_ins <= 2 * others + 2 * len(deployments)
