"""The only module that speaks HTTP to ArcGIS Enterprise.

Every request is a POST with a form body and `f=json`; the token travels in the
`X-Esri-Authorization` header, never in a URL. Every answer is checked for the `{"error": ...}`
envelope whatever its HTTP status, and every failure becomes a classified `TargetError`.
"""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
import anyio

from orchestrator.backoff import Backoff, parse_retry_after, retry_delay
from orchestrator.clock import Clock
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.guard import CircuitBreaker, Pacer, RequestSlots
from orchestrator.model import Deployment
from orchestrator.redact import remember_token
from orchestrator.settings import RunSettings

MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # a DR answer is a few KiB; anything huge is refused unread
_TRANSIENT_HTTP: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
# A gateway error or a server crash may come after the server carried the request out.
_MAYBE_CARRIED_OUT_HTTP: Final = frozenset({500, 502, 504})
# Envelope codes worth retrying. An envelope 500 is the server's own verdict (12.0's
# `JSONObject["supportBDSBackup"] not found`), which no retry changes.
_TRANSIENT_ENVELOPE: Final = frozenset({429, 503})
_LEGACY_DONE_STATES: Final = {"success": "COMPLETED", "completed_with_warnings": "COMPLETED", "failed": "FAILED"}
IDLE_DR_STATES: Final = frozenset({"no_op", *_LEGACY_DONE_STATES})  # any other state means a DR job runs
CLOCK_SKEW_S: Final = 300.0  # how far the server's clock may be from ours when matching a job to a create


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


_DR: Final = "/admin/system/disasterrecovery"
_FORM: Final = "application/x-www-form-urlencoded"


@dataclass(slots=True)
class ApiContext:
    """What every client of a run shares: one HTTP session, the request cap, time and randomness."""

    http: aiohttp.ClientSession
    settings: RunSettings
    clock: Clock
    rng: random.Random
    request_limiter: RequestSlots
    on_retry: OnRetry | None = None


OnRetry = Callable[[Deployment, TargetError, float], None]


@cache
def _is_legacy(version: str) -> bool:
    """Whether a version is 10.9 (before 10.9.1). Pure; asked at every request, so remembered."""
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    return bool(parts) and parts < (10, 9, 1)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, however many pieces it arrives in; a body over the cap is refused, not kept."""
    declared = response.content_length
    if declared is not None and declared <= MAX_BODY_BYTES:
        return await response.read()  # the usual small answer, in one piece (a longer body is cut at the length)
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TargetError(ErrorClass.PERMANENT, f"answer larger than {MAX_BODY_BYTES} bytes refused")
        chunks.append(chunk)
    return b"".join(chunks)


@asynccontextmanager
async def open_api_context(
    settings: RunSettings, clock: Clock, rng: random.Random, on_retry: OnRetry | None = None
) -> AsyncIterator[ApiContext]:
    """One HTTP session for a whole run, with the run's cap on requests in flight."""
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield ApiContext(http, settings, clock, rng, RequestSlots(settings.concurrency), on_retry)


def _refused(error: TargetError) -> TargetError:
    """A sign-in failure as the run reports it: refused credentials are final (retrying them only risks
    locking the account); a network or configuration problem stays what it is."""
    if error.transient or error.error_class in (ErrorClass.CONFIGURATION, ErrorClass.UNREACHABLE):
        return error
    return TargetError(ErrorClass.AUTHENTICATION, f"sign-in refused: {error.message}", code=error.code)


@cache
def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


