"""The simulated fleet on aiohttp's web server: one loopback socket, one web context per deployment.

`/<deployment>/sharing/rest/generateToken` and `/<deployment>/admin/...` answer as ArcGIS Enterprise on
Kubernetes does (see `../shared/reference/arcgis-admin-api.md`), faults included; `/_simulator/...`
serves the fleet's records (deployment names are DNS labels, so none can be `_simulator`).
"""

from __future__ import annotations

import html
import json
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import anyio
from aiohttp import web
from multidict import MultiDictProxy

from orchestrator.addresses import is_loopback
from orchestrator.simulator.faults import Fault, chance, draw_create_fault, draw_latency, draw_request_fault
from orchestrator.simulator.fleet import SimulatedFleet
from orchestrator.simulator.introspection import introspect
from orchestrator.simulator.jobs import ApiError, Job, JobStatus
from orchestrator.simulator.model import Deployment
from orchestrator.simulator.records import CreateRecord, RequestRecord
from orchestrator.simulator.routes import Endpoint, Route, match

INTROSPECTION: Final = "_simulator"
_SECRET_KEYS: Final = frozenset({"token", "password", "passcode"})
_TOKEN_HEADERS: Final = (("X-Esri-Authorization", "x-esri-authorization"), ("Authorization", "authorization"))
_REASONS: Final = {498: "Invalid Token", 499: "Token Required"}
_INGRESS_PAGES: Final = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    429: "429 Too Many Requests",
    504: "504 Gateway Time-out",
}
_FLEET_KEY: Final = web.AppKey("fleet", SimulatedFleet)


class _NoAnswer(Exception):
    """The connection was reset on purpose: there is no response to send."""


