"""Targets (deployment x store) and what became of each: the values every stage updates and the report reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from orchestrator.errors import ErrorClass, TargetError
from orchestrator.inventory import Deployment

DEFAULT_STORE: Final = ""  # the deployment's default store, not yet asked of the server


class Outcome(StrEnum):
    PENDING = "pending"  # only while the run is going; never in a finished report
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    NOT_STARTED = "not_started"  # the run was interrupted before this target was reached
    INTERRUPTED = "interrupted"  # submitted, but the run ended before the job did
    SKIPPED = "skipped"  # not submitted: the run stopped submitting (failure threshold or deadline)


class Phase(StrEnum):
    QUEUED = "queued"
    SIGNING_IN = "signing_in"
    SUBMITTING = "submitting"
    RUNNING = "running"
    CONFIRMING = "confirming"
    DONE = "done"


def store_key(deployment: str, store: str, default_store: bool) -> tuple[str, str]:
    """Which target of the inventory this is, across runs: a default store is matched as "the default",
    whatever it resolved to. Pure."""
    return (deployment, "" if default_store else store)


@dataclass(slots=True)
class TargetState:
    """One row of the report, filled in as the run goes."""

    index: int
    deployment: Deployment
    store: str
    backup_name: str
    retention_ms: int | None
    phase: Phase = Phase.QUEUED
    outcome: Outcome = Outcome.PENDING
    job_id: str = ""
    server_status: str = ""
    error_class: str = ""
    error: str = ""
    attempts: int = 0
    polls: int = 0
    create_intended: bool = False  # the intent to create is on record: a create may have reached the server
    accepted_at: float | None = None  # when the server accepted the create: the job timeout counts from here
    default_store: bool = False  # the inventory named no store: the deployment's default one is backed up
    # 10.9 only, not kept in the ledger: the start of the DR job its status described before our first
    # create (0.0: none), so a job started since can be told for ours (`api.dr_status_is_ours`).
    dr_mark: float | None = None
    expected_s: float | None = None  # how long this target's job ran in earlier runs (the ledger), if known
    # How long its job ran, as this run measured it (`poll.measured_run_time`); None when it could not tell.
    ran_s: float | None = None

    def job_started_at(self, otherwise: float) -> float:
        """When its job began running: the server's acceptance, or else the first create attempt."""
        if self.accepted_at is not None:
            return self.accepted_at
        return self.submitted_at if self.submitted_at is not None else otherwise

    @property
    def store_key(self) -> tuple[str, str]:
        return store_key(self.deployment.name, self.store, self.default_store)

    submitted_at: float | None = None
    finished_at: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.deployment.name}/{self.store or '(default store)'}"

    @property
    def finished(self) -> bool:
        return self.outcome is not Outcome.PENDING

    @property
    def duration_s(self) -> float | None:
        if self.submitted_at is None or self.finished_at is None:
            return None
        return round(self.finished_at - self.submitted_at, 3)

    def finish(self, outcome: Outcome, now: float, error: TargetError | None = None, reason: str = "") -> None:
        if self.finished:
            return
        self.outcome = outcome
        self.phase = Phase.DONE
        self.finished_at = now
        if error is not None:
            self.error_class = error.error_class.value
            self.error = error.message
        elif reason:
            self.error = reason

    def fail(self, error: TargetError, now: float) -> None:
        outcome = Outcome.TIMED_OUT if error.error_class is ErrorClass.JOB_TIMED_OUT else Outcome.FAILED
        self.finish(outcome, now, error)


def run_timestamp(started_at: float) -> str:
    return datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%dT%H%M%SZ")


def backup_name(template: str, *, deployment: str, store: str, run_id: str, started_at: float) -> str:
    return template.format(
        timestamp=run_timestamp(started_at), deployment=deployment, store=store or "default", run_id=run_id
    )


def retention_ms(retention_days: float | None, started_at: float) -> int | None:
    """Epoch milliseconds when the backup may be deleted; None (never expires) without a retention."""
    if retention_days is None:
        return None
    return round((started_at + retention_days * 86_400) * 1000)


def build_targets(
    deployments: list[Deployment], *, name_template: str, run_id: str, started_at: float
) -> list[TargetState]:
    """One target per deployment and store, in inventory order. Pure."""
    targets: list[TargetState] = []
    for deployment in deployments:
        for store in deployment.stores or (DEFAULT_STORE,):
            targets.append(
                TargetState(
                    index=len(targets),
                    deployment=deployment,
                    store=store,
                    backup_name=backup_name(
                        name_template, deployment=deployment.name, store=store, run_id=run_id, started_at=started_at
                    ),
                    retention_ms=retention_ms(deployment.retention_days, started_at),
                    default_store=store == DEFAULT_STORE,
                )
            )
    return targets
