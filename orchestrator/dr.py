"""The disaster-recovery rules of the ArcGIS admin API, as pure functions, and what a stage needs of one
deployment (`DeploymentApi`, a protocol: the real one is `api.ArcGISClient`, tests use fakes).

The stages (`submit`, `poll`) import this module, never the HTTP package: how a DR status, a job or a
refusal is read does not depend on how it travelled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, Final, Protocol

from orchestrator.errors import ErrorClass, TargetError
from orchestrator.untrusted import shown

# 10.9's DR states that end a job, and the job status each stands for.
LEGACY_DONE_STATES: Final = {"success": "COMPLETED", "completed_with_warnings": "COMPLETED", "failed": "FAILED"}
IDLE_DR_STATES: Final = frozenset({"no_op", *LEGACY_DONE_STATES})  # any other state means a DR job runs
FAILED_STATUSES: Final = frozenset({"FAILED", "CANCELLED", "TIMED OUT", "TIME OUT", "TIMEDOUT", "ERROR"})
NEVER_EXPIRES: Final = -1  # the retentionDate of a backup kept until someone deletes it
_MS_LIMIT: Final = 10**14  # epoch ms past the year 5000: not a time
CLOCK_SKEW_S: Final = 300.0  # how far the server's clock may be from ours when matching a job to a create


class JobApi(Protocol):
    """What the poller needs of a deployment."""

    async def job(self, job_id: str) -> dict[str, Any]: ...

    async def backup_names(self, store: str) -> set[str]: ...

    async def dr_status(self) -> dict[str, Any]: ...


class DeploymentApi(JobApi, Protocol):
    """What a worker needs of a deployment. Its first request signs in. `version` says which paths its requests
    take (10.9's or the others'): `detect_version` reads it, or a worker sets it from memory (`memory`)."""

    version: str

    async def detect_version(self) -> str: ...

    async def default_store(self) -> str: ...

    async def create_backup(
        self, store: str, name: str, passcode: str, description: str, retention_ms: int | None
    ) -> str: ...

    async def job_ids(self) -> list[str]: ...

    @property
    def legacy(self) -> bool:
        """10.9: its DR status names no backup, and it has no jobs list."""
        ...


@cache
def is_legacy(version: str) -> bool:
    """Whether a version is 10.9 (before 10.9.1), which has only the `backuprestore` paths. Pure; asked at
    every request, so remembered."""
    cleaned = clean_version(version)
    parts = tuple(int(p) for p in cleaned.split(".")[:3]) if cleaned else ()
    return bool(parts) and parts < (10, 9, 1)


_VERSION: Final = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}")


def clean_version(value: Any) -> str | None:
    """A server's version if it reads as one (ASCII digits and dots, short), else None. Pure."""
    text = str(value).strip() if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    return text if _VERSION.fullmatch(text) else None


def same_release(backup_release: str, version: str) -> bool:
    """Whether a backup's release is the deployment's version: 11.3 is 11.3.0; text that is not a version
    must match exactly. Pure."""

    def parts(text: str) -> tuple[int, ...] | None:
        cleaned = clean_version(text)
        if cleaned is None:
            return None
        numbers = [int(p) for p in cleaned.split(".")]
        while len(numbers) > 1 and numbers[-1] == 0:
            numbers.pop()
        return tuple(numbers)

    ours, theirs = parts(backup_release), parts(version)
    if ours is None or theirs is None:
        return bool(backup_release) and backup_release.strip() == version.strip()
    return ours == theirs


def is_store_name(name: Any) -> bool:
    """Whether a server's store name can be used as one: text, short, printable (it goes into paths, reports
    and logs). Pure."""
    return isinstance(name, str) and 0 < len(name) <= 128 and shown(name, 128) == name


def default_store_of(stores: list[dict[str, Any]]) -> str | None:
    """The store a deployment backs up to by default: the one marked default, or its only store (a name that
    is not one counts as none). Pure."""
    named = [s for s in stores if is_store_name(s.get("name"))]
    defaults = [str(s["name"]) for s in named if s.get("default") is True]
    if defaults:
        return defaults[0]
    return str(named[0]["name"]) if len(stores) == 1 and named else None


def store_names(stores: list[dict[str, Any]]) -> list[str]:
    """The names in a stores list, sorted. Pure."""
    return sorted(str(s["name"]) for s in stores if is_store_name(s.get("name")))


def no_such_store(store: str, names: list[str]) -> str:
    """Why a store asked for is not there, naming those that are. Pure."""
    return f"no store {store!r} (has: {', '.join(names) or 'none'})"


@dataclass(frozen=True, slots=True)
class Backup:
    """One entry of a store's backups list, as far as it could be read."""

    name: str
    status: str  # lower-case, as listed: completed, failed, ...
    release: str
    started_at: float | None
    completed_at: float | None
    retention_until: float | None  # None: kept forever

    @property
    def good(self) -> bool:
        return self.status == "completed" and self.completed_at is not None

    @property
    def at(self) -> float | None:
        """When it ended, or else began: what orders backups of any status."""
        return self.completed_at if self.completed_at is not None else self.started_at

    def expired(self, now: float) -> bool:
        return self.retention_until is not None and self.retention_until <= now


