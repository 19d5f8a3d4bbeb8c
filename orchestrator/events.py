"""What stages tell observers (the progress display, the log), so no stage prints anything itself."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from orchestrator.model import TargetState


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


class Observer(Protocol):
    def on_event(self, event: Event) -> None: ...


class Observers:
    """Fans one event out to several observers."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers

    def on_event(self, event: Event) -> None:
        for observer in self._observers:
            observer.on_event(event)