class _LateGatewayError(Exception):
    """The request was carried out, but the ingress answers a gateway error instead of the result."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def build_app(fleet: SimulatedFleet) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[_FLEET_KEY] = fleet
    app.router.add_route("*", "/{path:.*}", _handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    fleet = request.app[_FLEET_KEY]
    segments = tuple(request.path.strip("/").split("/"))
    if segments[0] == INTROSPECTION:
        return await introspect(fleet, request, segments[1:])
    deployment = fleet.deployments.get(segments[0])
    if deployment is None:
        return _ingress_page(404, "404 Not Found")
    fleet.in_flight.enter(deployment.name)
    try:
        return await _serve_deployment(fleet, deployment, request, segments[1:])
    except _NoAnswer:
        # The transport is already aborted; aiohttp drops whatever is returned.
        return web.Response(status=500)
    finally:
        fleet.in_flight.leave(deployment.name)


async def _serve_deployment(
    fleet: SimulatedFleet, deployment: Deployment, request: web.Request, segments: tuple[str, ...]
) -> web.StreamResponse:
    arrived = fleet.clock.now()
    query = request.query
    form: Mapping[str, str] = {}
    if request.method == "POST" and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = _text_fields(await request.post())
    params = {**query, **form}
    token, source = _find_token(request, form, query)
    route = match(segments)
    record = RequestRecord(
        at=arrived,
        deployment=deployment.name,
        method=request.method,
        path=request.path,
        endpoint=route.endpoint.value if route else "unknown",
        token_source=source,
        secret_in_url=_secret_in_url(deployment, fleet.password, query),
    )
    try:
        response = await _answer(fleet, deployment, request, route, params, token, source, record)
        record.status = response.status
        return response
    finally:
        fleet.record_request(record)  # status stays 0 when no answer was sent (reset, hang)


async def _answer(
    fleet: SimulatedFleet,
    deployment: Deployment,
    request: web.Request,
    route: Route | None,
    params: dict[str, str],
    token: str | None,
    source: str,
    record: RequestRecord,
) -> web.StreamResponse:
    profile = deployment.plan.faults
    if deployment.is_down(fleet.clock.now()):
        record.fault = Fault.DOWN
        return _ingress_page(503, _INGRESS_PAGES[503])
    latency = draw_latency(deployment.fault_rng, profile)
    if latency > 0:
        await anyio.sleep(latency)
    fault = draw_request_fault(deployment.fault_rng, profile)
    record.fault = fault.value
    if fault in (Fault.HTTP_502, Fault.HTTP_503, Fault.HTTP_429):
        status = int(fault.value.removeprefix("http_"))
        return _ingress_page(status, _INGRESS_PAGES[status], retry_after=profile.retry_after_s)
    if fault is Fault.RESET:
        _reset(request)
    if fault is Fault.HANG:
        await anyio.sleep(profile.hang_s)  # cancelled at once if the client gives up first
        _reset(request)

    now = fleet.clock.now()
    fmt = params.get("f", "html")
    try:
        if route is None or (route.since_10_9_1 and deployment.plan.legacy_only):
            raise ApiError(fleet.config.error_codes.not_found, "Resource does not exist or is inaccessible.")
        if route.post_only and request.method != "POST":
            raise ApiError(
                fleet.config.error_codes.method_not_allowed,
                "Method not supported.",
                [f"The '{route.endpoint.value}' operation requires an HTTP POST request."],
            )
        if route.endpoint is not Endpoint.TOKEN:
            strict = fleet.config.quirks.strict_post_token and request.method == "POST" and source == "query"
            deployment.check_token(None if strict else token, now)
            if deployment.plan.forbidden and route.endpoint not in (Endpoint.TOKEN, Endpoint.ROOT):
                raise ApiError(403, "You do not have permissions to access this resource or perform this operation.")
        deployment.settle(now)
        body = _dispatch(fleet, deployment, request, route, params, now, record)
    except _LateGatewayError as late:
        return _ingress_page(late.status, _INGRESS_PAGES[late.status])
    except ApiError as error:
        record.error_code = error.code
        if fleet.config.quirks.echo_request_in_errors:  # what a careless server does: tests of redaction
            error.details = [*error.details, "request: " + "&".join(f"{k}={v}" for k, v in params.items())]
            if token:
                error.details.append(f"Authorization: Bearer {token}")
        is_create = route is not None and route.endpoint in (Endpoint.CREATE, Endpoint.LEGACY_CREATE)
        if route is not None and is_create and request.method == "POST":
            _record_create(fleet, deployment, route, params, now, error=error)
        return _render_error(error, fmt, fleet.config.error_status == "mirror")
    if route.endpoint is Endpoint.LEGACY_ROOT:
        fmt = "html"  # documented as HTML only
    return _render(body, fmt)


def _dispatch(
    fleet: SimulatedFleet,
    deployment: Deployment,
    request: web.Request,
    route: Route,
    params: dict[str, str],
    now: float,
    record: RequestRecord,
) -> dict[str, Any]:
    endpoint = route.endpoint
    context = f"/{deployment.name}/admin"
    match endpoint:
        case Endpoint.TOKEN:
            return deployment.issue_token(
                params.get("username", ""), params.get("password", ""), params.get("expiration", ""), now
            )
        case Endpoint.ROOT:
            version = deployment.plan.version
            return {
                "fullVersion": deployment.full_version,
                "currentVersion": float(".".join(version.split(".")[:2])),
                "resources": ["orgs", "logs", "system", "datastores", "uploads", "services", "jobs"],
            }
        case Endpoint.DR:
            return {"operations": ["status"], "resources": ["stores", "settings"]}
        case Endpoint.SETTINGS:
            return deployment.settings()
        case Endpoint.SETTINGS_UPDATE:
            deployment.update_settings(_json_param(params, "settings"))
            return {"status": "success"}
        case Endpoint.STATUS | Endpoint.LEGACY_STATUS:
            return deployment.dr_status(now)
        case Endpoint.STORES:
            return {"backupStores": [deployment.store(name) for name in deployment.plan.stores]}
        case Endpoint.STORE:
            return deployment.store(route.store)
        case Endpoint.STORE_VALIDATE:
            deployment.check_store(route.store)
            return {"isReady": True, "status": "success"}
        case Endpoint.BACKUPS | Endpoint.LEGACY_BACKUPS:
            store = _store_of(route, params, deployment)
            deployment.check_store(store)
            return {"backups": [b.to_json() for b in deployment.backups[store].values()]}
        case Endpoint.BACKUP | Endpoint.LEGACY_BACKUP:
            store = _store_of(route, params, deployment)
            return deployment.backup(store, route.backup).to_json()
        case Endpoint.BACKUP_UPDATE:
            deployment.update_retention(route.store, route.backup, params.get("retentionDate", ""))
            return {"status": "success"}
        case Endpoint.BACKUP_DELETE | Endpoint.LEGACY_DELETE:
            store = _store_of(route, params, deployment)
            as_job = params.get("async", "false").lower() == "true" and deployment.plan.has_timeout_setting
            uri = f"{context}/system/disasterrecovery/stores/{store}/backups/{route.backup}/delete"
            job = deployment.delete_backup(store, route.backup, as_job, _caller(deployment), uri, now)
            return _job_descriptor(request, deployment, job.job_id) if job else {"status": "success"}
        case Endpoint.CREATE | Endpoint.LEGACY_CREATE:
            store = _store_of(route, params, deployment)
            job = deployment.create_backup(
                store=store,
                name=params.get("name", ""),
                passcode=params.get("passcode", ""),
                description=params.get("description", ""),
                retention=params.get("retentionDate", ""),
                username=_caller(deployment),
                operation_uri=f"{context}/system/disasterrecovery/"
                + ("backuprestore/backup" if endpoint is Endpoint.LEGACY_CREATE else f"stores/{store}/backups/create"),
                now=now,
            )
            answer_fault = draw_create_fault(deployment.fault_rng, deployment.plan.faults)
            _record_create(fleet, deployment, route, params, now, job=job, lost=answer_fault is not Fault.NONE)
            if answer_fault is not Fault.NONE:
                record.fault = answer_fault.value
            if answer_fault is Fault.LOST_CREATE:
                _reset(request)
            if answer_fault is Fault.LATE_5XX:
                raise _LateGatewayError(502 if deployment.fault_rng.random() < 0.5 else 504)
            return _job_descriptor(request, deployment, job.job_id)
        case Endpoint.JOBS:
            return {"jobs": list(deployment.jobs)}
        case Endpoint.JOB:
            job = deployment.job(route.job)
            if chance(deployment.fault_rng, deployment.plan.faults.unavailable_blip):
                record.fault = Fault.UNAVAILABLE
                return job.to_json(now, JobStatus.UNAVAILABLE)
            return job.to_json(now)
        case Endpoint.LEGACY_ROOT:
            return {"operations": ["backup"], "resources": ["backups", "status"]}
    raise AssertionError(f"unrouted endpoint {endpoint}")  # pragma: no cover


def _store_of(route: Route, params: Mapping[str, str], deployment: Deployment) -> str:
    """The store a request names: in the path (10.9.1+), as `storeName` (legacy), or the default one."""
    return route.store or params.get("storeName") or deployment.plan.default_store


def _caller(deployment: Deployment) -> str:
    return deployment.plan.username


def _job_descriptor(request: web.Request, deployment: Deployment, job_id: str) -> dict[str, Any]:
    origin = f"{request.scheme}://{request.host}"
    return {
        "jobsUrl": f"{origin}/{deployment.name}/admin/jobs/{job_id}",
        "jobid": job_id,
        "status": "SUBMITTED",
    }


def _record_create(
    fleet: SimulatedFleet,
    deployment: Deployment,
    route: Route,
    params: Mapping[str, str],
    now: float,
    *,
    job: Job | None = None,
    lost: bool = False,
    error: ApiError | None = None,
) -> None:
    fleet.record_create(
        CreateRecord(
            at=now,
            deployment=deployment.name,
            store=_store_of(route, params, deployment),
            backup_name=params.get("name", ""),
            accepted=error is None,
            job_id=job.job_id if job else "",
            error_code=error.code if error else 0,
            response_lost=lost,
        ),
        job,
    )


def _json_param(params: Mapping[str, str], name: str) -> dict[str, Any]:
    try:
        value = json.loads(params.get(name, ""))
    except ValueError:
        raise ApiError(400, f"Invalid '{name}' parameter.", [f"'{name}' must be a JSON object."]) from None
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid '{name}' parameter.", [f"'{name}' must be a JSON object."])
    return value


def _text_fields(form: MultiDictProxy[Any]) -> dict[str, str]:
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _find_token(request: web.Request, form: Mapping[str, str], query: Mapping[str, str]) -> tuple[str | None, str]:
    """The token and where it came from, in the order the real server's web tier looks."""
    for header, source in _TOKEN_HEADERS:
        value = request.headers.get(header, "")
        if value[:7].lower() == "bearer ":
            return value[7:].strip(), source
    if form.get("token"):
        return form["token"], "body"
    if query.get("token"):
        return query["token"], "query"
    return None, "none"


