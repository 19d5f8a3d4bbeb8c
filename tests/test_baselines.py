"""The benchmark's baselines (benchmarks/baselines/) against the simulator, judged by its own records.

Each baseline runs as the benchmark runs it, `python -m benchmarks.baselines.<name>` in a subprocess,
while the simulated fleet serves on 127.0.0.1 in this test's event loop. (The baselines are not imported:
`benchmarks/` has no `__init__.py`, so mypy knows them as `baselines.*`, not `benchmarks.baselines.*`.)
Short fixed job durations and a short poll interval keep each run around a second.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.simulator import SimulatedFleet, serve_fleet
from orchestrator.simulator.config import fleet_from_mapping
from tests.conftest import PASSCODE, PASSWORD

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("sequential", "threadpool")
JOB_S = 0.4
POLL_S = 0.05
# Four deployments, one with two stores: five targets. Version 11.3, no faults, as in the benchmark.
FLEET: dict[str, Any] = {
    "count": 3,
    "versions": {"11.3": 1},
    "profile": "none",
    "job_duration": {"dist": "fixed", "value": JOB_S},
    "deployments": [{"name": "gis-two", "stores": ["default", "offsite"]}],
}


@asynccontextmanager
async def fleet_and_targets(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[SimulatedFleet, Path]]:
    """A simulated fleet on 127.0.0.1 (real clock) and a targets file for every (deployment, store)."""
    fleet = SimulatedFleet(fleet_from_mapping({**FLEET, **overrides}), password=PASSWORD)
    async with serve_fleet(fleet) as sim:
        targets = [
            {
                "deployment": plan.name,
                "url": sim.url_of(plan.name),  # as `simulate --write-inventory` spells it
                "username": plan.username,
                "store": store,
                "backup_name": f"bench-{plan.name}-{store}",
            }
            for plan in fleet.plans
            for store in plan.stores
        ]
        path = tmp_path / "targets.json"
        document = {"password_env": "BENCH_PASSWORD", "passcode_env": "BENCH_PASSCODE", "targets": targets}
        path.write_text(json.dumps(document), encoding="utf-8")
        yield fleet, path


async def run_baseline(
    contender: str, targets: Path, out: Path, *args: str, secrets: bool = True
) -> tuple[int, dict[str, Any], str]:
    """Run one baseline to its end; returns its exit code, its records (or {}) and its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_PASSWORD", "BENCH_PASSCODE")}
    if secrets:
        env |= {"BENCH_PASSWORD": PASSWORD, "BENCH_PASSCODE": PASSCODE}
    command = [sys.executable, "-m", f"benchmarks.baselines.{contender}", "--targets", str(targets)]
    command += ["--out", str(out), "--poll-interval", str(POLL_S), *args]
    done = await anyio.run_process(command, cwd=ROOT, env=env, check=False)
    written = anyio.Path(out)
    records = json.loads(await written.read_text(encoding="utf-8")) if await written.exists() else {}
    return done.returncode, records, done.stderr.decode()


def target_keys(targets: Path) -> list[tuple[str, str, str]]:
    listed = json.loads(targets.read_text(encoding="utf-8"))["targets"]
    return [(t["deployment"], t["store"], t["backup_name"]) for t in listed]


def assert_no_secrets(fleet: SimulatedFleet, out: Path) -> None:
    text = out.read_text(encoding="utf-8")
    tokens = [token for deployment in fleet.deployments.values() for token in deployment.tokens]
    assert tokens  # there were tokens to leak
    for secret in (PASSWORD, PASSCODE, *tokens):
        assert secret not in text
    assert fleet.secrets_in_urls == 0
    assert set(fleet.token_sources) == {"x-esri-authorization", "none"}  # "none": generateToken itself


