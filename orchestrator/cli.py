"""The command line. `main(argv) -> int` is the only place that knows exit codes.

Exit codes: 0 every target succeeded; 1 some target did not; 2 bad input (nothing was submitted);
3 the run was aborted (failure threshold, deadline or interrupt).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio

from orchestrator import commands
from orchestrator.clock import SystemClock
from orchestrator.errors import InputError
from orchestrator.model import Outcome, RunResult
from orchestrator.redact import redact
from orchestrator.settings import RunSettings
from orchestrator.simulator.config import (
    PROFILES,
    FleetConfig,
    FleetFileError,
    fleet_from_mapping,
    load_fleet_file,
)

T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_ABORTED: Final = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Fleet-scale disaster-recovery backups for ArcGIS Enterprise on Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="back up every selected deployment of an inventory and write the report",
        description="Create a DR backup on every selected target concurrently, follow every job to its end, "
        "and write REPORT_DIR/RUN_ID/report.{json,csv,md}. Settings come from these flags, then ORCHESTRATOR_* "
        "variables, then --settings FILE, then the defaults shown.",
    )
    _add_run_flags(run)
    plan = commands.add_parser(
        "plan",
        help="show what a run would do (targets, stores, backup names, limits); submit nothing",
        description="Print the targets, stores, backup names and limits of a run without submitting anything. "
        "With --check, also sign in to each deployment and check, read-only, that each store exists and that no "
        "DR job is already running.",
    )
    _add_run_flags(plan)
    plan.add_argument("--check", action="store_true", help="sign in and check stores and running DR jobs (read-only)")
    resume = commands.add_parser(
        "resume",
        help="carry on a run that was killed or interrupted: follow its jobs, start what never started",
        description="Carry on a run the ledger records as unfinished (killed, crashed, or stopped with Ctrl-C). "
        "Jobs it submitted are followed to their end, not created again; a create whose answer was never "
        "recorded is first looked for on the server; targets never started are started. Same settings as the "
        "run unless a flag overrides one; the report covers the whole run.",
    )
    resume.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: the last unfinished run")
    _add_run_flags(resume)
    retry = commands.add_parser(
        "retry",
        help="a new run over the targets of RUN_ID that did not succeed",
        description="Start a new run over exactly the targets of RUN_ID that failed, timed out, were not started "
        "or were interrupted, with that run's settings unless a flag overrides one.",
    )
    retry.add_argument("run_id", metavar="RUN_ID")
    _add_run_flags(retry)
    runs = commands.add_parser("runs", help="the recent runs in the ledger, with their counts and state")
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    runs.add_argument("--ledger", type=Path, metavar="PATH", help="ledger file (default: ORCHESTRATOR_LEDGER or "
                      "the state directory)")  # fmt: skip
    report = commands.add_parser("report", help="write a past run's reports again, from the ledger")
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument("--ledger", type=Path, metavar="PATH", help="ledger file")
    report.add_argument("--report-dir", type=Path, metavar="DIR", help="where (default: the run's report dir)")
    demo = commands.add_parser(
        "demo",
        help="run a real fleet run against a built-in simulated fleet (flaky profile)",
        description="Start a simulated fleet in-process, write an inventory for it, and run the fleet run against "
        "it with a live progress display: what `make demo` does.",
    )
    demo.add_argument("--deployments", type=int, default=40, metavar="N", help="simulated deployments (default 40)")
    demo.add_argument("--profile", choices=sorted(PROFILES), default="flaky", help="fault profile (default flaky)")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    demo.add_argument("--report-dir", type=Path, default=Path("reports"), help="where reports go (default reports/)")
    demo.add_argument("--quiet", action="store_true", help="only the final summary")
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


def exit_code(result: RunResult) -> int:
    if result.stopped_reason:
        return EXIT_ABORTED
    if all(target.outcome is Outcome.SUCCEEDED for target in result.targets):
        return EXIT_OK
    return EXIT_SOME_FAILED


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per run setting, generated from `RunSettings` so help, names and defaults never drift."""
    parser.add_argument("--settings", type=Path, metavar="FILE", help="settings file (TOML, same keys as the flags)")
    for name, info in RunSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = info.default
        shown = "none" if default is None or default == () else default
        help_text = f"{info.description} (default: {shown}; env ORCHESTRATOR_{name.upper()})".replace("%", "%%")
        if info.annotation is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif name == "select":
            parser.add_argument(flag, action="append", metavar="RULE", help=help_text)
        elif name == "log_format":
            parser.add_argument(flag, choices=["text", "json"], help=help_text)
        else:
            kind = {int: int, float: float}.get(_plain_type(info.annotation), str)
            parser.add_argument(flag, type=kind, metavar=name.upper(), help=help_text)


def _plain_type(annotation: Any) -> Any:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if args else annotation


def _run_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags actually given, so variables and the settings file can fill the rest."""
    return {name: getattr(args, name) for name in RunSettings.model_fields if getattr(args, name, None) is not None}


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


async def _execute(settings: RunSettings, plan: commands.RunPlan) -> RunResult:
    return await commands.execute(settings, plan)


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
    # Signals are taken before the banner: a Ctrl-C right after "press Ctrl-C" must stop cleanly.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
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
            async for _ in signals:
                break
    print("simulator stopped")
    return EXIT_OK


def _run_async(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """The event loop of every command: uvloop where installed (it halves the CPU a request costs the
    loop, which is what bounds a 10,000-deployment run on a small box), asyncio's own otherwise."""
    return anyio.run(function, *args, backend_options={"use_uvloop": find_spec("uvloop") is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("run", "plan"):
            settings, deployments, inventory = commands.prepare(_run_flags(args), args.settings)
            if args.command == "plan":
                checks_passed = _run_async(commands.plan, settings, deployments, args.check)
                return EXIT_OK if checks_passed else EXIT_SOME_FAILED
            return exit_code(_run_async(commands.run_and_report, settings, deployments, inventory))
        if args.command == "resume":
            settings, plan = commands.prepare_resume(args.run_id, _run_flags(args), args.settings)
            return exit_code(_run_async(_execute, settings, plan))
        if args.command == "retry":
            settings, retry_plan = commands.prepare_retry(args.run_id, _run_flags(args), args.settings, SystemClock())
            if retry_plan is None:
                print(f"nothing to retry: every target of run {args.run_id} (that the selection keeps) succeeded")
                return EXIT_OK
            return exit_code(_run_async(_execute, settings, retry_plan))
        if args.command == "runs":
            commands.list_runs(_given(args, "ledger"), args.limit)
            return EXIT_OK
        if args.command == "report":
            folder = commands.rewrite_report(args.run_id, _given(args, "ledger", "report_dir"))
            print(f"report: {folder / 'report.md'} (also report.json, report.csv)")
            return EXIT_OK
        if args.command == "demo":
            result = _run_async(commands.demo, args.deployments, args.profile, args.seed, args.report_dir, args.quiet)
            code = exit_code(result)
            if code == EXIT_SOME_FAILED and args.profile != "none":
                # The demo worked: its failures are the ones the fault profile injects on purpose.
                print(f"(the failures above were injected by the {args.profile!r} fault profile; a real run exits 1)")
                return EXIT_OK
            return code
    except InputError as error:
        print("error: the input cannot be used; nothing was submitted:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {redact(problem)}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
            return _run_async(_simulate, args, config, password)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    raise AssertionError(f"unknown command {args.command}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
