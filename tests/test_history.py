"""What the ledger says about the past: each target's last outcome and expected job duration, read newest run
first, and what changed since (newly failing, recovered, markedly slower); what a retry redoes. Pure."""

from __future__ import annotations

from orchestrator.errors import ErrorClass, TargetError
from orchestrator.history import EXPECTED_FROM, Past, PastOutcome, changes_since, past_of, recall, to_retry
from orchestrator.ledger import PastRow
from orchestrator.memory import Remembered
from orchestrator.model import Outcome, TargetState
from tests.conftest import make_deployment


def _target(name: str, outcome: Outcome, duration: float | None = 10.0) -> TargetState:
    deployment = make_deployment(name)
    target = TargetState(index=0, deployment=deployment, store="default", backup_name=f"b-{name}", retention_ms=None)
    target.submitted_at = 1000.0
    if outcome is Outcome.FAILED:
        target.fail(TargetError(ErrorClass.JOB_FAILED, "disk full"), 1000.0 + (duration or 0))
    else:
        target.finish(outcome, 1000.0 + (duration or 0))
    return target


def test_changes_name_newly_failing_recovered_and_slower_targets() -> None:
    """Each kind of change is found, and only against the same (deployment, store) of the previous run."""
    previous = {
        ("was-ok", "default"): PastOutcome("succeeded", 10.0),
        ("was-failing", "default"): PastOutcome("failed", None),
        ("slower", "default"): PastOutcome("succeeded", 10.0),
        ("a-bit-slower", "default"): PastOutcome("succeeded", 10.0),
        ("steady", "default"): PastOutcome("succeeded", 10.0),
    }
    targets = [
        _target("was-ok", Outcome.FAILED),
        _target("was-failing", Outcome.SUCCEEDED),
        _target("slower", Outcome.SUCCEEDED, duration=15.0),  # half as long again: marked
        _target("a-bit-slower", Outcome.SUCCEEDED, duration=14.9),  # not quite
        _target("steady", Outcome.SUCCEEDED),
        _target("new", Outcome.FAILED),  # not in the previous run: not a change
    ]
    changes = changes_since("run-1", previous, targets)
    assert changes["previous_run_id"] == "run-1"
    assert changes["newly_failing"] == [{"target": "was-ok/default", "outcome": "failed", "error": "disk full"}]
    assert changes["recovered"] == [{"target": "was-failing/default", "previous_outcome": "failed"}]
    assert changes["slower"] == [{"target": "slower/default", "duration_s": 15.0, "previous_duration_s": 10.0}]


def test_a_short_backup_taking_a_little_longer_is_not_marked_slower() -> None:
    """Half as long again, but less than a second more: noise, not a change."""
    changes = changes_since(
        "r", {("d", "default"): PastOutcome("succeeded", 1.0)}, [_target("d", Outcome.SUCCEEDED, 1.9)]
    )
    assert changes["slower"] == []


def test_a_default_store_target_matches_whatever_its_store_resolved_to() -> None:
    """Last night's success on the resolved default store is compared with tonight's failure before sign-in."""
    tonight = _target("d", Outcome.FAILED)
    tonight.store, tonight.default_store = "", True  # sign-in was refused: the store was never asked for
    changes = changes_since("r", {("d", ""): PastOutcome("succeeded", 10.0)}, [tonight])
    assert [c["target"] for c in changes["newly_failing"]] == ["d/(default store)"]


def _row(run_id: str, deployment: str, outcome: str, ran_s: float | None, store: str = "default") -> PastRow:
    return PastRow(run_id, deployment, store, False, outcome, 100.0, 160.0, ran_s)


def test_the_past_is_each_targets_latest_outcome_and_the_median_of_its_latest_measured_successes() -> None:
    """Newest run first: the first outcome seen is the latest; the expected duration is the median of the
    latest EXPECTED_FROM measured successes only (a failure or an unmeasured success says nothing of it)."""
    rows = [
        _row("r5", "a", "failed", None),
        _row("r5", "b", "succeeded", 30.0),
        _row("r4", "a", "succeeded", 10.0),
        _row("r4", "b", "succeeded", None),
        _row("r3", "a", "succeeded", 14.0),
        _row("r2", "a", "succeeded", 12.0),
        _row("r1", "a", "succeeded", 99.0),  # a fourth success: beyond the latest three
    ]
    past = past_of(rows)
    assert EXPECTED_FROM == 3
    assert past.previous_run_id == "r5"
    assert past.outcomes == {
        ("a", "default"): PastOutcome("failed", 60.0, failing_runs=1, failing_since=0.0),
        ("b", "default"): PastOutcome("succeeded", 60.0),
    }
    assert past.expected_s == {("a", "default"): 12.0, ("b", "default"): 30.0}


def _started(run_id: str, deployment: str, outcome: str, started: float) -> PastRow:
    return PastRow(run_id, deployment, "default", False, outcome, started, started + 60, None, started)


