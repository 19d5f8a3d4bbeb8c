"""`--shard K/N`: a stable hash puts each deployment in exactly one shard; bad forms are refused with the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.settings import RunSettings, load_settings
from orchestrator.shard import INDEX_VARIABLE, Shard, in_shard, parse_shard, shard_of
from tests.conftest import make_deployment


def test_the_hash_is_stable_across_calls_and_processes() -> None:
    """A known name in a known shard: SHA-256, never Python's salted `hash()`, so every machine agrees."""
    assert shard_of("gis-eu-01", 4) == 8073426755725741037 % 4 == 1
    assert [shard_of("gis-eu-01", 4) for _ in range(3)] == [1, 1, 1]
    code = "from orchestrator.shard import shard_of; print(shard_of('gis-eu-01', 4))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345"})  # fmt: skip
    assert other.stdout.strip() == "1"


@given(st.lists(st.text(min_size=1, max_size=20), unique=True, max_size=30), st.integers(1, 9))
def test_every_deployment_is_in_exactly_one_shard(names: list[str], count: int) -> None:
    """The shards of N partition the fleet: each deployment in one, in inventory order."""
    deployments = [make_deployment(name) for name in names]
    shards = [in_shard(deployments, Shard(k, count)) for k in range(count)]
    assert sorted(d.name for shard in shards for d in shard) == sorted(names)
    for shard in shards:
        assert shard == [d for d in deployments if d in shard]


def test_k_from_the_indexed_job_variable() -> None:
    """`/N` takes K from JOB_COMPLETION_INDEX; a missing or bad one names the fix."""
    assert parse_shard("/4", {INDEX_VARIABLE: "3"}) == Shard(3, 4)
    assert parse_shard(" 2 / 3 ", {}) == Shard(2, 3)
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX is not set; run it as an Indexed Job"):
        parse_shard("/4", {})
    with pytest.raises(ValueError, match="is 'x', not a number"):
        parse_shard("/4", {INDEX_VARIABLE: "x"})
    with pytest.raises(ValueError, match="K runs from 0 to 3"):
        parse_shard("/4", {INDEX_VARIABLE: "4"})


@pytest.mark.parametrize(
    ("text", "says"),
    [("3/2", "K runs from 0 to 1"), ("a/b", "write K/N"), ("0/0", "at least 1"), ("1", "write K/N"), ("-1/2", "K/N")],
)
def test_bad_forms_are_input_errors(text: str, says: str) -> None:
    """A bad --shard is refused before anything is sent, saying how to write it."""
    with pytest.raises(InputError, match=says):
        load_settings({"shard": text})


def test_the_settings_record_the_resolved_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    """`/N` is recorded as K/N: the report and the ledger say which shard the run was."""
    monkeypatch.setenv(INDEX_VARIABLE, "1")
    settings = load_settings({"shard": "/2"})
    assert settings.shard == "1/2" and settings.public()["shard"] == "1/2"
    assert RunSettings().shard is None
