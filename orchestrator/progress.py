"""Observers that show a run: a live display on a terminal, one line per event otherwise."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.clock import Clock
from orchestrator.events import Event, EventKind
from orchestrator.model import Outcome, Phase, TargetState, iso
from orchestrator.redact import MASK, redact, redact_all

_QUIET_KINDS = frozenset({EventKind.POLLED})


class LogObserver:
    """Plain, timestamped, one line per event (or JSON lines for log shippers). Never a secret."""

    def __init__(self, stream: IO[str] | None = None, *, json_lines: bool = False, verbose: bool = False) -> None:
        self._stream = stream or sys.stderr
        self._json = json_lines
        self._verbose = verbose

    def on_event(self, event: Event) -> None:
        if event.kind in _QUIET_KINDS and not self._verbose:
            return
        # Each value masked before it is written: once serialised, a secret holding `"`, `\\` or a
        # non-ASCII character is escaped, and a log shipper reading the line decodes it back.
        fields: dict[str, Any] = redact_all(_fields(event))
        if self._json:
            line = _json_line(fields)
        else:
            parts = [fields.pop("ts"), fields.pop("event")]
            parts += [f"{key}={value}" for key, value in fields.items() if value not in ("", None)]
            line = redact(" ".join(str(p) for p in parts))  # and the line, as a backstop
        print(line, file=self._stream, flush=True)


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
        return json.dumps({"ts": fields["ts"], "event": fields["event"], "withheld": MASK})
    return masked


def _fields(event: Event) -> dict[str, Any]:
    fields: dict[str, Any] = {"ts": iso(event.at), "event": event.kind.value}
    target = event.target
    if target is not None:
        fields.update(deployment=target.deployment.name, store=target.store, backup=target.backup_name)
        if target.job_id:
            fields["job"] = target.job_id
        if event.kind is EventKind.FINISHED:
            fields.update(outcome=target.outcome.value, error_class=target.error_class, error=target.error)
            fields["duration_s"] = target.duration_s
    if event.detail:
        fields["detail"] = event.detail
    return fields


class LiveProgress:
    """A live table on a terminal: targets by phase and outcome, throughput and ETA."""

    def __init__(self, targets: list[TargetState], clock: Clock, console: Console | None = None) -> None:
        self._targets = targets
        self._clock = clock
        self._started = clock.now()
        self._notes: list[str] = []
        self._live = Live(
            self._render(), console=console or Console(stderr=True), refresh_per_second=4, transient=False
        )

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.update(self._render())
        self._live.__exit__(None, None, None)

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.STOPPED_SUBMITTING:
            self._notes.append(redact(event.detail))
        if event.kind is not EventKind.POLLED:
            self._live.update(self._render())

    def _render(self) -> Table:
        phases = Counter(t.phase for t in self._targets if not t.finished)
        outcomes = Counter(t.outcome for t in self._targets if t.finished)
        done, total = sum(outcomes.values()), len(self._targets)
        elapsed = max(self._clock.now() - self._started, 1e-9)
        rate = done / elapsed
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 and done < total else "-"
        table = Table(title=f"{done}/{total} targets done - {rate * 60:.1f}/min - ETA {eta}", show_header=True)
        for phase in (Phase.QUEUED, Phase.SIGNING_IN, Phase.SUBMITTING, Phase.RUNNING, Phase.CONFIRMING):
            table.add_column(phase.value.replace("_", " "), justify="right")
        for outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.SKIPPED):
            table.add_column(outcome.value.replace("_", " "), justify="right")
        table.add_row(
            *(
                str(phases.get(p, 0))
                for p in (Phase.QUEUED, Phase.SIGNING_IN, Phase.SUBMITTING, Phase.RUNNING, Phase.CONFIRMING)
            ),
            *(str(outcomes.get(o, 0)) for o in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.SKIPPED)),
        )
        if self._notes:
            table.caption = self._notes[-1]
        return table
