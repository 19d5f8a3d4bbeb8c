"""The command line: parses, calls a use case, prints what it returned. `main(argv) -> int` is the only place
that knows exit codes, and this module the only one that prints (observers aside: the live display and
the log lines of a run).

Exit codes: 0 every target succeeded; 1 some target did not; 2 bad input (nothing was submitted);
3 the run was aborted (failure threshold, deadline or interrupt).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
from pydantic_settings import CliSettingsSource

from orchestrator import audit, console, notify, usecases
from orchestrator.clock import SystemClock
from orchestrator.errors import InputError, RunCrashed
from orchestrator.events import Observer, Observers
from orchestrator.model import Outcome, RunResult
from orchestrator.progress import LiveProgress, LogObserver
from orchestrator.redact import redact
from orchestrator.runner import RunControl
from orchestrator.settings import AuditSettings, ConnectionSettings, RunSettings, SnapshotSettings
from orchestrator.untrusted import shown

T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_ABORTED: Final = 3
SIMULATOR_COMMANDS: Final = frozenset({"demo", "simulate"})
RUN_ID_HELP: Final = "a run id, an unambiguous start of one, or 'latest'"

FlagSources = dict[str, CliSettingsSource[Any]]


def _parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, FlagSources]:
    from orchestrator import __version__

    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Fleet-scale disaster-recovery backups for ArcGIS Enterprise on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sources = _add_run_commands(commands)
    sources["snapshot"] = _add_snapshot_command(commands)
    sources["audit"] = _add_audit_command(commands)
    _add_ledger_commands(commands, merging=_is_report_merge(argv))
    _add_simulator_commands(commands, load_flags=_command_word(argv) in SIMULATOR_COMMANDS)
    return parser, sources


Commands = Any  # argparse's subparsers action (private in typeshed)


# The commands that take every run setting as a flag: (name, help, description).
RUN_COMMANDS: Final = (
    (
        "run",
        "back up every selected deployment of an inventory and write the report",
        "Create a DR backup on every selected target concurrently, follow every job to its end, and write "
        "REPORT_DIR/RUN_ID/report.{json,csv,md}. Settings come from these flags, then ORCHESTRATOR_* variables, "
        "then --settings FILE, then the defaults shown.",
    ),
    (
        "plan",
        "show what a run would do (targets, stores, backup names, limits); submit nothing",
        "Print the targets, stores, backup names and limits of a run without submitting anything. With --check, "
        "also sign in to each deployment and check, read-only, that each store exists and that no DR job is "
        "already running.",
    ),
    (
        "resume",
        "carry on a run that was killed or interrupted: follow its jobs, start what never started",
        "Carry on a run the ledger records as unfinished (killed, crashed, or stopped with Ctrl-C). Jobs it "
        "submitted are followed to their end, not created again; a create whose answer was never recorded is "
        "first looked for on the server; targets never started are started. Same settings as the run unless a "
        "flag overrides one; the report covers the whole run.",
    ),
    (
        "retry",
        "after a fix: a new run over the targets of RUN_ID that did not succeed, with today's inventory",
        "After a fix: start a new run over the targets of RUN_ID that failed, timed out, were not started or were "
        "interrupted, with the inventory as it is now (deployments matched by name; changed stores and deployments "
        "gone are said) and that run's settings unless a flag overrides one (output settings come from this "
        "command).",
    ),
)


def _add_run_commands(commands: Commands) -> FlagSources:
    """run, plan, resume and retry, each with every run setting as a flag."""
    sources: FlagSources = {}
    for name, help_text, description in RUN_COMMANDS:
        # "resolve": the CLI's own --select replaces the generated one (see `_add_run_flags`).
        command = commands.add_parser(name, help=help_text, description=description, conflict_handler="resolve")
        if name == "resume":
            command.add_argument(
                "run_id", nargs="?", metavar="RUN_ID", help=f"{RUN_ID_HELP} (default: the last unfinished run)"
            )
        elif name == "retry":
            command.add_argument("run_id", metavar="RUN_ID", help=RUN_ID_HELP)
        elif name == "plan":
            command.add_argument(
                "--check", action="store_true", help="sign in and check stores and running DR jobs (read-only)"
            )
        sources[name] = _add_setting_flags(command, RunSettings)
    return sources


def _add_snapshot_command(commands: Commands) -> CliSettingsSource[Any]:
    snapshot = commands.add_parser(
        "snapshot",
        help="pre-upgrade mass snapshot: back up every selected deployment and say which are safe to upgrade",
        description="Before an upgrade wave: check each selected deployment read-only (sign in, version, stores, "
        "no DR job running), back up the ones that pass (named pre-upgrade-TIMESTAMP-DEPLOYMENT, described "
        "'pre-upgrade: PURPOSE', kept --retention-days), verify each backup is listed completed and of the "
        "version read before, and write beside the report ready.toml and not-ready.toml: inventories of the "
        "deployments that are and are not safe to upgrade. Exit 0 only when every one is ready.",
        conflict_handler="resolve",
    )
    return _add_setting_flags(snapshot, SnapshotSettings)


def _add_audit_command(commands: Commands) -> CliSettingsSource[Any]:
    audit = commands.add_parser(
        "audit",
        help="compliance audit, read-only: which targets lack a good, recent, restorable backup, and why",
        description="Sign in to every selected deployment and read its version, stores and every backup in each "
        "store's list (never creating, deleting or changing anything); judge each target against the policy "
        "(--policy FILE, or the inventory's [policy] table) and write REPORT_DIR/audit-AUDIT_ID/compliance."
        "{json,csv,md}. Exit 0 when every target is compliant, 1 when any is in violation or unknown.",
        conflict_handler="resolve",
    )
    return _add_setting_flags(audit, AuditSettings)


def _is_report_merge(argv: Sequence[str]) -> bool:
    """`report merge DIR...`: the report command's first word is `merge` (no run id is)."""
    words = [word for word in argv if not word.startswith("-")]
    return words[:2] == ["report", "merge"]


