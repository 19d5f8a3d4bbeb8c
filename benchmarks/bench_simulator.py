"""How much CPU the simulated fleet spends per cheap request, and what a big fleet costs to start and hold.

Why: every orchestrator benchmark drives `orchestrator simulate` with thousands of deployments on the
same machine. If the simulator spent a noticeable share of a millisecond of CPU on each job poll or
backups read, the benchmark would measure the simulator instead of the orchestrator. The target is
well under 1 ms of simulator CPU per cheap request, with 10,000 deployments loaded.

What: the simulator runs as a subprocess (profile `none`, password handed over in an environment
variable), so its CPU time is counted apart from this load generator's. The script

1. times the start-up of the fleet (process start to the "listening on" line), and of a one-deployment
   fleet as a baseline for interpreter start and imports;
2. signs in to every deployment (or a seeded `--sample`) and starts one backup on each (store-scoped
   paths, or the `backuprestore` ones on 10.9, which has nothing else);
3. sends `--requests` cheap requests (job polls and backups-list reads, half each, spread at random over
   the sample) over keep-alive connections with bounded concurrency and a bounded total time;
4. reads `/_simulator/stats` before and after that phase: simulator CPU seconds per request (and the
   same from `/proc/<pid>/stat` as a cross-check on Linux), requests/s seen by the client, client
   latency, and the simulator's peak RSS (high-water mark) once the fleet is loaded and at the end.

It prints a Markdown table and writes the figures, with the machine and the date, as JSON to `--out`.
Traffic goes to 127.0.0.1 only. The simulator is always stopped (SIGINT, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
from fleetbench.processes import machine, process_cpu_s

PASSWORD_ENV: Final = "BENCH_SIMULATOR_PASSWORD"
PASSCODE: Final = "bench-passcode-0001"
TARGET_CPU_US: Final = 1000.0  # the simulator must stay well under this per cheap request
LISTENING: Final = re.compile(rb"listening on (http://127\.0\.0\.1:\d+)")
READY: Final = re.compile(rb"press Ctrl-C to stop")  # the banner's last line
DR: Final = "/admin/system/disasterrecovery"
STARTUP_TIMEOUT_S: Final = 300.0
STOP_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 30.0
T = TypeVar("T")
R = TypeVar("R")


# -- the simulator subprocess --


@dataclass(slots=True)
class Simulator:
    process: asyncio.subprocess.Process
    base_url: str
    startup_s: float


@asynccontextmanager
async def running_simulator(deployments: int, seed: int, password: str) -> AsyncIterator[Simulator]:
    """Start `orchestrator simulate` on a free loopback port; stop it (SIGINT, then kill) on the way out.

    The password goes in the child's environment only, never on its command line.
    """
    env = {**os.environ, PASSWORD_ENV: password, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "orchestrator", "simulate", "--host", "127.0.0.1", "--port", "0"]
    command += ["--deployments", str(deployments), "--seed", str(seed), "--profile", "none"]
    command += ["--password-env", PASSWORD_ENV]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        listening = await asyncio.wait_for(_read_until(process, LISTENING), STARTUP_TIMEOUT_S)
        startup_s = time.perf_counter() - started
        base_url = listening.group(1).decode()
        await asyncio.wait_for(_read_until(process, READY), STARTUP_TIMEOUT_S)
        await _answered(base_url)
        yield Simulator(process, base_url, startup_s)
    finally:
        await _stop(process)


async def _read_until(process: asyncio.subprocess.Process, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
    """The first line of the simulator's output that matches `pattern`."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        if found := pattern.search(line):
            return found
    raise RuntimeError(f"the simulator exited before printing {pattern.pattern!r} (exit code {await process.wait()})")


async def _answered(base_url: str) -> None:
    """Wait for one answer after the banner: only then is the simulator's own SIGINT handler surely set.

    `orchestrator simulate` prints its banner, then sets the handler with no await in between, so its
    event loop answers nothing after the banner until the handler is in place. A SIGINT sooner ends
    the simulator with a KeyboardInterrupt traceback instead of a clean stop.
    """
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await fetch_json(session, "GET", f"{base_url}/_simulator/stats")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except (TimeoutError, ProcessLookupError):
        pass
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- the load --


@dataclass(slots=True)
class Target:
    """One sampled deployment, signed in, with its backup job."""

    name: str
    legacy: bool  # 10.9: only the `backuprestore` paths exist
    token: str = ""
    job_id: str = ""

    @property
    def create_path(self) -> str:
        return f"{DR}/backuprestore/backup" if self.legacy else f"{DR}/stores/default/backups/create"

    @property
    def backups_path(self) -> str:
        return f"{DR}/backuprestore/backups" if self.legacy else f"{DR}/stores/default/backups"


@dataclass(slots=True)
class Outcome:
    ok: int = 0
    failed: int = 0
    latencies_s: list[float] = field(default_factory=list)


