"""End to end over real sockets: the fleet run against the simulator, every target accounted for."""

from __future__ import annotations

import io
import json
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from orchestrator.api import ArcGISClient, open_api_context, open_clients
from orchestrator.clock import ManualClock, SystemClock
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.events import Event, EventKind, Observer, retries_told_to
from orchestrator.inventory import load_inventory
from orchestrator.model import Deployment, Outcome, RunResult, TargetState, build_targets
from orchestrator.progress import LogObserver
from orchestrator.report import write_reports
from orchestrator.runner import RunControl, longest_first, run_fleet
from orchestrator.settings import load_settings
from orchestrator.simulator import SimulatedFleet, serve_fleet
from orchestrator.simulator.config import fleet_from_mapping
from orchestrator.simulator.inventory_file import write_inventory
from orchestrator.simulator.jobs import Backup
from tests.conftest import PASSCODE, PASSWORD, FleetStarter, make_deployment
from tests.fakes import FakeDeployment, time_flows
from tests.test_api import count_network_attempts

pytestmark = pytest.mark.anyio

QUICK_JOBS = {"dist": "uniform", "low": 0.2, "high": 0.6}


@asynccontextmanager
async def simulated(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[SimulatedFleet, list[Deployment]]]:
    """A simulated fleet on 127.0.0.1 and the deployments of the inventory `simulate` writes for it."""
    config.setdefault("job_duration", QUICK_JOBS)
    fleet = SimulatedFleet(fleet_from_mapping(config), password=PASSWORD)
    async with serve_fleet(fleet) as sim:
        path = tmp_path / "inventory.toml"
        write_inventory(path, fleet.plans, {p.name: sim.url_of(p.name) for p in fleet.plans}, password=PASSWORD)
        yield fleet, list(load_inventory(path).deployments)


async def run(
    deployments: list[Deployment],
    tmp_path: Path,
    *,
    control: RunControl | None = None,
    log: io.StringIO | None = None,
    observer: Observer | None = None,
    **overrides: Any,
) -> RunResult:
    flags = {
        "poll_initial": 0.05,
        "poll_max": 0.3,
        "retry_initial": 0.02,
        "retry_max": 0.2,
        "request_timeout": 2.0,
        "connect_timeout": 1.0,
        "job_timeout": 15.0,
        "grace": 0.3,
        "report_dir": tmp_path / "reports",
        **overrides,
    }
    settings = load_settings(flags)
    clock = SystemClock()
    started = clock.now()
    targets = build_targets(deployments, name_template=settings.name_template, run_id="test-run", started_at=started)
    if log is not None:
        observer = LogObserver(log, verbose=True)
    on_retry = retries_told_to(observer, clock) if observer is not None else None
    async with open_clients(settings, clock, random.Random(5), on_retry) as clients:
        return await run_fleet(
            targets,
            settings,
            clients=clients,
            run_id="test-run",
            started_at=started,
            clock=clock,
            rng=random.Random(5),
            observer=observer,
            control=control,
        )


def backups_per_target(fleet: SimulatedFleet) -> Counter[tuple[str, str, str]]:
    return Counter((b["deployment"], b["backupStore"], b["backupName"]) for b in fleet.backups())


async def test_happy_path_every_version(tmp_path: Path) -> None:
    """Every target succeeds with exactly one backup, across 10.9 to 12.0 and their quirks."""
    versions = {"10.9": 1, "10.9.1": 1, "11.3": 1, "11.4": 1, "12.0": 1}
    async with simulated(tmp_path, count=15, versions=versions, seed=3) as (fleet, deployments):
        result = await run(deployments, tmp_path, description="nightly {run_id} of {deployment}/{store}")
    assert {p.version for p in fleet.plans} == set(versions)
    descriptions = {b["backupName"]: b["description"] for b in fleet.backups()}
    assert all(
        descriptions[t.backup_name] == f"nightly test-run of {t.deployment.name}/default" for t in result.targets
    )
    assert [t.deployment.name for t in result.targets] == [d.name for d in deployments]
    assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets), [(t.key, t.error) for t in result.targets]
    backups = backups_per_target(fleet)
    assert backups == Counter((t.deployment.name, "default", t.backup_name) for t in result.targets)
    assert fleet.secrets_in_urls == 0
    assert set(fleet.token_sources) == {"x-esri-authorization", "none"}  # "none": generateToken itself
    early = [t for t in result.targets if t.deployment.tags[-1] == "v11.4"]
    jobs = {j["job_id"]: j for j in fleet.jobs()}
    for target in early:  # 11.4 said COMPLETED at once; success waited for the backup
        assert target.finished_at is not None and target.finished_at >= jobs[target.job_id]["completed_at"]


