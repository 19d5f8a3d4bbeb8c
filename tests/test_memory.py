"""A deployment's version and default store remembered from earlier runs: the rules (pure), the worker going by
them (in-memory deployments), and whole nights against the simulator, where a stale memory costs a re-read and
never a wrong outcome."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator import usecases
from orchestrator.api.answers import envelope_error, interpret
from orchestrator.cli import main
from orchestrator.clock import ManualClock
from orchestrator.errors import ErrorClass, SignInFailed, TargetError
from orchestrator.ledger import Ledger
from orchestrator.memory import Facts, Remembered, age_limit, changed, contradicts, facts_of, recalled
from orchestrator.model import Outcome, RunResult, TargetState, build_targets
from orchestrator.runner import run_fleet
from orchestrator.settings import load_settings
from orchestrator.simulator import SimulatedFleet, serve_fleet
from orchestrator.simulator.config import fleet_from_mapping
from orchestrator.simulator.inventory_file import write_inventory
from tests.conftest import PASSWORD, make_deployment
from tests.fakes import FakeDeployment, time_flows

pytestmark = pytest.mark.anyio
WEEK = 7 * 86_400.0
URL = "https://127.0.0.1:9/d"


# -- the rules --


def test_each_deployment_trusts_its_memory_for_half_to_all_of_remember_for_stably() -> None:
    """The age limit lies between half and all of --remember-for, is the same every run, and differs between
    deployments enough that a fleet's re-reads spread over the nights."""
    limits = [age_limit(f"gis-{n:04d}", WEEK) for n in range(2000)]
    assert all(WEEK / 2 <= limit <= WEEK for limit in limits)
    assert limits == [age_limit(f"gis-{n:04d}", WEEK) for n in range(2000)]
    nights = Counter(int((limit - WEEK / 2) // 86_400) for limit in limits)  # which of the 3.5 nights it falls in
    assert len(nights) == 4 and min(nights.values()) > 200
    assert age_limit("gis-0001", 0.0) == 0.0


def test_a_memory_is_due_past_its_age_limit_with_remember_for_zero_and_when_dated_in_the_future() -> None:
    """Trusted while younger than its limit; due after it, always with 0, and when its time is later than now (a
    clock set back); none for a deployment that moved to another URL."""
    memory = Remembered("11.3.0", "default", read_at=1000.0, url=URL)
    limit = age_limit("d", WEEK)
    assert recalled(memory, "d", URL, WEEK, now=1000.0 + limit - 1) == memory
    for remember_for, now in ((WEEK, 1000.0 + limit + 1), (0.0, 1000.0), (WEEK, 999.0)):
        assert recalled(memory, "d", URL, remember_for, now) == Remembered("11.3.0", "default", 1000.0, URL, due=True)
    assert recalled(memory, "d", "https://elsewhere.example.com/arcgis", WEEK, now=1001.0) is None
    assert recalled(None, "d", URL, WEEK, now=1001.0) is None


def test_a_worker_goes_by_a_memory_only_when_it_says_all_it_needs() -> None:
    """Facts come from memory when it is trusted, of a version after 10.9, and has the default store the
    deployment's targets need; otherwise the worker reads them."""
    memory = Remembered("11.3.0", "", 1000.0, URL)
    assert facts_of(memory, needs_default_store=False) == Facts("11.3.0", "", 1000.0, remembered=True)
    assert facts_of(memory, needs_default_store=True) is None  # no default store backed up then
    assert facts_of(Remembered("11.3.0", "a", 1000.0, URL, due=True), needs_default_store=False) is None
    assert facts_of(Remembered("10.9", "a", 1000.0, URL), needs_default_store=False) is None
    assert facts_of(Remembered("", "a", 1000.0, URL), needs_default_store=False) is None
    assert facts_of(None, needs_default_store=False) is None


def test_a_refusal_of_the_create_as_such_may_contradict_a_memory() -> None:
    """A 404 in the envelope or the status line, "does not exist", "not found" contradict; a sign-in, a duplicate
    name, a transient error, a create that may have been carried out, a refused passcode do not."""
    assert contradicts(envelope_error({"code": 404, "message": "Backup store 'a' does not exist."}))
    assert contradicts(envelope_error({"code": 404, "message": "Resource does not exist or is inaccessible."}))
    with pytest.raises(TargetError) as http_404:
        interpret(404, {}, b"<html>Not Found</html>", 0.0)
    assert contradicts(http_404.value)
    assert contradicts(TargetError(ErrorClass.PERMANENT, 'JSONObject["store"] not found.', code=500))
    assert not contradicts(SignInFailed(ErrorClass.CONFIGURATION, "HTTP 404: no such path", code=404))
    assert not contradicts(TargetError(ErrorClass.PERMANENT, "Backup 'b' already exists.", code=400))
    assert not contradicts(TargetError(ErrorClass.TRANSIENT, "HTTP 503", code=503))
    assert not contradicts(TargetError(ErrorClass.PERMANENT, "not found", ambiguous=True))
    assert contradicts(envelope_error({"code": 400, "message": "Invalid backup store."}))  # another wording
    assert contradicts(envelope_error({"code": 400, "message": "Invalid passcode."}))  # read once, then it stands
    assert not contradicts(TargetError(ErrorClass.AUTHENTICATION, "HTTP 403: access refused", code=404))


def test_what_changed_since_the_memory_is_said_in_words() -> None:
    """The default store (only for a target that backs it up) and the version; nothing when both held."""
    before = Remembered("11.3.0", "a", 1000.0, URL)
    assert changed(before, Facts("12.0.0", "b", 2000.0), default_store_used=True) == (
        "default store 'a', now 'b'; version 11.3.0, now 12.0.0"
    )
    assert changed(before, Facts("11.3.0", "b", 2000.0), default_store_used=False) == ""
    assert changed(before, Facts("11.3.0", "a", 2000.0), default_store_used=True) == ""


# -- the worker, on in-memory deployments and a manual clock --


async def _run_remembering(
    fake: FakeDeployment, clock: ManualClock, memory: Remembered | None, *, job_id: str = ""
) -> TargetState:
    """One default-store target of `fake`, its memory given, run by `run_fleet` as the runner runs it."""
    settings = load_settings({"poll_initial": 5.0, "poll_max": 10.0, "retry_initial": 1.0})
    deployment = make_deployment(fake.name, stores=(), url=URL)
    started = clock.now()
    (target,) = build_targets([deployment], name_template="b-{deployment}", run_id="r", started_at=started)
    target.remembered, target.job_id = memory, job_id
    if job_id:  # a resumed run's job, already on the server
        target.store = "primary"
        fake.add_job(job_id, "primary", target.backup_name, started, started + fake.job_seconds)
    async with time_flows(clock):
        result: RunResult = await run_fleet(
            [target], settings, clients=lambda d: fake, run_id="r", started_at=started, clock=clock,
            rng=random.Random(1),
        )  # fmt: skip
    return result.targets[0]


async def test_a_remembered_deployment_is_asked_neither_version_nor_stores() -> None:
    """With a trusted memory the create is the first request, in the remembered store, on its version's paths;
    the target records what it went by and when that was read."""
    clock = ManualClock()
    fake = FakeDeployment(clock, "d")
    read_at = clock.now() - 60
    target = await _run_remembering(fake, clock, Remembered("11.3.0", "primary", read_at, URL))
    assert target.outcome is Outcome.SUCCEEDED and target.store == "primary"
    assert fake.calls[0] == "create_backup" and "detect_version" not in fake.calls and "default_store" not in fake.calls
    assert fake.version == "11.3.0"
    assert (target.version, target.facts_read_at, target.notes) == ("11.3.0", read_at, [])  # read then, not now


async def test_a_remembered_store_that_is_gone_costs_one_re_read_and_the_create_goes_to_the_real_default() -> None:
    """The create in the remembered store says it does not exist: version and stores are read once, the create
    goes to the default the server names now, the target succeeds and says the memory was stale."""
    clock = ManualClock()
    gone = TargetError(ErrorClass.CONFIGURATION, "404 Backup store 'old' does not exist.", code=404)
    fake = FakeDeployment(clock, "d", creates=[gone])
    read_at = clock.now() - 60
    target = await _run_remembering(fake, clock, Remembered("11.3", "old", read_at, URL))
    assert target.outcome is Outcome.SUCCEEDED and target.store == "primary"
    assert [c.store for c in fake.creates] == ["old", "primary"]
    assert fake.calls.count("detect_version") == 1 and fake.calls.count("default_store") == 1
    assert target.facts_read_at is not None and target.facts_read_at > read_at  # read again: the ledger says when
    assert any("found stale" in note and "default store 'old', now 'primary'" in note for note in target.notes)


async def test_a_re_read_that_fails_transiently_is_tried_again_never_the_stale_store_for_good() -> None:
    """The re-read after a contradiction fails transiently: the memory stays in doubt, so the retried create,
    refused again, reads once more, and the backup still lands in the real default store."""
    clock = ManualClock()
    gone = TargetError(ErrorClass.CONFIGURATION, "404 Backup store 'old' does not exist.", code=404)
    fake = FakeDeployment(clock, "d", creates=[gone, gone])
    fake.errors["default_store"] = TargetError(ErrorClass.TRANSIENT, "HTTP 503", code=503)

    def recover() -> None:
        if len(fake.creates) == 2:
            del fake.errors["default_store"]

    fake.on_create = recover
    target = await _run_remembering(fake, clock, Remembered("11.3", "old", clock.now() - 60, URL))
    assert (target.outcome, target.store) == (Outcome.SUCCEEDED, "primary")
    assert [c.store for c in fake.creates] == ["old", "old", "primary"]


async def test_a_contradiction_the_server_does_not_bear_out_stands() -> None:
    """The store refused is still the one the server names as default: the refusal is the outcome, after one
    re-read and no second create."""
    clock = ManualClock()
    refused = TargetError(ErrorClass.CONFIGURATION, "404 Backup store 'primary' does not exist.", code=404)
    fake = FakeDeployment(clock, "d", creates=[refused])
    target = await _run_remembering(fake, clock, Remembered("11.3.0", "primary", clock.now() - 60, URL))
    assert (target.outcome, target.error_class) == (Outcome.FAILED, "configuration")
    assert len(fake.creates) == 1 and fake.calls.count("detect_version") == 1
    assert not any("stale" in note for note in target.notes)


async def test_a_refusal_the_facts_do_not_explain_is_read_once_and_stands() -> None:
    """A refused passcode: the facts are read once (a server may word a missing store so too), they have not
    changed, so the create is not sent again and the refusal is the outcome, with no note."""
    clock = ManualClock()
    fake = FakeDeployment(clock, "d", creates=[TargetError(ErrorClass.PERMANENT, "Invalid passcode.", code=400)])
    target = await _run_remembering(fake, clock, Remembered("11.3.0", "primary", clock.now() - 60, URL))
    assert target.outcome is Outcome.FAILED and fake.calls.count("detect_version") == 1
    assert len(fake.creates) == 1 and not any("stale" in note for note in target.notes)


async def test_a_refusal_that_says_nothing_of_the_facts_reads_nothing() -> None:
    """A duplicate name or a sign-in refused say nothing of the store or the version: nothing is read."""
    assert not contradicts(TargetError(ErrorClass.PERMANENT, "Backup 'b' already exists.", code=400))
    assert not contradicts(SignInFailed(ErrorClass.AUTHENTICATION, "Invalid username or password.", code=400))


async def test_a_due_memory_is_read_again_and_a_changed_default_store_is_said() -> None:
    """Past its age limit, the facts are read; the default store that changed since is followed and noted."""
    clock = ManualClock()
    fake = FakeDeployment(clock, "d")
    target = await _run_remembering(fake, clock, Remembered("11.3", "old", clock.now() - 2 * WEEK, URL, due=True))
    assert target.outcome is Outcome.SUCCEEDED and target.store == "primary"
    assert fake.calls[:3] == ["token", "detect_version", "default_store"]
    assert target.notes == [
        "remembered from an earlier run, read again from the server: default store 'old', now 'primary'"
    ]


async def test_a_deployment_that_reads_keeps_its_place_in_the_queue_for_running_slots() -> None:
    """--max-running 1: the deployment started first reads its facts inside its running slot, so one that
    remembers them, started after it, does not create before it (longest first holds)."""
    clock = ManualClock()
    log: list[tuple[str, float, str]] = []
    fakes = {name: FakeDeployment(clock, name, log=log, sign_in_seconds=1.0) for name in ("reads", "remembers")}
    settings = load_settings({"poll_initial": 5.0, "poll_max": 10.0, "max_running": 1})
    deployments = [make_deployment(name, stores=(), url=URL) for name in fakes]
    started = clock.now()
    targets = build_targets(deployments, name_template="b-{deployment}", run_id="r", started_at=started)
    targets[1].remembered = Remembered("11.3", "primary", started - 60, URL)
    async with time_flows(clock):
        result = await run_fleet(
            targets, settings, clients=lambda d: fakes[d.name], run_id="r", started_at=started, clock=clock,
            rng=random.Random(1),
        )  # fmt: skip
    assert all(t.outcome is Outcome.SUCCEEDED for t in result.targets)
    assert [name for name, _, what in log if what == "created"] == ["reads", "remembers"]
    assert "detect_version" not in fakes["remembers"].calls


async def test_a_deployment_whose_job_is_already_on_the_server_reads_its_version() -> None:
    """A resumed job is followed by its version's paths with no create first to contradict a stale memory: its
    version is read even with a trusted memory."""
    clock = ManualClock()
    fake = FakeDeployment(clock, "d")
    target = await _run_remembering(fake, clock, Remembered("11.3.0", "primary", clock.now() - 60, URL), job_id="j1")
    assert target.outcome is Outcome.SUCCEEDED and "detect_version" in fake.calls and not fake.creates


# -- whole nights against the simulator --

QUICK = {"dist": "uniform", "low": 0.2, "high": 0.4}
FLAGS = {"poll_initial": 0.05, "poll_max": 0.3, "retry_initial": 0.02, "retry_max": 0.2, "request_timeout": 3.0,
         "job_timeout": 15.0, "grace": 0.0, "name_template": "b-{run_id}-{deployment}-{store}"}  # fmt: skip


@asynccontextmanager
async def nights(tmp_path: Path, *specs: dict[str, Any], default_only: bool = False) -> AsyncIterator[Nights]:
    """A simulated fleet of `specs` and its inventory (with `default_only`, naming no store: each deployment's
    default store is backed up), and a way to run nights over it."""
    fleet = SimulatedFleet(fleet_from_mapping({"deployments": list(specs), "job_duration": QUICK}), password=PASSWORD)
    async with serve_fleet(fleet) as sim:
        inventory = tmp_path / "fleet.toml"
        write_inventory(inventory, fleet.plans, {p.name: sim.url_of(p.name) for p in fleet.plans}, password=PASSWORD)
        if default_only:
            lines = inventory.read_text().splitlines(keepends=True)
            inventory.write_text("".join(line for line in lines if not line.startswith("stores = ")))
        yield Nights(fleet, inventory, tmp_path / "reports")


class Nights:
    """Runs over one inventory, one ledger; what each sent, by deployment and endpoint."""

    def __init__(self, fleet: SimulatedFleet, inventory: Path, report_dir: Path) -> None:
        self.fleet, self.inventory, self.report_dir = fleet, inventory, report_dir
        self.last_run_id = ""

    async def run(self, kind: str = "run", **flags: Any) -> tuple[dict[str, TargetState], dict[str, Counter[str]]]:
        """One run (or snapshot); its targets by deployment, and the requests each deployment received."""
        given = {"inventory": self.inventory, "report_dir": self.report_dir, **FLAGS, **flags}
        return await self._execute(usecases.prepare_run(given, None, kind=kind))

    async def retry(self, run_id: str) -> tuple[dict[str, TargetState], dict[str, Counter[str]]]:
        """`retry RUN_ID`, as `run`."""
        plan = usecases.prepare_retry(run_id, {"report_dir": self.report_dir, **FLAGS}, None)
        assert isinstance(plan, usecases.RunPlan)
        return await self._execute(plan)

    async def _execute(self, plan: usecases.RunPlan) -> tuple[dict[str, TargetState], dict[str, Counter[str]]]:
        seen = len(self.fleet.requests)
        finished = await usecases.execute(plan)
        self.last_run_id = finished.result.run_id
        sent: dict[str, Counter[str]] = {}
        for record in self.fleet.requests[seen:]:
            sent.setdefault(record.deployment, Counter())[record.endpoint] += 1
        return {t.deployment.name: t for t in finished.result.targets}, sent

    def age_the_memory(self, seconds: float) -> None:
        """As if every version and default store the ledger holds had been read `seconds` earlier."""
        with sqlite3.connect(usecases.ledger_path(load_settings({"report_dir": self.report_dir}))) as db:
            db.execute("UPDATE targets SET facts_read_at = facts_read_at - ?", (seconds,))

    def created_in(self, deployment: str) -> list[tuple[str, bool]]:
        return [(c.store, c.accepted) for c in self.fleet.creates if c.deployment == deployment]


async def test_a_second_night_asks_no_version_and_no_stores_and_10_9_always_reads(tmp_path: Path) -> None:
    """Night two over the same inventory: the remembered deployments get token, create, polls and the backups
    list (no `/admin`, no stores list), every target succeeds in its default store; 10.9 is read every night."""
    specs: list[dict[str, Any]] = [
        {"name": "gis-a", "version": "11.3"},
        {"name": "gis-b", "version": "12.0", "stores": ["default", "s3"], "default_store": "s3"},
        {"name": "gis-named", "version": "11.4", "stores": ["default", "s3"]},  # the inventory names both
        {"name": "gis-legacy", "version": "10.9"},
    ]
    async with nights(tmp_path, *specs) as fleet:
        inventory = fleet.inventory.read_text()
        fleet.inventory.write_text(inventory.replace('stores = ["default", "s3"]\n', "", 1))  # gis-b: its default
        first, sent_first = await fleet.run()
        second, sent = await fleet.run()
        assert fleet.created_in("gis-b") == [("s3", True), ("s3", True)]
    assert all(t.outcome is Outcome.SUCCEEDED for t in (*first.values(), *second.values()))
    for name in ("gis-a", "gis-b", "gis-named"):
        assert sent_first[name]["root"] == 1
        assert sent[name]["root"] == sent[name]["stores"] == 0, name
        assert sent[name]["token"] == 1 and sent[name]["create"] == (2 if name == "gis-named" else 1)
    assert sent["gis-legacy"]["root"] == 1 and sent["gis-legacy"]["stores"] == 1
    assert all(sent[name]["job"] >= 1 and sent[name]["backups"] >= 1 for name in ("gis-a", "gis-b"))


async def test_a_default_store_switched_on_the_server_is_followed_once_the_memory_is_due(tmp_path: Path) -> None:
    """The default moved to another store that still exists: while the memory is trusted the backup goes to the
    remembered store (it exists, the backup is good); once the memory is older than its limit (default a week)
    the worker reads the stores, backs up to the new default and says so."""
    async with nights(tmp_path, {"name": "gis-a", "stores": ["a", "b"], "default_store": "a"}, default_only=True) as (
        fleet
    ):
        await fleet.run()
        fleet.fleet.reconfigure("gis-a", default_store="b")
        trusted, sent_trusted = await fleet.run()
        fleet.age_the_memory(WEEK + 60)
        due, sent_due = await fleet.run()
        assert fleet.created_in("gis-a") == [("a", True), ("a", True), ("b", True)]
    assert trusted["gis-a"].outcome is Outcome.SUCCEEDED and sent_trusted["gis-a"]["stores"] == 0
    assert (due["gis-a"].outcome, due["gis-a"].store) == (Outcome.SUCCEEDED, "b")
    assert sent_due["gis-a"]["root"] == sent_due["gis-a"]["stores"] == 1
    assert "default store 'a', now 'b'" in due["gis-a"].notes[0]


async def test_a_remembered_store_removed_on_the_server_costs_one_re_read_never_the_backup(tmp_path: Path) -> None:
    """The remembered default store was removed: its create is refused, version and stores are read once, the
    backup lands in the real default store, succeeded, with a note; the next night remembers the new store."""
    async with nights(tmp_path, {"name": "gis-a", "stores": ["a", "b"], "default_store": "a"}, default_only=True) as (
        fleet
    ):
        await fleet.run()
        fleet.fleet.reconfigure("gis-a", stores=("b",), default_store="b")
        night, sent = await fleet.run()
        after, sent_after = await fleet.run()
        assert fleet.created_in("gis-a") == [("a", True), ("a", False), ("b", True), ("b", True)]
        backups = {b["backupName"]: b for b in fleet.fleet.backups("gis-a")}
    target = night["gis-a"]
    assert (target.outcome, target.store, target.attempts) == (Outcome.SUCCEEDED, "b", 2)
    assert backups[target.backup_name]["backupStore"] == "b"
    assert sent["gis-a"]["root"] == sent["gis-a"]["stores"] == 1
    assert any("found stale" in note and "default store 'a', now 'b'" in note for note in target.notes)
    assert after["gis-a"].outcome is Outcome.SUCCEEDED and sent_after["gis-a"]["stores"] == 0


async def test_an_upgraded_deployment_still_succeeds_and_one_put_back_to_10_9_is_read_again(tmp_path: Path) -> None:
    """11.3 upgraded to 12.0 between nights: the remembered paths still hold, it succeeds without a read. 10.9
    upgraded to 11.3: 10.9 was never remembered, it is read, and remembered after. An 11.3 URL now answered by
    10.9: the create's path is refused, the version is read again, the legacy create succeeds, with a note."""
    specs = [{"name": "gis-up", "version": "11.3"}, {"name": "gis-old", "version": "10.9"},
             {"name": "gis-back", "version": "11.3"}]  # fmt: skip
    async with nights(tmp_path, *specs) as fleet:
        await fleet.run()
        fleet.fleet.reconfigure("gis-up", version="12.0")
        fleet.fleet.reconfigure("gis-old", version="11.3")
        fleet.fleet.reconfigure("gis-back", version="10.9")
        second, sent = await fleet.run()
        third, sent_third = await fleet.run()
    assert all(t.outcome is Outcome.SUCCEEDED for t in (*second.values(), *third.values()))
    assert sent["gis-up"]["root"] == 0 and sent["gis-old"]["root"] == 1 and sent_third["gis-old"]["root"] == 0
    assert sent["gis-back"]["root"] == 1 and sent["gis-back"]["legacy_create"] == 1
    assert any("found stale" in note and "version 11.3.0, now 10.9.0" in note for note in second["gis-back"].notes)
    assert sent_third["gis-back"]["root"] == 1  # 10.9 now: read every night


async def test_remember_for_zero_reads_every_night(tmp_path: Path) -> None:
    """`--remember-for 0`: the second night asks the version and the stores as the first did."""
    async with nights(tmp_path, {"name": "gis-a"}) as fleet:
        await fleet.run(remember_for=0)
        second, sent = await fleet.run(remember_for=0)
    assert second["gis-a"].outcome is Outcome.SUCCEEDED
    assert sent["gis-a"]["root"] == sent["gis-a"]["stores"] == 1


async def test_a_retry_goes_by_memory_as_a_run_does(tmp_path: Path) -> None:
    """A deployment that failed last night (its password refused) is retried after the fix: it goes by what its
    last success read, so the retry's create is its first request after the sign-in."""
    async with nights(tmp_path, {"name": "gis-a"}, {"name": "gis-b"}) as fleet:
        await fleet.run()
        fleet.fleet.deployments["gis-b"].password = "changed-meanwhile"
        failed, _ = await fleet.run()
        fleet.fleet.deployments["gis-b"].password = PASSWORD
        retried, sent = await fleet.retry(fleet.last_run_id)
    assert failed["gis-b"].error_class == "authentication" and list(retried) == ["gis-b"]
    assert retried["gis-b"].outcome is Outcome.SUCCEEDED
    assert sent["gis-b"]["root"] == sent["gis-b"]["stores"] == 0 and sent["gis-b"]["token"] == 1


def test_remember_for_is_a_flag_of_run_resume_and_retry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--remember-for S` is taken (0 included), a negative one refused with exit 2."""
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret\n")
    secret.chmod(0o600)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(f'[defaults]\nusername = "admin"\npassword_file = "{secret}"\npasscode_file = "{secret}"\n'
                         '[[deployments]]\nname = "gis-a"\nurl = "https://gis-a.example.com/arcgis"\n')  # fmt: skip
    assert main(["plan", "--inventory", str(inventory), "--remember-for", "0"]) == 0
    assert main(["plan", "--inventory", str(inventory), "--remember-for", "-1"]) == 2
    assert "remember_for" in capsys.readouterr().err
    for command in ("run", "resume", "retry"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--remember-for" in capsys.readouterr().out


async def test_a_snapshot_never_goes_by_memory(tmp_path: Path) -> None:
    """A snapshot right after a run, the default store switched meanwhile: it reads the version and the stores
    and backs up to the default the server names now."""
    async with nights(tmp_path, {"name": "gis-a", "stores": ["a", "b"], "default_store": "a"}, default_only=True) as (
        fleet
    ):
        await fleet.run()
        fleet.fleet.reconfigure("gis-a", default_store="b")
        snapshot, sent = await fleet.run("snapshot", purpose="upgrade to 12.0")
    assert (snapshot["gis-a"].outcome, snapshot["gis-a"].store, snapshot["gis-a"].verified) == (
        Outcome.SUCCEEDED, "b", True,
    )  # fmt: skip
    assert sent["gis-a"]["stores"] >= 1 and sent["gis-a"]["root"] >= 2  # preflight, then the worker


async def test_a_ledger_of_the_previous_schema_remembers_nothing_until_a_run_reads_again(tmp_path: Path) -> None:
    """Runs recorded before `facts_read_at` existed (schema 4, upgraded in place) say when nothing was read: the
    next night reads, and the one after goes by what it read."""
    async with nights(tmp_path, {"name": "gis-a"}) as fleet:
        await fleet.run()
        path = usecases.ledger_path(load_settings({"report_dir": fleet.report_dir}))
        with sqlite3.connect(path) as db:  # back to what schema 4 wrote
            db.execute("ALTER TABLE targets DROP COLUMN facts_read_at")
            db.execute("PRAGMA user_version = 4")
        Ledger.open(path).close()
        _, sent = await fleet.run()
        _, sent_after = await fleet.run()
    assert sent["gis-a"]["root"] == 1 and sent_after["gis-a"]["root"] == 0
