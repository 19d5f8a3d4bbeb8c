"""The fleet benchmark: the orchestrator, a sequential loop and a thread pool, on the same simulated fleet.

Why: users pick the orchestrator over a shell loop or a thread pool only if it finishes the nightly
window sooner, loads their servers less and runs on a small box. This measures that, side by side.

What: for each fleet (N deployments, one or two stores each; job durations lognormal, median 15 min,
seeded, every time scaled by `--scale`, 1/60 by default: a real minute is a benchmark second), each
contender runs against a fresh `orchestrator simulate` process serving the same fleet (profile `none`,
version 11.3), so the simulator's records and CPU are that contender's alone:

1. `orchestrator run` with its defaults, its time settings scaled (see `fleetbench.contenders`);
2. `benchmarks.baselines.sequential`: one deployment at a time, a fixed poll interval (10 s, scaled);
3. `benchmarks.baselines.threadpool`: the same on 20 workers.

Figures per contender, from the simulator's records and the contender's process accounting: wall time
against the ideal (the longest deployment's jobs back to back; with W workers, max(that, sum / W)) and
against the creates as sent; requests by kind and polls per job; detection lag (contender's record of
the end minus the simulator's completion), absolute and as a share of the job; CPU and peak RSS (from
`os.wait4`); the simulator's CPU. A contender capped by `--time-cap` is extrapolated, and labelled so.
Then (unless `--no-client`) `bench_client.measure_client_cpu`: the client's CPU per request against bare
aiohttp on the same requests. Issue 16's targets are judged on all of it (`fleetbench.summary`).

Output: `benchmarks/results/fleet-<scenario>.json`, `.md` (printed at the end) and
`-polls-vs-lag.png`. `--scenario quick` (`make bench`, a few minutes) runs 100 deployments;
`--scenario full` (`make bench-full`) 100, 1,000 and 10,000 deployments and 1,000 with two stores.
Traffic stays on 127.0.0.1. Secrets are generated here and passed in environment variables only.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any, Final

from bench_client import measure_client_cpu
from fleetbench.contenders import (
    NAMES,
    PASSCODE_ENV,
    PASSWORD_ENV,
    Contender,
    Workspace,
    contender,
    targets_document,
)
from fleetbench.figures import SimJob, deployment_chains, ideal_wall_s, job_of_poll, spread
from fleetbench.fleet import FleetSpec, predicted_durations
from fleetbench.output import Points, chart, markdown, run_title, write_json
from fleetbench.processes import clean_environment, machine, run_accounted, running_simulator
from fleetbench.summary import ISSUE_FLEET, Measured, contender_figures, issue_targets

REPO: Final = Path(__file__).resolve().parents[1]
DEFAULT_SCALE: Final = "1/60"
HARD_LIMIT_MARGIN_S: Final = 300.0  # past its cap (or thrice its ideal), a contender is killed


@dataclass(frozen=True, slots=True)
class FleetRun:
    spec: FleetSpec
    contenders: tuple[Contender, ...]


def scenario_runs(
    scenario: str, seed: int, scale: float, names: Sequence[str], sequential_cap: float | None, pool_cap: float | None
) -> list[FleetRun]:
    """quick: 100 deployments, the sequential loop capped at 60 s. full: 100, 1,000 and 10,000 deployments
    and 1,000 with two stores, the sequential loop capped at 90 s, the pool at 180 s from 1,000 up.
    An explicit cap (`--sequential-cap`, `--pool-cap`) wins; 0 means none."""

    def contenders_for(
        deployments: int, seq_default: float | None, pool_default: float | None
    ) -> tuple[Contender, ...]:
        caps = {
            "sequential": seq_default if sequential_cap is None else (sequential_cap or None),
            "threadpool": pool_default if pool_cap is None else (pool_cap or None),
        }
        return tuple(contender(name, caps.get(name)) for name in names)

    if scenario == "quick":
        return [FleetRun(FleetSpec(100, 1, seed, scale), contenders_for(100, 60.0, None))]
    if scenario == "full":
        fleets = [(100, 1), (1_000, 1), (10_000, 1), (1_000, 2)]
        return [
            FleetRun(FleetSpec(n, k, seed, scale), contenders_for(n, 90.0, 180.0 if n >= 1_000 else None))
            for n, k in fleets
        ]
    raise ValueError(f"unknown scenario {scenario!r}")


# -- measuring --


def _masked(text: str, hidden: Sequence[str]) -> str:
    for secret in hidden:
        text = text.replace(secret, "***")
    return text


def _tail(path: Path, hidden: Sequence[str], lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return _masked("\n".join(text.strip().splitlines()[-lines:]), hidden)


def measure_contender(
    spec: FleetSpec,
    entrant: Contender,
    predicted: dict[str, list[float]],
    env: dict[str, str],
    hidden: Sequence[str],
) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """One contender against a fresh simulator serving the fleet; its figures and chart points."""
    chains = list(deployment_chains(predicted).values())
    hard_limit = (entrant.cap_s or 3 * ideal_wall_s(chains, entrant.workers)) + HARD_LIMIT_MARGIN_S
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        folder = Path(tmp)
        fleet_file, inventory = folder / "fleet.toml", folder / "inventory.toml"
        fleet_file.write_text(spec.toml(), encoding="utf-8")
        simulate = [sys.executable, "-m", "orchestrator", "simulate", "--fleet", str(fleet_file)]
        simulate += ["--host", "127.0.0.1", "--port", "0", "--password-env", PASSWORD_ENV]
        simulate += ["--write-inventory", str(inventory)]
        with running_simulator(simulate, env, REPO, folder / "simulator.log") as simulator:
            space = Workspace(folder, inventory, spec.scale, REPO)
            document = targets_document(inventory.read_text(encoding="utf-8"), spec)
            space.targets_file.write_text(json.dumps(document), encoding="utf-8")
            for night in range(1, entrant.night):  # warm-up nights: the same fleet and ledger, not measured
                warm_up = entrant.command(space, report_dir=folder / f"night-{night}")
                log = folder / f"night-{night}.log"
                if run_accounted(warm_up, env, REPO, log, log, hard_limit).exit_code not in (0, 1):
                    raise RuntimeError(f"{entrant.name}: its warm-up night {night} failed: {_tail(log, hidden)}")
            before = simulator.stats()
            measured_from = time.time()  # the simulator stamps its records with the same clock
            accounting = run_accounted(
                entrant.command(space), env, REPO, folder / "stdout.log", folder / "stderr.log", hard_limit
            )
            after = simulator.stats()
            jobs = [
                SimJob(row["deployment"], row["store"], row["job_id"], row["created_at"], row["completed_at"])
                for row in simulator.records("jobs")
                if row["created_at"] >= measured_from
            ]
            polls = Counter(
                job_of_poll(row["path"])
                for row in simulator.records("requests")
                if row["endpoint"] == "job" and row["at"] >= measured_from
            )
            startup_s = simulator.startup_s
        if accounting.exit_code not in (0, 1) or accounting.killed:
            why = "killed past its hard limit" if accounting.killed else f"exit code {accounting.exit_code}"
            raise RuntimeError(f"{entrant.name}: {why}: {_tail(folder / 'stderr.log', hidden)}")
        try:
            output = entrant.read(space)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise RuntimeError(
                f"{entrant.name}: its records cannot be read ({error}): {_tail(folder / 'stderr.log', hidden)}"
            ) from None
    measured = Measured(accounting, output, jobs, polls, before, after, startup_s)
    return contender_figures(spec, entrant, predicted, measured)


def measure_fleet(
    run: FleetRun, env: dict[str, str], hidden: Sequence[str]
) -> tuple[dict[str, Any], dict[str, list[tuple[int, float]]]]:
    spec = run.spec
    predicted = predicted_durations(spec)
    durations = [d for chain in predicted.values() for d in chain]
    fleet = {
        "deployments": spec.deployments,
        "stores": spec.stores,
        "targets": spec.targets,
        "job_duration_s": spread(durations).to_json(3),
        "job_duration_sum_s": round(sum(durations), 3),
        "ideal_s": round(ideal_wall_s(deployment_chains(predicted).values()), 3),
    }
    result: dict[str, Any] = {"fleet": fleet, "contenders": [], "errors": []}
    points: dict[str, list[tuple[int, float]]] = {}
    for entrant in run.contenders:
        label = f"[{spec.deployments:,} x {spec.stores}] {entrant.name}"
        print(f"{label}: running ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        tonight = predicted if entrant.night == 1 else predicted_durations(spec, entrant.night)
        try:
            figures, pairs = measure_contender(spec, entrant, tonight, env, hidden)
        except RuntimeError as error:
            print(f"{label}: FAILED: {error}", file=sys.stderr, flush=True)
            result["errors"].append({"contender": entrant.name, "error": str(error)})
            continue
        result["contenders"].append(figures)
        points[entrant.name] = pairs
        print(
            f"{label}: wall {figures['wall_s']:.1f} s ({figures['wall_basis']} {figures['wall_s_headline']:.1f} s), "
            f"ideal {figures['ideal_s']:.1f} s; harness {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return result, points


# -- the command line --


def _scale(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 1/60") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("the scale must be above 0 and at most 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenario", choices=["quick", "full"], default="quick", help="quick (default) or full")
    parser.add_argument("--deployments", type=int, metavar="N", help="one ad-hoc fleet of N deployments instead")
    parser.add_argument("--stores", type=int, default=1, metavar="K", help="stores per deployment (ad hoc; default 1)")
    parser.add_argument(
        "--contenders", default=",".join(NAMES), metavar="A,B", help=f"which, in order (default {','.join(NAMES)})"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the fleet (default 1)")
    parser.add_argument("--scale", type=_scale, default=_scale(DEFAULT_SCALE), help="time scale (default 1/60)")
    parser.add_argument("--sequential-cap", type=float, metavar="S", help="time cap of the sequential loop (0: none)")
    parser.add_argument("--pool-cap", type=float, metavar="S", help="time cap of the thread pool (0: none)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results", help="where results go")
    parser.add_argument(
        "--client",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the client's CPU per request against bare aiohttp (benchmarks/bench_client.py)",
    )
    parser.add_argument("--name", help="results are fleet-NAME.*; default: the scenario, or adhoc-NxK")
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: every simulator and contender is stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = sorted(set(names) - set(NAMES))
    if unknown or not names:
        print(f"error: --contenders: unknown {unknown}; use some of {', '.join(NAMES)}", file=sys.stderr)
        return 2
    scale = float(args.scale)
    if args.deployments is not None:
        if args.deployments < 1 or not 1 <= args.stores <= 4:
            print("error: --deployments must be at least 1 and --stores within 1..4", file=sys.stderr)
            return 2
        scenario = args.name or f"adhoc-{args.deployments}x{args.stores}"
        seq_cap = 60.0 if args.sequential_cap is None else (args.sequential_cap or None)
        pool_cap = args.pool_cap or None
        caps = {"sequential": seq_cap, "threadpool": pool_cap}
        runs = [
            FleetRun(
                FleetSpec(args.deployments, args.stores, args.seed, scale),
                tuple(contender(name, caps.get(name)) for name in names),
            )
        ]
    else:
        scenario = args.name or args.scenario
        runs = scenario_runs(args.scenario, args.seed, scale, names, args.sequential_cap, args.pool_cap)

    password, passcode = secrets.token_urlsafe(24), secrets.token_urlsafe(18)
    env = clean_environment({PASSWORD_ENV: password, PASSCODE_ENV: passcode, "PYTHONUNBUFFERED": "1"})
    signal.signal(signal.SIGTERM, _raise_interrupt)
    host = machine()  # before the runs: its load average is then the machine's other work
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    panels: list[tuple[str, Points]] = []
    try:
        for run in runs:
            result, points = measure_fleet(run, env, [password, passcode])
            results.append(result)
            panels.append((run_title(result), points))
    except KeyboardInterrupt:
        print("interrupted; the simulator and the contender were stopped", file=sys.stderr)
        return 130
    client = None
    if args.client:
        print("client CPU per request: ours against bare aiohttp", file=sys.stderr, flush=True)
        client = measure_client_cpu(seed=args.seed)
    document = {
        "benchmark": "fleet",
        "scenario": scenario,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host,
        "seed": args.seed,
        "scale": scale,
        "scale_text": str(args.scale),
        "harness_wall_s": round(time.perf_counter() - started, 1),
        "runs": results,
        "client": client,
        "issue_targets": {"issue_sets_them_at": ISSUE_FLEET, "checks": issue_targets(results, client)},
    }
    base = args.out_dir / f"fleet-{scenario}"
    write_json(base.with_suffix(".json"), document)
    text = markdown(document)
    base.with_suffix(".md").write_text(text, encoding="utf-8")
    drawn = chart(base.parent / f"{base.name}-polls-vs-lag.png", panels)
    print(text)
    print(
        f"written: {base}.json, {base}.md" + (f", {base}-polls-vs-lag.png" if drawn else " (no chart: no matplotlib)")
    )
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
