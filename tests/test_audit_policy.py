"""The compliance policy: rules apply in order to the deployments they select, and a bad policy is refused
with file, line and the fix, every problem at once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.audit.policy import Policy, load_policy
from orchestrator.errors import InputError
from orchestrator.inventory import load_inventory
from orchestrator.model import Deployment
from tests.conftest import make_deployment

POLICY = """\
[policy]
max_age_hours = 24
min_backups = 2

[[policy.rules]]
select = ["tag=prod"]
max_age_hours = 26
min_backups = 7
require_offsite = true

[[policy.rules]]
select = ["tag=prod", "name=gis-eu-*"]
max_age_hours = 12
"""


def tagged(name: str, *tags: str) -> Deployment:
    return replace(make_deployment(name), tags=tags)


def test_later_rules_win_for_the_deployments_they_select_and_override_only_what_they_name(tmp_path: Path) -> None:
    """Defaults, then each selecting rule in order: a rule changes only its own keys, and only for its matches."""
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    policy = load_policy(path, in_inventory=False)
    dev = policy.for_deployment(tagged("gis-us-1", "dev"))
    prod_us = policy.for_deployment(tagged("gis-us-1", "prod"))
    prod_eu = policy.for_deployment(tagged("gis-eu-1", "prod"))
    assert (dev.max_age_hours, dev.min_backups, dev.require_offsite) == (24, 2, False)
    assert (prod_us.max_age_hours, prod_us.min_backups, prod_us.require_offsite) == (26, 7, True)
    assert (prod_eu.max_age_hours, prod_eu.min_backups, prod_eu.require_offsite) == (12, 7, True)
    assert dev.min_retention_days == 7 and dev.window_days == 7  # never named: the built-in defaults
    described = policy.describe()
    assert described["rules"][1] == {"select": ["tag=prod", "name=gis-eu-*"], "max_age_hours": 12}


def test_without_a_policy_the_built_in_defaults_apply() -> None:
    values = Policy().for_deployment(make_deployment())
    assert (values.max_age_hours, values.min_retention_days, values.min_backups) == (24, 7, 1)
    assert values.require_same_release and not values.require_offsite


def test_every_problem_of_a_policy_file_is_named_with_its_line_and_fix(tmp_path: Path) -> None:
    """Unknown keys (with a guess), wrong types, a bad selection: all at once, each at its own line."""
    path = tmp_path / "policy.toml"
    path.write_text(
        "[policy]\n"  # 1
        "max_age_hour = 24\n"  # 2
        'min_backups = "7"\n'  # 3
        "\n"
        "[[policy.rules]]\n"  # 5
        'select = ["region=eu"]\n'  # 6
        "window_days = 0\n"  # 7
        "\n"
        "[[policy.rules]]\n"  # 9
        "require_offsite = true\n"  # 10
    )
    with pytest.raises(InputError) as caught:
        load_policy(path, in_inventory=False)
    assert caught.value.problems == [
        f"{path}:2: [policy]: unknown key 'max_age_hour'; did you mean 'max_age_hours'?",
        f"{path}:3: [policy]: min_backups: must be a whole number, 0 or more, e.g. min_backups = 1",
        f"{path}:6: [[policy.rules]] #1: select 'region=eu': write tag=TAG or name=GLOB (e.g. name=gis-eu-*)",
        f"{path}:7: [[policy.rules]] #1: window_days: must be a whole number of days from 1 to 366, "
        "e.g. window_days = 7",
        f"{path}:9: [[policy.rules]] #2: select: must be a list of selection rules, as --select takes them, "
        'e.g. select = ["tag=prod"]',
    ]


def test_a_policy_file_must_hold_a_policy_table_and_be_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("max_age_hours = 24\n")
    with pytest.raises(InputError) as caught:
        load_policy(path, in_inventory=False)
    assert any("no [policy] table" in p for p in caught.value.problems)
    assert any(p.startswith(f"{path}:1: unknown top-level key 'max_age_hours'") for p in caught.value.problems)
    path.write_text("[policy\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_policy(path, in_inventory=False)
    with pytest.raises(InputError, match="cannot read the policy file"):
        load_policy(tmp_path / "absent.toml", in_inventory=False)


def test_the_inventory_may_carry_the_policy_table(tmp_path: Path) -> None:
    """An inventory with a [policy] table still loads as an inventory, and its policy is read from it."""
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret\n")
    secret.chmod(0o600)
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[defaults]\nusername = "admin"\npassword_file = "secret"\npasscode_file = "secret"\n\n'
        '[[deployments]]\nname = "gis-1"\nurl = "https://127.0.0.1:9/arcgis"\ntags = ["prod"]\n\n' + POLICY
    )
    inventory = load_inventory(path)
    policy = load_policy(path, in_inventory=True)
    assert policy.for_deployment(inventory.deployments[0]).min_backups == 7
    assert policy.source == f"{path} [policy]"
    path.write_text(path.read_text().replace("[policy]", "[polcy]"))
    with pytest.raises(InputError, match="did you mean 'policy'"):
        load_inventory(path)


def test_a_selection_in_the_defaults_and_every_bad_selector_are_named(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nselect = ["tag=prod"]\n\n[[policy.rules]]\nselect = ["region=eu", "zone=a"]\n')
    with pytest.raises(InputError) as caught:
        load_policy(path, in_inventory=False)
    assert caught.value.problems == [
        f"{path}:2: [policy]: select belongs in a [[policy.rules]] entry (the [policy] table's values apply to "
        "every deployment)",
        f"{path}:5: [[policy.rules]] #1: select 'region=eu': write tag=TAG or name=GLOB (e.g. name=gis-eu-*)",
        f"{path}:5: [[policy.rules]] #1: select 'zone=a': write tag=TAG or name=GLOB (e.g. name=gis-eu-*)",
    ]
