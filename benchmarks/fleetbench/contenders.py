"""The three contenders: how each is started, and how its records are read back as `TargetRecord`s.

1. `orchestrator run` with its defaults, but for its time settings, scaled like the job durations.
2. `benchmarks.baselines.sequential`: one deployment at a time, fixed poll interval.
3. `benchmarks.baselines.threadpool`: the same on 20 threads.
The baselines' fixed poll interval (10 s real) is scaled by the same factor as the job durations.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tomllib
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from .figures import TargetRecord
from .fleet import FleetSpec

# The orchestrator's real-time settings (its defaults, seconds) that the benchmark scales. One place:
# a poll-schedule setting added to the orchestrator goes here, with its real default.
ORCHESTRATOR_REAL_TIMES: Final[Mapping[str, float]] = {
    "poll_initial": 1.0,
    "poll_max": 60.0,
    "job_timeout": 7500.0,
}
# The baselines' real-time settings: Esri's CLI polls every 10 s; the deadline is only a safety net.
BASELINE_REAL_TIMES: Final[Mapping[str, float]] = {
    "poll_interval": 10.0,
    "job_deadline": 7500.0,
}
PASSWORD_ENV: Final = "BENCH_PASSWORD"
PASSCODE_ENV: Final = "BENCH_PASSCODE"
# `orchestrator` is its first night on a fleet (nothing in its ledger); `orchestrator-nightly` the second,
# on the same simulator and ledger, as a nightly schedule runs it (the first night is its warm-up).
NAMES: Final = ("orchestrator", "orchestrator-nightly", "sequential", "threadpool")
POOL_WORKERS: Final = 20


def scaled(real_times: Mapping[str, float], scale: float) -> dict[str, float]:
    return {name: seconds * scale for name, seconds in real_times.items()}


def flags(settings: Mapping[str, float]) -> list[str]:
    """`{"poll_initial": 0.08}` as `["--poll-initial", "0.08"]`."""
    out: list[str] = []
    for name, value in settings.items():
        out += ["--" + name.replace("_", "-"), f"{value:.10g}"]
    return out


@dataclass(frozen=True, slots=True)
class Workspace:
    """One contender's run: its folder, and the files the simulator wrote for it."""

    folder: Path
    inventory: Path
    scale: float
    repo: Path

    @property
    def targets_file(self) -> Path:
        return self.folder / "targets.json"

    @property
    def out_file(self) -> Path:
        return self.folder / "records.json"

    @property
    def report_dir(self) -> Path:
        return self.folder / "reports"

    @property
    def ledger(self) -> Path:
        return self.folder / "ledger.sqlite3"


@dataclass(slots=True)
class ContenderOutput:
    """What a contender recorded, normalised."""

    targets: list[TargetRecord]
    own_requests: dict[str, int] | None = None  # the contender's own count, when it keeps one
    started_at: float | None = None  # its own start stamp
    capped: bool = False
    detection_source: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    workers: int | None  # backup jobs at once at most (None: no cap: the orchestrator's default)
    cap_s: float | None = None  # --time-cap of a baseline
    night: int = 1  # which run over the same fleet and ledger is measured (the ones before are its warm-up)

    @property
    def is_orchestrator(self) -> bool:
        return self.name.startswith("orchestrator")

    def settings(self, scale: float) -> dict[str, Any]:
        if self.is_orchestrator:
            return {**scaled(ORCHESTRATOR_REAL_TIMES, scale), "other settings": "defaults", "night": self.night}
        return {"workers": self.workers, **scaled(BASELINE_REAL_TIMES, scale), "time_cap": self.cap_s}

    def command(self, space: Workspace, report_dir: Path | None = None) -> list[str]:
        """Its command line; `report_dir` for a warm-up night, whose report is not the measured one."""
        if self.is_orchestrator:
            executable = Path(sys.executable).with_name("orchestrator")
            head = [str(executable)] if executable.exists() else [sys.executable, "-m", "orchestrator"]
            return [
                *head,
                "run",
                "--inventory",
                str(space.inventory),
                "--report-dir",
                str(report_dir or space.report_dir),
                "--ledger",
                str(space.ledger),
                *flags(scaled(ORCHESTRATOR_REAL_TIMES, space.scale)),
            ]
        command = [sys.executable, "-m", f"benchmarks.baselines.{self.name}", "--targets", str(space.targets_file)]
        command += ["--out", str(space.out_file), *flags(scaled(BASELINE_REAL_TIMES, space.scale))]
        if self.cap_s is not None:
            command += ["--time-cap", f"{self.cap_s:.10g}"]
        if self.name == "threadpool":
            command += ["--workers", str(self.workers)]
        return command

    def read(self, space: Workspace) -> ContenderOutput:
        if self.is_orchestrator:
            return read_orchestrator(space.report_dir, space.ledger)
        return read_baseline(space.out_file)