def _add_ledger_commands(commands: Commands, *, merging: bool = False) -> None:
    runs = commands.add_parser("runs", help="the recent runs in the ledger, with their counts and state")
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    runs.add_argument("--ledger", type=Path, metavar="PATH", help="ledger file (default: ORCHESTRATOR_LEDGER or "
                      "REPORT_DIR/ledger.sqlite3)")  # fmt: skip
    runs.add_argument("--report-dir", type=Path, metavar="DIR", help="the reports' folder, where the ledger is")
    report = commands.add_parser(
        "report",
        help="write a past run's reports again, from the ledger; or `report merge DIR...`: one report over several",
        usage="orchestrator report [-h] RUN_ID [--ledger PATH] [--report-dir DIR]\n"
        "       orchestrator report merge DIR [DIR ...] [--report-dir DIR]",
        description="report RUN_ID: write a past run's reports again, from the ledger. report merge DIR...: one "
        "consolidated report over the runs' (or audits') reports in the folders given (a run's folder, an audit's, "
        "or a report folder, whose latest.json names its run), e.g. the shards of one fleet run, written under "
        "REPORT_DIR/merged-ID/.",
    )
    if merging:
        report.add_argument("merge", choices=["merge"], metavar="merge")
        report.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="run, audit or report folders")
        report.add_argument("--report-dir", type=Path, metavar="DIR", help="where (default: reports)")
        return
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument("--ledger", type=Path, metavar="PATH", help="ledger file")
    report.add_argument("--report-dir", type=Path, metavar="DIR", help="where (default: the run's report dir)")


