"""The crash sweep: kill a run at every failpoint and at random moments, resume it, count the backups.

Why: the ledger's promise (README, "The run ledger, and what happens if the machine dies mid-run") is
that a run killed anywhere and then resumed leaves every target with exactly one backup, or with a
non-success the report explains. The crash tests prove it at a handful of points; this sweeps it (issue 12).

What: one simulated fleet in its own process (`orchestrator simulate --fleet`, profile `flaky`, jobs of
1 to 2 s, every slice of five deployments mixing 11.3, 11.4, 10.9, 12.0 and 11.5, some with two stores).
Each kill point gets a slice of its own and a ledger of its own:

1. `orchestrator run --select name=<its slice>` with `ORCHESTRATOR_FAILPOINT` armed (SIGKILL at the N-th
   pass through a named point or through `any` point, or SIGINT there with `--grace 0`), or SIGKILL sent
   from here at a seeded moment after the start; then a check that it died as expected;
2. for a few points, a first `resume` killed too;
3. `orchestrator resume` (same ledger) to the end;
4. once none of the slice's jobs runs on the server any more, for every target of the slice: exactly one
   accepted create and one backup, named as the report says; or a non-success in the resumed run's
   report.json with its error class and error. Never two backups, never a second create that lived.

A named point passed fewer than N times lets the run finish unkilled: that point is run again on a spare
slice as `any:M` and the table says so. Kill points run three at a time. The Markdown table and the JSON
(date, machine, every kill point) go to `--out` (`.md` and `.json`). Exit 1 if any check failed.
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from orchestrator.ledger import Ledger
from orchestrator.submit import RESUMED_CUT

SLICE_VERSIONS: Final = ("11.3", "11.4", "10.9", "12.0", "11.5")  # one of each per slice, rotated
STORES_TWO: Final = ("default", "offsite")
MIN_TARGETS: Final = 7  # a slice of five deployments has two or three with two stores: 7 or 8 targets
SPARE_SLICES: Final = 20  # for the kill points re-run as `any:M` after their named point was not reached
FALLBACK_ANY: Final = range(2, 12)  # M of those re-runs: a slice passes through some failpoint 25+ times
FAST: Final = (
    "--quiet", "--poll-initial", "0.2", "--poll-max", "1", "--retry-initial", "0.1", "--retry-for", "30",
    "--request-timeout", "5", "--connect-timeout", "2",
)  # fmt: skip
PROCESS_TIMEOUT_S: Final = 180.0
MIN_KILL_POINTS: Final = 50  # what issue 12 asks of a full sweep
LISTENING: Final = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
RUN_ID: Final = re.compile(r"run id: (\S+)")
FAILED_JOB: Final = frozenset({"FAILED", "CANCELLED"})  # a job that made no backup and never will
BACKUP_MAY_EXIST: Final = frozenset({"interrupted", "timed_out"})  # non-successes that say a backup may exist


class Kind(StrEnum):
    FAILPOINT = "failpoint"  # SIGKILL at the N-th pass through a named point (or `any`)
    SIGINT = "sigint"  # Ctrl-C at the N-th pass, with --grace 0
    WALL_CLOCK = "wall clock"  # SIGKILL sent from here, a seeded share of a clean run's time after the start
    RESUME_KILLED = "resume killed"  # SIGKILL at a failpoint, then the first resume killed at another


@dataclass(frozen=True, slots=True)
class KillPoint:
    """Where a run dies. `spec` is ORCHESTRATOR_FAILPOINT's value (empty for a wall-clock kill)."""

    kind: Kind
    spec: str = ""
    share: float = 0.0  # WALL_CLOCK: the moment, as a share of a clean run's wall time
    resume_spec: str = ""  # RESUME_KILLED: where the first resume dies

    @property
    def label(self) -> str:
        if self.kind is Kind.WALL_CLOCK:
            return f"SIGKILL at {self.share:.0%} of a clean run"
        if self.kind is Kind.RESUME_KILLED:
            return f"{self.spec}, then resume killed at {self.resume_spec}"
        return self.spec