def test_a_target_failing_night_after_night_is_still_failing_since_the_first_of_those_nights() -> None:
    """The failures in a row up to the latest run are counted (a run it was not in breaks nothing), from the
    start of the first; tonight's failure makes one more. A target that failed before but succeeded last
    time, or one that succeeds tonight, is not still failing."""
    day = 86_400.0
    rows = [
        _started("r4", "a", "failed", 1_795_000_000.0 + 3 * day),
        _started("r4", "b", "succeeded", 1_795_000_000.0 + 3 * day),
        _started("r3", "b", "failed", 1_795_000_000.0 + 2 * day),  # r3 was a retry of b alone
        _started("r2", "a", "timed_out", 1_795_000_000.0 + day),
        _started("r2", "c", "failed", 1_795_000_000.0 + day),
        _started("r1", "a", "succeeded", 1_795_000_000.0),
        _started("r1", "c", "failed", 1_795_000_000.0),
    ]
    past = past_of(rows)
    assert past.outcomes[("a", "default")].failing_runs == 2
    assert past.outcomes[("b", "default")].failing_runs == 0
    assert past.outcomes[("c", "default")].failing_runs == 2
    tonight = [_target("a", Outcome.FAILED), _target("b", Outcome.FAILED), _target("c", Outcome.SUCCEEDED)]
    changes = past.changes(tonight)
    assert changes["still_failing"] == [
        {"target": "a/default", "outcome": "failed", "error": "disk full", "runs": 3, "since": "2026-11-19T11:06:40Z"}
    ]
    assert [c["target"] for c in changes["newly_failing"]] == ["b/default"]
    assert [c["target"] for c in changes["recovered"]] == ["c/default"]


def test_with_no_earlier_run_there_is_nothing_to_compare() -> None:
    """No finished run before: no expectations, and no changes section (not "nothing changed")."""
    past = past_of([])
    assert past == Past() and past.changes([_target("d", Outcome.SUCCEEDED)]) == {}


def test_a_retry_redoes_every_store_that_did_not_succeed() -> None:
    """Failed, skipped, interrupted, not started: each is redone; a success is not."""
    targets = [_target("a", Outcome.SUCCEEDED), _target("a", Outcome.FAILED), _target("b", Outcome.SKIPPED)]
    targets[1].store = "offsite"
    assert to_retry(targets) == {"a": {"offsite"}, "b": {"default"}}


# -- what each deployment's version and default store were (`memory`) --


def _went_by(
    run_id: str, deployment: str, outcome: str, *, store: str = "main", default: bool = True,
    version: str = "11.3.0", read_at: float | None = 1000.0, url: str = "https://d.example.com/arcgis",
) -> PastRow:  # fmt: skip
    return PastRow(run_id, deployment, store, default, outcome, 100.0, 160.0, None, 0.0, url, version, read_at)


def test_a_deployment_remembers_what_its_latest_run_with_a_success_went_by() -> None:
    """Newest run first: the latest run in which the deployment succeeded gives its version, when it was read, and
    the default store backed up with success in that run; a failure since says nothing against it."""
    rows = [
        _went_by("r3", "a", "failed", store="other", read_at=3000.0),
        _went_by("r2", "a", "succeeded", store="s3", default=False, read_at=2000.0),
        _went_by("r2", "a", "succeeded", store="main", read_at=2000.0),
        _went_by("r1", "a", "succeeded", store="older", version="11.2.0", read_at=1000.0),
        _went_by("r2", "b", "succeeded", store="x", default=False, read_at=2000.0),  # named stores only
        _went_by("r1", "b", "succeeded", store="old-default", read_at=1000.0),
    ]
    remembered = past_of(rows).remembered
    assert remembered["a"] == Remembered("11.3.0", "main", 2000.0, "https://d.example.com/arcgis")
    assert remembered["b"] == Remembered("11.3.0", "", 2000.0, "https://d.example.com/arcgis")


def test_10_9_or_an_undated_version_is_not_remembered_nor_anything_older() -> None:
    """A latest success on 10.9 (paths of its own), or in a ledger that did not date what it read (schema 4),
    leaves the deployment with nothing remembered: an older run's version is not taken instead."""
    rows = [
        _went_by("r2", "legacy", "succeeded", version="10.9.0"),
        _went_by("r2", "undated", "succeeded", read_at=None),
        _went_by("r2", "unread", "succeeded", version=""),
        *(_went_by("r1", name, "succeeded") for name in ("legacy", "undated", "unread")),
    ]
    assert past_of(rows).remembered == {"legacy": None, "undated": None, "unread": None}


def test_recall_gives_targets_their_memory_due_past_its_age_and_a_snapshot_none() -> None:
    """Each target gets its deployment's memory (`due` once older than its limit), and its expected duration;
    with `remember_for` None (a snapshot), no memory at all."""
    memory = Remembered("11.3.0", "main", 1000.0, "https://127.0.0.1:9/d")
    past = Past(remembered={"d": memory}, expected_s={("d", "default"): 30.0})
    target = _target("d", Outcome.PENDING)
    recall(past, [target], remember_for=86_400.0, now=1060.0)
    assert (target.remembered, target.expected_s) == (memory, 30.0)
    recall(past, [target], remember_for=86_400.0, now=1000.0 + 86_400.0)
    assert target.remembered is not None and target.remembered.due
    target.remembered = None
    recall(past, [target], remember_for=None, now=1060.0)
    assert target.remembered is None and target.expected_s == 30.0