@pytest.mark.parametrize("contender", CONTENDERS)
async def test_every_target_backed_up_once(tmp_path: Path, contender: str) -> None:
    """Every target succeeds with one accepted create; detection, polls and request counts match the
    simulator's records; the pool overlaps jobs across deployments and the sequential baseline never does."""
    async with fleet_and_targets(tmp_path) as (fleet, targets):
        code, out, stderr = await run_baseline(contender, targets, tmp_path / "out.json")
    assert code == 0, stderr
    keys = target_keys(targets)
    assert len(keys) == 5
    rows = out["targets"]
    assert [(r["deployment"], r["store"], r["backup_name"]) for r in rows] == keys  # each once, in file order
    assert all(r["outcome"] == "succeeded" and r["server_status"] == "COMPLETED" for r in rows), rows
    assert all(r["error"] is None for r in rows)
    assert out["contender"] == contender and out["workers"] == (1 if contender == "sequential" else 20)
    assert out["poll_interval_s"] == POLL_S and out["capped"] is False
    assert out["started_at"] <= min(r["sent_at"] for r in rows)
    assert out["ended_at"] >= max(r["detected_at"] for r in rows)

    creates = Counter((c.deployment, c.store, c.backup_name) for c in fleet.creates if c.accepted)
    assert creates == Counter(keys) and len(fleet.creates) == len(keys)  # none refused, none twice
    jobs = {job["job_id"]: job for job in fleet.jobs()}
    polls_seen = Counter(r.path.rsplit("/", 1)[-1] for r in fleet.requests if r.endpoint == "job")
    most_polls = math.floor(JOB_S / POLL_S) + 2  # at least POLL_S apart, all but the last before the end
    for row in rows:
        job = jobs[row["job_id"]]
        assert all(job[key] == row[key] for key in ("deployment", "store", "backup_name"))
        assert job["final_status"] == "COMPLETED"
        assert row["sent_at"] <= row["accepted_at"] <= row["detected_at"]
        assert row["detected_at"] >= job["completed_at"]
        assert row["polls"] == polls_seen[row["job_id"]]
        assert 2 <= row["polls"] <= most_polls

    assert out["requests"] == {
        "token": fleet.request_counts["token"],
        "create": fleet.request_counts["create"],
        "job": fleet.request_counts["job"],
        "other": 0,
    }
    assert out["requests"]["token"] == len(fleet.deployments)  # one sign-in per deployment
    assert out["requests"]["job"] == sum(r["polls"] for r in rows)
    assert set(fleet.request_counts) == {"token", "create", "job"}

    peak_fleet, peak_one = fleet.peak_running_jobs()
    assert peak_one == 1  # a deployment's stores one after another
    if contender == "sequential":
        assert peak_fleet == 1
        by_creation = sorted(jobs.values(), key=lambda j: j["created_at"])
        assert [(j["deployment"], j["store"]) for j in by_creation] == [k[:2] for k in keys]
    else:
        assert peak_fleet > 1
    assert_no_secrets(fleet, tmp_path / "out.json")


@pytest.mark.parametrize("contender", CONTENDERS)
async def test_time_cap_abandons_running_and_skips_the_rest(tmp_path: Path, contender: str) -> None:
    """At the cap the running targets are abandoned (with their job id) and the rest never started."""
    async with fleet_and_targets(tmp_path, job_duration={"dist": "fixed", "value": 60.0}) as (fleet, targets):
        extra = ["--workers", "2"] if contender == "threadpool" else []
        code, out, stderr = await run_baseline(contender, targets, tmp_path / "out.json", "--time-cap", "0.8", *extra)
    assert code == 0, stderr
    rows = out["targets"]
    assert [(r["deployment"], r["store"], r["backup_name"]) for r in rows] == target_keys(targets)
    assert out["capped"] is True and out["time_cap_s"] == 0.8
    # gis-two (two stores) and gis-0000 are the first two deployments: two workers take both at once.
    started = {"sequential": {("gis-two", "default")}, "threadpool": {("gis-two", "default"), ("gis-0000", "default")}}
    for row in rows:
        if (row["deployment"], row["store"]) in started[contender]:
            assert row["outcome"] == "abandoned" and row["job_id"] and row["detected_at"] is None, row
        else:
            assert row["outcome"] == "not_started" and row["job_id"] is None and row["sent_at"] is None, row
    accepted = {(c.deployment, c.store) for c in fleet.creates if c.accepted}
    assert accepted == started[contender] and len(fleet.creates) == len(accepted)
    assert out["requests"]["create"] == len(accepted)
    assert_no_secrets(fleet, tmp_path / "out.json")


async def test_expired_token_signs_in_again(tmp_path: Path) -> None:
    """Tokens that expire mid-job (498) are renewed by one sign-in and the request is sent again."""
    async with fleet_and_targets(tmp_path, count=2, deployments=[], faults={"token_lifetime_s": 0.15}) as (
        fleet,
        targets,
    ):
        code, out, stderr = await run_baseline("sequential", targets, tmp_path / "out.json")
    assert code == 0, stderr
    assert all(r["outcome"] == "succeeded" for r in out["targets"]), out["targets"]
    expired = sum(1 for r in fleet.requests if r.error_code == 498)
    assert expired >= len(out["targets"])  # every job outlived its token at least once
    assert out["requests"]["token"] == len(fleet.deployments) + expired == fleet.request_counts["token"]
    assert out["requests"]["job"] == fleet.request_counts["job"]
    assert_no_secrets(fleet, tmp_path / "out.json")


async def test_secrets_only_from_the_environment(tmp_path: Path) -> None:
    """Without the named environment variables nothing is sent and no records are written (exit 2)."""
    async with fleet_and_targets(tmp_path, count=1, deployments=[]) as (fleet, targets):
        code, out, stderr = await run_baseline("threadpool", targets, tmp_path / "out.json", secrets=False)
    assert code == 2 and out == {}
    assert "BENCH_PASSWORD" in stderr and "BENCH_PASSCODE" in stderr
    assert sum(fleet.request_counts.values()) == 0
