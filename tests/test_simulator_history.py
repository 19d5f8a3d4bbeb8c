"""Seeded backup history: deterministic per seed, per profile and per deployment, listed as the stores list it,
expired history gone, and store entries with the keys newer releases carry."""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator.commands import add_simulate_arguments, fleet_config
from orchestrator.simulator.config import (
    HISTORIES,
    FleetFileError,
    fleet_from_mapping,
    full_version,
    previous_version,
    resolve_fleet,
)
from orchestrator.simulator.fleet import SimulatedFleet
from tests.conftest import PASSWORD, Admin, FleetStarter

pytestmark = pytest.mark.anyio

DR: Final = "/admin/system/disasterrecovery"
DAY: Final = 86_400_000  # ms
SCHEDULED_NAME: Final = re.compile(r"^schedule\d+-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")
FLAKY_FLEET: Final = {"count": 200, "profile": "flaky", "seed": 7, "stores": ["default", "offsite"]}
_NO_FAULTS: Final = {
    key: 0.0
    for key in ("http_5xx", "http_429", "reset", "hang", "lost_create", "late_5xx", "job_failure", "unavailable_blip")
} | {"latency": {"dist": "fixed", "value": 0.0}}
"""The flaky profile's history without its request faults: the tests here read lists, not survive faults."""


def _fleet(**config: Any) -> SimulatedFleet:
    config.setdefault("count", 1)
    return SimulatedFleet(fleet_from_mapping(config), clock=ManualClock(), password=PASSWORD)


def _listed(fleet: SimulatedFleet) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each store's history as the stores list it, oldest first."""
    lists: dict[tuple[str, str], list[dict[str, Any]]] = {
        (d.name, store): [] for d in fleet.deployments.values() for store in d.plan.stores
    }
    for row in fleet.backups(history=True):
        lists[(row["deployment"], row["backupStore"])].append(row)
    return lists


def _newest(rows: list[dict[str, Any]], status: str | None = None) -> dict[str, Any] | None:
    picked = [row for row in rows if status is None or row["status"] == status]
    return max(picked, key=lambda row: row["startTime"], default=None)


def test_history_is_deterministic_per_seed() -> None:
    """Same seed, same history, to the millisecond; another seed, another history."""

    def history(seed: int) -> list[dict[str, Any]]:
        return _fleet(count=30, profile="hostile", seed=seed, stores=["default", "offsite"]).backups(history=True)

    first = history(3)
    assert first and first == history(3)
    assert first != history(4)


def test_profile_none_has_no_history() -> None:
    """Profile none seeds nothing: empty stores, nothing in the fleet's records, the stores at the current release."""
    fleet = _fleet(count=20, stores=["default", "offsite"])
    assert HISTORIES["none"].days == 0
    assert fleet.backups(history=True) == []
    for deployment in fleet.deployments.values():
        assert deployment.backups == {"default": {}, "offsite": {}}
        assert deployment.store("default")["versionCreated"] == deployment.full_version
    assert {row["history"]["seeded"] for row in fleet.describe()} == {0}


def test_hostile_has_more_of_every_kind_than_flaky() -> None:
    """Every kind of violation is rarer in flaky than in hostile, and absent from none."""
    none, flaky, hostile = HISTORIES["none"], HISTORIES["flaky"], HISTORIES["hostile"]
    assert flaky.days > 0 and hostile.days > 0
    for share in ("failed", "no_retention", "short_retention", "stale", "upgraded"):
        assert getattr(none, share) == 0 < getattr(flaky, share) < getattr(hostile, share), share
    assert none.other_stores >= flaky.other_stores > hostile.other_stores


def test_flaky_fleet_has_every_kind_of_violation() -> None:
    """200 flaky deployments hold at least one of each: stale, upgraded (previous release), failed newest backup,
    short and no retention, no offsite history; each as the lists show it and as the fleet's records say."""
    fleet = _fleet(**FLAKY_FLEET)
    lists = _listed(fleet)
    described = {row["name"]: row["history"] for row in fleet.describe()}
    now_ms = round(fleet.started_at * 1000)

    stale, upgraded, failed_newest, short, kept_forever, no_offsite = set(), set(), set(), set(), set(), set()
    for deployment in fleet.deployments.values():
        name = deployment.name
        default, offsite = lists[(name, "default")], lists[(name, "offsite")]
        assert default, name  # flaky: every deployment has a history in its default store
        newest_good = _newest(default, "completed")
        if newest_good is None or newest_good["completeTime"] < now_ms - 4.5 * DAY:
            stale.add(name)
        releases = {row["release"] for row in default + offsite}
        if releases != {deployment.full_version}:
            [release] = releases
            assert release == full_version(previous_version(deployment.plan.version) or "")
            assert deployment.store("offsite")["versionCreated"] == release
            upgraded.add(name)
        newest = _newest(default)
        assert newest is not None
        if newest["status"] == "failed":
            failed_newest.add(name)
        for row in default + offsite:
            kept = row["retentionDate"] - row["startTime"]
            if kept == 2 * DAY:
                short.add(name)
            elif row["retentionDate"] == -1:
                kept_forever.add(name)
            else:
                assert kept == 14 * DAY, row
        if not offsite:
            no_offsite.add(name)

    assert stale == {name for name, facts in described.items() if facts["stale"]}
    assert upgraded == {name for name, facts in described.items() if facts["upgraded_from"]}
    assert no_offsite == {name for name, facts in described.items() if facts["stores"] == ["default"]}
    kinds = {
        "stale": stale,
        "upgraded": upgraded,
        "failed newest": failed_newest,
        "short retention": short,
        "no retention": kept_forever,
        "no offsite": no_offsite,
    }
    counts = {kind: len(names) for kind, names in kinds.items()}
    assert all(0 < count < 100 for count in counts.values()), counts  # a few, not the norm