async def test_two_stores_run_one_after_another_and_limits_hold(tmp_path: Path) -> None:
    """--concurrency caps requests in flight and --max-running caps running jobs, measured at the server;
    a deployment never runs two DR jobs at once."""
    async with simulated(tmp_path, count=8, stores=["default", "offsite"], versions={"11.3": 1}) as (
        fleet,
        deployments,
    ):
        result = await run(deployments, tmp_path, concurrency=3, max_running=2)
    assert [t.outcome for t in result.targets] == [Outcome.SUCCEEDED] * 16
    assert [(t.deployment.name, t.store) for t in result.targets][:2] == [
        ("gis-0000", "default"),
        ("gis-0000", "offsite"),
    ]
    assert fleet.in_flight.peak <= 3
    peak_fleet, peak_one = fleet.peak_running_jobs()
    assert peak_fleet <= 2 and peak_one == 1


async def test_default_store_is_asked_of_the_server(tmp_path: Path) -> None:
    """Without `stores` in the inventory, the store marked default on each deployment is backed up."""
    async with simulated(tmp_path, count=2, stores=["a", "b"], default_store="b", versions={"12.0": 1}) as (
        fleet,
        deployments,
    ):
        result = await run([replace(d, stores=()) for d in deployments], tmp_path)
    assert [(t.store, t.outcome) for t in result.targets] == [("b", Outcome.SUCCEEDED)] * 2
    assert {b["backupStore"] for b in fleet.backups()} == {"b"}


async def test_tokens_are_renewed_mid_job(tmp_path: Path) -> None:
    """Tokens living 0.3 s expire during 1 s jobs: renewed before expiry or once on 498, never failing."""
    job = {"dist": "fixed", "value": 1.0}
    async with simulated(
        tmp_path, count=4, versions={"11.3": 1}, job_duration=job, faults={"token_lifetime_s": 0.3}
    ) as (
        fleet,
        deployments,
    ):
        result = await run(deployments, tmp_path, poll_initial=0.2, poll_max=0.4)
    assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets)
    assert fleet.request_counts["token"] > 2 * len(deployments)


@pytest.mark.parametrize("profile", ["none", "flaky", "hostile"])
async def test_every_profile_every_target_has_an_outcome_and_a_reason(tmp_path: Path, profile: str) -> None:
    """Under every fault profile: every target in the report, a reason on every non-success,
    at most one backup per target, succeeded only when the backup exists, no secret in any URL."""
    faults = {"hang_s": 1.0, "retry_after_s": 0, "down_for_s": 2.0}
    async with simulated(tmp_path, count=30, profile=profile, seed=11, faults=faults) as (fleet, deployments):
        log = io.StringIO()
        result = await run(deployments, tmp_path, log=log, retries=6)
    assert len(result.targets) == 30
    backups = backups_per_target(fleet)
    assert max(backups.values(), default=1) == 1
    for target in result.targets:
        assert target.outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT), target.key
        exists = (target.deployment.name, target.store, target.backup_name) in backups
        if target.outcome is Outcome.SUCCEEDED:
            assert exists, target.key
        else:
            assert target.error and target.error_class, target.key
    wrong = {p.name for p in fleet.plans if p.wrong_credentials}
    for target in result.targets:
        if target.deployment.name in wrong:
            assert target.error_class == "authentication" and "sign-in refused" in target.error
    assert fleet.secrets_in_urls == 0
    if profile == "none":
        assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets)
    else:
        assert sum(t.outcome is Outcome.SUCCEEDED for t in result.targets) >= 10
    _assert_no_secret(fleet, result, log.getvalue())