def plan_kill_points(seed: int) -> list[KillPoint]:
    """Every kill point of the sweep, from the seed alone. Pure. Named points at N up to what any slice
    reaches (a slice has at least MIN_TARGETS targets: each passes before_create, after_create and
    after_submitted once, and while_following once per poll); `any:N` for a seeded spread of N."""
    rng = random.Random(seed)
    named = [
        *(f"before_create:{n}" for n in range(1, MIN_TARGETS + 1)),
        *(f"after_create:{n}" for n in range(1, MIN_TARGETS)),
        *(f"after_submitted:{n}" for n in range(1, MIN_TARGETS)),
        *(f"while_following:{n}" for n in (1, 2, 3, 5, 7, 10, 14)),
    ]
    anywhere = [f"any:{n}" for n in sorted(rng.sample(range(1, 4 * MIN_TARGETS), 14))]
    sigint = ["before_create:2", "after_create:3", "after_submitted:2", "while_following:4", "any:9"]
    shares = [percent / 100 for percent in sorted(rng.sample(range(15, 91), 8))]  # distinct, so are the labels
    resumed = [
        ("after_create:2", "before_create:1"),
        ("while_following:2", "while_following:1"),
        ("before_create:4", "after_submitted:1"),
        (f"any:{rng.randrange(3, 20)}", "any:2"),
    ]
    return [
        *(KillPoint(Kind.FAILPOINT, spec) for spec in named + anywhere),
        *(KillPoint(Kind.SIGINT, f"{spec}:sigint") for spec in sigint),
        *(KillPoint(Kind.WALL_CLOCK, share=share) for share in shares),
        *(KillPoint(Kind.RESUME_KILLED, first, resume_spec=then) for first, then in resumed),
    ]


@dataclass(frozen=True, slots=True)
class Planned:
    """A simulated deployment of a slice: its name, version and stores."""

    name: str
    version: str
    stores: tuple[str, ...]


def slice_deployments(index: int) -> list[Planned]:
    """Slice `index`: five deployments, one of each version, rotated; two stores where index + position is
    even (so a 10.9 or an 11.4 has two stores in every other slice). Pure."""
    return [
        Planned(
            f"kp{index:03d}-{'abcde'[position]}",
            SLICE_VERSIONS[(index + position) % len(SLICE_VERSIONS)],
            STORES_TWO if (index + position) % 2 == 0 else ("default",),
        )
        for position in range(len(SLICE_VERSIONS))
    ]


def fleet_file_text(slices: int, seed: int) -> str:
    """The fleet file: flaky faults, jobs of 1 to 2 s, every slice's deployments listed. Pure."""
    lines = [
        "# Written by benchmarks/crash_sweep.py.",
        f"seed = {seed}",
        'profile = "flaky"',
        'job_duration = { dist = "lognormal", median = 1.3, sigma = 0.25, low = 0.8, high = 2.2 }',
    ]
    for index in range(slices):
        for planned in slice_deployments(index):
            stores = ", ".join(json.dumps(store) for store in planned.stores)
            lines += ["", "[[deployments]]", f'name = "{planned.name}"', f'version = "{planned.version}"']
            lines.append(f"stores = [{stores}]")
    return "\n".join(lines) + "\n"


# -- the verdict on one target, from the report and the simulator's records --


@dataclass(frozen=True, slots=True)
class Verdict:
    deployment: str
    store: str
    outcome: str  # the resumed run's report, or "missing"
    error_class: str
    ok: bool
    exactly_once: bool  # one accepted create, one backup, and the report says succeeded
    why: str = ""  # what failed, or what is worth a note


def judge_target(
    deployment: str,
    store: str,
    rows: Sequence[Mapping[str, Any]],
    creates: Sequence[Mapping[str, Any]],
    backups: Sequence[Mapping[str, Any]],
    final_status: Mapping[str, str],
) -> Verdict:
    """One target after the resume. `rows`: its report rows; `creates`, `backups`: the simulator's records
    of this target; `final_status`: the simulator's final status of each job by id. Pure."""
    if len(rows) != 1:
        return Verdict(deployment, store, "missing", "", False, False, f"{len(rows)} report rows")
    row = rows[0]
    outcome, error_class = str(row["outcome"]), str(row["error_class"])
    accepted = [c for c in creates if c["accepted"]]
    lived = [c for c in accepted if final_status.get(str(c["job_id"]), "") not in FAILED_JOB]
    problems = []
    if len(backups) > 1:
        problems.append(f"{len(backups)} backups")
    if len(lived) > 1:
        problems.append(f"{len(lived)} accepted creates whose jobs did not fail")
    if outcome == "succeeded":
        if len(backups) != 1:
            problems.append("reported succeeded, no backup on the server")
        elif backups[0]["backupName"] != row["backup_name"]:
            problems.append(f"the backup is {backups[0]['backupName']!r}, the report says {row['backup_name']!r}")
    else:
        if not error_class or not row["error"]:
            problems.append(f"{outcome} without an error class and error")
        if backups and outcome not in BACKUP_MAY_EXIST:
            problems.append(f"reported {outcome}, yet its backup exists")
    if problems:
        return Verdict(deployment, store, outcome, error_class, False, False, "; ".join(problems))
    note = ""
    if len(accepted) > 1:  # only after a job that failed (checked above): say so
        note = f"{len(accepted)} accepted creates, {len(accepted) - len(lived)} of whose jobs failed"
    once = outcome == "succeeded" and len(accepted) == 1
    return Verdict(deployment, store, outcome, error_class, True, once, note)


