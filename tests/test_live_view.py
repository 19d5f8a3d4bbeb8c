"""The live view of a run: what a person needs to act on, fitting an 80-column terminal."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from orchestrator.clock import ManualClock
from orchestrator.console import finished_lines
from orchestrator.events import Event, EventKind
from orchestrator.model import Outcome, Phase, RunResult, TargetState
from orchestrator.progress import LiveProgress
from orchestrator.redact import MASK, remember
from orchestrator.settings import RunSettings
from orchestrator.usecases import Finished
from tests.conftest import make_deployment

NOW = 1_795_741_200.0


def _target(index: int, name: str, *, store: str = "default", **fields: object) -> TargetState:
    return TargetState(index, make_deployment(name), store, f"nightly-{index}", None, **fields)  # type: ignore[arg-type]


def _running(index: int, name: str, since: float, expected: float | None = None) -> TargetState:
    target = _target(index, name, submitted_at=since, accepted_at=since, job_id=f"j{index}")
    target.phase, target.expected_s = Phase.RUNNING, expected
    return target


def _failed(index: int, name: str, at: float, reason: str, error_class: str = "permanent") -> TargetState:
    return _target(
        index, name, outcome=Outcome.FAILED, error_class=error_class, error=reason, submitted_at=at - 5, finished_at=at
    )


def _done(index: int, at: float) -> TargetState:
    return _target(index, f"gis-ok-{index}", outcome=Outcome.SUCCEEDED, submitted_at=at - 5, finished_at=at)


def _render(view: LiveProgress, width: int = 80) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(view._render())
    return console.export_text()


def _mixed(clock: ManualClock) -> list[TargetState]:
    """Every phase and outcome at least once."""
    t = clock.now()
    queued = _target(0, "gis-queued")
    signing = _target(1, "gis-signing")
    signing.phase = Phase.SIGNING_IN
    interrupted = _target(8, "gis-cut", outcome=Outcome.INTERRUPTED, submitted_at=t - 90, finished_at=t)
    not_started = _target(9, "gis-late", outcome=Outcome.NOT_STARTED, finished_at=t)
    skipped = _target(10, "gis-skip", outcome=Outcome.SKIPPED, finished_at=t)
    timed_out = _target(11, "gis-slow", outcome=Outcome.TIMED_OUT, error_class="job_timed_out", finished_at=t)
    return [
        queued, signing, _running(2, "gis-0004", t - 600, expected=300), _running(3, "gis-0007", t - 30),
        _failed(4, "gis-0009", t - 10, "unknown store 'nas'"), _done(5, t - 20), _done(6, t - 15), _done(7, t - 12),
        interrupted, not_started, skipped, timed_out,
    ]  # fmt: skip


def test_the_oldest_running_job_is_named_with_its_age_and_expected_duration() -> None:
    """The job stuck longest comes first, by deployment and store, with its age and what it usually takes."""
    clock = ManualClock(NOW)
    view = LiveProgress(_mixed(clock), clock)
    text = _render(view)
    rows = [line for line in text.splitlines() if "gis-0004" in line or "gis-0007" in line]
    assert len(rows) == 2 and "gis-0004/default" in rows[0]
    assert "10m00s" in rows[0] and "5m00s" in rows[0] and "running" in rows[0]
    assert "30 s" in rows[1]


def test_only_the_oldest_few_running_jobs_are_listed() -> None:
    """Of many running jobs, the five oldest are named; the newest are not."""
    clock = ManualClock(NOW)
    view = LiveProgress([_running(i, f"gis-{i:04d}", NOW - 1000 + i) for i in range(8)], clock)
    text = _render(view)
    assert all(f"gis-{i:04d}" in text for i in range(5))
    assert not any(f"gis-{i:04d}" in text for i in range(5, 8))


def test_failures_are_named_with_their_class_and_reason_and_never_a_secret() -> None:
    """The latest failures: deployment/store, class and the reason the server gave, its secrets masked."""
    remember("Hunter2-passcode")
    clock = ManualClock(NOW)
    targets = [_failed(0, "gis-0001", NOW - 9, "sign-in refused for Hunter2-passcode", "authentication")]
    targets += [_failed(i, f"gis-{i:04d}", NOW - 9 + i, f"reason number {i}") for i in range(1, 7)]
    text = _render(LiveProgress(targets, clock), 160)
    assert "gis-0006/default" in text and "reason number 6" in text
    assert "gis-0001" not in text  # only the latest five
    early = _render(LiveProgress(targets[:2], clock), 160)
    assert "authentication" in early and MASK in early and "Hunter2" not in early


def test_at_80_columns_no_header_is_cut_and_no_line_is_wider() -> None:
    """At 80 columns every count's header is whole (no `…`) and no line runs past the width."""
    clock = ManualClock(NOW)
    targets = _mixed(clock)
    targets[2].deployment = make_deployment("gis-a-very-long-deployment-name-that-cannot-fit-anywhere-at-all-0004")
    text = _render(LiveProgress(targets, clock), 80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    headers = [line for line in lines if any(word in line for word in ("queued", "succeeded", "deployment/store"))]
    assert len(headers) == 4 and not any("…" in line for line in headers)
    assert "phase" in headers[2] and "age" in headers[2] and "expected" in headers[2] and "class" in headers[3]
    assert "10m00s" in text and "5m00s" in text and "running" in text  # the long name is cut, not its job
    for word in ("signing in", "submitting", "confirming", "interrupted", "not started", "timed out", "skipped"):
        assert word in text


def test_the_counts_add_up_to_the_total_interrupted_included() -> None:
    """Each phase and outcome has its column, so the counts shown add up to the targets, at both widths."""
    clock = ManualClock(NOW)
    targets = _mixed(clock)
    for width in (80, 160):
        text = _render(LiveProgress(targets, clock), width)
        lines = text.splitlines()
        counts = [
            int(n)
            for i, line in enumerate(lines)
            if "queued" in line or "succeeded" in line
            for n in lines[i + 1].split()
        ]
        assert sum(counts) == len(targets) == 12, (width, text)
        assert "12/12" not in text and f"{8}/12 targets done" in text


def test_after_ctrl_c_the_grace_period_counts_down() -> None:
    """A stop with a grace period shows how long running jobs are still followed, less as time passes."""
    clock = ManualClock(NOW)
    view = LiveProgress(_mixed(clock), clock, grace=30)
    view.on_event(Event(EventKind.STOPPED_SUBMITTING, NOW, detail="interrupted: following running jobs for 30 s"))
    assert "following running jobs for 30 s more" in _render(view)
    clock.advance(7.5)
    assert "following running jobs for 23 s more" in _render(view)
    clock.advance(30)
    assert "grace period is over" in _render(view)


def test_a_stop_without_a_grace_period_says_why() -> None:
    """A failure threshold or deadline stop says its reason, with no countdown."""
    clock = ManualClock(NOW)
    view = LiveProgress(_mixed(clock), clock, grace=30)
    reason = "not submitted: the failure threshold (3) was reached"
    view.on_event(Event(EventKind.STOPPED_SUBMITTING, NOW, detail=reason))
    text = _render(view)
    assert reason in text and "more" not in text


def _rate_and_eta(text: str) -> tuple[str | None, str]:
    headline = text.splitlines()[0]
    rate = re.search(r"([\d.]+)/min", headline)
    return (rate.group(1) if rate else None), headline.split("ETA ", 1)[1]


def test_rate_and_eta_leave_out_what_a_resumed_run_finished_before() -> None:
    """A resume of 50 targets with 45 ended before: no rate, and no ETA, until this process finishes some."""
    clock = ManualClock(NOW)
    targets = [_done(i, NOW - 3600) for i in range(45)] + [_target(i, f"gis-{i}") for i in range(45, 50)]
    view = LiveProgress(targets, clock)
    clock.advance(1)
    rate, eta = _rate_and_eta(_render(view))
    assert rate is None and eta.startswith("not yet known")
    for target in targets[45:48]:
        target.finish(Outcome.SUCCEEDED, clock.now())
    clock.advance(59)  # 3 finished in this process, in a minute: 3/min, 2 left: 40 s
    rate, eta = _rate_and_eta(_render(view))
    assert rate == "3.0" and eta.startswith("40 s")


def test_the_eta_follows_the_running_jobs_expected_durations() -> None:
    """Only running jobs left: the ETA is the longest one's expected time left; past it, it says so."""
    clock = ManualClock(NOW)
    targets = [_running(0, "gis-a", NOW - 100, expected=400), _running(1, "gis-b", NOW - 50, expected=100)]
    view = LiveProgress(targets, clock)
    assert _rate_and_eta(_render(view))[1].startswith("5m00s")
    clock.advance(400)
    assert _rate_and_eta(_render(view))[1].startswith("unknown, 2 jobs overdue")


def _finished(targets: list[TargetState], stopped_reason: str = "") -> Finished:
    result = RunResult("r1", NOW, NOW + 60, targets, RunSettings(), "fleet.toml", stopped_reason)
    summary = {o.value: sum(t.outcome is o for t in targets) for o in Outcome if o is not Outcome.PENDING}
    return Finished(result, Path("reports/r1"), {**summary, "total": len(targets)}, resumable=False)


def test_the_summary_lists_the_failures_and_how_many_more() -> None:
    """The end of a run names up to ten failures with class and reason, then how many more the report has."""
    targets = [_failed(i, f"gis-{i:04d}", NOW + i, f"boom {i}") for i in range(12)] + [_done(12, NOW)]
    lines = finished_lines(_finished(targets))
    failures = [line for line in lines if line.strip().startswith("gis-")]
    assert len(failures) == 10 and failures[0].strip() == "gis-0000/default: permanent: boom 0"
    assert any("... and 2 more, see the report" in line for line in lines)


def test_after_an_interrupt_the_summary_does_not_call_started_targets_not_started() -> None:
    """All targets had started when Ctrl-C came: the summary says the run was interrupted, not `not started`."""
    targets = [_target(0, "gis-a", outcome=Outcome.INTERRUPTED, submitted_at=NOW, finished_at=NOW + 9)]
    lines = finished_lines(_finished(targets, "the run was interrupted"))
    stop = [line for line in lines if "interrupted" in line and "stopped" in line]
    assert stop and not any("not started" in line for line in stop)
    assert "1 interrupted while running" in stop[0]
