"""One simulated deployment: its tokens, stores, DR jobs and backups.

The state is evolved lazily: a job's whole timeline (queued, executing, terminal, backup visible) is
drawn when it is created, and every read asks "what is true at `now`". That is what lets one process
hold 10,000 deployments with no timer per job, and a manual clock step through hours in a test.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Final

from orchestrator.simulator.config import (
    KNOWN_VERSIONS,
    DeploymentPlan,
    ErrorCodes,
    Quirks,
    full_version,
    version_tuple,
)
from orchestrator.simulator.history import SeededHistory, seed_history
from orchestrator.simulator.jobs import (
    NEVER_EXPIRES,
    STAGE_NAMES,
    ApiError,
    Backup,
    Job,
    JobStatus,
    deterministic_id,
    job_id_for,
    ms,
)

MIN_PASSCODE_LENGTH: Final = 8


@dataclass
class Deployment:
    """The server-side state of one ArcGIS Enterprise deployment."""

    plan: DeploymentPlan
    seed: int
    password: str
    quirks: Quirks
    codes: ErrorCodes
    token_default_minutes: int
    token_max_minutes: int
    fleet_started_at: float
    timeout_s: float = 0.0
    tokens: dict[str, float] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    backups: dict[str, dict[str, Backup]] = field(default_factory=dict)
    last_dr_job: Job | None = None
    history: SeededHistory = field(init=False)  # the backups seeded before the fleet started, and why
    _unsettled: list[Job] = field(default_factory=list)
    _next_expiry: float = math.inf
    _job_counter: int = 0
    _fault_rng: random.Random | None = None
    _job_rng: random.Random | None = None

    def __post_init__(self) -> None:
        self.timeout_s = self.plan.job_timeout_s
        # The store lists start with the history (none, and no draw at all, when the plan's has no days).
        self.history, self.backups = seed_history(
            self.plan, self.seed, self.fleet_started_at, self.quirks.backup_release_suffix
        )
        self._next_expiry = self.history.earliest_expiry

    # -- randomness, one seeded stream per purpose so draws of one kind never shift the other --
    @property
    def fault_rng(self) -> random.Random:
        if self._fault_rng is None:
            self._fault_rng = random.Random(f"{self.seed}:{self.plan.name}:faults")
        return self._fault_rng

    @property
    def job_rng(self) -> random.Random:
        if self._job_rng is None:
            self._job_rng = random.Random(f"{self.seed}:{self.plan.name}:jobs")
        return self._job_rng

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def full_version(self) -> str:
        return full_version(self.plan.version)

    def is_down(self, now: float) -> bool:
        if self.plan.down is None:
            return False
        opens, closes = self.plan.down
        return opens <= now - self.fleet_started_at < closes

    def reconfigure(
        self, *, version: str | None = None, stores: tuple[str, ...] | None = None, default_store: str | None = None
    ) -> None:
        """What an administrator does between two nights: upgrade it (`version`), register or remove stores
        (`stores`: a new one starts empty, a removed one takes its backups with it), make another the default."""
        version = version or self.plan.version
        stores = stores if stores is not None else self.plan.stores
        default_store = default_store if default_store is not None else self.plan.default_store
        if version not in KNOWN_VERSIONS:
            raise ValueError(f"unknown version {version!r}; use one of {', '.join(KNOWN_VERSIONS)}")
        if default_store not in stores:
            raise ValueError(f"the default store {default_store!r} is not one of the stores {stores!r}")
        self.plan = replace(self.plan, version=version, stores=stores, default_store=default_store)
        self.backups = {store: self.backups.get(store, {}) for store in stores}

    # -- time --
    def settle(self, now: float) -> None:
        """Bring the state up to `now`: finished jobs leave their backups, the retention cleaner runs."""
        if self._unsettled:
            still = []
            for job in self._unsettled:
                if now >= job.work_done_at:
                    self._finish(job)
                else:
                    still.append(job)
            self._unsettled = still
        if now >= self._next_expiry:
            self._clean_expired(now)
        if self.quirks.job_ttl_s is not None:
            ttl = self.quirks.job_ttl_s
            for job_id in [j.job_id for j in self.jobs.values() if j.settled and now - j.work_done_at > ttl]:
                del self.jobs[job_id]

    def _finish(self, job: Job) -> None:
        job.settled = True
        if job.makes_backup:
            backup = Backup(
                name=job.backup_name,
                store=job.store,
                release=self.full_version + self.quirks.backup_release_suffix,
                description=job.description,
                started_at=job.created_at,
                completed_at=job.work_done_at,
                retention_ms=job.retention_ms,
            )
            if job.store in self.backups:  # a store removed while the job ran takes the backup with it
                self.backups[job.store][job.backup_name] = backup
            if job.retention_ms != NEVER_EXPIRES:
                self._next_expiry = min(self._next_expiry, job.retention_ms / 1000)

    def _clean_expired(self, now: float) -> None:
        """The BackupRetentionCleaner: backups whose retentionDate has passed are removed."""
        next_expiry = math.inf
        for store in self.backups.values():
            for name in list(store):
                retention = store[name].retention_ms
                if retention == NEVER_EXPIRES:
                    continue
                if retention / 1000 <= now:
                    del store[name]
                else:
                    next_expiry = min(next_expiry, retention / 1000)
        self._next_expiry = next_expiry

    def running_job(self, now: float) -> Job | None:
        job = self.last_dr_job
        return job if job is not None and job.is_running_at(now) else None

    # -- tokens --
    def issue_token(self, username: str, password: str, expiration: str, now: float) -> dict[str, Any]:
        if not username or not password:
            missing = "username" if not username else "password"
            raise ApiError(400, "Unable to generate token.", [f"'{missing}' must be specified."])
        accepted = self.password + ("-rotated" if self.plan.wrong_credentials else "")
        if username != self.plan.username or not secrets.compare_digest(password, accepted):
            raise ApiError(400, "Unable to generate token.", ["Invalid username or password."])
        try:
            minutes = float(expiration) if expiration else float(self.token_default_minutes)
        except ValueError:
            raise ApiError(400, "Unable to generate token.", ["Invalid expiration."]) from None
        lifetime = min(max(minutes, 1.0), self.token_max_minutes) * 60
        if self.plan.faults.token_lifetime_s is not None:
            lifetime = min(lifetime, self.plan.faults.token_lifetime_s)
        self._forget_expired_tokens(now)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now + lifetime
        return {"token": token, "expires": ms(now + lifetime), "ssl": True}

    def _forget_expired_tokens(self, now: float) -> None:
        if len(self.tokens) > 16:
            for token in [t for t, expires in self.tokens.items() if expires <= now]:
                del self.tokens[token]

    def check_token(self, token: str | None, now: float) -> None:
        if not token:
            raise ApiError(499, "Token Required", ["Token Required"], message_code="GWM_0003")
        expires = self.tokens.get(token)
        if expires is None or expires <= now:
            raise ApiError(498, "Invalid token.")

    # -- stores and backups --
    def check_store(self, name: str) -> None:
        if name not in self.backups:
            raise ApiError(self.codes.unknown_store, f"Backup store '{name}' does not exist.")

    def store(self, name: str) -> dict[str, Any]:
        """A store's entry, as in the stores list; newer releases' keys (`versionCreated`, `providerID`,
        `serviceID`) included, which Esri's admin CLI prints."""
        self.check_store(name)
        identity = deterministic_id(self.seed, self.name, name, length=20)
        return {
            "default": name == self.plan.default_store,
            "storageConfig": {"storageClass": "backups", "size": "64Gi", "provisioningType": "DYNAMIC"},
            "identity": identity,
            "name": name,
            "identityKey": deterministic_id("key", identity, length=43) + "=",
            "rootDir": "rootdir",
            "type": "HOSTED",
            "versionCreated": self.history.registered_at,
            "providerID": deterministic_id("provider", identity),
            "serviceID": deterministic_id("service", identity),
        }

    def backup(self, store: str, name: str) -> Backup:
        self.check_store(store)
        found = self.backups[store].get(name)
        if found is None:
            raise ApiError(self.codes.not_found, f"Backup '{name}' does not exist in store '{store}'.")
        return found

    def create_backup(
        self,
        *,
        store: str,
        name: str,
        passcode: str,
        description: str,
        retention: str,
        username: str,
        operation_uri: str,
        now: float,
    ) -> Job:
        self.check_store(store)
        if not name:
            raise ApiError(400, "Unable to create backup.", ["'name' must be specified."])
        if len(passcode) < MIN_PASSCODE_LENGTH:
            raise ApiError(
                self.codes.bad_passcode,
                "Unable to create backup.",
                [f"The passcode must be at least {MIN_PASSCODE_LENGTH} characters long."],
            )
        retention_ms = _parse_retention(retention)
        if name in self.backups[store] or any(
            j.backup_name == name and j.store == store for j in self._unsettled if j.makes_backup
        ):
            raise ApiError(self.codes.duplicate_name, "Unable to create backup.", [f"Backup '{name}' already exists."])
        running = self.running_job(now)
        if running is not None:
            raise ApiError(
                self.codes.job_running,
                "Unable to create backup.",
                [f"Another disaster recovery operation is in progress (job {running.job_id})."],
            )
        job = self._plan_backup_job(store, name, description, retention_ms, username, operation_uri, now)
        self.jobs[job.job_id] = job
        self._unsettled.append(job)
        self.last_dr_job = job
        return job

    def _plan_backup_job(
        self,
        store: str,
        name: str,
        description: str,
        retention_ms: int,
        username: str,
        operation_uri: str,
        now: float,
    ) -> Job:
        rng = self.job_rng
        duration = self.plan.job_duration.sample(rng)
        fails = rng.random() < self.plan.faults.job_failure
        fail_point = rng.uniform(0.2, 0.9)
        version = self.plan.version
        messages: tuple[str, ...]
        if duration > self.timeout_s:
            final, end, messages = (
                JobStatus.CANCELLED,
                now + self.timeout_s,
                (f"The backup job was cancelled: it ran longer than timeoutInSeconds ({self.timeout_s:g}).",),
            )
        elif fails:
            stage = STAGE_NAMES[min(len(STAGE_NAMES) - 1, int(fail_point * len(STAGE_NAMES)))]
            final, end, messages = (
                JobStatus.FAILED,
                now + duration * fail_point,
                (f"Backup failed during stage '{stage}': the staging volume could not be written.",),
            )
        else:
            final, end, messages = JobStatus.COMPLETED, now + duration, ()
        instant = final is JobStatus.COMPLETED and version in self.quirks.instant_complete_versions
        self._job_counter += 1
        return Job(
            job_id=job_id_for(self.seed, self.name, self._job_counter),
            deployment=self.name,
            operation="backup",
            store=store,
            backup_name=name,
            username=username,
            operation_uri=operation_uri,
            created_at=now,
            executing_at=now + (end - now) * self.quirks.queue_fraction,
            reported_end_at=now if instant else end,
            final_status=final,
            work_done_at=end,
            makes_backup=final is JobStatus.COMPLETED,
            messages=messages,
            include_result=version not in self.quirks.no_result_versions,
            description=description,
            retention_ms=retention_ms,
        )

    def delete_backup(self, store: str, name: str, as_job: bool, username: str, uri: str, now: float) -> Job | None:
        self.backup(store, name)
        del self.backups[store][name]
        if not as_job:
            return None
        self._job_counter += 1
        job = Job(
            job_id=job_id_for(self.seed, self.name, self._job_counter),
            deployment=self.name,
            operation="delete",
            store=store,
            backup_name=name,
            username=username,
            operation_uri=uri,
            created_at=now,
            executing_at=now,
            reported_end_at=now,
            final_status=JobStatus.COMPLETED,
            work_done_at=now,
            makes_backup=False,
            settled=True,
        )
        self.jobs[job.job_id] = job
        return job

    def update_retention(self, store: str, name: str, retention: str) -> None:
        backup = self.backup(store, name)
        backup.retention_ms = _parse_retention(retention)
        if backup.retention_ms != NEVER_EXPIRES:
            self._next_expiry = min(self._next_expiry, backup.retention_ms / 1000)

    def job(self, job_id: str) -> Job:
        found = self.jobs.get(job_id)
        if found is None:
            raise ApiError(self.codes.not_found, f"Job '{job_id}' does not exist.")
        return found

    # -- DR settings and status --
    def settings(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "stagingVolumeConfig": {
                "component": "DR_JOB",
                "storageClass": "default",
                "size": "64Gi",
                "provisioningType": "DYNAMIC",
            }
        }
        if self.plan.has_timeout_setting:
            body["timeoutInSeconds"] = self.timeout_s
        return body

    def update_settings(self, settings: dict[str, Any]) -> None:
        if "timeoutInSeconds" in settings:
            if not self.plan.has_timeout_setting:
                raise ApiError(400, "Unable to update settings.", ["timeoutInSeconds needs 11.0 or later."])
            value = settings["timeoutInSeconds"]
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ApiError(400, "Unable to update settings.", ["timeoutInSeconds must be a positive number."])
            self.timeout_s = float(value)

    def dr_status(self, now: float) -> dict[str, Any]:
        job = self.last_dr_job
        if job is None:
            return {"status": {"code": 0, "messages": [], "state": "no_op"}}
        running = job.is_running_at(now)
        # The reference knows the end states (success, failed, ...) and that anything else means
        # running; the running spelling is not documented: [SIM] "running" (10.9: no state at all).
        state = "running" if running else {JobStatus.COMPLETED: "success"}.get(job.final_status, "failed")
        if version_tuple(self.plan.version) < (10, 9, 1):
            messages = [{"code": 4014, "message": "Started backup process.", "when": ms(job.created_at)}]
            if running:
                return {"status": {"code": 3, "messages": messages}}
            text = "Backup completed." if state == "success" else "; ".join(job.messages)
            messages.append({"code": 4015, "message": text, "when": ms(job.work_done_at)})
            return {"status": {"code": 3, "messages": messages, "state": state}}
        elapsed = (min(now, job.work_done_at) - job.created_at) * 1000
        return {
            "status": {
                "code": 3,
                "scheduleType": "MANUAL",
                "stages": job.stages(now),
                "startTime": ms(job.created_at),
                "completeTime": 0 if running else ms(job.work_done_at),
                "state": state,
                "backupStore": job.store,
                "message": "; ".join(job.messages) if not running else "",
                "operation": "Backup",
                "overallDuration": _duration_text(elapsed),
                "backupName": job.backup_name,
            }
        }


def _parse_retention(retention: str) -> int:
    if retention in ("", None):
        return NEVER_EXPIRES
    try:
        value = int(retention)
    except ValueError:
        raise ApiError(400, "Invalid retentionDate.", ["retentionDate must be epoch milliseconds or -1."]) from None
    if value != NEVER_EXPIRES and value <= 0:
        raise ApiError(400, "Invalid retentionDate.", ["retentionDate must be epoch milliseconds or -1."])
    return value


def _duration_text(millis: float) -> str:
    total = int(millis)
    hours, rest = divmod(total, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis_left = divmod(rest, 1000)
    return f"{hours:02d}hr:{minutes:02d}min:{seconds:02d}sec:{millis_left}millisec"
