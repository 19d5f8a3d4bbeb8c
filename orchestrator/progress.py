"""Observers that show a run: a live display on a terminal, one line per event otherwise."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from typing import IO, Any, Final

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.clock import Clock, SystemClock
from orchestrator.events import Event, EventKind
from orchestrator.model import Outcome, Phase, TargetState, iso
from orchestrator.redact import MASK, redact, redact_all

_QUIET_KINDS = frozenset({EventKind.POLLED})


class LogObserver:
    """Plain, timestamped, one line per event (or JSON lines for log shippers). Never a secret.

    As JSON, every line is an object with `ts`, `event` and `run_id`; a line about one deployment has
    `deployment` and `store` as fields of their own (`store` null when the event is about no one store),
    so a log store can filter on them. The command's own lines (the run's first line, Ctrl-C, warnings)
    are written through `say`, so they are JSON lines too."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        json_lines: bool = False,
        verbose: bool = False,
        run_id: str = "",
        clock: Clock | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._json = json_lines
        self._verbose = verbose
        self._run_id = run_id
        self._clock = clock or SystemClock()

    def on_event(self, event: Event) -> None:
        if event.kind in _QUIET_KINDS and not self._verbose:
            return
        # Each value masked before it is written: once serialised, a secret holding `"`, `\\` or a
        # non-ASCII character is escaped, and a log shipper reading the line decodes it back.
        fields: dict[str, Any] = redact_all(_fields(event, self._run_id))
        if self._json:
            line = _json_line(fields)
        else:
            fields.pop("run_id")
            parts = [fields.pop("ts"), fields.pop("event")]
            parts += [f"{key}={value}" for key, value in fields.items() if value not in ("", None)]
            line = redact(" ".join(str(p) for p in parts))  # and the line, as a backstop
        print(line, file=self._stream, flush=True)

    def say(self, event: str, message: str, **fields: str | int | float | bool) -> None:
        """One line of the command's own: `message` as it is in text, or a JSON line of `event` (with the
        message and `fields`) for log shippers."""
        if not self._json:
            print(redact(message), file=self._stream, flush=True)
            return
        record = {"ts": iso(self._clock.now()), "event": event, "run_id": self._run_id, "message": message, **fields}
        print(_json_line(redact_all(record)), file=self._stream, flush=True)


def _json_line(fields: dict[str, Any]) -> str:
    """The record as one JSON line, masked again as a whole (a backstop); if that mask broke the JSON (it cut
    an escape in two), the line says only when and what, never a half-masked value."""
    line = json.dumps(fields)
    masked = redact(line)
    if masked == line:
        return line
    try:
        json.loads(masked)
    except ValueError:
        kept = {key: fields[key] for key in ("ts", "event", "run_id") if fields.get(key)}
        return json.dumps({**kept, "withheld": MASK})
    return masked


def _fields(event: Event, run_id: str = "") -> dict[str, Any]:
    """The event's fields (text lines leave out the empty ones, and `run_id`: the run's first line names it)."""
    fields: dict[str, Any] = {"ts": iso(event.at), "event": event.kind.value, "run_id": run_id}
    target = event.target
    if target is None and event.deployment:
        fields.update(deployment=event.deployment, store=None)  # a request to the deployment, not to a store
    if target is not None:
        fields.update(deployment=target.deployment.name, store=target.store, backup=target.backup_name)
        if target.job_id:
            fields["job"] = target.job_id
        if event.kind is EventKind.FINISHED:
            fields.update(outcome=target.outcome.value, error_class=target.error_class, error=target.error)
            fields["duration_s"] = target.duration_s
    fields.update(event.fields)
    if event.detail:
        fields["detail"] = event.detail
    return fields


_SHOWN: Final = 5  # running jobs and failures the live view names
_MIN_FINISHED_FOR_RATE: Final = 3  # finished in this process before a rate (and an ETA from it) is shown
_WIDE: Final = 120  # columns from which the counts fit in one table
_IN_FLIGHT: Final = (Phase.QUEUED, Phase.SIGNING_IN, Phase.SUBMITTING, Phase.RUNNING, Phase.CONFIRMING)
_ENDED: Final = (
    Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.INTERRUPTED, Outcome.NOT_STARTED, Outcome.SKIPPED
)  # fmt: skip
_JOB_PHASES: Final = frozenset({Phase.SUBMITTING, Phase.RUNNING, Phase.CONFIRMING})
_FAILURES: Final = frozenset({Outcome.FAILED, Outcome.TIMED_OUT})
_GRACE_DETAIL: Final = "interrupted"  # how the runner's Ctrl-C stop starts its event detail (a grace follows)