def _assert_no_secret(fleet: SimulatedFleet, result: RunResult, log: str) -> None:
    folder = write_reports(result)
    written = log + "".join(p.read_text() for p in folder.iterdir())
    tokens = [token for d in fleet.deployments.values() for token in d.tokens]
    passcode = result.targets[0].deployment.passcode.get_secret_value()
    for secret in (PASSWORD, passcode, *tokens):
        assert secret not in written


class AfterSubmissions:
    """Calls `act` once `count` backups have been submitted: an operator pressing Ctrl-C mid-run."""

    def __init__(self, count: int, act: Callable[[], None]) -> None:
        self.count, self.act = count, act

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.SUBMITTED:
            self.count -= 1
            if self.count == 0:
                self.act()


async def test_interrupt_stops_submitting_and_keeps_every_row(tmp_path: Path) -> None:
    """stop(): nothing new is submitted, running jobs get the grace period, every target keeps a row."""
    control = RunControl()
    job = {"dist": "fixed", "value": 3.0}
    async with simulated(tmp_path, count=6, versions={"11.3": 1}, job_duration=job) as (fleet, deployments):
        stop_after_two = AfterSubmissions(2, control.stop)
        result = await run(deployments, tmp_path, control=control, observer=stop_after_two, max_running=2, grace=0.2)
    outcomes = Counter(t.outcome for t in result.targets)
    assert outcomes == {Outcome.INTERRUPTED: 2, Outcome.NOT_STARTED: 4}
    assert result.stopped_reason == "the run was interrupted"
    interrupted = [t for t in result.targets if t.outcome is Outcome.INTERRUPTED]
    assert all(t.job_id and "may still complete" in t.error for t in interrupted)
    assert len(fleet.creates) == 2


async def test_abort_ends_at_once(tmp_path: Path) -> None:
    """abort() (second Ctrl-C): the run returns at once although the grace period is long; every row present."""
    control = RunControl()
    job = {"dist": "fixed", "value": 30.0}
    async with simulated(tmp_path, count=3, versions={"11.3": 1}, job_duration=job) as (_, deployments):
        with anyio.fail_after(10):
            result = await run(
                deployments, tmp_path, control=control, observer=AfterSubmissions(3, control.abort), grace=60
            )
    assert [t.outcome for t in result.targets] == [Outcome.INTERRUPTED] * 3


async def test_a_gateway_error_after_the_create_was_carried_out_is_not_a_failure(tmp_path: Path) -> None:
    """502/504 answered after the server created the backup: reconciled, one backup each, none failed."""
    async with simulated(tmp_path, count=6, versions={"11.3": 1, "12.0": 1, "10.9": 1}, faults={"late_5xx": 1.0}) as (
        fleet,
        deployments,
    ):
        result = await run(deployments, tmp_path)
    assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets), [(t.key, t.error) for t in result.targets]
    assert all(any("answer lost (HTTP 50" in n for n in t.notes) for t in result.targets), [
        t.notes for t in result.targets
    ]
    assert sum(c.accepted for c in fleet.creates) == 6
    assert max(backups_per_target(fleet).values()) == 1
    late_statuses = {r.status for r in fleet.requests if r.fault == "late_5xx"}
    assert late_statuses and late_statuses <= {502, 504}


async def test_lost_create_responses_are_reconciled_not_duplicated(tmp_path: Path) -> None:
    """Every create answer lost: the run finds its own backups and jobs on the server, creates no second one."""
    async with simulated(tmp_path, count=6, versions={"11.3": 1, "10.9": 1}, faults={"lost_create": 1.0}) as (
        fleet,
        deployments,
    ):
        result = await run(deployments, tmp_path)
    assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets), [(t.key, t.error) for t in result.targets]
    assert all(any("answer lost" in n for n in t.notes) for t in result.targets)
    assert sum(c.accepted for c in fleet.creates) == 6
    assert max(backups_per_target(fleet).values()) == 1


