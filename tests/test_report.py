"""The report's comparison with the previous run: newly failing, recovered, markedly slower. Pure."""

from __future__ import annotations

from orchestrator.errors import ErrorClass, TargetError
from orchestrator.history import PastOutcome, changes_since
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