class LiveProgress:
    """A live view on a terminal: every target counted by phase and outcome, what this process finished
    and how fast, an ETA only when one can be told, the oldest running jobs, the latest failures, and
    after Ctrl-C how long running jobs are still followed. Fits an 80-column terminal."""

    def __init__(
        self,
        targets: list[TargetState],
        clock: Clock,
        console: Console | None = None,
        *,
        grace: float | None = None,
    ) -> None:
        self._targets = targets
        self._clock = clock
        self._grace = grace
        self._started = clock.now()
        # A resume's targets already ended: counted, never taken for this process's throughput.
        self._ended_before = frozenset(t.index for t in targets if t.finished)
        self._stop_note = ""
        self._grace_ends: float | None = None
        self._live = Live(
            console=console or Console(stderr=True),
            get_renderable=self._render,  # re-rendered at every refresh, so ages and the countdown move
            refresh_per_second=4,
            transient=False,
        )

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.__exit__(None, None, None)

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.STOPPED_SUBMITTING and not self._stop_note:  # the first reason stays
            self._stop_note = redact(event.detail)
            if self._grace is not None and event.detail.startswith(_GRACE_DETAIL):
                self._grace_ends = event.at + self._grace
        if event.kind is not EventKind.POLLED:
            self._live.refresh()

    def _render(self) -> Group:
        now = self._clock.now()
        parts: list[RenderableType] = [Text(self._headline(now)), _Counts(self._targets)]
        stopping = self._stopping_line(now)
        if stopping:
            parts.append(Text(stopping, style="bold yellow"))
        running = _oldest_running(self._targets, now)
        if running:
            parts.append(_running_table(running, now))
        failures = _latest_failures(self._targets)
        if failures:
            parts.append(_failures_table(failures))
        return Group(*parts)

    def _headline(self, now: float) -> str:
        total = len(self._targets)
        done = sum(1 for t in self._targets if t.finished)
        here = sum(1 for t in self._targets if t.finished and t.index not in self._ended_before)
        elapsed = max(now - self._started, 1e-9)
        line = f"{done}/{total} targets done"
        if self._ended_before:
            line += f" ({len(self._ended_before)} before resume)"
        if here >= _MIN_FINISHED_FOR_RATE:
            line += f" - {here / elapsed * 60:.1f}/min"
        if done < total:
            line += f" - ETA {self._eta(now, here / elapsed if here >= _MIN_FINISHED_FOR_RATE else None)}"
        return line

    def _eta(self, now: float, rate: float | None) -> str:
        """How long the rest should take: the running jobs' expected durations where known, this process's
        throughput for the others; none while neither can tell, and a job past its expected time is said."""
        unfinished = [t for t in self._targets if not t.finished]
        known = [
            t.expected_s - (now - t.job_started_at(now))
            for t in unfinished
            if t.phase in _JOB_PHASES and t.expected_s is not None and t.submitted_at is not None
        ]
        overdue = sum(1 for left in known if left < 0)
        late = f", {overdue} job{'s' if overdue > 1 else ''} overdue" if overdue else ""
        unknown = len(unfinished) - len(known)
        estimates = [max(known)] if known else []
        if unknown:
            if rate is None:
                return f"not yet known{late}"
            estimates.append(unknown / rate)
        longest = max(estimates)
        return f"unknown{late}" if longest <= 0 else f"{_duration(longest)}{late}"

    def _stopping_line(self, now: float) -> str:
        if not self._stop_note:
            return ""
        if self._grace_ends is None:
            return f"stopped submitting: {self._stop_note}"
        left = self._grace_ends - now
        if left > 0:
            return f"stopping: following running jobs for {math.ceil(left)} s more (Ctrl-C again to stop at once)"
        return "stopping: the grace period is over; ending the run"


class _Counts:
    """Every target once: in flight by phase, ended by outcome; one table when wide, two when narrow."""

    def __init__(self, targets: list[TargetState]) -> None:
        phases = Counter(t.phase for t in targets if not t.finished)
        outcomes = Counter(t.outcome for t in targets if t.finished)
        self.in_flight = [(p.value.replace("_", " "), phases.get(p, 0)) for p in _IN_FLIGHT]
        self.ended = [(o.value.replace("_", " "), outcomes.get(o, 0)) for o in _ENDED]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        groups = [self.in_flight + self.ended] if options.max_width >= _WIDE else [self.in_flight, self.ended]
        for counts in groups:
            table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
            for name, _ in counts:
                table.add_column(name, justify="right", no_wrap=True)
            table.add_row(*(str(n) for _, n in counts))
            yield table


def _oldest_running(targets: list[TargetState], now: float) -> list[TargetState]:
    jobs = [t for t in targets if not t.finished and t.phase in _JOB_PHASES and t.submitted_at is not None]
    return sorted(jobs, key=lambda t: t.job_started_at(now))[:_SHOWN]


def _latest_failures(targets: list[TargetState]) -> list[TargetState]:
    failed = [t for t in targets if t.outcome in _FAILURES]
    return sorted(failed, key=lambda t: t.finished_at or 0.0)[-_SHOWN:]


def _running_table(jobs: list[TargetState], now: float) -> Table:
    table = Table(title="oldest running jobs", title_justify="left", box=None, padding=(0, 1), show_edge=False)
    table.add_column("deployment/store", overflow="ellipsis", no_wrap=True, max_width=44)
    table.add_column("phase", no_wrap=True, min_width=10)
    table.add_column("age", justify="right", no_wrap=True, min_width=6)
    table.add_column("expected", justify="right", no_wrap=True, min_width=8)
    for job in jobs:
        expected = _duration(job.expected_s) if job.expected_s is not None else "-"
        age = _duration(now - job.job_started_at(now))
        table.add_row(Text(redact(job.key)), job.phase.value.replace("_", " "), age, expected)  # Text: no markup
    return table


def _failures_table(failures: list[TargetState]) -> Table:
    table = Table(title="latest failures", title_justify="left", box=None, padding=(0, 1), show_edge=False)
    table.add_column("deployment/store", overflow="ellipsis", no_wrap=True, min_width=16, max_width=32)
    table.add_column("class", overflow="ellipsis", no_wrap=True, min_width=13, max_width=16)
    table.add_column("reason", overflow="ellipsis", no_wrap=True, min_width=20)
    for target in failures:
        reason = " ".join(target.error.split()) or target.outcome.value
        cells = (redact(target.key), target.error_class or target.outcome.value, redact(reason))
        table.add_row(*(Text(cell) for cell in cells))  # as written: `[redacted]` is no markup to rich
    return table


def _duration(seconds: float) -> str:
    """A duration to read at a glance: `42 s`, `4m05s`, `2h03m`."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
