"""The audit's controls: each passes and fails at its exact boundary, and a malformed backups list can fail a
control but never pass one."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.audit.controls import DAY, Control, judge, offsite_evidence, store_facts
from orchestrator.audit.policy import PolicyValues
from orchestrator.dr import Backup, clean_version, read_backups, same_release

NOW = 1_795_741_200.0  # 2026-11-27T01:00:00Z
HOUR = 3600.0


def backup(
    age_h: float,
    *,
    status: str = "completed",
    release: str = "11.3",
    kept_days: float | None = None,
    name: str = "b",
) -> Backup:
    completed = NOW - age_h * HOUR
    until = None if kept_days is None else completed + kept_days * DAY
    return Backup(name, status, release, completed - 60, completed, until)


def controls_failed(backups: list[Backup], release: str = "11.3", **policy: Any) -> set[Control]:
    values = PolicyValues(**policy)
    facts = store_facts(backups, NOW, values.window_days)
    return {v.control for v in judge(facts, release=release, policy=values, now=NOW)}


def test_recent_passes_at_exactly_the_maximum_age_and_fails_just_past_it() -> None:
    """`recent`: at most max_age_hours old passes; a millisecond older fails."""
    assert Control.RECENT not in controls_failed([backup(24)], max_age_hours=24)
    assert Control.RECENT in controls_failed([backup(24 + 0.001 / HOUR)], max_age_hours=24)
    assert Control.RECENT in controls_failed([], max_age_hours=24)


def test_recent_counts_only_completed_backups_and_says_what_the_newest_one_was() -> None:
    """A newer failed backup does not satisfy `recent`; the reason names it, so the auditor sees why."""
    values = PolicyValues()
    facts = store_facts([backup(1, status="failed", name="tonight"), backup(40, name="old")], NOW, 7)
    found = judge(facts, release="11.3", policy=values, now=NOW)
    recent = next(v for v in found if v.control is Control.RECENT)
    assert recent.reason == "newest good backup is 40.0 h old (policy: 24 h)"
    assert facts.newest is not None and facts.newest.name == "tonight"
    nothing_good = judge(store_facts([backup(1, status="failed", name="tonight")], NOW, 7), release="11.3",
                         policy=values, now=NOW)  # fmt: skip
    assert "no good backup in this store (newest: tonight, failed)" in {v.reason for v in nothing_good}


def test_release_must_equal_the_running_version_unless_the_policy_allows_otherwise() -> None:
    """`release`: a backup from before an upgrade no longer protects the deployment; 11.3 is 11.3.0."""
    assert Control.RELEASE in controls_failed([backup(1, release="11.2")], release="11.3")
    assert Control.RELEASE not in controls_failed([backup(1, release="11.3")], release="11.3.0")
    assert Control.RELEASE not in controls_failed(
        [backup(1, release="11.2")], release="11.3", require_same_release=False
    )


def test_retention_passes_at_exactly_the_minimum_and_for_backups_kept_forever() -> None:
    """`retention`: kept min_retention_days after completion passes, a second less fails, forever passes."""
    assert Control.RETENTION not in controls_failed([backup(1, kept_days=7)], min_retention_days=7)
    assert Control.RETENTION in controls_failed([backup(1, kept_days=7 - 1 / DAY)], min_retention_days=7)
    assert Control.RETENTION not in controls_failed([backup(1, kept_days=None)], min_retention_days=7)


def test_depth_counts_unexpired_good_backups_against_the_minimum() -> None:
    """`depth`: exactly min_backups unexpired good backups pass; an expired or failed one does not count."""
    good = [backup(h, kept_days=30, name=f"b{h}") for h in (1, 25, 49)]
    assert Control.DEPTH not in controls_failed(good, min_backups=3)
    assert Control.DEPTH in controls_failed(good, min_backups=4)
    expired = backup(24 * 10, kept_days=9, name="expired")  # kept until a day ago
    failed = backup(2, status="failed", name="failed")
    assert Control.DEPTH in controls_failed([*good, expired, failed], min_backups=4)


def test_offsite_needs_a_recent_good_backup_in_another_store() -> None:
    """`offsite`: a good backup at most max_age_hours old in a store other than the default passes."""
    lists = {"default": [backup(1)], "s3": [backup(24)]}
    assert offsite_evidence("default", lists, max_age_hours=24, now=NOW).recent_elsewhere
    lists["s3"] = [backup(24 + 1 / HOUR), backup(1, status="failed")]
    evidence = offsite_evidence("default", lists, max_age_hours=24, now=NOW)
    assert not evidence.recent_elsewhere and evidence.other_stores == ("s3",)
    only = offsite_evidence("default", {"default": [backup(1)]}, max_age_hours=24, now=NOW)
    values = PolicyValues(require_offsite=True)
    found = judge(store_facts([backup(1)], NOW, 7), release="11.3", policy=values, now=NOW, offsite=only)
    assert [v.reason for v in found] == [
        "no good backup younger than 24 h in a store other than the default store 'default' "
        "(the deployment has no other store)"
    ]


def test_days_covered_counts_utc_days_of_the_window_with_a_good_backup() -> None:
    """days_covered: distinct UTC days among the last window_days (today included) with a good backup."""
    today = math.floor(NOW / DAY) * DAY
    at = [today + 10, today + 20, today - DAY + 5, today - 3 * DAY + 5, today - 7 * DAY + 5]
    backups = [Backup(f"b{i}", "completed", "11.3", t - 1, t, None) for i, t in enumerate(at)]
    backups.append(Backup("failed", "failed", "11.3", today - 2 * DAY, today - 2 * DAY + 5, None))
    assert store_facts(backups, NOW, 7).days_covered == 3  # today, yesterday, 3 days ago; not 7 days ago
    assert store_facts(backups, NOW, 8).days_covered == 4


def test_a_backup_said_to_end_in_the_future_is_not_believed() -> None:
    """A completion time past our clock (beyond the skew allowed) passes nothing, and hides nothing: the real
    newest backup is judged, for `recent`, `release` and `offsite` alike."""
    future = Backup("from-2926", "completed", "11.3", NOW + 3e10, NOW + 3e10, None)
    old = backup(100, release="11.2", kept_days=30, name="real")
    assert controls_failed([future, old]) == {Control.RECENT, Control.RELEASE}
    assert store_facts([future, old], NOW, 7).last_good == old
    assert not offsite_evidence("default", {"default": [], "s3": [future]}, max_age_hours=24, now=NOW).recent_elsewhere
    skewed = backup(-4 / 60)  # four minutes ahead: a server clock a little fast is believed
    assert controls_failed([skewed]) == set() and store_facts([skewed], NOW, 7).last_good == skewed


def test_a_compliant_store_fails_no_control() -> None:
    """Recent, same release, kept long enough, deep enough: no violation at all."""
    assert controls_failed([backup(2, kept_days=30)]) == set()


def test_unreadable_times_are_never_trusted() -> None:
    """A completed entry without a plausible completeTime is not good; an unreadable retention date counts as
    kept no time at all; -1 and an absent one mean forever."""
    entries = [
        {"backupName": "a", "status": "completed", "completeTime": "yesterday", "release": "11.3"},
        {"backupName": "b", "status": "completed", "completeTime": True},
        {"backupName": "c", "status": "completed", "completeTime": 10**20},
        {"backupName": "d", "status": "COMPLETED", "completeTime": NOW * 1000, "retentionDate": "soon"},
        {"backupName": "e", "status": "completed", "completeTime": NOW * 1000, "retentionDate": -1},
        {"backupName": "f", "status": "completed", "completeTime": NOW * 1000},
        "not an object",
        None,
    ]
    read = {b.name: b for b in read_backups(entries)}
    assert set(read) == {"a", "b", "c", "d", "e", "f"}
    assert [n for n, b in read.items() if b.good] == ["d", "e", "f"]
    assert read["d"].retention_until == read["d"].completed_at  # unreadable: kept for no time
    assert read["e"].retention_until is None and read["f"].retention_until is None
    assert read_backups({"backups": "not a list"}) == []


def test_server_text_is_cleaned_and_capped() -> None:
    """Names and releases lose control characters (terminal escapes) and are cut to a sane length."""
    (read,) = read_backups([{"backupName": "\x1b[2Jevil" + "x" * 1000, "status": "completed", "release": "11\r\n.3"}])
    assert "\x1b" not in read.name and len(read.name) <= 200
    assert "\r" not in read.release and "\n" not in read.release


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
entries = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "backupName": json_values,
            "status": st.sampled_from(["completed", "failed", "COMPLETED", ""]) | json_values,
            "release": json_values,
            "startTime": json_values,
            "completeTime": json_values | st.floats(0, 2e12),
            "retentionDate": json_values,
        },
    )
    | json_values,
    max_size=8,
)


@given(entries)
def test_any_backups_list_is_read_without_error_and_never_makes_a_backup_good_without_its_facts(
    listed: list[Any],
) -> None:
    """Whatever a server lists, reading it never raises, and a good backup always has a real completion time
    and the status `completed`."""
    for read in read_backups(listed):
        if read.good:
            assert read.status == "completed" and read.completed_at is not None and 0 < read.completed_at < 1e11
        facts = store_facts([read], NOW, 7)
        judge(facts, release="11.3", policy=PolicyValues(), now=NOW)


@pytest.mark.parametrize(
    ("given_version", "expected"),
    [("11.3", "11.3"), (" 12.0.1 ", "12.0.1"), (11.3, "11.3"), ("10.²", None), ("1" * 5000, None), ("", None),
     (None, None), (True, None), ("11.3-beta", None)],
)  # fmt: skip
def test_versions_are_read_as_ascii_digits_and_dots_only(given_version: Any, expected: str | None) -> None:
    """A server's version is trusted only when it reads as one."""
    assert clean_version(given_version) == expected


def test_release_comparison_ignores_trailing_zeros_only() -> None:
    """11.3 is 11.3.0; 11.3 is not 11.30, nor 11.3.1; text that is not a version must match exactly."""
    assert same_release("11.3", "11.3.0") and same_release("11.3.0", "11.3")
    assert not same_release("11.3", "11.30") and not same_release("11.3", "11.3.1")
    assert not same_release("", "11.3") and same_release("odd", "odd")