def read_backups(entries: Any) -> list[Backup]:
    """A store's backups list as values, read defensively: entries that are not objects are left out; times
    are the server's epoch milliseconds, as seconds, and one that is not a plausible time is absent; an
    unreadable retention date counts as kept for no time at all (never as forever). Pure."""
    if not isinstance(entries, list):
        return []
    backups = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        completed_at = _epoch(entry.get("completeTime"))
        status = entry.get("status")
        backups.append(
            Backup(
                name=shown(entry.get("backupName", ""), 200),
                status=shown(status, 40).lower() if isinstance(status, str) else "",
                release=shown(entry.get("release", ""), 40) if entry.get("release") is not None else "",
                started_at=_epoch(entry.get("startTime")),
                completed_at=completed_at,
                retention_until=_retention(entry.get("retentionDate"), completed_at),
            )
        )
    return backups


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not (isinstance(value, int) or math.isfinite(value)) or not 0 < value < _MS_LIMIT:
        return None
    return value / 1000


def _retention(value: Any, completed_at: float | None) -> float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value == NEVER_EXPIRES):
        return None  # kept until someone deletes it
    until = _epoch(value)
    if until is None:  # unreadable: as if kept no time at all
        return completed_at if completed_at is not None else 0.0
    return until


class Verdict(StrEnum):
    WAIT = "wait"  # not finished, or not saying: poll again later
    CONFIRM = "confirm"  # says COMPLETED: look for the backup
    FAILED = "failed"


def judge_job(body: dict[str, Any]) -> tuple[Verdict, str, str]:
    """(verdict, status as the server spelled it, failure reason). Pure; tolerant of any shape."""
    status = body.get("status")
    if not isinstance(status, str):
        return Verdict.WAIT, "", ""
    normalized = status.strip().upper()
    if normalized == "COMPLETED":
        return Verdict.CONFIRM, status, ""
    if normalized in FAILED_STATUSES:
        messages = body.get("messages")
        listed = messages if isinstance(messages, list) else []
        texts = [str(m.get("message", m)) if isinstance(m, dict) else str(m) for m in listed]
        reason = "; ".join(text for text in texts if text.strip()) or f"the job ended {status} without messages"
        return Verdict.FAILED, status, reason
    return Verdict.WAIT, status, ""


def legacy_job(status: Mapping[str, Any]) -> dict[str, Any]:
    """10.9's DR status as the job body it stands in for (10.9 has no jobs resource; one DR job runs at a
    time and ours is the last one submitted, so the status is ours). Pure."""
    state = status.get("state")
    messages = status.get("messages")
    if not isinstance(state, str) or state not in LEGACY_DONE_STATES:
        return {"status": "EXECUTING"}  # 10.9 says "running" by leaving the state out
    return {"status": LEGACY_DONE_STATES[state], "messages": messages if isinstance(messages, list) else []}


def dr_job_running(status: Mapping[str, Any]) -> bool:
    """Whether a DR status describes a job still running: documented end states aside, it is. Pure."""
    if not status:
        return False
    return status.get("state") not in IDLE_DR_STATES


def dr_status_started(status: Mapping[str, Any]) -> float:
    """When the job a DR status describes started (epoch ms, the server's clock); 0.0 for none. Pure.

    10.9.1+ says `startTime`; 10.9 says it in its first message's `when`.
    """
    if status.get("state") == "no_op":
        return 0.0
    started = status.get("startTime")
    messages = status.get("messages")
    if started is None and isinstance(messages, list) and messages and isinstance(messages[0], dict):
        started = messages[0].get("when")
    if not isinstance(started, int | float) or isinstance(started, bool) or started <= 0:
        return 0.0
    return float(started)


def dr_status_is_ours(status: Mapping[str, Any], backup_name: str, store: str, mark: float | None) -> bool:
    """Whether a DR status describes the job of our create of `backup_name`. Pure.

    10.9.1+ names the backup it describes. 10.9 names none: there, `mark` is the start of the job the
    status described just before our first create (0.0: none). A job that started since (a different
    start) can only be ours, as one DR job runs at a time; with no mark (a resumed run) we cannot tell.
    No clock is compared, so a server clock far from ours does not matter.
    """
    named = status.get("backupName")
    if isinstance(named, str):
        return named == backup_name and status.get("backupStore", store) == store
    if mark is None:
        return False
    started = dr_status_started(status)
    return started > 0 and started != mark


def dr_status_message(status: Mapping[str, Any]) -> str:
    """What a DR status says of its job: its `message` (10.9.1+), or its last message (10.9). Pure."""
    message = status.get("message")
    if isinstance(message, str) and message:
        return message
    messages = status.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1].get("message")
        if isinstance(last, str) and last:
            return last
    return "no message"


def is_our_create_job(job: Mapping[str, Any], store: str, since: float) -> bool:
    """Whether a job is a backup create on `store` started no earlier than `since` (our clock, seconds),
    allowing CLOCK_SKEW_S for the server's clock. Pure."""
    uri, started = job.get("operationURI"), job.get("starttime")
    recent = isinstance(started, int | float) and started >= (since - CLOCK_SKEW_S) * 1000
    return isinstance(uri, str) and uri.endswith(f"/stores/{store}/backups/create") and recent


def is_duplicate_name(error: TargetError) -> bool:
    """The server's refusal of a backup name that already exists. Pure."""
    return error.error_class is ErrorClass.PERMANENT and "already exists" in error.message.lower()
