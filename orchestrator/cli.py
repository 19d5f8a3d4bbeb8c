"""The command line. `main(argv) -> int` is the only place that knows exit codes.

Exit codes: 0 success, 2 bad input (nothing was started).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from orchestrator.simulator.config import (
    PROFILES,
    FleetConfig,
    FleetFileError,
    fleet_from_mapping,
    load_fleet_file,
)

EXIT_OK: Final = 0
EXIT_BAD_INPUT: Final = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Fleet-scale disaster-recovery backups for ArcGIS Enterprise on Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser(
        "simulate",
        help="serve a simulated fleet of ArcGIS Enterprise deployments on loopback",
        description=(
            "Serve a simulated fleet of ArcGIS Enterprise on Kubernetes deployments on one loopback socket, "
            "each under its own web context (http://127.0.0.1:PORT/<deployment>/admin), until interrupted. "
            "Flags override the fleet file's keys."
        ),
    )
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
    return parser


def _fleet_config(args: argparse.Namespace) -> FleetConfig:
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


async def _simulate(args: argparse.Namespace, config: FleetConfig, password: str | None) -> int:
    from orchestrator.simulator.fleet import SimulatedFleet
    from orchestrator.simulator.inventory_file import write_inventory
    from orchestrator.simulator.server import serve_fleet
    from orchestrator.simulator.tls import ensure_tls_files

    fleet = SimulatedFleet(config, password=password)
    tls = ensure_tls_files(args.tls_dir) if args.tls_dir else None
    async with serve_fleet(
        fleet, host=args.host, port=args.port, ssl_context=tls.server_context() if tls else None
    ) as running:
        print(f"simulated fleet of {len(fleet.deployments)} deployments listening on {running.base_url}")
        print(f"  a deployment: {running.url_of(fleet.plans[0].name)}/admin")
        print(f"  records:      {running.base_url}/_simulator/stats")
        print("                (also: fleet, requests, creates, jobs, backups)")
        if tls:
            print(f"  CA to trust:  {tls.ca_cert}")
        if args.write_inventory:
            urls = {plan.name: running.url_of(plan.name) for plan in fleet.plans}
            secrets_dir = write_inventory(
                args.write_inventory,
                fleet.plans,
                urls,
                password=fleet.password,
                ca_bundle=tls.ca_cert if tls else None,
            )
            print(f"  inventory:    {args.write_inventory} (secrets in {secrets_dir}/)")
        print("press Ctrl-C to stop", flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
    print("simulator stopped")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        password = None
        if args.password_env:
            password = os.environ.get(args.password_env)
            if not password:
                print(f"error: --password-env {args.password_env}: that variable is not set", file=sys.stderr)
                return EXIT_BAD_INPUT
        try:
            config = _fleet_config(args)
        except FleetFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            return anyio.run(_simulate, args, config, password)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    raise AssertionError(f"unknown command {args.command}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
