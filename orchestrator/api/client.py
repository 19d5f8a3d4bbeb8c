"""The ArcGIS resources a run uses, for one deployment (`ArcGISClient`, a `dr.DeploymentApi`).

Every request is signed (`auth`), sent on the deployment's `Link` (`transport`) and read by `answers`;
a token the server refuses is renewed once; transient errors are retried as the run's `Retry` allows,
except where the caller says not to (a create is reconciled before any second one; a poll is simply
polled again later). Paths follow the version: 10.9 has only the `backuprestore` ones.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from orchestrator.api.answers import TOKEN_REFUSED
from orchestrator.api.auth import TokenCache
from orchestrator.api.transport import Link, Transport, open_transport
from orchestrator.backoff import Retry
from orchestrator.clock import Clock
from orchestrator.dr import clean_version, default_store_of, is_legacy, legacy_job
from orchestrator.errors import ErrorClass, SignInFailed, TargetError
from orchestrator.guard import last_word, reached
from orchestrator.model import Deployment
from orchestrator.settings import ConnectionSettings

_DR: Final = "/admin/system/disasterrecovery"
NO_DEFAULT_STORE: Final = "no default backup store; name the stores in the inventory"
_JOB_ID: Final = re.compile(r"[\x21-\x7e]{1,200}")

OnRetry = Callable[[Deployment, TargetError, float], None]


@dataclass(slots=True)
class ApiContext:
    """What every client of a run shares: the transport, the retry policy, randomness, who hears of retries."""

    transport: Transport
    rng: random.Random
    on_retry: OnRetry | None = None
    # The run's deadline (epoch seconds): no retry starts after it, so a create whose sign-in was being
    # retried is never sent once submitting has stopped.
    not_after: float | None = None
    retry: Retry = field(init=False)  # made once, not per request

    def __post_init__(self) -> None:
        self.retry = self.transport.settings.retry_policy

    @property
    def settings(self) -> ConnectionSettings:
        return self.transport.settings

    @property
    def clock(self) -> Clock:
        return self.transport.clock


@asynccontextmanager
async def open_api_context(
    settings: ConnectionSettings,
    clock: Clock,
    rng: random.Random,
    on_retry: OnRetry | None = None,
    not_after: float | None = None,
) -> AsyncIterator[ApiContext]:
    async with open_transport(settings, clock) as transport:
        yield ApiContext(transport, rng, on_retry, not_after)


@dataclass(slots=True)
class ArcGISClient:
    """One deployment's admin API."""

    deployment: Deployment
    context: ApiContext
    version: str = ""  # its `fullVersion`, once `detect_version` has read it
    link: Link = field(init=False)
    _tokens: TokenCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.link = Link(self.context.transport, self.deployment)
        self._tokens = TokenCache(self.deployment, self.context.settings.token_minutes, self.context.clock)

    @property
    def legacy(self) -> bool:
        """10.9 has only the `backuprestore` paths."""
        return is_legacy(self.version)

    async def call(
        self, path: str, form: Mapping[str, str] | None = None, *, retry: bool = True, urgent: bool = False
    ) -> dict[str, Any]:
        """One admin request, signed; renews a refused token once; retries transient errors (and attempts that
        did not reach the deployment) for the run's retry budget, unless `retry` is False (a failed sign-in
        before it is retried all the same: the request was never sent). Once they are spent, the last
        error is raised as `guard.last_word` has it: `unreachable` only if no attempt reached the deployment.
        `urgent`: following a job, served before the fan-out's requests (`guard.RequestSlots`)."""
        policy, ctx = self.context.retry, self.context
        attempt, renewed, reached_once = 0, False, False
        started = ctx.clock.now()
        # No wait of this request (retry or pacing) ends after its budget, nor after the run's deadline.
        limit = min(started + policy.budget, ctx.not_after if ctx.not_after is not None else math.inf)
        while True:
            try:
                return await self._signed(path, form or {}, urgent, limit)
            except TargetError as error:
                if error.code in TOKEN_REFUSED and not renewed:
                    renewed = True  # expired or revoked under us: one fresh token, then no more
                    continue
                reached_once = reached_once or reached(error)
                elapsed = ctx.clock.now() - started
                if not ((retry or isinstance(error, SignInFailed)) and policy.again(error, attempt, elapsed)):
                    raise last_word(error, reached_once) from None
                delay = policy.delay(error, attempt, ctx.rng, elapsed)
                if ctx.not_after is not None and ctx.clock.now() + delay > ctx.not_after:
                    raise last_word(error, reached_once) from None  # the run's deadline comes first
                attempt += 1
                if ctx.on_retry is not None:
                    ctx.on_retry(self.deployment, error, delay)
            await ctx.clock.sleep(delay)  # no request slot is held while waiting

    async def _signed(self, path: str, form: Mapping[str, str], urgent: bool, limit: float) -> dict[str, Any]:
        async with self.link.slot(urgent=urgent, not_after=limit):
            token = await self._tokens.token(self.link)
            try:
                return await self.link.post(path, form, token)
            except TargetError as error:
                if error.code in TOKEN_REFUSED:
                    self._tokens.discard(token)
                raise

    # -- resources --
    async def detect_version(self) -> str:
        """Its version (`fullVersion`), "" when it says none; as the first request of a worker, it signs in.
        One that is not a version (ASCII digits and dots, short) is the deployment's permanent failure: the
        paths to use and the release a backup must have both depend on it."""
        root = await self.call("/admin")
        raw = root.get("fullVersion") or root.get("currentVersion")
        version = clean_version(raw) if raw is not None else ""
        if version is None:
            raise TargetError(ErrorClass.PERMANENT, f"the server's version {str(raw)[:40]!r} is not a version")
        self.version = version
        return version

    async def release(self) -> str:
        """Its version, which a backup is compared with: one it does not say is the deployment's permanent
        failure too. Signs in, as `detect_version`."""
        version = await self.detect_version()
        if not version:
            raise TargetError(ErrorClass.PERMANENT, "the server does not say its version (fullVersion)")
        return version

    async def default_store(self) -> str:
        default = default_store_of(await self.store_list())
        if default is None:
            raise TargetError(ErrorClass.CONFIGURATION, NO_DEFAULT_STORE)
        return default

    async def store_list(self) -> list[dict[str, Any]]:
        body = await self.call(f"{_DR}/stores")
        stores = body.get("backupStores")
        if not isinstance(stores, list):
            raise TargetError(ErrorClass.PERMANENT, "stores answer without backupStores")
        return [s for s in stores if isinstance(s, dict)]

    async def create_backup(
        self, store: str, name: str, passcode: str, description: str, retention_ms: int | None
    ) -> str:
        """Submit the backup; returns the job id. Not retried here: a retry needs reconciling first."""
        form = {"name": name, "passcode": passcode, "description": description}
        if retention_ms is not None:
            form["retentionDate"] = str(retention_ms)
        if self.legacy:
            path = f"{_DR}/backuprestore/backup"
            form["storeName"] = store
        else:
            path = f"{_DR}/stores/{quote(store, safe='')}/backups/create"
        body = await self.call(path, form, retry=False)
        job_id = body.get("jobid")
        if not isinstance(job_id, str) or not job_id:
            raise TargetError(ErrorClass.PERMANENT, "create answered without a jobid", ambiguous=True)
        if not _JOB_ID.fullmatch(job_id):  # it goes into URLs, reports and logs: printable, no space, short
            raise TargetError(ErrorClass.PERMANENT, "create answered a jobid that is not one", ambiguous=True)
        return job_id

    async def job(self, job_id: str) -> dict[str, Any]:
        if self.legacy:  # no jobs resource: the DR status stands in for the job
            return legacy_job(await self.dr_status())
        return await self.call(f"/admin/jobs/{quote(job_id, safe='')}", retry=False, urgent=True)

    async def job_ids(self) -> list[str]:
        if self.legacy:
            return []
        jobs = (await self.call("/admin/jobs")).get("jobs")
        return [j for j in jobs if isinstance(j, str) and _JOB_ID.fullmatch(j)] if isinstance(jobs, list) else []

    async def backups(self, store: str, *, urgent: bool = False) -> list[Any]:
        """Every entry of a store's backups list, as the server sent it."""
        if self.legacy:
            body = await self.call(f"{_DR}/backuprestore/backups", {"storeName": store}, urgent=urgent)
        else:
            body = await self.call(f"{_DR}/stores/{quote(store, safe='')}/backups", urgent=urgent)
        backups = body.get("backups")
        if not isinstance(backups, list):
            raise TargetError(ErrorClass.PERMANENT, "backups answer without a backups list")
        return backups

    async def backup_names(self, store: str) -> set[str]:
        return {
            b["backupName"]
            for b in await self.backups(store, urgent=True)
            if isinstance(b, dict)
            and isinstance(b.get("backupName"), str)
            and b.get("status", "completed") == "completed"
        }

    async def dr_status(self) -> dict[str, Any]:
        path = f"{_DR}/backuprestore/status" if self.legacy else f"{_DR}/status"
        status = (await self.call(path, urgent=True)).get("status")
        return status if isinstance(status, dict) else {}


@asynccontextmanager
async def open_clients(
    settings: ConnectionSettings, clock: Clock, rng: random.Random, on_retry: OnRetry | None = None
) -> AsyncIterator[Callable[[Deployment], ArcGISClient]]:
    """A client per deployment, all on one HTTP session for the run (what `runner.run_fleet` takes)."""
    async with open_api_context(settings, clock, rng, on_retry) as context:
        yield lambda deployment: ArcGISClient(deployment, context)