async def bounded(items: Iterable[T], work: Callable[[T], Awaitable[R]], concurrency: int, limit_s: float) -> list[R]:
    """Run `work` on every item, at most `concurrency` at once, all within `limit_s` seconds."""
    pending = iter(items)
    results: list[R] = []

    async def worker() -> None:
        for item in pending:
            results.append(await work(item))

    async with asyncio.timeout(limit_s), asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return results


async def fetch_json(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    async with session.request(method, url, **kwargs) as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json(content_type=None)
    if "error" in body:
        raise RuntimeError(f"{method} {url}: {body['error']}")
    return body


async def sample_targets(session: aiohttp.ClientSession, base_url: str, size: int, seed: int) -> list[Target]:
    fleet = await fetch_json(session, "GET", f"{base_url}/_simulator/fleet")
    rows = random.Random(seed).sample(fleet["items"], min(size, len(fleet["items"])))
    return [Target(row["name"], legacy=row["version"] == "10.9") for row in rows]


async def prepare(session: aiohttp.ClientSession, base_url: str, password: str, target: Target) -> None:
    """Sign in to one deployment and start one backup there."""
    root = f"{base_url}/{target.name}"
    form = {"username": "admin", "password": password, "f": "json"}
    target.token = (await fetch_json(session, "POST", f"{root}/sharing/rest/generateToken", data=form))["token"]
    headers = {"X-Esri-Authorization": f"Bearer {target.token}"}
    form = {"name": f"bench-{target.name}", "passcode": PASSCODE, "f": "json"}
    job = await fetch_json(session, "POST", root + target.create_path, data=form, headers=headers)
    target.job_id = job["jobid"]


def plan_requests(targets: Sequence[Target], count: int, seed: int) -> list[tuple[Target, str]]:
    """`count` (deployment, path) pairs: job polls and backups reads in turn, deployments at random."""
    rng = random.Random(seed)
    return [
        (target, f"/admin/jobs/{target.job_id}" if i % 2 == 0 else target.backups_path)
        for i, target in enumerate(rng.choices(targets, k=count))
    ]


async def cheap_request(
    session: aiohttp.ClientSession, base_url: str, outcome: Outcome, request: tuple[Target, str]
) -> None:
    target, path = request
    headers = {"X-Esri-Authorization": f"Bearer {target.token}"}
    started = time.perf_counter()
    try:
        async with session.get(f"{base_url}/{target.name}{path}", params={"f": "json"}, headers=headers) as resp:
            body = await resp.read()
            good = resp.status == 200 and not body.startswith(b'{"error"')
    except (aiohttp.ClientError, TimeoutError):
        good = False
    outcome.latencies_s.append(time.perf_counter() - started)
    if good:
        outcome.ok += 1
    else:
        outcome.failed += 1


# -- the run --


@dataclass(frozen=True, slots=True)
class Phases:
    """What one run saw: simulator stats when loaded, before and after the measured phase, and timings."""

    startup_s: float
    loaded: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    setup_s: float
    wall_s: float
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Settings:
    deployments: int
    requests: int
    concurrency: int
    sample: int
    seed: int
    max_seconds: float
    baseline: bool


async def stats_of(session: aiohttp.ClientSession, simulator: Simulator) -> dict[str, Any]:
    stats = await fetch_json(session, "GET", f"{simulator.base_url}/_simulator/stats")
    stats["proc_cpu_seconds"] = process_cpu_s(simulator.process.pid)
    return stats


def per_request_us(before: dict[str, Any], after: dict[str, Any], key: str) -> float | None:
    requests: int = after["requests"] - before["requests"]
    if before[key] is None or after[key] is None or requests <= 0:
        return None
    return round(float(after[key] - before[key]) / requests * 1e6, 1)


def new_session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def measure(settings: Settings, password: str) -> Phases:
    async with (
        running_simulator(settings.deployments, settings.seed, password) as simulator,
        new_session(settings.concurrency) as session,
    ):
        loaded = await stats_of(session, simulator)
        targets = await sample_targets(session, simulator.base_url, settings.sample, settings.seed)
        setup_started = time.perf_counter()
        await bounded(
            targets,
            lambda target: prepare(session, simulator.base_url, password, target),
            settings.concurrency,
            settings.max_seconds,
        )
        setup_s = time.perf_counter() - setup_started
        before = await stats_of(session, simulator)
        plan = plan_requests(targets, settings.requests, settings.seed)
        outcome = Outcome()
        started = time.perf_counter()
        await bounded(
            plan,
            lambda request: cheap_request(session, simulator.base_url, outcome, request),
            settings.concurrency,
            settings.max_seconds,
        )
        wall_s = time.perf_counter() - started
        after = await stats_of(session, simulator)
    return Phases(simulator.startup_s, loaded, before, after, setup_s, wall_s, outcome)


async def baseline_startup_s(seed: int) -> float:
    async with running_simulator(1, seed, secrets.token_urlsafe(24)) as simulator:
        return simulator.startup_s


def report(settings: Settings, phases: Phases, host: dict[str, Any]) -> dict[str, Any]:
    loaded, before, after, outcome, wall_s = phases.loaded, phases.before, phases.after, phases.outcome, phases.wall_s
    latencies_ms = [s * 1000 for s in outcome.latencies_s]
    cuts = statistics.quantiles(latencies_ms, n=100) if len(latencies_ms) > 1 else [0.0] * 99
    cpu_us = per_request_us(before, after, "cpu_seconds")
    return {
        "benchmark": "simulator",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host,
        "settings": {
            "deployments": settings.deployments,
            "requests": settings.requests,
            "concurrency": settings.concurrency,
            "sampled_deployments": settings.sample,
            "seed": settings.seed,
            "profile": "none",
        },
        "startup_s": round(phases.startup_s, 3),
        "setup": {
            "seconds": round(phases.setup_s, 3),
            "requests": before["requests"] - loaded["requests"],
            "cpu_us_per_request": per_request_us(loaded, before, "cpu_seconds"),
        },
        "measured": {
            "requests_ok": outcome.ok,
            "requests_failed": outcome.failed,
            "requests_seen_by_simulator": after["requests"] - before["requests"],
            "wall_s": round(wall_s, 3),
            "requests_per_s": round((outcome.ok + outcome.failed) / wall_s, 1) if wall_s else None,
            "latency_ms_p50": round(cuts[49], 2),
            "latency_ms_p99": round(cuts[98], 2),
            "simulator_cpu_s": round(after["cpu_seconds"] - before["cpu_seconds"], 3),
            "cpu_us_per_request": cpu_us,
            "cpu_us_per_request_proc": per_request_us(before, after, "proc_cpu_seconds"),
        },
        "peak_rss_mib": {"loaded": loaded["peak_rss_mib"], "end": after["peak_rss_mib"]},
        "target_cpu_us_per_request": TARGET_CPU_US,
        "within_target": cpu_us is not None and cpu_us < TARGET_CPU_US,
    }


def markdown(result: dict[str, Any]) -> str:
    measured, settings = result["measured"], result["settings"]
    rows = [
        ("deployments loaded / signed in", f"{settings['deployments']:,} / {settings['sampled_deployments']:,}"),
        ("start-up (process start to listening)", f"{result['startup_s']:.2f} s"),
        ("start-up, 1-deployment baseline", _or_dash(result.get("startup_s_1_deployment"), "{:.2f} s")),
        (
            "sign-in + create (setup), CPU per request",
            _or_dash(result["setup"]["cpu_us_per_request"], "{:.0f} µs"),
        ),
        ("cheap requests (ok / failed)", f"{measured['requests_ok']:,} / {measured['requests_failed']:,}"),
        ("simulator CPU per cheap request", _or_dash(measured["cpu_us_per_request"], "{:.0f} µs")),
        ("same, from /proc", _or_dash(measured["cpu_us_per_request_proc"], "{:.0f} µs")),
        ("requests/s seen by the client", _or_dash(measured["requests_per_s"], "{:,.0f}")),
        (
            "client latency p50 / p99",
            f"{measured['latency_ms_p50']:.1f} / {measured['latency_ms_p99']:.1f} ms",
        ),
        ("simulator peak RSS (loaded / end)", "{loaded} / {end} MiB".format(**result["peak_rss_mib"])),
        ("within target (< 1 ms CPU per request)", "yes" if result["within_target"] else "NO"),
    ]
    lines = ["| metric | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines)


def _or_dash(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--deployments", type=int, default=10_000, help="fleet size (default 10,000)")
    parser.add_argument("--requests", type=int, default=20_000, help="cheap requests to time (default 20,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most (default 64)")
    parser.add_argument("--sample", type=int, help="deployments signed in, one backup each (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fleet and the request mix (default 0)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="bound of each load phase (default 300)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the 1-deployment start-up baseline")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulator.json"), help="JSON output")
    return parser


async def run(settings: Settings, password: str) -> dict[str, Any]:
    """Measure, then time the baseline start-up. SIGTERM cancels the run, so the simulator is stopped too."""
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    host = machine(processor=platform.processor() or None, aiohttp=aiohttp.__version__)
    result = report(settings, await measure(settings, password), host)
    if settings.baseline:
        result["startup_s_1_deployment"] = round(await baseline_startup_s(settings.seed), 3)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for name in ("deployments", "requests", "concurrency", "sample"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"error: --{name} must be at least 1", file=sys.stderr)
            return 2
    settings = Settings(
        deployments=args.deployments,
        requests=args.requests,
        concurrency=args.concurrency,
        sample=min(args.sample or args.deployments, args.deployments),
        seed=args.seed,
        max_seconds=args.max_seconds,
        baseline=not args.no_baseline,
    )
    try:
        result = asyncio.run(run(settings, secrets.token_urlsafe(24)))
    except TimeoutError:
        print("error: timed out (simulator start-up, or a load phase past --max-seconds)", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the simulator was stopped", file=sys.stderr)
        return 130
    print(markdown(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
