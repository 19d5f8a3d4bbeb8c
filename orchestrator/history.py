"""What the ledger says about the past, asked once: how long each target's job ran before, how it ended
last time, what each deployment's version and default store were (`memory`), what a resume carries on and
what a retry redoes.

The reads are in `ledger`; the judgements here are pure functions over what it read.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from orchestrator.errors import InputError
from orchestrator.ledger import Ledger, PastRow, RunRecord
from orchestrator.memory import Remembered, recalled, worth_remembering
from orchestrator.model import Outcome, TargetState, duration_s, iso, store_key

PAST_RUNS_COMPARED: Final = 30  # how far back a run looks for each target's previous outcome and durations
EXPECTED_FROM: Final = 3  # a job's expected duration: the median of this many of its latest measured successes
SLOWER_RATIO: Final = 1.5  # a duration "grew markedly" at half as long again as last time ...
SLOWER_MIN_S: Final = 1.0  # ... and by at least this much (a 2 s backup taking 3 s is noise)
REOPENED_ON_RESUME: Final = frozenset({Outcome.INTERRUPTED, Outcome.NOT_STARTED})

Key = tuple[str, str]  # `model.store_key`


@dataclass(frozen=True, slots=True)
class PastOutcome:
    """How a target ended in an earlier run: what `changes_since` compares with."""

    outcome: str
    duration_s: float | None
    failing_runs: int = 0  # the finished runs in a row, up to the latest, in which it did not succeed
    failing_since: float | None = None  # when the first of them started


@dataclass(frozen=True, slots=True)
class Past:
    """Each target's latest outcome and expected job duration, and each deployment's memory (None: nothing
    worth remembering), from earlier finished runs over one inventory."""

    previous_run_id: str = ""  # "" when there is no earlier finished run
    outcomes: dict[Key, PastOutcome] = field(default_factory=dict)
    expected_s: dict[Key, float] = field(default_factory=dict)
    remembered: dict[str, Remembered | None] = field(default_factory=dict)

    def changes(self, targets: list[TargetState]) -> dict[str, Any]:
        """What changed since then ({} with nothing to compare with)."""
        if not self.previous_run_id:
            return {}
        return changes_since(self.previous_run_id, self.outcomes, targets)


def read_past(ledger: Ledger, inventory: str, before: float) -> Past:
    """The past of the runs over `inventory` that finished and started before `before`, in one read."""
    return past_of(ledger.past(inventory, before, PAST_RUNS_COMPARED))


def past_of(rows: Iterable[PastRow]) -> Past:
    """Newest run first: a target's first outcome seen is its latest, so a retry or a `--select` run in between
    hides nothing. Its expected duration is the median of its latest EXPECTED_FROM running times the poller
    measured (`poll.measured_run_time`), never "accepted to seen ended", which would feed on itself. A
    deployment's memory is what its latest run with a success went by (`_remember`). Pure."""
    previous_run_id = ""
    outcomes: dict[Key, PastOutcome] = {}
    measured: dict[Key, list[float]] = {}
    streak_over: set[Key] = set()  # a success seen: its failing streak (if any) is counted
    remembered: dict[str, Remembered | None] = {}
    remembered_from: dict[str, str] = {}  # the run each memory comes from
    for row in rows:
        _remember(remembered, remembered_from, row)
        previous_run_id = previous_run_id or row.run_id
        key = store_key(row.deployment, row.store, row.default_store)
        succeeded = row.outcome == Outcome.SUCCEEDED.value
        if key not in outcomes:
            outcomes[key] = PastOutcome(row.outcome, duration_s(row.submitted_at, row.finished_at))
        if succeeded:
            streak_over.add(key)
        elif key not in streak_over:  # one more run back in which it did not succeed
            before = outcomes[key]
            outcomes[key] = replace(before, failing_runs=before.failing_runs + 1, failing_since=row.run_started_at)
        if row.outcome == Outcome.SUCCEEDED.value and row.ran_s is not None:
            durations = measured.setdefault(key, [])
            if len(durations) < EXPECTED_FROM:
                durations.append(row.ran_s)
    expected = {key: statistics.median(durations) for key, durations in measured.items()}
    return Past(previous_run_id, outcomes, expected, remembered)


def _remember(remembered: dict[str, Remembered | None], remembered_from: dict[str, str], row: PastRow) -> None:
    """Learn from one row, newest run first: a deployment's memory is the version its latest run with a success
    went by, and when that was read, with the default store it backed up with success in that run (if it did).
    A 10.9 version, or one a ledger did not date, is not remembered (None), and then no older one either."""
    if row.outcome != Outcome.SUCCEEDED.value:
        return
    name = row.deployment
    if name not in remembered:
        remembered_from[name] = row.run_id
        worth = worth_remembering(row.version, row.facts_read_at)
        read_at = row.facts_read_at if row.facts_read_at is not None else 0.0
        default = row.store if row.default_store else ""
        remembered[name] = Remembered(row.version, default, read_at, row.url) if worth else None
        return
    memory = remembered[name]
    if memory is not None and row.default_store and not memory.default_store and remembered_from[name] == row.run_id:
        remembered[name] = replace(memory, default_store=row.store)