async def test_report_files_follow_inventory_order(tmp_path: Path) -> None:
    async with simulated(tmp_path, count=5, versions={"11.3": 1}) as (_, deployments):
        result = await run(deployments, tmp_path)
    folder = write_reports(result)
    document = json.loads((folder / "report.json").read_text())
    assert [r["deployment"] for r in document["targets"]] == [d.name for d in deployments]
    assert document["summary"]["succeeded"] == 5 and document["summary"]["total"] == 5
    csv_lines = (folder / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("deployment,url,store,backup_name,job_id,outcome")
    assert len(csv_lines) == 6
    markdown = (folder / "report.md").read_text()
    assert markdown.index("## Summary") < markdown.index("## Failures") < markdown.index("## All targets")


async def test_a_large_backups_list_arriving_in_pieces_still_confirms(tmp_path: Path) -> None:
    """Hundreds of retained backups (a body read in many pieces) do not hide the new one."""
    async with simulated(tmp_path, count=1, versions={"11.3": 1}) as (fleet, deployments):
        deployment = next(iter(fleet.deployments.values()))
        now = fleet.clock.now()
        for n in range(400):
            name = f"old-{n:04d}-" + "x" * 150
            deployment.backups["default"][name] = Backup(name, "default", "11.3.0", "", now - 100, now - 50, -1)
        result = await run(deployments, tmp_path)
    assert result.targets[0].outcome is Outcome.SUCCEEDED, result.targets[0].error


async def test_deployments_sign_in_a_few_at_a_time_so_creates_flow_from_the_start(tmp_path: Path) -> None:
    """Two requests in flight for 30 deployments: each deployment gets through sign-in to its create before
    most others start, instead of every deployment signing in before any backup is created."""
    async with simulated(tmp_path, count=30, versions={"11.3": 1}) as (fleet, deployments):
        result = await run(deployments, tmp_path, concurrency=2)
    assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets)
    order = [r.endpoint for r in fleet.requests if r.endpoint in ("token", "create")]  # polls aside
    first_create, last_sign_in = order.index("create"), len(order) - 1 - order[::-1].index("token")
    assert first_create < len(order) // 4 < last_sign_in, (first_create, last_sign_in, len(order))


def test_the_deployments_expected_to_take_longest_start_first() -> None:
    """Longest processing time first; a deployment with no past may be the longest, so it comes first;
    equal ones keep the inventory's order."""
    deployments = {name: make_deployment(name) for name in ("quick", "slow", "new", "twin-a", "twin-b")}
    expected: dict[str, list[float | None]] = {
        "quick": [60.0],
        "slow": [3000.0],
        "new": [None],
        "twin-a": [600.0],
        "twin-b": [300.0, 300.0],
    }
    targets: list[TargetState] = []
    for name, durations in expected.items():
        for store, seconds in zip(("default", "offsite"), durations, strict=False):
            target = TargetState(len(targets), deployments[name], store, f"b-{name}-{store}", None)
            target.expected_s = seconds
            targets.append(target)
    order = [group[0].deployment.name for group in longest_first(targets)]
    assert order == ["new", "slow", "twin-a", "twin-b", "quick"]


# -- the runner alone: in-memory deployments on a manual clock, so limits and deadlines are exact --


async def run_on_fakes(fakes: list[FakeDeployment], clock: ManualClock, **overrides: Any) -> RunResult:
    """`run_fleet` over one target per fake deployment, its clients the fakes, time flowing on `clock`."""
    settings = load_settings({"poll_initial": 5.0, "poll_max": 10.0, "retry_initial": 1.0, **overrides})
    by_name = {fake.name: fake for fake in fakes}
    deployments = [make_deployment(fake.name) for fake in fakes]
    started = clock.now()
    targets = build_targets(deployments, name_template="b-{deployment}", run_id="r", started_at=started)
    async with time_flows(clock):
        return await run_fleet(
            targets, settings, clients=lambda d: by_name[d.name], run_id="r", started_at=started, clock=clock,
            rng=random.Random(1),
        )  # fmt: skip