def contender(name: str, cap_s: float | None = None) -> Contender:
    if name == "orchestrator":
        return Contender(name, None)
    if name == "orchestrator-nightly":
        return Contender(name, None, night=2)
    if name == "sequential":
        return Contender(name, 1, cap_s)
    if name == "threadpool":
        return Contender(name, POOL_WORKERS, cap_s)
    raise ValueError(f"unknown contender {name!r}; use one of {', '.join(NAMES)}")


# -- the baselines' targets file --


def targets_document(inventory_text: str, spec: FleetSpec) -> dict[str, Any]:
    """The baselines' targets file for the fleet the simulator's inventory lists, one entry per store.
    Pure. The inventory names `stores` only for deployments with more than one (the default store is
    the fleet's first)."""
    inventory = tomllib.loads(inventory_text)
    username = inventory.get("defaults", {}).get("username", "admin")
    targets = [
        {
            "deployment": deployment["name"],
            "url": deployment["url"],
            "username": deployment.get("username", username),
            "store": store,
            "backup_name": f"bench-{deployment['name']}-{store}",
        }
        for deployment in inventory["deployments"]
        for store in deployment.get("stores", spec.store_names[:1])
    ]
    return {"password_env": PASSWORD_ENV, "passcode_env": PASSCODE_ENV, "targets": targets}


# -- reading records --


def read_baseline(path: Path) -> ContenderOutput:
    document = json.loads(path.read_text(encoding="utf-8"))
    targets = [
        TargetRecord(
            deployment=row["deployment"],
            store=row["store"],
            job_id=row.get("job_id") or "",
            sent_at=row.get("sent_at"),
            detected_at=row.get("detected_at"),
            outcome=row["outcome"],
            polls=int(row.get("polls") or 0),
        )
        for row in document["targets"]
    ]
    return ContenderOutput(
        targets=targets,
        own_requests={str(k): int(v) for k, v in document.get("requests", {}).items()},
        started_at=document.get("started_at"),
        capped=bool(document.get("capped")),
        detection_source="the baseline's detected_at (time.time() when the poll that saw the end returned)",
    )


def _epoch(iso_text: str) -> float | None:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp() if iso_text else None


def read_orchestrator(report_dir: Path, ledger: Path) -> ContenderOutput:
    """The run's report.json (outcomes, polls), with sub-second times from its ledger: the report's
    timestamps are ISO strings to the whole second, too coarse for a lag of a fraction of a second."""
    reports = sorted(report_dir.glob("*/report.json"))
    if len(reports) != 1:
        raise RuntimeError(f"expected one report under {report_dir}, found {len(reports)}")
    document = json.loads(reports[0].read_text(encoding="utf-8"))
    rows: Sequence[dict[str, Any]] = document["targets"]
    precise = _ledger_times(ledger, document["run_id"])
    targets = []
    for row in rows:
        sent, detected = precise.get(row["job_id"], (None, None)) if row["job_id"] else (None, None)
        targets.append(
            TargetRecord(
                deployment=row["deployment"],
                store=row["store"],
                job_id=row["job_id"],
                sent_at=sent if sent is not None else _epoch(row["submitted_at"]),
                detected_at=detected if detected is not None else _epoch(row["finished_at"]),
                outcome=row["outcome"],
                polls=int(row["polls"]),
            )
        )
    precise_share = sum(1 for row in rows if row["job_id"] in precise) / max(1, len(rows))
    source = "the run ledger's finished_at (sub-second)" if precise_share == 1 else "report.json finished_at (1 s)"
    started = _ledger_run_start(ledger, document["run_id"])
    notes = [] if precise_share == 1 else [f"only {precise_share:.0%} of the targets had ledger times"]
    return ContenderOutput(targets=targets, started_at=started, detection_source=source, notes=notes)


def _ledger_times(ledger: Path, run_id: str) -> dict[str, tuple[float | None, float | None]]:
    """job id -> (submitted_at, finished_at) from the ledger, read-only; {} if it cannot be read."""
    try:
        with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT job_id, submitted_at, finished_at FROM targets WHERE run_id = ? AND job_id != ''", (run_id,)
            ).fetchall()
    except sqlite3.Error:
        return {}
    return {str(job_id): (submitted, finished) for job_id, submitted, finished in rows}


def _ledger_run_start(ledger: Path, run_id: str) -> float | None:
    try:
        with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT started_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    except sqlite3.Error:
        return None
    return float(row[0]) if row else None
