"""Fleet files and profiles resolve to the same fleet for the same seed, and bad files say what to fix."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from orchestrator.simulator.config import (
    PROFILES,
    DeploymentSpec,
    Distribution,
    ErrorCodes,
    FaultProfile,
    FleetConfig,
    FleetFileError,
    History,
    Quirks,
    fleet_from_mapping,
    load_fleet_file,
    resolve_fleet,
)

FLEET_FILE = """
seed = 7
count = 40
versions = { "11.3" = 1, "12.0" = 1 }
stores = ["default", "offsite"]
profile = "flaky"

[faults]
http_429 = 0.5

[[deployments]]
name = "gis-eu-1"
version = "10.9"
stores = ["only"]
wrong_credentials = true
down = [5, 10]
faults = { job_failure = 1.0 }
"""


def test_fleet_file_resolves_explicit_then_generated(tmp_path: Path) -> None:
    """Explicit deployments come first with their overrides; generated ones follow with the fleet's keys."""
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET_FILE)
    plans = resolve_fleet(load_fleet_file(path))
    assert len(plans) == 41
    first, second = plans[0], plans[1]
    assert (first.name, first.version, first.stores, first.default_store) == (
        "gis-eu-1",
        "10.9",
        ("only",),
        "only",
    )
    assert first.wrong_credentials and first.down == (5, 10) and first.legacy_only
    assert first.faults.job_failure == 1.0 and first.faults.http_429 == 0.5
    assert second.name == "gis-0000" and second.stores == ("default", "offsite")
    assert second.faults.http_429 == 0.5 and second.faults.job_failure == PROFILES["flaky"].job_failure
    assert {plan.version for plan in plans[1:]} == {"11.3", "12.0"}


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    """Resolution is seeded: versions, down windows and wrong credentials repeat exactly."""

    def fleet(seed: int) -> list[tuple[str, str, bool, bool]]:
        config = fleet_from_mapping({"seed": seed, "count": 300, "profile": "hostile"})
        return [(p.name, p.version, p.down is not None, p.wrong_credentials) for p in resolve_fleet(config)]

    assert fleet(1) == fleet(1)
    assert fleet(1) != fleet(2)
    hostile = fleet(1)
    assert 0 < sum(down for *_, down, _ in hostile) < 60
    assert 0 < sum(wrong for *_, wrong in hostile) < 30


def test_command_line_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET_FILE)
    config = load_fleet_file(path, count=3, profile="none")
    assert config.count == 3 and config.profile == "none"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count = 2\nprofil = 'flaky'", "profil: Extra inputs are not permitted"),
        ("count = 2\nprofile = 'wild'", "unknown fault profile 'wild'"),
        ("count = 2\nversions = { '9.0' = 1 }", "unknown version '9.0'"),
        ("count = 0", "the fleet is empty"),
        ("[[deployments]]\nname = 'Bad_Name'", "deployments.0.name"),
        ("[[deployments]]\nname = 'a'\n[[deployments]]\nname = 'a'", "appear twice: a"),
        ("count = 1\nstores = ['a']\ndefault_store = 'b'", "default_store 'b' is not one of the stores"),
        ("count = 1\n[faults]\nhttp_5xx = 2", "faults.http_5xx"),
        ("count = 1\n[faults]\nlatency = { dist = 'uniform' }", "needs `high`"),
        ("count = = 1", "not valid TOML"),
    ],
)
def test_bad_fleet_files_name_the_file_field_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(FleetFileError) as caught:
        load_fleet_file(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_missing_fleet_file(tmp_path: Path) -> None:
    with pytest.raises(FleetFileError, match="cannot read the fleet file"):
        load_fleet_file(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("template", "expected"),
    [("GIS_{index}", "not a DNS label"), ("gis", "must contain {index}"), ("gis-{idx}", "use {index}")],
)
def test_name_template_must_give_distinct_dns_labels(template: str, expected: str) -> None:
    with pytest.raises(FleetFileError, match=expected):
        fleet_from_mapping({"count": 2, "name_template": template})


@given(
    dist=st.sampled_from(["fixed", "uniform", "lognormal"]),
    low=st.floats(0, 100),
    span=st.floats(0, 100),
    sigma=st.floats(0, 3),
    seed=st.integers(0, 2**32),
)
def test_distribution_draws_stay_within_bounds(dist: str, low: float, span: float, sigma: float, seed: int) -> None:
    """Every draw is non-negative and within [low, high] for bounded uniform and lognormal distributions."""
    distribution = Distribution(dist=dist, value=low, low=low, high=low + span, median=low + 1, sigma=sigma)
    drawn = distribution.sample(random.Random(seed))
    assert drawn >= 0
    if dist != "fixed":
        assert low <= drawn <= low + span


EXAMPLE = Path(__file__).parents[1] / "orchestrator" / "simulator" / "fleets" / "example.toml"


def test_night_to_night_gives_each_deployment_its_own_typical_duration() -> None:
    """With `night_to_night`, a deployment's jobs stay near its own duration while deployments differ widely:
    what lets a nightly run learn from the last one. Without it, every job draws from the fleet's spread."""
    fleet = {"seed": 3, "count": 40, "job_duration": {"dist": "lognormal", "median": 900.0, "sigma": 0.5}}
    plans = resolve_fleet(FleetConfig.model_validate({**fleet, "night_to_night": 0.05}))
    typical = sorted(plan.job_duration.median for plan in plans)
    assert typical[-1] / typical[0] > 3  # deployments differ
    rng = random.Random(0)
    for plan in plans:
        nights = [plan.job_duration.sample(rng) for _ in range(5)]
        assert max(nights) / min(nights) < 1.5, plan.name  # one deployment's nights stay close
    assert {plan.job_duration for plan in resolve_fleet(FleetConfig.model_validate(fleet))} == {
        FleetConfig.model_validate(fleet).job_duration
    }


def test_example_fleet_file_loads_and_shows_every_key() -> None:
    """The shipped example is valid and documents every key of the fleet file, so the docs cannot drift."""
    config = load_fleet_file(EXAMPLE)
    assert [plan.name for plan in resolve_fleet(config)][:2] == ["gis-eu-1", "gis-legacy"]
    text = EXAMPLE.read_text()
    models: list[type[BaseModel]] = [FleetConfig, FaultProfile, History, ErrorCodes, Quirks, DeploymentSpec]
    shown = [
        f"{m.__name__}.{key}" for m in models for key in m.model_fields if f"{key} =" in text or f"[{key}]" in text
    ]
    missing = sorted({f"{m.__name__}.{key}" for m in models for key in m.model_fields} - set(shown))
    assert missing == []