def interpret(status: int, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
    """Turn one HTTP answer into its JSON object, or raise the classified error it stands for. Pure."""
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if 300 <= status < 400:
        target = headers.get("Location", "?")
        raise TargetError(ErrorClass.PERMANENT, f"HTTP {status} redirect to {target!r} not followed", code=status)
    parsed: Any = None
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python will parse
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        raise envelope_error(parsed["error"], retry_after)
    if isinstance(parsed, dict) and parsed.get("error"):  # an error said as a bare value: still an error
        raise envelope_error({"message": str(parsed["error"])}, retry_after)
    if 200 <= status < 300 and isinstance(parsed, dict) and _is_classic_error(parsed):
        # On any other status the status line says more (a 502 stays transient and ambiguous).
        messages = parsed.get("messages")
        text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else ""
        code = parsed.get("code")
        if isinstance(code, str) and code.strip().isdigit():
            code = int(code)
        raise envelope_error({"code": code, "message": text or "error"}, retry_after)
    if status in _TRANSIENT_HTTP:
        raise TargetError(
            ErrorClass.TRANSIENT,
            f"HTTP {status}",
            retry_after=retry_after,
            code=status,
            ambiguous=status in _MAYBE_CARRIED_OUT_HTTP,
        )
    if status in (401, 403):
        raise TargetError(ErrorClass.AUTHENTICATION, f"HTTP {status}: access refused", code=status)
    if status == 404:
        raise TargetError(ErrorClass.CONFIGURATION, "HTTP 404: no such path (check the URL and web context)", code=404)
    if not 200 <= status < 300:
        raise TargetError(ErrorClass.PERMANENT, f"HTTP {status}", code=status)
    if parsed is None:
        kind = (
            "an HTML page"
            if body.lstrip()[:1] == b"<"
            else ("an empty body" if not body else "a body that is not JSON")
        )
        # A 2xx that cannot be read may still have been carried out (a create, say): ambiguous.
        raise TargetError(
            ErrorClass.PERMANENT, f"answered {kind} instead of JSON (a proxy or login page?)", ambiguous=True
        )
    if not isinstance(parsed, dict):
        raise TargetError(
            ErrorClass.PERMANENT, f"answered JSON {type(parsed).__name__}, expected an object", ambiguous=True
        )
    return parsed


def _is_classic_error(body: Mapping[str, Any]) -> bool:
    """The classic admin APIs' error: `{"status": "error", "messages": [...], "code": 498}`. Pure.

    A job that ended `ERROR` says so too, but carries its `jobid`; this one is about the request
    (an expired token, say), and judged as a failed job it would fail a backup that is running fine.
    """
    status = body.get("status")
    return isinstance(status, str) and status.strip().lower() == "error" and "jobid" not in body


def envelope_error(error: Mapping[str, Any], retry_after: float | None = None) -> TargetError:
    """Classify ArcGIS's `{"error": {"code", "message", "details"}}`."""
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = str(error.get("message") or "error")
    details = error.get("details")
    detail_text = "; ".join(str(d) for d in details) if isinstance(details, list) else ""
    text = (f"{code} {message}" if code is not None else message) + (f" ({detail_text})" if detail_text else "")
    lowered = text.lower()
    if (
        code in (498, 499)
        or error.get("messageCode") == "GWM_0003"
        or code in (401, 403)
        or "unable to generate token" in lowered
    ):
        error_class = ErrorClass.AUTHENTICATION
    elif code == 404 or "does not exist" in lowered:
        error_class = ErrorClass.CONFIGURATION
    elif "in progress" in lowered or code in _TRANSIENT_ENVELOPE:
        error_class = ErrorClass.TRANSIENT
    else:
        error_class = ErrorClass.PERMANENT
    return TargetError(error_class, text, retry_after=retry_after, code=code)


@dataclass(slots=True)
class ArcGISClient:
    """One deployment's admin API: a cached token, retries of transient errors, version-aware paths."""

    deployment: Deployment
    context: ApiContext
    version: str = ""
    requests: int = 0
    _token: str | None = field(default=None, repr=False)
    _token_expires: float = 0.0  # when to renew it: a margin before it expires
    _token_deadline: float = 0.0  # when it expires
    _token_lock: anyio.Lock = field(default_factory=anyio.Lock)
    _breaker: CircuitBreaker = field(init=False)
    _pacer: Pacer = field(default_factory=Pacer)

    def __post_init__(self) -> None:
        settings = self.context.settings
        self._breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown)

    @property
    def legacy(self) -> bool:
        """10.9 has only the `backuprestore` paths."""
        return _is_legacy(self.version)

    # -- transport --
    async def _send(
        self, path: str, form: Mapping[str, str], token: str | None, *, urgent: bool = False
    ) -> dict[str, Any]:
        settings, ctx = self.context.settings, self.context
        open_for = self._breaker.open_for(ctx.clock.now())
        if open_for > 0:
            raise TargetError(
                ErrorClass.UNREACHABLE,
                f"unreachable: {self._breaker.failures} connection failures in a row; "
                f"left alone for {settings.breaker_cooldown:g} s at a time",
                retry_after=open_for,
            )
        wait = self._pacer.wait(ctx.clock.now())
        if wait > 0:
            await ctx.clock.sleep(wait)  # throttled by this deployment: no request slot is held meanwhile
        async with ctx.request_limiter.slot(urgent=urgent):
            if token is not None:
                # The newest token (another request may have renewed it while this one queued); if it
                # expired in the queue, renewed here, in this same slot, so a token bought is always used.
                alive = self._token if self._token and ctx.clock.now() < self._token_deadline else None
                token = alive or await self._sign_in_now()
            headers = {"X-Esri-Authorization": f"Bearer {token}"} if token else {}
            return await self._post(path, form, headers)

    async def _post(self, path: str, form: Mapping[str, str], headers: Mapping[str, str]) -> dict[str, Any]:
        """One POST and its interpretation; the caller holds a request slot."""
        settings, ctx = self.context.settings, self.context
        ssl_option: ssl.SSLContext | bool = (
            _ssl_context(self.deployment.ca_bundle) if self.deployment.verify_tls else False
        )
        timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout, connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self.requests += 1
        self._pacer.sent(ctx.clock.now())
        try:
            async with ctx.http.post(
                self.deployment.url + path,
                # Encoded here: aiohttp's form machinery costs more CPU than the rest of a request.
                data=urlencode({"f": "json", **form}).encode(),
                headers={**headers, "Content-Type": _FORM},
                ssl=ssl_option,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                self._breaker.answered()
                body = await _read_capped(response)
                answer = interpret(response.status, response.headers, body, ctx.clock.now())
                self._pacer.answered()
                return answer
        except TargetError as error:
            if error.code in (429, 503):  # the deployment asks for less: every request to it slows
                self._pacer.throttled(ctx.clock.now(), error.retry_after)
            raise
        except TimeoutError:
            self._breaker.transport_failed(ctx.clock.now())
            raise TargetError(
                ErrorClass.TRANSIENT,
                f"no answer within the time allowed ({settings.request_timeout:g} s in all, "
                f"{settings.read_timeout:g} s of silence)",
                ambiguous=True,
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TargetError(
                ErrorClass.CONFIGURATION, f"TLS certificate not trusted: {exc.certificate_error}"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            self._breaker.transport_failed(ctx.clock.now())
            raise TargetError(ErrorClass.TRANSIENT, f"cannot connect: {exc.os_error.strerror or exc}") from None
        except aiohttp.ClientError as exc:
            self._breaker.transport_failed(ctx.clock.now())
            reason = type(exc).__name__
            raise TargetError(ErrorClass.TRANSIENT, f"connection lost ({reason})", ambiguous=True) from None

    async def call(
        self, path: str, form: Mapping[str, str] | None = None, *, retry: bool = True, urgent: bool = False
    ) -> dict[str, Any]:
        """One admin request, signed; renews the token once on 498/499; retries transient errors.
        `urgent`: following a job, served before the fan-out's requests (see `RequestSlots`)."""
        renewed = False

        sent_with = ""

        async def send_signed() -> dict[str, Any]:
            nonlocal sent_with
            # Renewed a margin before it expires; if it expires anyway while queued for a slot, it is
            # renewed once more within that slot and used at once: never a loop of sign-ins.
            sent_with = await self.token()
            return await self._send(path, form or {}, sent_with, urgent=urgent)

        async def signed() -> dict[str, Any]:
            nonlocal renewed
            try:
                return await send_signed()
            except TargetError as error:
                if error.code not in (498, 499) or renewed:
                    raise
                renewed = True  # expired or revoked under us: one fresh token, then no more
                if self._token == sent_with:  # another request may have renewed it meanwhile: keep that one
                    self._token = None
                return await send_signed()

        return await self._retrying(signed, retry=retry)

    async def _retrying(self, attempt_once: Callable[[], Awaitable[dict[str, Any]]], *, retry: bool) -> dict[str, Any]:
        settings = self.context.settings
        backoff = Backoff(settings.retry_initial, 2.0, settings.retry_max)
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except TargetError as error:
                if not (retry and error.transient and attempt < settings.retries and not error.retries_spent):
                    error.retries_spent = error.retries_spent or (retry and error.transient)
                    raise
                delay = retry_delay(backoff, attempt, self.context.rng, error.retry_after)
                attempt += 1
                if self.context.on_retry is not None:
                    self.context.on_retry(self.deployment, error, delay)
            await self.context.clock.sleep(delay)  # no limiter is held while waiting

    async def token(self) -> str:
        """The cached token, renewed a margin before it expires."""
        token = self._fresh_token()
        if token is not None:  # the common case, without the lock's own cost
            return token
        async with self._token_lock:
            token = self._fresh_token()
            if token is None:
                await self._sign_in(self.context.clock.now())
                token = self._token
            assert token is not None
            return token

    def _fresh_token(self) -> str | None:
        """The cached token while it is still before its renewal time, else None."""
        if self._token is None or self.context.clock.now() >= self._token_expires:
            return None
        return self._token

    def _sign_in_form(self) -> dict[str, str]:
        return {
            "username": self.deployment.username,
            "password": self.deployment.password.get_secret_value(),
            "client": "referer",
            "referer": self.deployment.url,
            "expiration": str(self.context.settings.token_minutes),
        }

    async def _sign_in(self, now: float) -> None:
        """Sign in through the request queue, retrying transient failures."""
        path, form = "/sharing/rest/generateToken", self._sign_in_form()
        try:
            grant = await self._retrying(lambda: self._send(path, form, None), retry=True)
        except TargetError as error:
            raise _refused(error) from None
        self._accept(grant, now)

    async def _sign_in_now(self) -> str:
        """Sign in within the request slot already held (once, no retry): its token is used at once."""
        now = self.context.clock.now()
        try:
            grant = await self._post("/sharing/rest/generateToken", self._sign_in_form(), {})
        except TargetError as error:
            raise _refused(error) from None
        return self._accept(grant, now)

    def _accept(self, grant: Mapping[str, Any], now: float) -> str:
        token, expires = grant.get("token"), grant.get("expires")
        if not isinstance(token, str) or not token:
            raise TargetError(ErrorClass.AUTHENTICATION, "sign-in answered no token")
        valid = isinstance(expires, int | float) and not isinstance(expires, bool)
        expires_at = float(expires) / 1000 if valid and expires is not None else now + 60
        lifetime = max(0.0, expires_at - now)
        # Renew a margin before expiry: a tenth of the lifetime, at most a minute. A token that
        # looks expired already (a server clock far behind ours) is still used once; a 498 renews it.
        remember_token(token)
        self._token_deadline = max(expires_at, now + 1.0)
        self._token, self._token_expires = token, max(expires_at - min(60.0, lifetime / 10), now + 1.0)
        return token

    # -- resources --
    async def detect_version(self) -> str:
        root = await self.call("/admin")
        version = root.get("fullVersion") or root.get("currentVersion")
        self.version = str(version) if version is not None else ""
        return self.version

    async def default_store(self) -> str:
        stores = await self.store_list()
        defaults = [str(s["name"]) for s in stores if s.get("default") is True and isinstance(s.get("name"), str)]
        if defaults:
            return defaults[0]
        if len(stores) == 1 and isinstance(stores[0].get("name"), str):
            return str(stores[0]["name"])
        raise TargetError(ErrorClass.CONFIGURATION, "no default backup store; name the stores in the inventory")

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
        return job_id

    async def job(self, job_id: str) -> dict[str, Any]:
        if self.legacy:
            return await self._legacy_job()
        return await self.call(f"/admin/jobs/{quote(job_id, safe='')}", retry=False, urgent=True)

    async def _legacy_job(self) -> dict[str, Any]:
        """10.9 has no jobs resource: its DR status, which describes the last DR job, stands in for it.
        One DR job runs at a time and ours is the last one submitted, so the status is ours."""
        status = await self.dr_status()
        state = status.get("state")
        messages = status.get("messages")
        if not isinstance(state, str) or state not in _LEGACY_DONE_STATES:
            return {"status": "EXECUTING"}  # 10.9 says "running" by leaving the state out
        return {"status": _LEGACY_DONE_STATES[state], "messages": messages if isinstance(messages, list) else []}

    async def job_ids(self) -> list[str]:
        if self.legacy:
            return []
        jobs = (await self.call("/admin/jobs")).get("jobs")
        return [j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else []

    async def backup_names(self, store: str) -> set[str]:
        if self.legacy:
            body = await self.call(f"{_DR}/backuprestore/backups", {"storeName": store}, urgent=True)
        else:
            body = await self.call(f"{_DR}/stores/{quote(store, safe='')}/backups", urgent=True)
        backups = body.get("backups")
        if not isinstance(backups, list):
            raise TargetError(ErrorClass.PERMANENT, "backups answer without a backups list")
        return {
            b["backupName"]
            for b in backups
            if isinstance(b, dict)
            and isinstance(b.get("backupName"), str)
            and b.get("status", "completed") == "completed"
        }

    async def dr_status(self) -> dict[str, Any]:
        path = f"{_DR}/backuprestore/status" if self.legacy else f"{_DR}/status"
        status = (await self.call(path, urgent=True)).get("status")
        return status if isinstance(status, dict) else {}
