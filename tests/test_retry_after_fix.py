"""`retry` after a fix: deployments matched by name in the inventory as it is now, what changed said, and only
what truly left the inventory refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main  # first: the package's modules import each other in this order
from orchestrator.model import Deployment, Outcome, TargetState
from orchestrator.usecases import retried_deployments
from tests.conftest import make_deployment
from tests.test_cli_run import FAST, Simulator, _simulator

FLEET = (
    'count = 3\nstores = ["default", "s3"]\nversions = { "11.3" = 1 }\njob_duration = { dist = "fixed", value = 0.2 }'
)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Simulator]:
    """Three simulated deployments with stores `default` and `s3`; the inventory names both."""
    fleet_file = tmp_path / "fleet-file.toml"
    fleet_file.write_text(FLEET)
    yield from _simulator(tmp_path, "--fleet", str(fleet_file))


def _edit(inventory: Path, name: str, *lines: str) -> None:
    """Give deployment `name` these keys (each `key = value`, replacing the key's line if it has one)."""
    keys = {line.split(" = ")[0] for line in lines}
    head, *blocks = inventory.read_text().split("[[deployments]]")
    for i, block in enumerate(blocks):
        if f'name = "{name}"\n' in block:
            kept = [line for line in block.splitlines(keepends=True) if line.split(" = ")[0] not in keys]
            blocks[i] = kept[0] + kept[1] + "".join(f"{line}\n" for line in lines) + "".join(kept[2:])
    inventory.write_text(head + "".join("[[deployments]]" + block for block in blocks))


def _drop(inventory: Path, name: str) -> None:
    """Remove deployment `name` from the inventory file."""
    head, *blocks = inventory.read_text().split("[[deployments]]")
    kept = [block for block in blocks if f'name = "{name}"' not in block]
    inventory.write_text(head + "".join("[[deployments]]" + block for block in kept))


def _run_id(out: str) -> str:
    return out.split("run id: ")[1].split()[0]


def _targets(tmp_path: Path, run_id: str) -> list[tuple[str, str, str]]:
    report: dict[str, Any] = json.loads((tmp_path / "r" / run_id / "report.json").read_text())
    return [(t["deployment"], t["store"], t["outcome"]) for t in report["targets"]]


def _base(fleet: Simulator, tmp_path: Path) -> list[str]:
    return ["--inventory", str(fleet.inventory), "--report-dir", str(tmp_path / "r"), *FAST,
            "--name-template", "b-{run_id}-{deployment}-{store}"]  # fmt: skip


def test_retry_after_changing_a_store_and_fixing_a_password_runs_the_right_targets(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One deployment named a store that does not exist, another had a wrong password: both fixed in the
    inventory, `retry` redoes the first's current stores and the second, says what changed, and exits 0."""
    original = fleet.inventory.read_text()
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    _edit(fleet.inventory, "gis-0000", 'stores = ["nope"]')
    _edit(fleet.inventory, "gis-0001", f'password_file = "{wrong}"')
    assert main(["run", *_base(fleet, tmp_path), "--quiet"]) == 1
    first = _run_id(capsys.readouterr().out)
    assert {(d, o) for d, _, o in _targets(tmp_path, first)} == {
        ("gis-0000", "failed"), ("gis-0001", "failed"), ("gis-0002", "succeeded")
    }  # fmt: skip

    fleet.inventory.write_text(original)  # the fix: the password file as before, and the stores the fleet has
    _edit(fleet.inventory, "gis-0001", 'stores = ["s3"]')  # and gis-0001 now backed up to s3 alone
    assert main(["retry", first, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert _targets(tmp_path, _run_id(out)) == [
        ("gis-0000", "default", "succeeded"), ("gis-0000", "s3", "succeeded"), ("gis-0001", "s3", "succeeded")
    ]  # fmt: skip
    assert "gis-0000: stores now default, s3 (were nope); retrying default, s3" in err
    assert "gis-0001: stores now s3 (were default, s3); retrying s3" in err
    assert "no longer in it" not in err


def test_a_deployment_gone_from_the_inventory_is_a_warning_and_the_others_are_retried(
    fleet: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two deployments failed; one is then removed from the inventory and the other fixed: the retry runs the
    other and names the one gone. With both gone, nothing is left: exit 2, nothing sent."""
    original = fleet.inventory.read_text()
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    for name in ("gis-0000", "gis-0001"):
        _edit(fleet.inventory, name, f'password_file = "{wrong}"')
    assert main(["run", *_base(fleet, tmp_path), "--quiet"]) == 1
    first = _run_id(capsys.readouterr().out)

    fleet.inventory.write_text(original)
    _drop(fleet.inventory, "gis-0000")
    assert main(["retry", first, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert {d for d, _, _ in _targets(tmp_path, _run_id(out))} == {"gis-0001"}
    assert "not retried, no longer in it: gis-0000" in err

    _drop(fleet.inventory, "gis-0001")
    assert main(["retry", first, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no longer in it: gis-0000, gis-0001" in err and "nothing was submitted" in err


def _target(deployment: Deployment, store: str, outcome: Outcome) -> TargetState:
    return TargetState(0, deployment, store, "b", None, default_store=store == "", outcome=outcome)


def test_what_a_retry_redoes_is_decided_per_store_and_by_name() -> None:
    """Same stores: those that failed. Stores changed: the current ones that did not succeed, new ones too.
    A deployment that fully succeeded, or that the selection leaves out, is not retried. Pure."""
    a, b, c = make_deployment("a", ("x", "y")), make_deployment("b", ()), make_deployment("c", ())
    recorded = [
        _target(a, "x", Outcome.SUCCEEDED), _target(a, "y", Outcome.FAILED),
        _target(b, "", Outcome.TIMED_OUT),
        _target(c, "", Outcome.SUCCEEDED),
    ]  # fmt: skip
    now_a = make_deployment("a", stores=("x", "y"))
    deployments, changed = retried_deployments(recorded, [now_a, b, c], "r1")
    assert [(d.name, d.stores) for d in deployments] == [("a", ("y",)), ("b", ())]
    assert changed == []
    moved_a = make_deployment("a", stores=("x", "z"))
    moved_b = make_deployment("b", stores=("s3",))
    deployments, changed = retried_deployments(recorded, [moved_a, moved_b], "r1")
    assert [(d.name, d.stores) for d in deployments] == [("a", ("z",)), ("b", ("s3",))]
    assert changed == [
        "a: stores now x, z (were x, y); retrying z",
        "b: stores now s3 (were (default store)); retrying s3",
    ]
    only_x = make_deployment("a", stores=("x",))
    deployments, changed = retried_deployments(recorded, [only_x], "r1")
    assert deployments == [] and "retrying nothing" in changed[0]