def _secret_in_url(deployment: Deployment, password: str, query: Mapping[str, str]) -> bool:
    if not query:
        return False
    if _SECRET_KEYS.intersection(key.lower() for key in query):
        return True
    return any(value in deployment.tokens or password in value for value in query.values())


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP reset, as a crashed pod or a killed proxy connection does."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    raise _NoAnswer


# -- rendering --


def _render(body: Mapping[str, Any], fmt: str, title: str = "", status: int = 200) -> web.Response:
    """`f=json` compact, `f=pjson` indented, anything else (the default, `html`) an HTML page."""
    reason = _REASONS.get(status)
    if fmt in ("json", "pjson"):
        text = json.dumps(body, indent=2) if fmt == "pjson" else json.dumps(body, separators=(",", ":"))
        return web.Response(status=status, reason=reason, text=text, content_type="application/json")
    page = _html_page(title or "ArcGIS Enterprise Administrator Directory", body)
    return web.Response(status=status, reason=reason, text=page, content_type="text/html")


def _render_error(error: ApiError, fmt: str, mirror_status: bool) -> web.Response:
    status = error.code if mirror_status and 400 <= error.code <= 599 else 200
    return _render(error.envelope(), fmt, title=f"Error: {error.message}", status=status)


def _html_page(title: str, body: Mapping[str, Any]) -> str:
    return (
        "<!DOCTYPE html><html><head><title>ArcGIS Enterprise</title></head><body>"
        f"<h2>{html.escape(title)}</h2><pre>{html.escape(json.dumps(body, indent=2))}</pre></body></html>"
    )


