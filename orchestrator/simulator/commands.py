"""The two commands that serve a simulated fleet: `simulate` (serve it until stopped) and `demo` (serve it and
run the fleet run against it). Their flags and what they do; the CLI prints.

The CLI imports this module for these two commands only, so no other command loads the simulator.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from orchestrator.audit import AuditPlan, prepare_audit
from orchestrator.settings import AuditSettings
from orchestrator.simulator.config import PROFILES, FleetConfig, FleetFileError, fleet_from_mapping, load_fleet_file
from orchestrator.simulator.fleet import SimulatedFleet
from orchestrator.simulator.inventory_file import write_inventory
from orchestrator.simulator.server import serve_fleet
from orchestrator.simulator.tls import ensure_tls_files
from orchestrator.usecases import RunPlan, prepare_run

# Simulated jobs last seconds, not hours: the demo's polls, retries and timeouts are scaled down alike.
DEMO_SETTINGS: Final = {
    "poll_initial": 0.5,
    "poll_max": 3.0,
    "job_timeout": 60.0,
    "retry_initial": 0.2,
    "retry_max": 2.0,
    "request_timeout": 5.0,
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
    "grace": 5.0,
}
DEMO_JOBS: Final = {"dist": "lognormal", "median": 3.0, "sigma": 0.4, "low": 1.0, "high": 12.0}


def add_demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--deployments", type=int, default=40, metavar="N", help="simulated deployments (default 40)")
    demo.add_argument("--profile", choices=sorted(PROFILES), default="flaky", help="fault profile (default flaky)")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    demo.add_argument("--report-dir", type=Path, default=Path("reports"), help="where reports go (default reports/)")
    demo.add_argument("--quiet", action="store_true", help="only the final summary")


def add_simulate_arguments(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--fleet", type=Path, help="fleet file (TOML); see the README's 'Simulator' section")
    sim.add_argument("--deployments", type=int, metavar="N", help="number of generated deployments (default 20)")
    sim.add_argument("--profile", choices=sorted(PROFILES), help="fault profile (default: none)")
    sim.add_argument("--seed", type=int, help="seed of every random draw (default 0): same seed, same fleet")
    sim.add_argument(
        "--versions",
        metavar="MIX",
        help="version mix as VERSION=WEIGHT pairs, e.g. '11.3=3,11.4=1,12.0=1' (default: a realistic mix)",
    )
    sim.add_argument("--stores", metavar="NAMES", help="backup stores of every deployment, e.g. 'default,offsite'")
    sim.add_argument(
        "--token-lifetime",
        type=float,
        metavar="S",
        help="cap every token's lifetime at S seconds (tokens expire mid-job)",
    )
    sim.add_argument("--job-seconds", type=float, metavar="S", help="median backup job duration (default 2.0)")
    sim.add_argument(
        "--history",
        type=float,
        metavar="DAYS",
        help="days of scheduled backups each deployment already has when the fleet starts, 0 for none "
        "(default: the profile's: 14 for flaky and hostile, none for none)",
    )
    sim.add_argument(
        "--error-status",
        choices=["200", "mirror"],
        help="HTTP status of ArcGIS errors: 200 with an error body (default, as real servers do) "
        "or mirror the error code",
    )
    sim.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    sim.add_argument("--tls-dir", type=Path, help="serve HTTPS with a private CA kept in this folder")
    sim.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the fleet's admin password (default: a generated one)",
    )
    sim.add_argument(
        "--write-inventory",
        type=Path,
        metavar="PATH",
        help="write an inventory of the fleet here, with its secrets in PATH's stem + '.secrets/'",
    )


def fleet_config(args: argparse.Namespace) -> FleetConfig:
    """The fleet `simulate`'s flags describe: a fleet file with the flags over its keys, or the flags alone."""
    overrides: dict[str, Any] = {}
    if args.deployments is not None:
        overrides["count"] = args.deployments
    if args.profile is not None:
        overrides["profile"] = args.profile
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.error_status is not None:
        overrides["error_status"] = args.error_status
    if args.versions is not None:
        overrides["versions"] = _version_mix(args.versions)
    if args.stores is not None:
        overrides["stores"] = tuple(name.strip() for name in args.stores.split(",") if name.strip())
    if args.token_lifetime is not None:
        overrides["faults"] = {"token_lifetime_s": args.token_lifetime}
    if args.job_seconds is not None:
        overrides["job_duration"] = {"dist": "lognormal", "median": args.job_seconds, "sigma": 0.35}
    if args.history is not None:
        overrides["history"] = {"days": args.history}
    if args.fleet is not None:
        return load_fleet_file(args.fleet, **overrides)
    overrides.setdefault("count", 20)
    return fleet_from_mapping(overrides, source="command line")


