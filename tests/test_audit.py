"""The compliance audit against the simulator over real sockets: each verdict, read-only, bounded requests, and
the compliance report's files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.audit import Audited, prepare_audit, run_audit
from orchestrator.audit.report import HEADERS
from orchestrator.clock import ManualClock
from orchestrator.errors import InputError
from orchestrator.runner import RunControl
from orchestrator.simulator import SimulatedFleet
from orchestrator.simulator.inventory_file import write_inventory
from orchestrator.simulator.jobs import Backup, ms
from tests.conftest import PASSWORD, FleetStarter
from tests.fakes import closed_port

pytestmark = pytest.mark.anyio
DAY = 86_400.0


def put_backup(
    fleet: SimulatedFleet, deployment: str, name: str, *, age_h: float, store: str = "default", **fields: Any
) -> None:
    """A backup on the simulated deployment, completed `age_h` hours before the fleet's now."""
    completed = fleet.clock.now() - age_h * 3600
    fields.setdefault("release", fleet.deployments[deployment].full_version)
    fields.setdefault("retention_ms", ms(completed + 30 * DAY))
    fleet.deployments[deployment].backups[store][name] = Backup(
        name=name, store=store, description="", started_at=completed - 60, completed_at=completed, **fields
    )


def inventory_for(
    tmp_path: Path, fleet: SimulatedFleet, url_of: dict[str, str], extra: str = "", policy: str = ""
) -> Path:
    path = tmp_path / "fleet.toml"
    write_inventory(path, fleet.plans, url_of, password=PASSWORD)
    path.write_text(path.read_text() + extra + ("\n" + policy if policy else ""))
    return path


async def audit(tmp_path: Path, inventory: Path, clock: ManualClock, **flags: Any) -> Audited:
    plan = prepare_audit(
        {"inventory": inventory, "report_dir": tmp_path / "reports", "retries": 0, "request_timeout": 5.0, **flags},
        None,
    )
    return await run_audit(plan, clock=clock)


SPECS = [
    {"name": "gis-ok"},
    {"name": "gis-old"},
    {"name": "gis-upgraded", "version": "11.4"},
    {"name": "gis-creds", "wrong_credentials": True},
    {"name": "gis-store"},
    {"name": "gis-offsite", "stores": ["default", "s3"]},
]


async def test_each_verdict_over_real_sockets(start_fleet: FleetStarter, tmp_path: Path) -> None:
    """Compliant; violations of recent, release and offsite with their reasons; unknown for refused credentials,
    an unreachable deployment and an unknown store, each with its class and error."""
    async with start_fleet(deployments=SPECS, versions={"11.3": 1}) as (fleet, sim, clock):
        put_backup(fleet, "gis-ok", "ok-1", age_h=2)
        put_backup(fleet, "gis-old", "old-1", age_h=40)
        put_backup(fleet, "gis-old", "failed-1", age_h=1, status="failed")
        put_backup(fleet, "gis-upgraded", "before-upgrade", age_h=2, release="11.3.0")
        put_backup(fleet, "gis-offsite", "local-1", age_h=2)
        put_backup(fleet, "gis-offsite", "s3-old", age_h=30, store="s3")
        urls = {p.name: sim.url_of(p.name) for p in fleet.plans}
        inventory = inventory_for(
            tmp_path, fleet, urls,
            extra=f'\n[[deployments]]\nname = "gis-gone"\nurl = "http://127.0.0.1:{closed_port()}/gone"\n',
            policy='[policy]\nmin_backups = 1\n\n[[policy.rules]]\nselect = ["name=gis-offsite"]\n'
                   "require_offsite = true\n",
        )  # fmt: skip
        text = inventory.read_text()
        inventory.write_text(text.replace('name = "gis-store"\n', 'name = "gis-store"\nstores = ["missing"]\n'))
        audited = await audit(tmp_path, inventory, clock)
    by_name = {(t.deployment.name, t.store): t for t in audited.targets}
    verdicts = {key: t.verdict.value for key, t in by_name.items()}
    assert verdicts == {
        ("gis-ok", "default"): "compliant",
        ("gis-old", "default"): "violation",
        ("gis-upgraded", "default"): "violation",
        ("gis-creds", ""): "unknown",
        ("gis-store", "missing"): "unknown",
        ("gis-offsite", "default"): "violation",
        ("gis-offsite", "s3"): "violation",
        ("gis-gone", ""): "unknown",
    }
    reasons = {key: [(v.control.value, v.reason) for v in t.violations] for key, t in by_name.items()}
    assert reasons[("gis-old", "default")] == [("recent", "newest good backup is 40.0 h old (policy: 24 h)")]
    assert reasons[("gis-upgraded", "default")] == [
        ("release", "newest good backup is release 11.3.0, the deployment runs 11.4.0: it cannot be restored into it")
    ]
    assert [c for c, _ in reasons[("gis-offsite", "default")]] == ["offsite"]  # s3's backup is 30 h old
    assert [c for c, _ in reasons[("gis-offsite", "s3")]] == ["recent", "offsite"]
    assert by_name[("gis-creds", "")].error_class == "authentication"
    assert by_name[("gis-gone", "")].error_class in ("transient", "unreachable")
    assert "cannot connect" in by_name[("gis-gone", "")].error
    store = by_name[("gis-store", "missing")]
    assert store.error_class == "configuration" and "missing" in store.error
    old = by_name[("gis-old", "default")].facts
    assert old is not None and old.newest is not None and old.newest.status == "failed"
    assert audited.summary["by_control"] == {"recent": 2, "release": 1, "retention": 0, "depth": 0, "offsite": 2}