def _ingress_page(status: int, title: str, retry_after: int | None = None) -> web.Response:
    """What the Kubernetes ingress in front of a deployment answers: HTML, not ArcGIS JSON."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    page = (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        "<hr><center>nginx</center></body></html>"
    )
    return web.Response(status=status, text=page, content_type="text/html", headers=headers)


# -- serving --


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    fleet: SimulatedFleet
    base_url: str  # e.g. http://127.0.0.1:41234
    port: int

    def url_of(self, deployment: str) -> str:
        """The root of one deployment, web context included, as an inventory names it."""
        return f"{self.base_url}/{deployment}"


def _check_loopback(host: str) -> None:
    if not is_loopback(host):
        raise ValueError(f"the simulator only listens on loopback (127.0.0.1, ::1, localhost), not {host!r}")


@asynccontextmanager
async def serve_fleet(
    fleet: SimulatedFleet,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Serve the fleet on a loopback socket (port 0: a free one) until the block exits."""
    _check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = "127.0.0.1" if host == "localhost" else host
    runner = web.AppRunner(build_app(fleet), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        site = web.SockSite(runner, sock, ssl_context=ssl_context, backlog=4096)
        await site.start()  # from here on the server owns the socket and closes it at cleanup
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    bound = sock.getsockname()[1]
    scheme = "https" if ssl_context else "http"
    shown = f"[{address}]" if family == socket.AF_INET6 else address
    try:
        yield RunningSimulator(fleet, f"{scheme}://{shown}:{bound}", bound)
    finally:
        await runner.cleanup()