async def test_the_deadline_skips_what_was_not_submitted_before_it() -> None:
    """--deadline 30 with one job at a time, each job 60 s: the first is submitted and followed to its end,
    the others are skipped, saying why, and the run says submitting stopped early."""
    clock = ManualClock()
    fakes = [FakeDeployment(clock, f"gis-{n}", job_seconds=60) for n in range(4)]
    result = await run_on_fakes(fakes, clock, deadline=30.0, max_running=1)
    assert [t.outcome for t in result.targets] == [Outcome.SUCCEEDED] + [Outcome.SKIPPED] * 3
    assert [len(fake.creates) for fake in fakes] == [1, 0, 0, 0]
    reason = "the run deadline (30 s) was reached"  # said of the run; each target left says "not submitted: ..."
    assert result.stopped_reason == reason and all(t.error == f"not submitted: {reason}" for t in result.targets[1:])


async def test_a_deadline_after_everything_was_submitted_is_not_an_abort() -> None:
    """Both jobs submitted at once, the deadline passing while they run: both succeed, nothing stopped early."""
    clock = ManualClock()
    fakes = [FakeDeployment(clock, f"gis-{n}", job_seconds=60) for n in range(2)]
    result = await run_on_fakes(fakes, clock, deadline=30.0)
    assert [t.outcome for t in result.targets] == [Outcome.SUCCEEDED] * 2
    assert result.stopped_reason == ""


async def test_the_failure_threshold_skips_the_rest() -> None:
    """--max-failures 2, one job at a time: the two refused creates fail, then nothing new is submitted."""
    clock = ManualClock()
    refused = TargetError(ErrorClass.PERMANENT, "Invalid passcode.")
    fakes = [FakeDeployment(clock, f"bad-{n}", creates=[refused]) for n in range(3)]
    fakes += [FakeDeployment(clock, f"gis-{n}") for n in range(2)]
    result = await run_on_fakes(fakes, clock, max_failures="2", max_running=1)
    assert [t.outcome for t in result.targets] == [Outcome.FAILED] * 2 + [Outcome.SKIPPED] * 3
    assert sum(len(fake.creates) for fake in fakes) == 2
    reason = "the failure threshold (2) was reached"
    assert result.stopped_reason == reason and all(t.error == f"not submitted: {reason}" for t in result.targets[2:])


# -- a transient fault never costs a night's backup: the simulator on the manual clock, retries by time --


@asynccontextmanager
async def on_the_manual_clock(
    start_fleet: FleetStarter, **config: Any
) -> AsyncIterator[tuple[SimulatedFleet, ManualClock, list[Deployment]]]:
    """A simulated fleet sharing a `ManualClock` with the run, and the inventory's deployments of it."""
    config.setdefault("job_duration", {"dist": "fixed", "value": 20})
    async with start_fleet(**config) as (fleet, sim, clock):
        deployments = [
            make_deployment(plan.name, plan.stores, url=sim.url_of(plan.name), password=PASSWORD, passcode=PASSCODE)
            for plan in fleet.plans
        ]
        yield fleet, clock, deployments


async def run_on_the_manual_clock(
    deployments: list[Deployment], clock: ManualClock, tmp_path: Path, **overrides: Any
) -> tuple[RunResult, dict[str, list[str]]]:
    """`run_fleet` over real sockets with the default retry settings (but `overrides`), time flowing on `clock`;
    with the requests each deployment's link put on the network, by deployment."""
    settings = load_settings({"report_dir": tmp_path / "reports", **overrides})
    started = clock.now()
    targets = build_targets(deployments, name_template="b-{deployment}", run_id="r", started_at=started)
    sent: dict[str, list[str]] = {}
    async with open_api_context(settings, clock, random.Random(3)) as context:

        def client(deployment: Deployment) -> ArcGISClient:
            made = ArcGISClient(deployment, context)
            sent[deployment.name] = count_network_attempts(made)
            return made

        async with time_flows(clock):
            result = await run_fleet(
                targets, settings, clients=client, run_id="r", started_at=started, clock=clock, rng=random.Random(3)
            )
    return result, sent


# Per request: 30 % and 50 % of them failing, as 502/503 (with Retry-After), 429 (with Retry-After) and resets.
FLAKY: Final = (
    {"http_5xx": 0.14, "http_429": 0.08, "reset": 0.08},
    {"http_5xx": 0.24, "http_429": 0.13, "reset": 0.13},
)


