"""The plain values every stage shares: a deployment, a target and what became of it, a run's result.

`TargetState` is the target record, defined here once: the ledger derives its table, its rows and how
it reads them back from these fields (`ledger.TARGET_COLUMNS`); the report's one table of columns
(`report.REPORT_COLUMNS`) reads them. A field marked `RUNTIME_ONLY` lives for one process and is not
kept; one marked `SERVER_TEXT` holds what a server said and is redacted wherever it is written. Adding
a field to the record means adding it here (and, for old ledgers, naming it in `ledger.ADDED_COLUMNS`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pydantic import SecretStr

from orchestrator.errors import ErrorClass, TargetError
from orchestrator.memory import Remembered
from orchestrator.settings import RunSettings

RUNTIME_ONLY: Final = MappingProxyType({"kept": False})  # rebuilt by every run: not a ledger column
SERVER_TEXT: Final = MappingProxyType({"server_text": True})  # a server's words: redacted wherever written
DEFAULT_STORE: Final = ""  # the deployment's default store, not yet asked of the server


def iso(epoch: float | None) -> str:
    """An epoch time as ISO 8601 UTC with a Z, to the second; "" for none."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_timestamp(started_at: float) -> str:
    return datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%dT%H%M%SZ")


def new_run_id(started_at: float, rng: random.Random) -> str:
    return f"{run_timestamp(started_at)}-{rng.getrandbits(24):06x}"


@dataclass(frozen=True, slots=True)
class Deployment:
    """One ArcGIS Enterprise deployment to back up, with its secrets resolved (and kept as SecretStr).

    The fields with a `column` are what the ledger keeps of it: enough to report, never a secret.
    """

    name: str = field(metadata={"column": "deployment"})
    url: str = field(metadata={"column": "url"})  # root including the web context, no trailing slash
    tags: tuple[str, ...] = field(metadata={"column": "tags"})
    stores: tuple[str, ...]  # empty: the deployment's default store, asked of the server
    username: str
    password: SecretStr = field(repr=False)
    passcode: SecretStr = field(repr=False)
    retention_days: float | None
    ca_bundle: Path | None
    verify_tls: bool = field(metadata={"column": "verify_tls"})
    source: str  # file:line, for messages

    @classmethod
    def recorded(cls, name: str, url: str, tags: tuple[str, ...], verify_tls: bool) -> Deployment:
        """A deployment as the ledger knows it: no credentials (none are needed to report on it)."""
        return cls(name, url, tags, (), "", SecretStr(""), SecretStr(""), None, None, verify_tls, "ledger")


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


def duration_s(submitted_at: float | None, finished_at: float | None) -> float | None:
    """A target's duration as reports show it and runs are compared by: first create to end, in ms. Pure."""
    if submitted_at is None or finished_at is None:
        return None
    return round(finished_at - submitted_at, 3)


def store_key(deployment: str, store: str, default_store: bool) -> tuple[str, str]:
    """Which target of the inventory this is, across runs: a default store is matched as "the default",
    whatever it resolved to. Pure."""
    return (deployment, "" if default_store else store)


@dataclass(slots=True)
class TargetState:
    """One target (deployment x store) and what became of it, filled in as the run goes."""

    index: int = field(metadata={"column": "idx"})
    deployment: Deployment  # kept as the deployment's own columns (see `Deployment`)
    store: str
    backup_name: str
    retention_ms: int | None  # epoch ms the backup may be deleted; None: never expires
    create_intended: bool = False  # the intent to create is on record: a create may have reached the server
    accepted_at: float | None = None  # when the server accepted the create: the job timeout counts from here
    default_store: bool = False  # the inventory named no store: the deployment's default one is backed up
    outcome: Outcome = Outcome.PENDING
    job_id: str = ""
    server_status: str = field(default="", metadata=SERVER_TEXT)
    error_class: str = ""
    error: str = field(default="", metadata=SERVER_TEXT)
    attempts: int = 0
    polls: int = 0
    submitted_at: float | None = None
    finished_at: float | None = None
    notes: list[str] = field(default_factory=list, metadata=SERVER_TEXT)
    # How long its job ran, as this run measured it (`poll.measured_run_time`); None when it could not tell.
    ran_s: float | None = None
    # The deployment's version as read before the backup (a snapshot's preflight: its backup must be of it), or
    # as its worker went by (read, or remembered from an earlier run: `memory`).
    version: str = ""
    # A snapshot's backup was found in its store's list, completed and of `version` (`snapshot.verify_targets`).
    verified: bool = False
    # When the version (and, for a default store, the store) its worker went by were last read from the server:
    # by this run, or by the earlier one it remembered them from (`memory`). None before its worker had them.
    facts_read_at: float | None = None
    phase: Phase = field(default=Phase.QUEUED, metadata=RUNTIME_ONLY)
    # 10.9 only: the start of the DR job its status described before our first create (0.0: none), so a
    # job started since can be told for ours (`dr.dr_status_is_ours`).
    dr_mark: float | None = field(default=None, metadata=RUNTIME_ONLY)
    # How long this target's job ran in earlier runs (the ledger's history), if known.
    expected_s: float | None = field(default=None, metadata=RUNTIME_ONLY)
    # Its deployment's version and default store as earlier runs read them (`history.recall`), if any.
    remembered: Remembered | None = field(default=None, metadata=RUNTIME_ONLY)

    def __post_init__(self) -> None:
        if self.finished:
            self.phase = Phase.DONE  # read back from the ledger already ended

    @property
    def key(self) -> str:
        return f"{self.deployment.name}/{self.store or '(default store)'}"

    @property
    def store_key(self) -> tuple[str, str]:
        return store_key(self.deployment.name, self.store, self.default_store)

    @property
    def finished(self) -> bool:
        return self.outcome is not Outcome.PENDING

    @property
    def duration_s(self) -> float | None:
        return duration_s(self.submitted_at, self.finished_at)

    def job_started_at(self, otherwise: float) -> float:
        """When its job began running: the server's acceptance, or else the first create attempt."""
        if self.accepted_at is not None:
            return self.accepted_at
        return self.submitted_at if self.submitted_at is not None else otherwise

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

    def refute(self, error: TargetError) -> None:
        """A success the check after its job did not bear out (a snapshot's backup not restorable): failed."""
        self.outcome, self.error_class, self.error = Outcome.FAILED, error.error_class.value, error.message

    def fail(self, error: TargetError, now: float) -> None:
        outcome = Outcome.TIMED_OUT if error.error_class is ErrorClass.JOB_TIMED_OUT else Outcome.FAILED
        self.finish(outcome, now, error)

    def reopen(self) -> None:
        """Carried on by a resume: an outcome that only a cut can have given (Ctrl-C, a kill) is taken back."""
        self.outcome, self.error_class, self.error, self.finished_at = Outcome.PENDING, "", "", None
        self.phase = Phase.QUEUED


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


@dataclass(slots=True)
class RunResult:
    """A finished run: every target with its outcome, and what the report says about the run as a whole."""

    run_id: str
    started_at: float
    finished_at: float
    targets: list[TargetState]
    settings: RunSettings
    inventory: str
    stopped_reason: str = ""  # why submitting stopped early (failure threshold, deadline, interrupt)
    kind: str = "run"  # run | retry | demo
    parent_run_id: str = ""  # the run a retry repeats
    changes: dict[str, Any] = field(default_factory=dict)  # against the previous runs over the same inventory

    @property
    def jobs_may_still_run(self) -> bool:
        """A target was interrupted while its job ran: the run stays resumable until that job is followed."""
        return any(target.outcome is Outcome.INTERRUPTED for target in self.targets)
