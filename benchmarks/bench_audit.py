"""What a compliance audit of a big fleet costs: wall time, requests per target, the audit's CPU and memory.

Why: an audit must cost at most a sign-in, the version and one backups list per store (plus the stores
list where the default store is needed) per deployment (issue 11), and finish quickly enough to run
every morning over 10,000 deployments.

What: the simulator runs as a subprocess (11.3, `--history` days of scheduled backups per store with the
flaky profile's share of stale, upgraded, failed and short-kept ones, and no faults), so its CPU is not
counted here. Against it, this process audits every deployment once, as
`orchestrator audit` does (`prepare_audit` + `run_audit`), and reports the wall time, the requests the
simulator served (in all, per target and by endpoint), the CPU time of this process, its peak RSS and the
verdicts. It prints a Markdown table and writes JSON (with the machine and date) to `--out`. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio
from fleetbench.output import report_figures

from orchestrator.audit import prepare_audit, run_audit

PASSWORD_ENV: Final = "BENCH_AUDIT_PASSWORD"


# The flaky profile's history (a few stale, upgraded, failed and short-kept backups) without its faults,
# so every request counted is one the audit needed.
HISTORY: Final = (
    "failed = 0.03\nno_retention = 0.02\nshort_retention = 0.02\nstale = 0.03\nupgraded = 0.03\n"
    "other_stores = 0.9\nretention_days = 14\n"
)


def start_simulator(args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen[str], Path, str]:
    inventory = folder / "inventory.toml"
    fleet = folder / "fleet.toml"
    fleet.write_text(f'versions = {{ "11.3" = 1 }}\n\n[history]\ndays = {args.history}\n{HISTORY}')
    env = {**os.environ, PASSWORD_ENV: secrets.token_urlsafe(18)}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "simulate", "--fleet", str(fleet), "--deployments",
         str(args.deployments), "--stores", args.stores, "--password-env", PASSWORD_ENV,
         "--write-inventory", str(inventory)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    base_url = ""
    for line in process.stdout:
        if "listening on " in line:
            base_url = line.rsplit(" ", 1)[1].strip()
        if line.startswith("press Ctrl-C"):
            return process, inventory, base_url
        if process.poll() is not None:
            break
    raise RuntimeError("the simulator did not start")


def served(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_simulator/stats", timeout=60) as response:
        stats: dict[str, Any] = json.load(response)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--history", type=float, default=14.0, help="days of scheduled backups per store")
    parser.add_argument("--stores", default="default", help="stores of every deployment, e.g. default,offsite")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/audit.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as scratch:
        folder = Path(scratch)
        simulator, inventory, base_url = start_simulator(args, folder)
        try:
            before = served(base_url)
            plan = prepare_audit(
                {"inventory": inventory, "report_dir": folder / "reports", "concurrency": args.concurrency,
                 "quiet": True},
                None,
            )  # fmt: skip
            cpu, wall = time.process_time(), time.perf_counter()
            audited = anyio.run(run_audit, plan, backend_options={"use_uvloop": True})
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            after = served(base_url)
        finally:
            simulator.send_signal(signal.SIGINT)
            try:
                simulator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                simulator.kill()
    targets = len(audited.targets)
    requests = after["requests"] - before["requests"]
    by_endpoint = {
        endpoint: count - before["requests_by_endpoint"].get(endpoint, 0)
        for endpoint, count in sorted(after["requests_by_endpoint"].items())
    }
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "deployments": args.deployments,
        "stores": args.stores,
        "history_days": args.history,
        "targets": targets,
        "wall_s": round(wall, 2),
        "targets_per_s": round(targets / wall, 1),
        "requests": requests,
        "requests_per_target": round(requests / targets, 2),
        "requests_by_endpoint": by_endpoint,
        "audit_cpu_s": round(cpu, 2),
        "audit_cpu_ms_per_request": round(cpu * 1000 / max(1, requests), 3),
        "audit_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "verdicts": {v: audited.summary[v] for v in ("compliant", "violation", "unknown")},
        "by_control": audited.summary["by_control"],
    }
    report_figures(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
