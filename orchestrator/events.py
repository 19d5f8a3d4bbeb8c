"""What stages tell observers (the progress display, the log, the ledger), so no stage prints anything itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from orchestrator.clock import Clock
from orchestrator.errors import TargetError
from orchestrator.model import Deployment, TargetState


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    SUBMITTED = "submitted"
    POLLED = "polled"
    RETRY = "retry"
    FINISHED = "finished"
    STOPPED_SUBMITTING = "stopped_submitting"
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    at: float
    target: TargetState | None = None
    detail: str = ""
    # An event about one deployment but no target of it (a request retried): which one, for the log's field.
    deployment: str = ""
    fields: tuple[tuple[str, str | float], ...] = ()  # more the log writes as fields of its own


class Observer(Protocol):
    def on_event(self, event: Event) -> None: ...


class Observers:
    """Fans one event out to several observers."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers

    def on_event(self, event: Event) -> None:
        for observer in self._observers:
            observer.on_event(event)


def retries_told_to(observer: Observer, clock: Clock) -> Callable[[Deployment, TargetError, float], None]:
    """A client's retry hook (`api.OnRetry`) that tells `observer` of each retry as a RETRY event."""

    def on_retry(deployment: Deployment, error: TargetError, delay: float) -> None:
        detail = f"{error.message}; retrying in {delay:.1f} s"
        fields = (("error_class", error.error_class.value), ("delay_s", round(delay, 3)))
        observer.on_event(Event(EventKind.RETRY, clock.now(), None, detail, deployment.name, fields))

    return on_retry
