"""What the run ledger costs a big run: the same fleet run with and without it, side by side.

Why: the ledger records every target and step of a run (issue 4), and an intent to create must be on
disk before each create is sent. That must not slow a 10,000-target run down noticeably.

What: the simulator runs as a subprocess (profile `none`, 11.3, jobs of `--job-seconds`), so its CPU
is not counted here. Against it, this process runs `run_fleet` twice over all deployments, with the same
settings: once without a ledger, once with one (a fresh SQLite file). It reports, for the ledger run:

- wall time of both runs, and the difference;
- event-loop time spent on the ledger (queueing rows, writing them into the open transaction), as a
  share of wall time;
- worker-thread time spent committing (the disk sync, without the GIL), the number of group commits;
- how long creates waited for their intent to be on disk (mean, and the sum as a share of the time
  creates spent in flight overall is not meaningful under concurrency, so the mean is what counts);
- the ledger's size on disk.

It prints a Markdown table and writes JSON (with the machine and date) to `--out`. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fleetbench.output import report_figures

from orchestrator.api import open_clients
from orchestrator.clock import SystemClock
from orchestrator.events import Event
from orchestrator.inventory import load_inventory
from orchestrator.ledger import Ledger
from orchestrator.model import Outcome, RunResult, TargetState, build_targets
from orchestrator.recorder import LedgerWriter
from orchestrator.runner import run_fleet
from orchestrator.settings import load_settings

PASSWORD_ENV: Final = "BENCH_LEDGER_PASSWORD"
LISTENING: Final = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


@dataclass(slots=True)
class Costs:
    """What the ledger cost the run, measured here around its public methods (the product carries no counters)."""

    queue_seconds: float = 0.0  # event-loop time in the writer's observer: rows queued as events come
    stage_seconds: float = 0.0  # event-loop time writing rows into the open transaction
    commit_seconds: float = 0.0  # worker-thread time committing (the disk sync)
    commits: int = 0
    intent_wait_seconds: float = 0.0  # time creates waited for their intent to be on disk, summed


class TimedLedger(Ledger):
    costs = Costs()

    def stage(self, targets: Sequence[tuple[Any, ...]], steps: Sequence[tuple[Any, ...]], *, durable: bool) -> None:
        started = time.perf_counter()
        super().stage(targets, steps, durable=durable)
        self.costs.stage_seconds += time.perf_counter() - started

    def commit_staged(self) -> None:
        started = time.perf_counter()
        super().commit_staged()
        self.costs.commit_seconds += time.perf_counter() - started
        self.costs.commits += 1


class TimedWriter(LedgerWriter):
    costs = TimedLedger.costs

    def on_event(self, event: Event) -> None:
        started = time.perf_counter()
        super().on_event(event)
        self.costs.queue_seconds += time.perf_counter() - started

    async def intend_create(self, target: TargetState) -> None:
        started = time.perf_counter()
        await super().intend_create(target)
        self.costs.intent_wait_seconds += time.perf_counter() - started


def start_simulator(count: int, job_seconds: float, folder: Path) -> tuple[subprocess.Popen[str], Path]:
    inventory = folder / "fleet.toml"
    env = {**os.environ, PASSWORD_ENV: secrets.token_urlsafe(18)}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "simulate", "--deployments", str(count), "--versions", "11.3=1",
         "--job-seconds", str(job_seconds), "--password-env", PASSWORD_ENV, "--write-inventory", str(inventory)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("press Ctrl-C"):
            return process, inventory
        if LISTENING.search(line) is None and process.poll() is not None:
            break
    raise RuntimeError("the simulator did not start")


async def one_run(inventory: Path, ledger_path: Path | None, run_id: str) -> tuple[RunResult, Costs | None]:
    settings = load_settings(
        {
            "inventory": inventory,
            "concurrency": 64,
            "poll_initial": 1.0,
            "poll_max": 6.0,
            "job_timeout": 600.0,
            "retry_initial": 0.2,
            "request_timeout": 30.0,
            "name_template": "bench-{run_id}-{deployment}",
            "quiet": True,
        }
    )
    deployments = list(load_inventory(inventory).deployments)
    clock = SystemClock()
    started = clock.now()
    targets = build_targets(deployments, name_template=settings.name_template, run_id=run_id, started_at=started)
    ledger = writer = None
    if ledger_path is not None:
        ledger = TimedLedger.open(ledger_path)
        ledger.begin_run(
            run_id=run_id,
            kind="run",
            parent_run_id="",
            inventory=str(inventory),
            settings=settings.public(),
            started_at=started,
            targets=targets,
        )
        writer = TimedWriter(ledger, run_id)
    async with open_clients(settings, clock, random.Random(1)) as clients:
        result = await run_fleet(
            targets,
            settings,
            clients=clients,
            run_id=run_id,
            started_at=started,
            clock=clock,
            rng=random.Random(1),
            ledger=writer,
        )
    if ledger is not None:
        ledger.end_run(run_id, result.finished_at, result.stopped_reason, result.targets)
        ledger.close()
    return result, TimedLedger.costs if writer is not None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--job-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ledger.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as scratch:
        folder = Path(scratch)
        simulator, inventory = start_simulator(args.deployments, args.job_seconds, folder)
        try:
            bare, _ = asyncio.run(one_run(inventory, None, "bare"))
            recorded, costs = asyncio.run(one_run(inventory, folder / "ledger.sqlite3", "ledger"))
            ledger_bytes = sum(p.stat().st_size for p in folder.glob("ledger.sqlite3*"))
        finally:
            simulator.send_signal(signal.SIGINT)
            try:
                simulator.wait(timeout=10)
            except subprocess.TimeoutExpired:
                simulator.kill()
    assert costs is not None
    bare_wall = bare.finished_at - bare.started_at
    wall = recorded.finished_at - recorded.started_at
    creates = sum(t.attempts for t in recorded.targets)
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "deployments": args.deployments,
        "job_seconds_median": args.job_seconds,
        "succeeded": [sum(t.outcome is Outcome.SUCCEEDED for t in r.targets) for r in (bare, recorded)],
        "wall_s_without_ledger": round(bare_wall, 2),
        "wall_s_with_ledger": round(wall, 2),
        "wall_difference_pct": round((wall - bare_wall) * 100 / bare_wall, 2),
        "loop_seconds_queueing": round(costs.queue_seconds, 3),
        "loop_seconds_writing_rows": round(costs.stage_seconds, 3),
        "loop_share_pct": round((costs.queue_seconds + costs.stage_seconds) * 100 / wall, 3),
        "writer_thread_seconds": round(costs.commit_seconds, 3),
        "writer_thread_share_pct": round(costs.commit_seconds * 100 / wall, 3),
        "group_commits": costs.commits,
        "creates": creates,
        "mean_intent_wait_ms": round(costs.intent_wait_seconds * 1000 / max(1, creates), 3),
        "ledger_bytes": ledger_bytes,
    }
    report_figures(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