def test_history_backups_look_like_esri_scheduled_ones() -> None:
    """Scheduled names, unique per store, SCHEDULED, in the past and complete, one a period, each further store's
    schedule an hour after the one before (one DR job at a time)."""
    fleet = _fleet(count=40, profile="flaky", seed=2, stores=["default", "offsite"])
    now_ms = round(fleet.started_at * 1000)
    lists = _listed(fleet)
    for (name, store), rows in lists.items():
        names = [row["backupName"] for row in rows]
        assert len(set(names)) == len(names)
        number = "1" if store == "default" else "2"
        for row in rows:
            assert SCHEDULED_NAME.match(row["backupName"]) and row["backupName"][8] == number, row["backupName"]
            assert row["scheduleType"] == "SCHEDULED" and row["backupType"] == "FULL"
            assert now_ms - 14 * DAY <= row["startTime"] < row["completeTime"] < now_ms
        starts = [row["startTime"] for row in rows]  # a day apart, but for the scheduler's delay of up to 90 s
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert all(round(gap / DAY) >= 1 and abs(gap - round(gap / DAY) * DAY) < 90_000 for gap in gaps), gaps
        if store == "offsite" and rows:
            after_default = (rows[0]["startTime"] - lists[(name, "default")][0]["startTime"]) % DAY
            assert abs(after_default - DAY / 24) < 90_000, name


def test_per_deployment_overrides_apply_to_that_deployment_alone() -> None:
    """A deployment's own `history` changes its history only; its neighbours' stay exactly as they were."""
    plain = [{"name": "gis-a"}, {"name": "gis-b"}, {"name": "gis-c"}]
    changed = [{"name": "gis-a", "history": {"failed": 1.0}}, {"name": "gis-b", "history": {"days": 0}}, plain[2]]
    before = _fleet(count=0, deployments=plain, profile="flaky", seed=5)
    after = _fleet(count=0, deployments=changed, profile="flaky", seed=5)
    assert {row["status"] for row in after.backups("gis-a", history=True)} == {"failed"}
    assert after.backups("gis-b", history=True) == []
    assert before.backups("gis-b", history=True) != []
    assert after.backups("gis-c", history=True) == before.backups("gis-c", history=True)


def test_fleet_history_table_overrides_the_profile_key_by_key() -> None:
    """`[history]` replaces the keys it names and keeps the profile's others; a deployment's go on top."""
    config = fleet_from_mapping(
        {
            "count": 1,
            "profile": "flaky",
            "history": {"failed": 0.5, "every_hours": 12},
            "deployments": [{"name": "own", "history": {"failed": 0.0}}],
        }
    )
    own, generated = (plan.history for plan in resolve_fleet(config))
    assert (generated.failed, generated.every_hours, generated.days) == (0.5, 12, HISTORIES["flaky"].days)
    assert generated.retention_days == HISTORIES["flaky"].retention_days
    assert (own.failed, own.every_hours) == (0.0, 12)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ({"failed": 2}, "history.failed"),
        ({"days": -1}, "history.days"),
        ({"every_hours": 0.1}, "history.every_hours"),
        ({"no_retention": 0.6, "short_retention": 0.6}, "no_retention + short_retention is over 1"),
        ({"dayz": 3}, "history.dayz"),
    ],
)
def test_bad_history_keys_are_refused(history: dict[str, Any], expected: str) -> None:
    """A bad `[history]` key or value is refused before anything starts, naming the key."""
    with pytest.raises(FleetFileError, match=re.escape(expected)):
        fleet_from_mapping({"count": 1, "profile": "flaky", "history": history})
    with pytest.raises(FleetFileError, match=re.escape(expected)):
        fleet_from_mapping({"deployments": [{"name": "a", "history": history}]})


def _simulate_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    return parser.parse_args(list(argv))