def _add_simulator_commands(commands: Commands, *, load_flags: bool) -> None:
    """demo and simulate; their flags come from the simulator, loaded only when one of them is asked for."""
    demo = commands.add_parser(
        "demo",
        help="run a real fleet run against a built-in simulated fleet (flaky profile)",
        description="Start a simulated fleet in-process, write an inventory for it, and run the fleet run against "
        "it with a live progress display: what `make demo` does.",
    )
    sim = commands.add_parser(
        "simulate",
        help="serve a simulated fleet of ArcGIS Enterprise deployments on loopback",
        description=(
            "Serve a simulated fleet of ArcGIS Enterprise on Kubernetes deployments on one loopback socket, "
            "each under its own web context (http://127.0.0.1:PORT/<deployment>/admin), until interrupted. "
            "Flags override the fleet file's keys."
        ),
    )
    if load_flags:
        from orchestrator.simulator import commands as simulated

        simulated.add_demo_arguments(demo)
        simulated.add_simulate_arguments(sim)


def _command_word(argv: Sequence[str]) -> str:
    """The command asked for: the first word that is not an option ("" for none)."""
    return next((word for word in argv if not word.startswith("-")), "")


def _add_setting_flags(parser: argparse.ArgumentParser, model: type[ConnectionSettings]) -> CliSettingsSource[Any]:
    """One flag per setting of the command's model, generated by pydantic-settings, so help, names, defaults,
    variables and the `--no-` form of every boolean never drift from the model."""
    parser.add_argument("--settings", type=Path, metavar="FILE", help="settings file (TOML, same keys as the flags)")
    source: CliSettingsSource[Any] = CliSettingsSource(
        model,
        root_parser=parser,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_show_env_vars=True,
        cli_avoid_json=True,
        cli_hide_none_type=True,
    )
    # `--select` stays a plain repeated flag: the generated one would split a glob at its commas (gis-[a,b]*).
    select = ConnectionSettings.model_fields["select"].description
    parser.add_argument("--select", action="append", metavar="RULE", help=f"{select} [env: ORCHESTRATOR_SELECT]")
    # `--notify` too: an Apprise URL may hold a comma (mailto://a,b).
    notify = ConnectionSettings.model_fields["notify"].description
    parser.add_argument("--notify", action="append", metavar="URL", help=f"{notify} [env: ORCHESTRATOR_NOTIFY]")
    if parser.prog.split()[-1] in ("run", "snapshot"):  # resume, retry and plan need the ledger they read
        parser.add_argument("--no-ledger", action="store_true", help="keep no run ledger (no resume, retry or history)")
    return source


