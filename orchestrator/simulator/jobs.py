"""A simulated DR job and the backup it leaves: each job's whole timeline is drawn when it is created, and
every read asks what is true at `now` (`Job.status_at`), so no job needs a timer of its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

NEVER_EXPIRES: Final = -1
STAGE_NAMES: Final = (
    "Validation",
    "Stage Relational store",
    "Stage Object store",
    "Stage system configuration",
    "Post backup operation cleanup",
)


class JobStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    EXECUTING = "EXECUTING"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    COMPLETED = "COMPLETED"
    UNAVAILABLE = "UNAVAILABLE"


class ApiError(Exception):
    """An error the deployment answers with the `{"error": {...}}` envelope."""

    def __init__(self, code: int, message: str, details: list[str] | None = None, message_code: str = ""):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.details = details or []
        self.message_code = message_code

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "details": self.details}
        if self.message_code:
            body["messageCode"] = self.message_code
        return {"error": body}


def ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(slots=True)
class Backup:
    """A backup in a store's list: made by a job created through the API, or seeded history (`history.py`)."""

    name: str
    store: str
    release: str
    description: str
    started_at: float
    completed_at: float  # when it completed, or failed
    retention_ms: int
    status: Literal["completed", "failed"] = "completed"  # only seeded history has failed ones
    schedule_type: Literal["MANUAL", "SCHEDULED"] = "MANUAL"  # SCHEDULED: seeded history

    def to_json(self) -> dict[str, Any]:
        start, end = ms(self.started_at), ms(self.completed_at)
        middle = (start + end) // 2
        return {
            "backupName": self.name,
            "status": self.status,
            "release": self.release,
            "siteName": "arcgis",
            "description": self.description,
            "startTime": start,
            "completeTime": end,
            "backupStore": self.store,
            "retentionDate": self.retention_ms,
            "backupType": "FULL",
            "scheduleType": self.schedule_type,
            "namespace": "arcgis",
            "relationalStore": [{"startTime": start, "endTime": middle, "status": "completed"}],
            # A failed backup failed staging its object store, after the relational one.
            "objectStore": [{"startTime": middle, "endTime": end, "status": self.status}],
        }


@dataclass(slots=True)
class Job:
    """A DR job with its whole timeline fixed at creation."""

    job_id: str
    deployment: str
    operation: str  # "backup" or "delete"
    store: str
    backup_name: str
    username: str
    operation_uri: str
    created_at: float
    executing_at: float  # SUBMITTED before this
    reported_end_at: float  # the job resource reports `final_status` from here on
    final_status: JobStatus
    work_done_at: float  # the server really finished (DR lock released, backup visible if any)
    makes_backup: bool
    messages: tuple[str, ...] = ()
    include_result: bool = True
    description: str = ""
    retention_ms: int = NEVER_EXPIRES
    settled: bool = False

    def status_at(self, now: float) -> JobStatus:
        if now >= self.reported_end_at:
            return self.final_status
        return JobStatus.SUBMITTED if now < self.executing_at else JobStatus.EXECUTING

    def is_running_at(self, now: float) -> bool:
        return now < self.work_done_at

    def to_json(self, now: float, status: JobStatus | None = None) -> dict[str, Any]:
        status = status or self.status_at(now)
        ended = now >= self.reported_end_at
        updated = self.reported_end_at if ended else (self.executing_at if now >= self.executing_at else None)
        body: dict[str, Any] = {
            "jobid": self.job_id,
            "status": status.value,
            "starttime": ms(self.created_at),
            "endtime": ms(self.reported_end_at) if ended else 0,
            "updatedtime": ms(updated if updated is not None else self.created_at),
            "username": self.username,
            "operationURI": self.operation_uri,
        }
        if ended and self.final_status is JobStatus.COMPLETED and self.include_result:
            body["result"] = {"stages": self.stages(self.reported_end_at)}
        if ended and self.messages:
            body["messages"] = list(self.messages)
        return body

    def progress(self, now: float) -> float:
        span = self.work_done_at - self.created_at
        return 1.0 if span <= 0 else min(1.0, max(0.0, (now - self.created_at) / span))

    def stages(self, now: float) -> list[dict[str, Any]]:
        done = self.progress(now) * len(STAGE_NAMES)
        each = ms((self.work_done_at - self.created_at) / len(STAGE_NAMES))
        out = []
        for i, name in enumerate(STAGE_NAMES):
            state = "completed" if done >= i + 1 else ("in_progress" if done >= i else "pending")
            out.append(
                {
                    "name": name,
                    "state": state,
                    "duration": f"{each} millis (~ {each // 60_000} minutes)",
                    "lastUpdated": ms(min(now, self.work_done_at)),
                }
            )
        return out


def deterministic_id(*parts: object, length: int = 32) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:length]


def job_id_for(*parts: object) -> str:
    h = deterministic_id(*parts)
    return f"j{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