# -- the simulator and the orchestrator, as processes --


@dataclass(frozen=True, slots=True)
class Simulator:
    url: str
    inventory: Path
    process: subprocess.Popen[str]

    def records(self, what: str, deployment: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/_simulator/{what}?deployment={deployment}", timeout=10) as answer:
            items: list[dict[str, Any]] = json.load(answer)["items"]
        return items


def start_simulator(folder: Path, slices: int, seed: int) -> Simulator:
    fleet = folder / "fleet-file.toml"
    fleet.write_text(fleet_file_text(slices, seed))
    inventory = folder / "fleet.toml"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "simulate", "--fleet", str(fleet), "--write-inventory", str(inventory)],
        stdout=subprocess.PIPE, text=True, env=_clean_env(),
    )  # fmt: skip
    assert process.stdout is not None
    url = ""
    for line in process.stdout:
        if (found := LISTENING.search(line)) is not None:
            url = found.group(1)
        if line.startswith("press Ctrl-C") and url:
            return Simulator(url, inventory, process)
    process.kill()
    raise RuntimeError("the simulator did not start")


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _clean_env(failpoint: str = "") -> dict[str, str]:
    """This environment without ORCHESTRATOR_* settings (the flags say everything), plus the failpoint."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCHESTRATOR_")}
    if failpoint:
        env["ORCHESTRATOR_FAILPOINT"] = failpoint
    return env


@dataclass(frozen=True, slots=True)
class Exit:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def run_id(self) -> str:
        found = RUN_ID.search(self.stdout)
        return found.group(1) if found else ""

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL

    @property
    def interrupted(self) -> bool:  # Ctrl-C with no grace: exit 3, the stop announced, the report written
        return self.code == 3 and "stopping: nothing new is submitted" in self.stderr and bool(self.run_id)

    @property
    def finished(self) -> bool:  # ran to its end: the failpoint was never reached
        return self.code in (0, 1) and bool(self.run_id)

    def tail(self) -> str:
        return " ".join((self.stderr or self.stdout).split()[-30:])


def orchestrator(args: Sequence[str], failpoint: str = "", kill_after: float | None = None) -> Exit:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args, *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env(failpoint),
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)  # the machine dies now
        out, err = process.communicate(timeout=PROCESS_TIMEOUT_S)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return Exit(process.returncode, out, err, time.monotonic() - started)


# -- one kill point --


@dataclass(slots=True)
class Result:
    label: str
    kind: str
    ran_as: str  # what was armed in the end (a fallback says so)
    slice_index: int
    fallback_from: str = ""  # the point not reached, when re-run as `any:M`
    died_as_expected: bool = False
    death: str = ""  # how the first process ended
    at_death: str = ""  # what the server had when it died: accepted creates, jobs ended
    found_after_cut: int = 0  # creates whose answer the kill lost, found on the server by the resume
    resume_code: int | None = None
    run_id: str = ""
    targets: int = 0
    exactly_once: int = 0
    non_successes: dict[str, int] = field(default_factory=dict)  # "outcome/error_class" -> count
    failures: list[str] = field(default_factory=list)  # every check that failed, with what was seen
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.died_as_expected and not self.failures


@dataclass(frozen=True, slots=True)
class Sweep:
    simulator: Simulator
    folder: Path
    clean_run_s: float
    spares: queue.Queue[int]


def run_kill_point(sweep: Sweep, point: KillPoint, index: int) -> Result:
    started = time.monotonic()
    result = _attempt(sweep, point, index)
    if not result.died_as_expected and result.death.startswith("finished"):
        # The point was not reached (or the run ended before the moment): the same check, armed at `any:M`.
        spare = sweep.spares.get_nowait()
        fallback = KillPoint(Kind.FAILPOINT, f"any:{FALLBACK_ANY[index % len(FALLBACK_ANY)]}")
        unreached = result
        result = _attempt(sweep, fallback, spare)
        result.label, result.kind = point.label, point.kind.value
        result.fallback_from = f"{point.spec or point.label}: {unreached.death}"
        result.failures += [f"unkilled run on slice {unreached.slice_index}: {f}" for f in unreached.failures]
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _attempt(sweep: Sweep, point: KillPoint, index: int) -> Result:
    own = sweep.folder / f"slice-{index:03d}"
    own.mkdir()
    ledger, reports = own / "ledger.sqlite3", own / "reports"
    common = ["--ledger", str(ledger), "--report-dir", str(reports)]
    run = ["run", "--inventory", str(sweep.simulator.inventory), "--select", f"name=kp{index:03d}-*", *common]
    result = Result(point.label, point.kind.value, point.spec or point.label, index)
    if point.kind is Kind.SIGINT:
        first = orchestrator([*run, "--grace", "0"], failpoint=point.spec)
        result.died_as_expected = first.interrupted
    elif point.kind is Kind.WALL_CLOCK:
        first = orchestrator(run, kill_after=point.share * sweep.clean_run_s)
        result.died_as_expected = first.killed
    else:
        first = orchestrator(run, failpoint=point.spec)
        result.died_as_expected = first.killed
    result.death = _death(first)
    result.at_death = _server_state(sweep.simulator, index)
    if first.finished:  # not reached: the caller re-runs the point elsewhere; this slice is checked as it is
        result.death = f"finished unkilled (exit {first.code})"
        _check(sweep.simulator, result, first, own)
        return result
    if not result.died_as_expected:
        result.failures.append(f"the run did not die as expected: {result.death}: {first.tail()}")
        return result
    if point.kind is Kind.RESUME_KILLED:
        second = orchestrator(["resume", *common], failpoint=point.resume_spec)
        if second.killed:
            result.death += f"; resume SIGKILL at {point.resume_spec}"
        elif second.finished:
            result.notes.append(f"the first resume finished: {point.resume_spec} was not reached")
        else:
            result.failures.append(f"the first resume did not die as expected: {_death(second)}: {second.tail()}")
            return result
        if second.finished:
            result.resume_code = second.code
            _check(sweep.simulator, result, second, own)
            return result
    final = orchestrator(["resume", *common])
    result.resume_code = final.code
    if not final.finished:
        result.failures.append(f"resume did not finish: {_death(final)}: {final.tail()}")
        return result
    _check(sweep.simulator, result, final, own)
    return result


def _server_state(simulator: Simulator, index: int) -> str:
    names = [p.name for p in slice_deployments(index)]
    accepted = sum(c["accepted"] for name in names for c in simulator.records("creates", name))
    jobs = [job for name in names for job in simulator.records("jobs", name)]
    return f"{accepted} creates accepted, {sum(not j['running'] for j in jobs)} jobs ended"


def _death(process: Exit) -> str:
    if process.killed:
        return f"SIGKILL after {process.seconds:.1f} s"
    if process.interrupted:
        return f"Ctrl-C, exit 3 after {process.seconds:.1f} s"
    return f"exit {process.code} after {process.seconds:.1f} s"


def _check(simulator: Simulator, result: Result, last: Exit, own: Path) -> None:
    """Every target of the slice against the report of the run's last process and the simulator's records."""
    result.run_id = last.run_id
    ledger_path, reports = own / "ledger.sqlite3", own / "reports"
    report = json.loads((reports / last.run_id / "report.json").read_text())
    rows: list[dict[str, Any]] = report["targets"]
    planned = slice_deployments(result.slice_index)
    _wait_for_jobs(simulator, [p.name for p in planned])
    verdicts = []
    for deployment in planned:
        creates = simulator.records("creates", deployment.name)
        backups = simulator.records("backups", deployment.name)
        final_status = {j["job_id"]: j["final_status"] for j in simulator.records("jobs", deployment.name)}
        for store in deployment.stores:
            verdicts.append(
                judge_target(
                    deployment.name,
                    store,
                    [r for r in rows if (r["deployment"], r["store"]) == (deployment.name, store)],
                    [c for c in creates if c["store"] == store],
                    [b for b in backups if b["backupStore"] == store],
                    final_status,
                )
            )
    planned_targets = {(v.deployment, v.store) for v in verdicts}
    strays = [(r["deployment"], r["store"]) for r in rows if (r["deployment"], r["store"]) not in planned_targets]
    if strays:
        result.failures.append(f"report rows for targets outside the slice: {strays}")
    result.targets = len(verdicts)
    result.exactly_once = sum(v.exactly_once for v in verdicts)
    result.non_successes = dict(
        Counter(f"{v.outcome}/{v.error_class}" for v in verdicts if v.outcome != "succeeded" and v.ok)
    )
    result.failures += [f"{v.deployment}/{v.store}: {v.why}" for v in verdicts if not v.ok]
    result.notes += [f"{v.deployment}/{v.store}: {v.why}" for v in verdicts if v.ok and v.why]
    result.notes += [f"{v.deployment}/{v.store}: {v.outcome}: {_error(rows, v)}" for v in verdicts if _failed(v)]
    ledger = Ledger.open(ledger_path)
    try:
        notes = [note for target in ledger.targets(last.run_id) for note in target.notes]
    finally:
        ledger.close()
    result.found_after_cut = sum(RESUMED_CUT in note and "accepted" in note for note in notes)
    all_succeeded = all(v.outcome == "succeeded" for v in verdicts)
    if last.code != (0 if all_succeeded else 1):
        result.failures.append(f"exit {last.code}, yet {'every' if all_succeeded else 'not every'} target succeeded")


def _failed(verdict: Verdict) -> bool:
    return verdict.ok and verdict.outcome != "succeeded"


def _error(rows: Iterable[Mapping[str, Any]], verdict: Verdict) -> str:
    for row in rows:
        if (row["deployment"], row["store"]) == (verdict.deployment, verdict.store):
            return f"{row['error_class']}: {str(row['error'])[:160]}"
    return ""


def _wait_for_jobs(simulator: Simulator, deployments: Sequence[str]) -> None:
    """Until none of these deployments runs a job any more (a killed run's job may still make a backup)."""
    deadline = time.monotonic() + 60
    while any(job["running"] for name in deployments for job in simulator.records("jobs", name)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs of {deployments} still running after 60 s")
        time.sleep(0.2)


def clean_run(sweep_folder: Path, simulator: Simulator, index: int) -> Result:
    """One slice run unkilled: the wall time the wall-clock kills are drawn against, checked like the rest."""
    own = sweep_folder / f"slice-{index:03d}"
    own.mkdir()
    common = ["--ledger", str(own / "ledger.sqlite3"), "--report-dir", str(own / "reports")]
    run = orchestrator(["run", "--inventory", str(simulator.inventory), "--select", f"name=kp{index:03d}-*", *common])
    result = Result("clean run (no kill)", "clean", "", index, died_as_expected=run.finished, death=_death(run))
    result.seconds = round(run.seconds, 1)
    if run.finished:
        _check(simulator, result, run, own)
    else:
        result.failures.append(f"the clean run did not finish: {run.tail()}")
    return result


# -- output --


def totals(results: Sequence[Result]) -> dict[str, Any]:
    by_class: Counter[str] = Counter()
    for result in results:
        by_class.update(result.non_successes)
    return {
        "kill_points": len(results),
        "distinct_kill_points": len({r.label for r in results}),
        "died_as_expected": sum(r.died_as_expected for r in results),
        "fallbacks_to_any": sum(bool(r.fallback_from) for r in results),
        "targets": sum(r.targets for r in results),
        "exactly_once": sum(r.exactly_once for r in results),
        "lost_creates_found_by_resume": sum(r.found_after_cut for r in results),
        "explained_non_successes": dict(sorted(by_class.items())),
        "kill_points_failed": sum(not r.ok for r in results),
        "failed_checks": sum(len(r.failures) for r in results),
    }


def markdown(document: Mapping[str, Any]) -> str:
    total = document["totals"]
    lines = [
        "# Crash sweep",
        "",
        f"{document['date']}, {document['machine']}; `make crash-sweep` (`benchmarks/crash_sweep.py`, seed "
        f"{document['seed']}), {document['wall_s']:.0f} s in all.",
        "",
        f"One simulated fleet ({document['fleet']}). Each kill point: a run over a slice of its own with a ledger "
        "of its own, killed there, then `orchestrator resume` to the end; then, once the slice's jobs have ended "
        "on the server, every target: exactly one accepted create and one backup (named as the report says), "
        "or a non-success with its error class and error in the resumed run's report.json.",
        "",
        f"- kill points: **{total['kill_points']}** ({total['distinct_kill_points']} distinct), "
        f"died as expected: {total['died_as_expected']}, "
        f"re-run as `any:M` because the named point was not reached: {total['fallbacks_to_any']}",
        f"- targets: **{total['targets']}**, exactly once: **{total['exactly_once']}**, explained non-successes: "
        + (", ".join(f"{k} {v}" for k, v in total["explained_non_successes"].items()) or "none"),
        f"- creates whose answer a kill lost, found on the server by the resume (not created again): "
        f"{total['lost_creates_found_by_resume']}",
        f"- failed checks: **{total['failed_checks']}** (kill points with a failure: {total['kill_points_failed']})",
        f"- clean run of a slice (the base of the wall-clock moments): {document['clean_run_s']:.1f} s",
        "",
        "| kill point | fallback | died as expected | on the server then | targets | exactly once "
        "| lost creates found | non-successes (class) | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in document["kill_points"]:
        armed = f"{row['ran_as']} ({row['fallback_from']})" if row["fallback_from"] else "-"
        died = ("yes" if row["died_as_expected"] else "**no**") + f": {row['death']}"
        non = ", ".join(f"{k} {v}" for k, v in row["non_successes"].items()) or "-"
        notes = "; ".join(["**" + f + "**" for f in row["failures"]] + row["notes"]) or ""
        counts = [str(row[key]) for key in ("targets", "exactly_once", "found_after_cut")]
        cells = [row["label"], armed, died, row["at_death"], *counts, non, notes]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=20261212, help="the kill points' and the fleet's seed")
    parser.add_argument("--parallel", type=int, default=3, help="kill points run at once")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/crash-sweep"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (ledgers, reports)")
    parser.add_argument("--limit", type=int, default=0, help="only every k-th kill point, k chosen for this many")
    args = parser.parse_args()
    points = plan_kill_points(args.seed)
    if args.limit:
        points = points[:: max(1, len(points) // args.limit)][: args.limit]
    slices = 1 + len(points) + SPARE_SLICES
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="crash-sweep-"))
    simulator = start_simulator(folder, slices, args.seed)
    try:
        clean = clean_run(folder, simulator, 0)
        print(f"clean run: {clean.seconds:.1f} s, {clean.targets} targets, ok={clean.ok}", file=sys.stderr)
        spares: queue.Queue[int] = queue.Queue()
        for index in range(1 + len(points), slices):
            spares.put(index)
        sweep = Sweep(simulator, folder, clean.seconds, spares)
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            futures = [pool.submit(run_kill_point, sweep, point, 1 + i) for i, point in enumerate(points)]
            results = []
            for future in futures:  # in plan order
                result = future.result()
                results.append(result)
                state = "ok" if result.ok else "FAILED: " + "; ".join(result.failures)
                print(f"{result.label:<55} {result.death:<40} {state}", file=sys.stderr)
    finally:
        stop(simulator.process)
    everything = [clean, *results]
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "seed": args.seed,
        "fleet": f"{slices} slices of 5 deployments (11.3, 11.4, 10.9, 12.0, 11.5), profile flaky, jobs 0.8-2.2 s",
        "settings": " ".join(FAST),
        "parallel": args.parallel,
        "wall_s": round(time.monotonic() - started, 1),
        "clean_run_s": clean.seconds,
        "totals": totals(results),
        "kill_points": [asdict(r) | {"ok": r.ok} for r in everything],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(document))
    too_few = not args.limit and document["totals"]["distinct_kill_points"] < MIN_KILL_POINTS
    failed = too_few or not clean.ok or any(not r.ok for r in results)
    if args.keep or failed:
        print(f"ledgers and reports kept in {folder}", file=sys.stderr)
    else:
        shutil.rmtree(folder)
    print(markdown(document).split("| kill point")[0])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
