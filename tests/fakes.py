"""In-memory stand-ins for what the stages talk to, and a manual clock that flows while tasks wait.

`FakeDeployment` is a `dr.DeploymentApi` over a tiny server (DR jobs, backups, a DR status) with scripted
create answers: the unit tests of `submit` drive it directly, and the runner's tests hand it to
`run_fleet` through its client factory, so neither needs a socket or a real second.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from aiohttp import web

from orchestrator.clock import ManualClock
from orchestrator.errors import ErrorClass, TargetError

STEP = 0.25  # seconds the manual clock moves each time the background ticker gets its turn
Background = Callable[[], Coroutine[Any, Any, object]]  # a task run beside a test's body


def duplicate(name: str) -> TargetError:
    """The server's refusal of a backup name its store already has."""
    return TargetError(ErrorClass.PERMANENT, f"Backup '{name}' already exists.", code=400)


@dataclass(frozen=True)
class Taken:
    """A scripted create answer: the server carries the create out, but its answer is lost on the way back."""

    error: TargetError


Answer = str | TargetError | Taken  # a job id answered, a refusal (nothing taken), or a taken create unanswered


@dataclass(frozen=True)
class CreateRequest:
    store: str
    name: str
    passcode: str
    description: str
    retention_ms: int | None
    at: float


@dataclass
class ServerJob:
    job_id: str
    store: str
    name: str
    started: float
    ends: float


class FakeDeployment:
    """An in-memory `DeploymentApi`: scripted create answers over a tiny server (DR jobs, backups, DR status).

    A create taken by the server starts a DR job lasting `job_seconds`; its backup is listed once it ends.
    The server refuses a backup name its store already has. Every request is recorded in `calls`.
    """

    def __init__(
        self,
        clock: ManualClock,
        name: str = "d",
        *,
        creates: tuple[Answer, ...] | list[Answer] = (),
        job_seconds: float = 10.0,
        sign_in_seconds: float = 0.0,
        log: list[tuple[str, float, str]] | None = None,
    ) -> None:
        self.clock = clock
        self.name = name
        self.script: list[Answer] = list(creates)  # once used up, every create is taken and answered
        self.job_seconds = job_seconds
        self.sign_in_seconds = sign_in_seconds
        self.log: list[tuple[str, float, str]] = log if log is not None else []  # (deployment, time, what)
        self.calls: list[str] = []
        self.creates: list[CreateRequest] = []
        self.jobs: dict[str, ServerJob] = {}  # in submission order, as the jobs resource lists them
        self.listed: defaultdict[str, set[str]] = defaultdict(set)  # backups there before the run
        self.errors: dict[str, TargetError] = {}  # request name -> the error it fails with
        self.status: dict[str, Any] | None = None  # the DR status answered; None: the last job's
        self.hide_jobs = False  # the jobs resource lists nothing
        self.legacy = False  # 10.9: no jobs list, and a DR status that names no backup
        self.version = ""  # as a worker set it (from memory), or "11.3" once read
        self.default = "primary"
        self.overlaps = 0  # creates taken while another DR job of this deployment was running
        self.on_create: Callable[[], None] | None = None

    async def _request(self, method: str) -> None:
        await anyio.lowlevel.checkpoint()
        self.calls.append(method)
        if method in self.errors:
            raise self.errors[method]

    def add_job(self, job_id: str, store: str, name: str, started: float, ends: float) -> None:
        self.jobs[job_id] = ServerJob(job_id, store, name, started, ends)

    async def detect_version(self) -> str:
        await self._request("token")  # the first request signs in
        await self.clock.sleep(self.sign_in_seconds)
        await self._request("detect_version")
        self.version = "11.3"
        return self.version

    async def default_store(self) -> str:
        await self._request("default_store")
        return self.default

    async def create_backup(
        self, store: str, name: str, passcode: str, description: str, retention_ms: int | None
    ) -> str:
        await self._request("create_backup")
        now = self.clock.now()
        self.creates.append(CreateRequest(store, name, passcode, description, retention_ms, now))
        if self.on_create is not None:
            self.on_create()
        answer = self.script.pop(0) if self.script else f"job-{len(self.creates)}"
        if isinstance(answer, TargetError):
            self.log.append((self.name, now, "refused"))
            raise answer
        if name in self.listed[store] or any(j.name == name and j.store == store for j in self.jobs.values()):
            self.log.append((self.name, now, "refused"))
            raise duplicate(name)
        if any(now < job.ends for job in self.jobs.values()):
            self.overlaps += 1
        job_id = answer if isinstance(answer, str) else f"job-{len(self.creates)}"
        self.add_job(job_id, store, name, now, now + self.job_seconds)
        self.log.append((self.name, now, "created"))
        if isinstance(answer, Taken):
            raise answer.error
        return job_id

    async def job(self, job_id: str) -> dict[str, Any]:
        await self._request("job")
        job = self.jobs[job_id]
        return {
            "jobid": job_id,
            "status": "EXECUTING" if self.clock.now() < job.ends else "COMPLETED",
            "starttime": round(job.started * 1000),
            "operationURI": f"/arcgis/admin/system/disasterrecovery/stores/{job.store}/backups/create",
        }

    async def job_ids(self) -> list[str]:
        await self._request("job_ids")
        return [] if self.hide_jobs or self.legacy else list(self.jobs)

    async def backup_names(self, store: str) -> set[str]:
        await self._request("backup_names")
        now = self.clock.now()
        return self.listed[store] | {j.name for j in self.jobs.values() if j.store == store and now >= j.ends}

    async def dr_status(self) -> dict[str, Any]:
        await self._request("dr_status")
        if self.status is not None:
            return self.status
        if not self.jobs:
            return {"code": 0, "messages": [], "state": "no_op"} if self.legacy else {}
        last = list(self.jobs.values())[-1]
        state = "running" if self.clock.now() < last.ends else "success"
        if self.legacy:  # 10.9: the start in the first message; no state while running
            started = {"code": 4014, "message": "Started backup process.", "when": round(last.started * 1000)}
            return {"code": 3, "messages": [started], **({} if state == "running" else {"state": state})}
        return {"backupName": last.name, "backupStore": last.store, "state": state}


async def let_tasks_run() -> None:
    """Give every ready task its turn (the fake deployment answers without real I/O)."""
    for _ in range(30):
        await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def time_flows(clock: ManualClock, *background: Background) -> AsyncIterator[None]:
    """While the body runs, the manual clock steps by STEP whenever the tasks have had their turn, and the
    `background` tasks run beside it; a body that hangs fails after 5 real seconds."""

    async def tick() -> None:
        while True:
            await let_tasks_run()
            clock.advance(STEP)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        for task in background:
            tg.start_soon(task)
        with anyio.fail_after(5):
            yield
        tg.cancel_scope.cancel()


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]], shutdown_timeout: float = 0.2
) -> AsyncIterator[int]:
    """`handler` answering every path on a free 127.0.0.1 port, for the block; yields the port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    try:
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A loopback port nothing listens on (once the probe that found it is closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