def test_history_flag_overrides_the_days(tmp_path: Path) -> None:
    """`simulate --history DAYS` sets the history's days over the profile and the fleet file (0: none)."""
    [plan, *_] = resolve_fleet(fleet_config(_simulate_args("--profile", "flaky", "--history", "0")))
    assert plan.history.days == 0 and plan.history.failed == HISTORIES["flaky"].failed
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text('count = 2\nprofile = "flaky"\n[history]\ndays = 30\nfailed = 0.5\n')
    config = fleet_config(_simulate_args("--fleet", str(fleet_file), "--history", "3"))
    [plan, _] = resolve_fleet(config)
    assert (plan.history.days, plan.history.failed) == (3, 0.5)


async def test_failed_history_backups_are_listed_failed(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """A failed history backup is listed and served with status failed, its completeTime when it failed; the
    history holds no DR job, so a create goes through at once."""
    history = {"days": 3, "failed": 1.0, "short_retention": 0.0}
    async with start_fleet(profile="flaky", history=history, faults=_NO_FAULTS) as (_, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        listed = (await admin.get(f"{DR}/stores/default/backups"))["backups"]
        assert len(listed) == 3 and {row["status"] for row in listed} == {"failed"}
        for row in listed:
            assert row["startTime"] < row["completeTime"] < clock.now() * 1000
            assert row["objectStore"][0]["status"] == "failed"
            assert row["objectStore"][0]["endTime"] == row["completeTime"]
        one = await admin.get(f"{DR}/stores/default/backups/{listed[0]['backupName']}")
        assert one == listed[0]
        assert "jobid" in await admin.create("manual-1")
        assert (await admin.get("/admin/jobs"))["jobs"] != []


async def test_store_entries_carry_version_created_and_ids(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """Stores list and single store carry versionCreated (the release before an upgrade), providerID and
    serviceID: deterministic from the seed, different per store."""
    deployments = [{"name": "old", "history": {"upgraded": 1.0}, "stores": ["default", "offsite"]}, {"name": "new"}]
    settings = {"count": 0, "deployments": deployments, "profile": "flaky", "faults": _NO_FAULTS, "seed": 9}
    async with start_fleet(**settings) as (_, sim, _clock):
        entries: dict[str, list[dict[str, Any]]] = {}
        for name in ("old", "new"):
            admin = Admin(session, sim, name)
            await admin.sign_in()
            entries[name] = (await admin.get(f"{DR}/stores"))["backupStores"]
            for entry in entries[name]:
                assert await admin.get(f"{DR}/stores/{entry['name']}") == entry
    old_default, old_offsite = entries["old"]
    [new_default] = entries["new"]
    assert old_default["versionCreated"] == old_offsite["versionCreated"] == "11.2.0"  # upgraded from 11.2 to 11.3
    assert new_default["versionCreated"] == "11.3.0"
    ids = [entry[key] for entry in (old_default, old_offsite, new_default) for key in ("providerID", "serviceID")]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    again = _fleet(**{**settings, "versions": {"11.3": 1}}).deployments["old"].store("default")
    assert (again["providerID"], again["serviceID"]) == (old_default["providerID"], old_default["serviceID"])


async def test_expired_history_is_not_listed(start_fleet: FleetStarter, session: aiohttp.ClientSession) -> None:
    """Backups whose retentionDate passed before the fleet started are not there; the cleaner removes the rest as
    their dates pass."""
    history = {"days": 10, "retention_days": 3, "no_retention": 0.0, "short_retention": 0.0}
    async with start_fleet(profile="flaky", history=history, faults=_NO_FAULTS) as (fleet, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        listed = (await admin.get(f"{DR}/stores/default/backups"))["backups"]
        assert len(listed) == 3  # of ten nightly backups, the last three are still kept
        assert all(row["retentionDate"] > clock.now() * 1000 for row in listed)
        assert fleet.deployments["gis-0000"].history.seeded == 3
        clock.advance(86_400)
        await admin.sign_in()  # the token did not last the day
        assert len(await admin.backup_names()) == 2


async def test_created_backups_are_told_apart_from_history(
    start_fleet: FleetStarter, session: aiohttp.ClientSession
) -> None:
    """The fleet's records of backups hold only what was created through the API unless the history is asked for,
    in-process and over /_simulator/backups; the store's list holds both."""
    settings = {
        "profile": "flaky",
        "faults": _NO_FAULTS,
        "history": {"short_retention": 0.0},
        "job_duration": {"dist": "fixed", "value": 1},
    }
    async with start_fleet(**settings) as (fleet, sim, clock):
        admin = Admin(session, sim, "gis-0000")
        await admin.sign_in()
        await admin.create("manual-1")
        clock.advance(1)
        names = await admin.backup_names()
        assert len(names) == 15 and names[-1] == "manual-1"
        [created] = fleet.backups()
        assert (created["backupName"], created["scheduleType"], created["status"]) == (
            "manual-1",
            "MANUAL",
            "completed",
        )
        assert [row["backupName"] for row in fleet.backups(history=True)] == names
        url = f"{sim.base_url}/_simulator/backups"
        for params, expected in (({}, ["manual-1"]), ({"history": "true"}, names)):
            async with session.get(url, params=params) as response:
                assert [row["backupName"] for row in (await response.json())["items"]] == expected