def _flags_given(sources: FlagSources, args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags actually given, so variables and the settings file can fill the rest."""
    flags = {**sources[args.command](parsed_args=args)(), **_given(args, "select", "notify")}
    if getattr(args, "no_ledger", False):
        flags["record_ledger"] = False
    return flags


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def exit_code(result: RunResult) -> int:
    if result.stopped_reason:
        return EXIT_ABORTED
    if all(target.outcome is Outcome.SUCCEEDED for target in result.targets):
        return EXIT_OK
    return EXIT_SOME_FAILED


# Young objects collected after this many allocations (Python's default: 700). A 10,000-deployment run keeps
# hundreds of thousands of objects alive (tasks, targets, connections): at the default, the collector scanned
# them again and again, 14 % of the run's CPU (7 s); at this, 0.6 s, for the same peak memory.
GC_YOUNG_THRESHOLD: Final = 50_000


def _collect_garbage_seldom() -> None:
    """What the process holds at start (modules, settings) is never scanned again, and the rest seldom: most of
    a run's garbage is freed by reference counting; the collector is only for cycles."""
    gc.collect()  # start-up's own garbage first: frozen, it would stay for the whole run
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def _run_async(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """The event loop of every command: uvloop where installed (it halves the CPU a request costs the
    loop, which is what bounds a 10,000-deployment run on a small box), asyncio's own otherwise."""
    return anyio.run(function, *args, backend_options={"use_uvloop": find_spec("uvloop") is not None})


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # a process of its own (tests pass their words, and keep their collector)
        _collect_garbage_seldom()
    words = list(sys.argv[1:] if argv is None else argv)
    parser, sources = _parser(words)
    args = parser.parse_args(words)
    try:
        return _dispatch(args, sources)
    except InputError as error:
        _warn(error.warnings)
        print("error: the input cannot be used; nothing was submitted:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {redact(problem)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # a bug: its traceback for the report, with no secret and no terminal control in it
        lines = traceback.format_exc().splitlines()
        print("\n".join(shown(redact(line), 2000) for line in lines), file=sys.stderr)
        print("error: an internal error stopped the command (a bug: please report it with the lines above)",
              file=sys.stderr)  # fmt: skip
        return EXIT_SOME_FAILED


def _dispatch(args: argparse.Namespace, sources: FlagSources) -> int:
    command = args.command
    if command == "run":
        return _run(usecases.prepare_run(_flags_given(sources, args), args.settings))
    if command == "plan":
        return _plan(usecases.prepare_run(_flags_given(sources, args), args.settings), args.check)
    if command == "resume":
        flags = _flags_given(sources, args)
        run_id = usecases.resolve_run_id(args.run_id, flags) if args.run_id else None
        return _run(usecases.prepare_resume(run_id, flags, args.settings))
    if command == "retry":
        flags = _flags_given(sources, args)
        run_id = usecases.resolve_run_id(args.run_id, flags)  # `latest`, or any start of a run id naming one
        retry = usecases.prepare_retry(run_id, flags, args.settings)
        if isinstance(retry, usecases.NothingToRetry):
            _warn(retry.warnings)
            print(f"nothing to retry: every target of run {run_id} (that the selection keeps) succeeded")
            return EXIT_OK
        return _run(retry)
    if command == "snapshot":
        return _run(usecases.prepare_run(_flags_given(sources, args), args.settings, kind="snapshot"))
    if command == "audit":
        return _audit(audit.prepare_audit(_flags_given(sources, args), args.settings))
    if command == "runs":
        listing = usecases.list_runs(_given(args, "ledger", "report_dir"), args.limit)
        _warn(listing.warnings)
        print(console.runs_text(listing))
        return EXIT_OK
    if command == "report" and getattr(args, "merge", None):
        return _merge(args.folders, args.report_dir or Path("reports"))
    if command == "report":
        folder = usecases.rewrite_report(args.run_id, _given(args, "ledger", "report_dir"))
        print(f"report: {folder / 'report.html'} (also report.md, .json, .csv, .junit.xml)")
        return EXIT_OK
    if command == "demo":
        return _demo(args)
    if command == "simulate":
        return _simulate(args)
    raise AssertionError(f"unknown command {command}")  # pragma: no cover


# -- run, resume, retry, demo --


def _run(plan: usecases.RunPlan) -> int:
    log = _log_of(plan)
    _warn(plan.warnings, log)
    finished = _run_async(_execute_shown, plan, log)
    code = _finished(finished)  # the summary, on stdout: text whatever --log-format says (stdout is not the log)
    _warn(finished.warnings, log)
    _notify(plan.settings, finished.document, finished.result.kind, finished.folder, ok=code == EXIT_OK, log=log)
    return code


def _log_of(plan: usecases.RunPlan) -> LogObserver:
    """The run's log lines on stderr: its events, and the command's own lines (`LogObserver.say`)."""
    return LogObserver(json_lines=plan.settings.log_format == "json", run_id=plan.run_id)


def _notify(
    settings: ConnectionSettings,
    document: dict[str, Any],
    kind: str,
    folder: Path,
    *,
    ok: bool,
    log: LogObserver | None = None,
) -> None:
    """The summary to every --notify URL, when --notify-on says so; a notification that fails is a warning."""
    if not settings.notify or not notify.should_notify(settings.notify_on, ok):
        return
    title, body = notify.summary_text(document, kind, folder)
    send = partial(notify.send, list(settings.notify), title, body, timeout=notify.DEFAULT_TIMEOUT, ok=ok)
    _warn(_run_async(send), log)


async def _execute_shown(plan: usecases.RunPlan, log: LogObserver | None = None) -> usecases.Finished:
    """The run with its display (a live one on a terminal, log lines otherwise) and Ctrl-C handling. With
    --log-format json every line on stderr is JSON, the first one and Ctrl-C's included."""
    settings, control = plan.settings, RunControl()
    log = log or _log_of(plan)
    json_lines = settings.log_format == "json"
    live = sys.stderr.isatty() and not settings.quiet and not json_lines
    observers: list[Observer] = []
    if not settings.quiet and not live:
        observers.append(log)
    progress = LiveProgress(plan.targets, SystemClock(), grace=settings.grace) if live else None
    if progress is not None:
        observers.append(progress)
    if not settings.quiet:
        deployments = len({t.deployment.name for t in plan.targets})
        verb = "resuming run" if plan.resumed else "run"
        log.say(
            "run", f"{verb} {plan.run_id}: {len(plan.targets)} targets on {deployments} deployments",
            kind=plan.kind, parent_run_id=plan.parent_run_id, resumed=plan.resumed, targets=len(plan.targets),
            deployments=deployments,
        )  # fmt: skip
    outcome: usecases.Finished | Exception
    async with anyio.create_task_group() as signals:
        stopping = (
            f"stopping: nothing new is submitted; running jobs are followed for {settings.grace:g} s "
            "(Ctrl-C again to stop at once; the report is written either way)"
        )
        tell = log.say if json_lines else _said
        signals.start_soon(_watch_signals, control, stopping, "stopping now; writing the report", tell)
        try:
            with progress if progress is not None else nullcontext():
                outcome = await usecases.execute(plan, observer=Observers(*observers), control=control)
        except Exception as error:  # raised below, as itself: not wrapped in the task group's exception group
            outcome = error
        signals.cancel_scope.cancel()
    if isinstance(outcome, RunCrashed):  # the report says what is known; the bug itself goes on, as it was
        print(outcome, file=sys.stderr)
        raise outcome.cause
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def _watch_signals(
    control: RunControl, first: str, second: str | None = None, tell: Callable[[str, str], None] | None = None
) -> None:
    """Ctrl-C / SIGTERM: the first asks `control` to stop (saying `first`), a second one to stop at once.
    `tell(event, line)` says it (default: a line of text on stderr)."""
    tell = tell or _said
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for _ in received:
            if not control.stop_requested:
                tell("stopping", first)
                control.stop()
            elif second is not None:
                tell("stopping_now", second)
                control.abort()


def _said(_event: str, line: str) -> None:
    """A line of the command's own on stderr, below whatever the live display left on its line."""
    print(f"\n{line}", file=sys.stderr)


def _finished(finished: usecases.Finished) -> int:
    print("\n".join(console.finished_lines(finished)))
    return exit_code(finished.result)


def _warn(warnings: Sequence[str], log: LogObserver | None = None) -> None:
    """Each warning on stderr: a line of text, or through a run's log (a JSON line with --log-format json)."""
    for warning in warnings:
        if log is not None:
            log.say("warning", f"warning: {warning}", warning=warning)
        else:
            print(f"warning: {redact(warning)}", file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    import shlex

    from orchestrator.simulator import commands as simulated

    async def demo() -> tuple[usecases.Finished, audit.Audited]:
        async with simulated.demo_plan(args.deployments, args.profile, args.seed, args.report_dir, args.quiet) as (
            plan,
            served,
        ):
            if not args.quiet:
                where = f"{served.deployments} deployments ({args.profile} profile) on {served.base_url}"
                print(f"demo: a simulated fleet of {where}", file=sys.stderr)
            finished = await _execute_shown(plan)
            # Then the compliance audit of the same fleet, its backup history included.
            return finished, await audit.run_audit(simulated.demo_audit_plan(plan))

    finished, audited = _run_async(demo)
    code = _finished(finished)
    print("\nthen the compliance audit of the same fleet, its backup history included:")
    print("\n".join(console.audit_lines(audited)))
    ledger = simulated.demo_ledger(args.report_dir)
    print(
        f"\nthe demo's runs are kept in a ledger of their own, {ledger}, so `orchestrator runs` does not list them; "
        f"`orchestrator runs --ledger {shlex.quote(str(ledger))}` does"
    )
    if code == EXIT_SOME_FAILED and args.profile != "none":
        # The demo worked: its failures are the ones the fault profile injects on purpose.
        print(f"(the failures above were injected by the {args.profile!r} fault profile; a real run exits 1)")
        return EXIT_OK
    return code


def _merge(folders: list[Path], report_dir: Path) -> int:
    """`report merge`: one report over several; its exit code is that of the merged targets, as a run's."""
    import random

    from orchestrator import merge

    folder, document = merge.merge_reports(folders, report_dir, now=SystemClock().now(), rng=random.Random())
    summary = document["summary"]
    if document["kind"] == "audit":
        print(audit.verdict_line(summary))
        print(f"report: {folder / 'compliance.html'} (also compliance.md, .json, .csv, .junit.xml)")
        return EXIT_OK if summary["compliant"] == summary["targets"] else EXIT_SOME_FAILED
    print(document["verdict"])
    print(f"report: {folder / 'report.html'} (also report.md, .json, .csv, .junit.xml)")
    return EXIT_OK if summary["succeeded"] == summary["total"] else EXIT_SOME_FAILED


# -- audit --


def _audit(plan: audit.AuditPlan) -> int:
    _warn(plan.warnings)
    if not plan.settings.quiet:
        print(
            f"audit: {plan.targets} targets on {len(plan.deployments)} deployments; policy: {plan.policy.source}",
            file=sys.stderr,
        )
    audited = _run_async(_audit_watched, plan)
    print("\n".join(console.audit_lines(audited)))
    _warn(audited.warnings)
    if audited.interrupted:
        code = EXIT_ABORTED
    else:
        code = EXIT_OK if audited.summary["compliant"] == audited.summary["targets"] else EXIT_SOME_FAILED
    _notify(plan.settings, audited.document, "audit", audited.folder, ok=code == EXIT_OK)
    return code


async def _audit_watched(plan: audit.AuditPlan) -> audit.Audited:
    """The audit, stopped by Ctrl-C / SIGTERM: what was read is reported, the rest is `unknown`."""
    control = RunControl()
    async with anyio.create_task_group() as signals:
        signals.start_soon(_watch_signals, control, "stopping the audit: what was read is reported")
        audited = await audit.run_audit(plan, control=control)
        signals.cancel_scope.cancel()
    return audited


# -- plan --


def _plan(plan: usecases.RunPlan, check: bool) -> int:
    _warn(plan.warnings)
    deployments = plan.deployments
    print(console.plan_text(plan.settings, usecases.preview(plan), len(deployments)))
    if not check:
        return EXIT_OK
    checks = _run_async(usecases.check_deployments, plan.settings, deployments)
    print()
    print(console.checks_table(checks))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_SOME_FAILED


# -- simulate --


def _simulate(args: argparse.Namespace) -> int:
    from orchestrator.simulator import commands as simulated
    from orchestrator.simulator.config import FleetFileError

    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            print(f"error: --password-env {args.password_env}: that variable is not set", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        config = simulated.fleet_config(args)
    except FleetFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    async def serve_until_stopped() -> None:
        # Signals are taken before the banner: a Ctrl-C right after "press Ctrl-C" must stop cleanly.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with simulated.serve(
                config,
                password=password,
                host=args.host,
                port=args.port,
                tls_dir=args.tls_dir,
                write_inventory_to=args.write_inventory,
            ) as served:
                print(f"simulated fleet of {served.deployments} deployments listening on {served.base_url}")
                print(f"  a deployment: {served.first_deployment_url}/admin")
                print(f"  records:      {served.base_url}/_simulator/stats")
                print("                (also: fleet, requests, creates, jobs, backups)")
                if served.ca_cert:
                    print(f"  CA to trust:  {served.ca_cert}")
                if served.inventory:
                    print(f"  inventory:    {served.inventory} (secrets in {served.secrets_dir}/)")
                print("press Ctrl-C to stop", flush=True)
                async for _ in signals:
                    break
        print("simulator stopped")

    try:
        _run_async(serve_until_stopped)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
