"""The crash sweep's pure parts (benchmarks/crash_sweep.py): which kill points, which slices, and the verdict on
one target from the report and the simulator's records. The sweep itself is `make crash-sweep`."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from orchestrator.failpoints import ANY, POINTS

ROOT = Path(__file__).resolve().parents[1]
# `benchmarks/` has no __init__.py: its scripts are imported from there, as the fleet benchmark's tests do.
sys.path.insert(0, str(ROOT / "benchmarks"))

from crash_sweep import (  # noqa: E402
    MIN_KILL_POINTS,
    MIN_TARGETS,
    Kind,
    fleet_file_text,
    judge_target,
    plan_kill_points,
    slice_deployments,
)


@pytest.mark.parametrize("seed", range(20))
def test_the_plan_has_at_least_fifty_distinct_kill_points_of_every_kind_and_is_seeded(seed: int) -> None:
    """Issue 12: 50+ distinct kill points, every named failpoint, `any`, Ctrl-C, wall clock; same seed, same plan."""
    points = plan_kill_points(seed)
    labels = [p.label for p in points]
    assert len(set(labels)) == len(labels) >= MIN_KILL_POINTS
    assert {p.spec.split(":")[0] for p in points if p.spec} == POINTS | {ANY}
    assert {p.kind for p in points} == set(Kind)
    assert plan_kill_points(seed) == points and plan_kill_points(seed + 1) != points
    assert all(0 < p.share < 1 for p in points if p.kind is Kind.WALL_CLOCK)


def test_every_failpoint_spec_is_one_the_orchestrator_accepts() -> None:
    """NAME:N or NAME:N:sigint, with N >= 1 (the orchestrator refuses anything else at start-up)."""
    for point in plan_kill_points(3):
        for spec in filter(None, (point.spec, point.resume_spec)):
            name, count, *action = spec.split(":")
            assert name in POINTS | {ANY} and int(count) >= 1 and action in ([], ["sigint"]), spec


@pytest.mark.parametrize("index", range(6))
def test_each_slice_mixes_every_version_and_has_enough_targets(index: int) -> None:
    """Every slice has a 10.9 and an 11.4 (whose quirks matter to resume), and at least MIN_TARGETS targets."""
    planned = slice_deployments(index)
    assert {p.version for p in planned} == {"11.3", "11.4", "10.9", "12.0", "11.5"}
    assert sum(len(p.stores) for p in planned) >= MIN_TARGETS
    assert all(p.name.startswith(f"kp{index:03d}-") for p in planned)


def test_the_fleet_file_lists_every_slice() -> None:
    fleet = tomllib.loads(fleet_file_text(3, seed=5))
    assert fleet["profile"] == "flaky" and fleet["seed"] == 5
    assert [d["name"] for d in fleet["deployments"]] == [p.name for i in range(3) for p in slice_deployments(i)]


def _row(outcome: str = "succeeded", error_class: str = "", error: str = "") -> dict[str, Any]:
    return {"outcome": outcome, "error_class": error_class, "error": error, "backup_name": "b-1"}


def _create(job_id: str, accepted: bool = True) -> dict[str, Any]:
    return {"accepted": accepted, "job_id": job_id}


BACKUP = {"backupName": "b-1"}


def test_one_create_one_backup_named_as_reported_is_exactly_once() -> None:
    verdict = judge_target("d", "s", [_row()], [_create("j1"), _create("", False)], [BACKUP], {"j1": "COMPLETED"})
    assert verdict.ok and verdict.exactly_once and verdict.why == ""


@pytest.mark.parametrize(
    ("rows", "creates", "backups", "why"),
    [
        ([], [_create("j1")], [BACKUP], "0 report rows"),
        ([_row()], [_create("j1"), _create("j2")], [BACKUP, BACKUP], "2 backups"),
        ([_row()], [_create("j1"), _create("j2")], [BACKUP], "2 accepted creates whose jobs did not fail"),
        ([_row()], [_create("j1")], [], "reported succeeded, no backup"),
        ([_row()], [_create("j1")], [{"backupName": "other"}], "the report says 'b-1'"),
        ([_row("failed")], [_create("j1")], [], "without an error class"),
        ([_row("failed", "transient", "boom")], [_create("j1")], [BACKUP], "yet its backup exists"),
    ],
)
def test_a_duplicate_a_lie_or_an_unexplained_failure_fails(
    rows: list[dict[str, Any]], creates: list[dict[str, Any]], backups: list[dict[str, Any]], why: str
) -> None:
    verdict = judge_target("d", "s", rows, creates, backups, {"j1": "COMPLETED", "j2": "COMPLETED"})
    assert not verdict.ok and why in verdict.why


def test_an_explained_non_success_passes_but_is_not_exactly_once() -> None:
    row = _row("failed", "job_failed", "the staging volume could not be written")
    verdict = judge_target("d", "s", [row], [_create("j1")], [], {"j1": "FAILED"})
    assert verdict.ok and not verdict.exactly_once and verdict.why == ""


def test_a_second_create_after_a_failed_first_job_is_noted_not_failed() -> None:
    """10.9 after a kill between create and job id: the first job failed, the resume created once more."""
    verdict = judge_target("d", "s", [_row()], [_create("j1"), _create("j2")], [BACKUP], {"j1": "FAILED"})
    assert verdict.ok and not verdict.exactly_once and "1 of whose jobs failed" in verdict.why