async def test_the_audit_is_read_only_and_costs_token_version_stores_and_one_list_per_store(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    """Never creates, deletes, updates or validates; per deployment: one sign-in, the version, the stores list
    only where the default store is needed, and each store's list once."""
    specs = [{"name": "gis-a"}, {"name": "gis-b", "stores": ["default", "s3"]}]
    async with start_fleet(deployments=specs) as (fleet, sim, clock):
        put_backup(fleet, "gis-a", "a-1", age_h=1)
        urls = {p.name: sim.url_of(p.name) for p in fleet.plans}
        inventory = inventory_for(tmp_path, fleet, urls)  # gis-a: default store; gis-b: both stores named
        await audit(tmp_path, inventory, clock)
        counts = dict(fleet.request_counts)
    assert counts == {"token": 2, "root": 2, "stores": 1, "backups": 3}


async def test_the_compliance_report_files(start_fleet: FleetStarter, tmp_path: Path) -> None:
    """compliance.json/csv/md under audit-ID: nulls for what is absent, the same fields in the CSV, the
    Markdown's sections with the command that fixes a violation; no secret anywhere."""
    specs = [{"name": "gis-ok"}, {"name": "gis-old"}, {"name": "gis-creds", "wrong_credentials": True}]
    async with start_fleet(deployments=specs, quirks={"echo_request_in_errors": True}) as (fleet, sim, clock):
        put_backup(fleet, "gis-ok", "ok-1", age_h=2)
        put_backup(fleet, "gis-old", '=HYPERLINK("http://x")', age_h=50)
        urls = {p.name: sim.url_of(p.name) for p in fleet.plans}
        inventory = inventory_for(tmp_path, fleet, urls)
        audited = await audit(tmp_path, inventory, clock)
    folder = audited.folder
    assert folder.parent == tmp_path / "reports" and folder.name == f"audit-{audited.audit_id}"
    document = json.loads((folder / "compliance.json").read_text())
    assert document["audit_id"] == audited.audit_id and document["audited_at"] == "2026-11-27T01:00:00Z"
    assert document["policy"]["source"] == "built-in defaults"
    assert document["summary"]["targets"] == 3 and document["summary"]["by_tag"]["simulated"] == {
        "compliant": 1, "violation": 1, "unknown": 1
    }  # fmt: skip
    creds = document["targets"][2]
    assert creds["verdict"] == "unknown" and creds["last_good_backup"] is None and creds["age_hours"] is None
    ok = document["targets"][0]
    assert set(ok) == set(HEADERS)
    assert (ok["last_good_backup"], ok["age_hours"], ok["good_backups"], ok["days_covered"]) == ("ok-1", 2.0, 1, 1)
    assert ok["last_good_release"] == "11.3.0" and ok["violations"] == []
    assert ok["last_good_completed_at"] == "2026-11-26T23:00:00Z"
    rows = list(csv.DictReader(io.StringIO((folder / "compliance.csv").read_text())))
    assert tuple(rows[0]) == HEADERS and rows[2]["age_hours"] == ""
    assert rows[1]["last_good_backup"].startswith("'=")  # a formula is shown as text in a spreadsheet
    assert rows[1]["violations"].startswith("recent: newest good backup is 50.0 h old")
    markdown = (folder / "compliance.md").read_text()
    assert "**1 of 3 targets compliant; 1 in violation, 1 unknown.**" in markdown
    sections = ["## Summary", "## Verdicts by tag", "## Violations by control", "### recent (1)",
                "## Unknown: could not be read", "## All targets"]  # fmt: skip
    assert [markdown.index(s) for s in sections] == sorted(markdown.index(s) for s in sections)
    assert f"`orchestrator run --inventory {inventory} --select name=gis-old`" in markdown
    for name in ("compliance.json", "compliance.csv", "compliance.md"):
        assert PASSWORD not in (folder / name).read_text()


async def test_an_interrupted_audit_reports_every_target_it_did_not_read_as_unknown(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    """Stopped before it read anything: every target is in the report, unknown, interrupted."""
    async with start_fleet(count=3) as (fleet, sim, clock):
        inventory = inventory_for(tmp_path, fleet, {p.name: sim.url_of(p.name) for p in fleet.plans})
        plan = prepare_audit({"inventory": inventory, "report_dir": tmp_path / "reports"}, None)
        control = RunControl()
        control.stop()
        audited = await run_audit(plan, clock=clock, control=control)
    assert audited.interrupted and [t.error_class for t in audited.targets] == ["interrupted"] * 3
    assert json.loads((audited.folder / "compliance.json").read_text())["stopped_reason"]


def test_bad_input_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Inventory and policy problems are reported together, each with its file and line."""
    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nmax_age_hours = -1\n")
    inventory = tmp_path / "fleet.toml"
    inventory.write_text('[[deployments]]\nname = "a"\n')
    with pytest.raises(InputError) as caught:
        prepare_audit({"inventory": inventory, "policy": policy, "report_dir": tmp_path}, None)
    problems = caught.value.problems
    assert any(p.startswith(f"{inventory}:1:") and "url" in p for p in problems)
    assert any(p.startswith(f"{policy}:2: [policy]: max_age_hours") for p in problems)


async def test_the_audit_finds_what_the_seeded_history_holds(start_fleet: FleetStarter, tmp_path: Path) -> None:
    """Against 120 deployments with a seeded history (stale, upgraded, without offsite copies): a stale one
    fails `recent`, an upgraded one `release`, one without history in its second store `offsite`; and a
    deployment with none of these is compliant or fails only for a failed or short-kept newest backup."""
    history = {"days": 10, "stale": 0.1, "upgraded": 0.1, "other_stores": 0.8, "failed": 0.05,
               "retention_days": 14, "short_retention": 0.05}  # fmt: skip
    async with start_fleet(count=120, seed=4, stores=["default", "s3"], history=history) as (fleet, sim, clock):
        inventory = inventory_for(
            tmp_path, fleet, {p.name: sim.url_of(p.name) for p in fleet.plans},
            policy="[policy]\nrequire_offsite = true\n",
        )  # fmt: skip
        truth = {row["name"]: row["history"] for row in fleet.describe()}
        audited = await audit(tmp_path, inventory, clock)
    assert audited.summary["unknown"] == 0
    failed: dict[str, set[str]] = {}
    for target in audited.targets:
        failed.setdefault(target.deployment.name, set()).update(v.control.value for v in target.violations)
    stale = {name for name, seeded in truth.items() if seeded["stale"]}
    upgraded = {name for name, seeded in truth.items() if seeded["upgraded_from"]}
    no_offsite = {name for name, seeded in truth.items() if seeded["stores"] == ["default"]}
    assert stale and upgraded and no_offsite
    assert all("recent" in failed[name] for name in stale)
    assert all("release" in failed[name] for name in upgraded)
    assert all("offsite" in failed[name] for name in no_offsite - stale)
    plain = set(truth) - stale - upgraded - no_offsite
    assert all(failed[name] <= {"recent", "retention", "depth", "offsite"} for name in plain)
    assert any(not failed[name] for name in plain)


async def test_a_misspelt_store_does_not_hide_what_the_others_show(start_fleet: FleetStarter, tmp_path: Path) -> None:
    """An inventory store the deployment lacks is unknown on its own; the other targets are judged, offsite
    included, from the stores it does have."""
    async with start_fleet(deployments=[{"name": "gis-a", "stores": ["default", "s3"]}]) as (fleet, sim, clock):
        put_backup(fleet, "gis-a", "local", age_h=1)
        put_backup(fleet, "gis-a", "remote", age_h=100, store="s3")
        inventory = inventory_for(tmp_path, fleet, {"gis-a": sim.url_of("gis-a")},
                                  policy="[policy]\nrequire_offsite = true\n")  # fmt: skip
        inventory.write_text(inventory.read_text().replace('["default", "s3"]', '["default", "typo"]'))
        audited = await audit(tmp_path, inventory, clock)
    default, typo = audited.targets
    assert [v.control.value for v in default.violations] == ["offsite"] and default.verdict.value == "violation"
    assert typo.verdict.value == "unknown" and "no store 'typo' (has: default, s3)" in typo.error


def test_offsite_that_cannot_be_judged_leaves_the_other_controls_judged() -> None:
    """A store that could not be read, or no default store: `offsite` is undecided (unknown, with why) unless
    another store already shows a recent good backup; never a pass."""
    from orchestrator.audit.controls import audited as judged
    from orchestrator.audit.controls import store_facts
    from orchestrator.audit.policy import PolicyValues
    from orchestrator.audit.survey import judge_offsite
    from orchestrator.dr import Backup as Listed
    from orchestrator.errors import ErrorClass, TargetError
    from tests.conftest import make_deployment

    now = 1e9
    fresh = Listed("b", "completed", "11.3", now - 60, now - 30, None)
    policy = PolicyValues(require_offsite=True)
    refused = {"s3": TargetError(ErrorClass.AUTHENTICATION, "403 forbidden")}
    evidence, undecided = judge_offsite(policy, "default", ["default", "s3"], {"default": [fresh]}, refused, now)
    assert evidence is None and undecided is not None and "cannot read store 's3'" in undecided.message
    facts = store_facts([fresh], now, 7)
    target = judged(make_deployment(), "default", facts, [], release="11.3", now=now, undecided=undecided)
    assert (target.verdict.value, target.error_class) == ("unknown", "authentication") and target.facts == facts
    evidence, undecided = judge_offsite(policy, "default", ["default", "s3", "gcs"], {"default": [], "gcs": [fresh]},
                                        refused, now)  # fmt: skip
    assert evidence is not None and evidence.recent_elsewhere and undecided is None
    evidence, undecided = judge_offsite(policy, None, ["a", "b"], {"a": [fresh]}, {}, now)
    assert evidence is None and undecided is not None and "no default backup store" in undecided.message
    assert judge_offsite(PolicyValues(), None, [], {}, refused, now) == (None, None)


def test_an_inventory_that_is_not_toml_is_reported_once(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.toml"
    inventory.write_text("[[deployments\n")
    with pytest.raises(InputError) as caught:
        prepare_audit({"inventory": inventory, "report_dir": tmp_path}, None)
    assert len(caught.value.problems) == 1 and "not valid TOML" in caught.value.problems[0]
