"""The wire: one HTTP session per run, a POST of a form with a capped read, and the one place where an
aiohttp failure becomes a `TargetError` (`transport_error`).

`Link` is one deployment's way onto it: a request waits for the deployment's pacing and the run's
request slots, and is refused at once while the deployment's circuit is open. Every request is a POST
with a form body and `f=json`; the token travels in a header, never in a URL; redirects are not followed.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp

from orchestrator.api.answers import interpret
from orchestrator.clock import Clock
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.guard import CircuitBreaker, Pacer, RequestSlots
from orchestrator.model import Deployment
from orchestrator.settings import ConnectionSettings

MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # a DR answer is a few KiB; anything huge is refused unread
THROTTLED: Final = frozenset({429, 503})  # the deployment asks for less: every request to it slows
_FORM: Final = "application/x-www-form-urlencoded"
_HEADERS: Final[Mapping[str, str]] = MappingProxyType({"Content-Type": _FORM, "Accept-Encoding": "identity"})
_JSON_ONLY: Final = b"f=json"  # the body of a request with no form of its own: most of them (polls)


@dataclass(slots=True)
class Transport:
    """What every deployment's requests share in a run: one HTTP session, the run's time limits and its
    fleet-wide request slots."""

    http: aiohttp.ClientSession
    settings: ConnectionSettings
    clock: Clock
    slots: RequestSlots
    timeout: aiohttp.ClientTimeout  # built once: one per request costs CPU at fleet scale


@asynccontextmanager
async def open_transport(settings: ConnectionSettings, clock: Clock) -> AsyncIterator[Transport]:
    """One HTTP session for a whole run, with the run's cap on requests in flight."""
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(
        total=settings.request_timeout, connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    async with aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield Transport(http, settings, clock, RequestSlots(settings.concurrency), timeout)


def transport_error(error: BaseException, settings: ConnectionSettings) -> TargetError:
    """The classified error an aiohttp failure (or a timeout) stands for: the only such mapping. Pure.

    A connection never made (refused, no such host, connect timeout) is `unreachable` and never ambiguous:
    the request did not leave. Once connected, a failure is `transient`, and ambiguous: it may have been
    carried out. Both are retried; `guard.last_word` says what the last one means."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):  # a TimeoutError too: tell it first
        waited = f"{settings.connect_timeout:g} s"
        return TargetError(ErrorClass.UNREACHABLE, f"cannot connect: no connection within {waited}")
    if isinstance(error, TimeoutError):
        return TargetError(
            ErrorClass.TRANSIENT,
            f"no answer within the time allowed ({settings.request_timeout:g} s in all, "
            f"{settings.read_timeout:g} s of silence)",
            ambiguous=True,
        )
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return TargetError(ErrorClass.CONFIGURATION, f"TLS certificate not trusted: {error.certificate_error}")
    if isinstance(error, aiohttp.ClientConnectorError):
        return TargetError(ErrorClass.UNREACHABLE, f"cannot connect: {error.os_error.strerror or error}")
    if isinstance(error, aiohttp.ClientError):
        return TargetError(ErrorClass.TRANSIENT, f"connection lost ({type(error).__name__})", ambiguous=True)
    raise TypeError(f"not a transport failure: {type(error).__name__}")  # pragma: no cover


async def read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, however many pieces it arrives in; a body over the cap is refused, not kept."""
    declared = response.content_length
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if declared is not None and declared <= MAX_BODY_BYTES and encoding in ("", "identity"):
        return await response.read()  # the usual small answer, in one piece (a longer body is cut at the length)
    # Unknown length, or compressed (asked for or not): what counts is the size unpacked, read as it comes,
    # so a small gzip "bomb" is refused at the cap instead of filling the memory.
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TargetError(ErrorClass.PERMANENT, f"answer larger than {MAX_BODY_BYTES} bytes refused")
        chunks.append(chunk)
    return b"".join(chunks)


@cache
def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


class Link:
    """One deployment's requests: its circuit breaker and pacing (`guard`) around the run's transport."""

    def __init__(self, transport: Transport, deployment: Deployment) -> None:
        self._transport = transport
        self._root = deployment.url
        self._ssl: ssl.SSLContext | bool = _ssl_context(deployment.ca_bundle) if deployment.verify_tls else False
        settings = transport.settings
        self._breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown)
        self._pacer = Pacer()
        self._last_failure = ""  # the latest transport failure: what an open circuit's refusals say it was
        self._signed_with: str | None = None  # the token `_signed_headers` carry: made once per token
        self._signed_headers: Mapping[str, str] = _HEADERS

    @property
    def pacing_gap(self) -> float:
        """Seconds between two requests to this deployment now (0: not throttled)."""
        return self._pacer.gap

    def slot(self, *, urgent: bool = False, not_after: float = math.inf) -> _LinkSlot:
        """A request slot for this deployment (`async with`); `urgent` (following a job) goes before the
        fan-out's requests. A pacing wait that would end after `not_after` (the request's retry budget, the
        run's deadline) is not waited out: the request fails at once, as throttled."""
        return _LinkSlot(self, urgent, not_after)

    def _admit(self, not_after: float) -> float:
        """The seconds of pacing to wait before taking a request slot; raises while the circuit is open, or
        when that wait would end after `not_after`."""
        now = self._transport.clock.now()
        open_for = self._breaker.open_for(now)
        if open_for > 0:
            raise TargetError(
                ErrorClass.UNREACHABLE,
                f"unreachable: {self._breaker.failures} connection failures in a row (the last: "
                f"{self._last_failure}); left alone for {self._transport.settings.breaker_cooldown:g} s at a time",
                retry_after=open_for,
            )
        wait = self._pacer.wait(now)
        if wait > 0 and now + wait > not_after:
            raise TargetError(
                ErrorClass.TRANSIENT,
                f"throttled: the deployment asked for {wait:.0f} s between requests",
                retry_after=wait,
            )
        return wait

    def _headers(self, token: str | None) -> Mapping[str, str]:
        if token is None:
            return _HEADERS
        if token != self._signed_with:
            self._signed_headers = {"X-Esri-Authorization": f"Bearer {token}", **_HEADERS}
            self._signed_with = token
        return self._signed_headers

    async def post(self, path: str, form: Mapping[str, str], token: str | None = None) -> dict[str, Any]:
        """One POST and its interpretation, signed with `token` (in a header) if one is given; the caller holds
        a slot."""
        transport = self._transport
        self._pacer.sent(transport.clock.now())
        try:
            async with transport.http.post(
                self._root + path,
                # Encoded here: aiohttp's form machinery costs more CPU than the rest of a request.
                data=urlencode({"f": "json", **form}).encode() if form else _JSON_ONLY,
                headers=self._headers(token),
                ssl=self._ssl,
                allow_redirects=False,
                timeout=transport.timeout,
            ) as response:
                self._breaker.answered()
                body = await read_capped(response)
                answer = interpret(response.status, response.headers, body, transport.clock.now())
                self._pacer.answered()
                return answer
        except TargetError as error:
            if error.code in THROTTLED:
                self._pacer.throttled(transport.clock.now(), error.retry_after)
            raise
        except (TimeoutError, aiohttp.ClientError) as failure:
            classified = transport_error(failure, transport.settings)
            if classified.error_class is not ErrorClass.CONFIGURATION:  # no answer: its circuit counts it
                self._breaker.transport_failed(transport.clock.now())
                self._last_failure = classified.message
            raise classified from None


class _LinkSlot:
    """`Link.slot`'s context manager: the circuit and the pacing first (no request slot is held during a
    pacing wait), then one of the run's request slots. A plain class: it runs on every request."""

    __slots__ = ("_link", "_not_after", "_urgent")

    def __init__(self, link: Link, urgent: bool, not_after: float) -> None:
        self._link, self._urgent, self._not_after = link, urgent, not_after

    async def __aenter__(self) -> None:
        link = self._link
        wait = link._admit(self._not_after)
        if wait > 0:
            await link._transport.clock.sleep(wait)  # throttled by this deployment: no request slot held meanwhile
        await link._transport.slots.acquire(self._urgent)

    async def __aexit__(self, *exc_info: object) -> None:
        self._link._transport.slots.release()