@pytest.mark.parametrize("seed", range(20))
async def test_a_deployment_failing_a_third_to_half_of_its_requests_still_gets_its_backup(
    start_fleet: FleetStarter, tmp_path: Path, seed: int
) -> None:
    """Deployments answering 30 % and 50 % of requests with a 502/503, a 429 or a reset: with the default
    retry settings every target succeeds, each with exactly one backup, whatever the seed."""
    specs = [{"name": f"gis-{n}", "faults": faults} for n, faults in enumerate(FLAKY)]
    async with on_the_manual_clock(start_fleet, seed=seed, deployments=specs, stores=["a", "b"]) as (
        fleet,
        clock,
        deployments,
    ):
        result, _ = await run_on_the_manual_clock(deployments, clock, tmp_path)
    assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets), [(t.key, t.error) for t in result.targets]
    assert backups_per_target(fleet) == Counter((t.deployment.name, t.store, t.backup_name) for t in result.targets)
    faults = Counter(record.fault for record in fleet.requests if record.fault)
    assert sum(faults.values()) >= 0.2 * len(fleet.requests) and len(faults) >= 2, faults  # they were flaky


@pytest.mark.parametrize(
    ("overrides", "budget"), [({}, 300.0), ({"deadline": 60.0}, 60.0)], ids=["default", "deadline"]
)
async def test_a_deployment_nothing_listens_for_ends_unreachable_within_the_budget_cheaply(
    start_fleet: FleetStarter, tmp_path: Path, overrides: dict[str, Any], budget: float
) -> None:
    """A stopped server among healthy ones: its targets end `unreachable` (not `transient`), within the retry
    budget (300 s, or a shorter deadline), after a few connection attempts only (the breaker's threshold,
    then one per cooldown); the healthy deployment is backed up meanwhile."""
    async with on_the_manual_clock(start_fleet, count=1) as (fleet, clock, deployments):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # nothing listens there once closed
        stopped = make_deployment("gis-stopped", ("a", "b"), url=f"http://127.0.0.1:{port}/arcgis")
        started = clock.now()
        result, sent = await run_on_the_manual_clock([stopped, *deployments], clock, tmp_path, **overrides)
    down, healthy = result.targets[:2], result.targets[2:]
    assert [t.outcome for t in healthy] == [Outcome.SUCCEEDED]
    assert all(t.outcome is Outcome.FAILED and t.error_class == "unreachable" for t in down), [t.error for t in down]
    assert all("cannot connect" in t.error and t.finished_at is not None for t in down)
    assert max(t.finished_at or 0.0 for t in down) - started <= budget + 5.0  # a step or two of the flowing clock
    settings = load_settings(overrides)
    most = settings.breaker_threshold + budget // settings.breaker_cooldown + 1
    assert 3 <= len(sent["gis-stopped"]) <= most, sent["gis-stopped"]  # one sign-in, tried cheaply
    assert fleet.creates and all(c.deployment != "gis-stopped" for c in fleet.creates)


async def test_an_exception_nothing_foresaw_fails_only_its_own_deployment() -> None:
    """A deployment whose version read raises an unforeseen exception, and one whose job poll does: each ends
    `internal` with the exception's type (a possibly created backup `interrupted`, for resume); the others
    succeed, and the poller goes on."""
    clock = ManualClock()
    fakes = [FakeDeployment(clock, f"gis-{n}", job_seconds=20) for n in range(4)]
    fakes[1].errors["detect_version"] = RuntimeError("a version nobody expected")  # type: ignore[assignment]
    fakes[2].errors["job"] = KeyError("status")  # type: ignore[assignment]
    result = await run_on_fakes(fakes, clock)
    outcomes = [(t.outcome, t.error_class) for t in result.targets]
    assert outcomes == [
        (Outcome.SUCCEEDED, ""),
        (Outcome.FAILED, "internal"),
        (Outcome.INTERRUPTED, "internal"),
        (Outcome.SUCCEEDED, ""),
    ]
    assert "internal error (RuntimeError): a version nobody expected" in result.targets[1].error
    assert (
        result.targets[2].error.startswith("internal error (KeyError)")
        and "may still complete" in result.targets[2].error
    )