def recall(past: Past, targets: list[TargetState], *, remember_for: float | None, now: float) -> None:
    """Give each target what the past says of it: its job's expected duration and, unless `remember_for` is
    None (a snapshot: nothing remembered), its deployment's memory, `due` once past its age limit. Pure but for
    the targets it fills in."""
    for target in targets:
        target.expected_s = past.expected_s.get(target.store_key)
        if remember_for is not None:
            name, url = target.deployment.name, target.deployment.url
            target.remembered = recalled(past.remembered.get(name), name, url, remember_for, now)


def changes_since(previous_run_id: str, previous: dict[Key, PastOutcome], targets: list[TargetState]) -> dict[str, Any]:
    """What changed since the previous runs over the same inventory. Pure.

    Targets are matched by `store_key` (a default store as "" whatever it resolved to, so a deployment
    that failed before its store was known still matches); a target absent before is new, not a change.
    One that did not succeed now nor last time is `still_failing`: for how many finished runs in a row,
    this one included, and since the start of the first of them.
    """
    newly_failing, recovered, slower, still_failing = [], [], [], []
    for target in targets:
        before = previous.get(target.store_key)
        if before is None:
            continue
        succeeded_now = target.outcome is Outcome.SUCCEEDED
        succeeded_before = before.outcome == Outcome.SUCCEEDED.value
        if succeeded_before and not succeeded_now:
            newly_failing.append({"target": target.key, "outcome": target.outcome.value, "error": target.error})
        elif not succeeded_now and not succeeded_before:
            still_failing.append(
                {
                    "target": target.key,
                    "outcome": target.outcome.value,
                    "error": target.error,
                    "runs": before.failing_runs + 1,  # this run too
                    "since": iso(before.failing_since) if before.failing_since else "",
                }
            )
        elif succeeded_now and not succeeded_before:
            recovered.append({"target": target.key, "previous_outcome": before.outcome})
        now_s, before_s = target.duration_s, before.duration_s
        if (
            succeeded_now
            and succeeded_before
            and now_s is not None
            and before_s is not None
            and now_s >= before_s * SLOWER_RATIO
            and now_s - before_s >= SLOWER_MIN_S
        ):
            slower.append({"target": target.key, "duration_s": now_s, "previous_duration_s": before_s})
    return {
        "previous_run_id": previous_run_id,
        "newly_failing": newly_failing,
        "recovered": recovered,
        "slower": slower,
        "still_failing": still_failing,
    }


# -- resume and retry --


@dataclass(frozen=True, slots=True)
class Resumable:
    """An unfinished run as a resume found it: its targets (those cut short reopened), and a fingerprint of
    the rows as read, to see that nobody changed the run before the resume took the ledger's lock."""

    record: RunRecord
    targets: list[TargetState]
    as_read: tuple[tuple[Any, ...], ...]


def unfinished_run(ledger: Ledger, run_id: str | None) -> Resumable:
    """The run a resume carries on (default: the latest unfinished one); `InputError` for a finished run
    (retry is the way)."""
    record = ledger.run(run_id) if run_id else ledger.last_unfinished()
    if record.state == "finished":
        raise InputError(
            [
                f"run {record.run_id} finished; there is nothing to resume. "
                f"To redo what did not succeed: orchestrator retry {record.run_id}"
            ]
        )
    targets = ledger.targets(record.run_id)
    as_read = resume_fingerprint(targets)
    for target in targets:
        # In an unfinished run, "interrupted" and "not started" can only come from a cut: carried on now.
        if target.outcome in REOPENED_ON_RESUME:
            target.reopen()
    return Resumable(record, targets, as_read)


def resume_fingerprint(targets: list[TargetState]) -> tuple[tuple[Any, ...], ...]:
    """What a resume read of each target. Pure."""
    return tuple((t.index, t.outcome, t.job_id, t.create_intended) for t in targets)


def finished_run(ledger: Ledger, run_id: str) -> tuple[RunRecord, list[TargetState]]:
    """The run a retry repeats and its targets; `InputError` for an unfinished run (resume it first)."""
    record = ledger.run(run_id)
    if record.state != "finished":
        # Its jobs may still be running, and its lost creates may have landed: retrying now could back a
        # target up twice. Resuming settles both.
        raise InputError([f"run {run_id} is unfinished: `orchestrator resume {run_id}` first, then retry what failed"])
    return record, ledger.targets(run_id)


def to_retry(targets: list[TargetState]) -> dict[str, set[str]]:
    """The stores of each deployment whose target did not succeed. Pure."""
    again: dict[str, set[str]] = {}
    for target in targets:
        if target.outcome is not Outcome.SUCCEEDED:
            again.setdefault(target.deployment.name, set()).add(target.store)
    return again