def _version_mix(text: str) -> dict[str, float]:
    mix = {}
    for pair in text.split(","):
        version, _, weight = pair.partition("=")
        try:
            mix[version.strip()] = float(weight or 1)
        except ValueError:
            raise FleetFileError(f"--versions: {pair!r} is not VERSION=WEIGHT (e.g. 11.3=2)") from None
    return mix


@dataclass(frozen=True, slots=True)
class Served:
    """A simulated fleet being served: where, and what was written for it."""

    deployments: int
    base_url: str
    first_deployment_url: str
    ca_cert: Path | None = None
    inventory: Path | None = None
    secrets_dir: Path | None = None


@asynccontextmanager
async def serve(
    config: FleetConfig,
    *,
    password: str | None,
    host: str,
    port: int,
    tls_dir: Path | None,
    write_inventory_to: Path | None,
) -> AsyncIterator[Served]:
    """Serve the fleet on loopback until the block ends (with a private CA in `tls_dir` for HTTPS), and write
    an inventory of it when asked."""
    fleet = SimulatedFleet(config, password=password)
    tls = ensure_tls_files(tls_dir) if tls_dir else None
    ssl_context = tls.server_context() if tls else None
    async with serve_fleet(fleet, host=host, port=port, ssl_context=ssl_context) as running:
        secrets_dir = None
        if write_inventory_to is not None:
            urls = {plan.name: running.url_of(plan.name) for plan in fleet.plans}
            secrets_dir = write_inventory(
                write_inventory_to, fleet.plans, urls, password=fleet.password, ca_bundle=tls.ca_cert if tls else None
            )
        yield Served(
            len(fleet.deployments),
            running.base_url,
            running.url_of(fleet.plans[0].name),
            tls.ca_cert if tls else None,
            write_inventory_to,
            secrets_dir,
        )


@asynccontextmanager
async def demo_plan(
    count: int, profile: str, seed: int, report_dir: Path, quiet: bool
) -> AsyncIterator[tuple[RunPlan, Served]]:
    """A built-in simulated fleet served on loopback, and the plan of a fleet run over it (its own ledger
    beside the reports, so demo runs stay out of the real one)."""
    config = fleet_from_mapping({"count": count, "profile": profile, "seed": seed, "job_duration": DEMO_JOBS})
    with tempfile.TemporaryDirectory(prefix="orchestrator-demo-") as scratch:
        inventory = Path(scratch) / "demo-inventory.toml"
        async with serve(
            config, password=None, host="127.0.0.1", port=0, tls_dir=None, write_inventory_to=inventory
        ) as served:
            flags = {
                **DEMO_SETTINGS,
                "inventory": inventory,
                "report_dir": report_dir,
                "quiet": quiet,
                "ledger": demo_ledger(report_dir),
            }
            plan = prepare_run(
                flags,
                None,
                name=f"built-in simulated fleet ({count} deployments, {profile})",
                kind="demo",
                inventory_key=f"demo:{count}:{profile}",
            )
            yield plan, served


def demo_ledger(report_dir: Path) -> Path:
    """The demo's own ledger, beside its reports: demo runs stay out of the real ledger (and `orchestrator runs`)."""
    return report_dir / "demo-ledger.sqlite3"


def demo_audit_plan(plan: RunPlan) -> AuditPlan:
    """The compliance audit of the demo's fleet, with the demo run's inventory and connection settings."""
    settings = plan.settings.public()
    flags = {key: value for key, value in settings.items() if key in AuditSettings.model_fields and key != "select"}
    return replace(prepare_audit(flags, None), inventory=plan.inventory)
