"""The run ledger: every run, target and step, recorded as it happens in SQLite (WAL), crash-safe.

The one write that must be durable before the network sees anything is the intent to create: a
target's backup name and store are committed before its create request is sent, so a run killed at
any point can be resumed without creating a backup twice (`submit` reconciles an intent without a job
id with the server before creating again). Everything else (job id, status changes, outcomes) is
queued and committed in groups by one writer in a worker thread, so the event loop never waits on
the disk except for an intent, and then only for the group commit in progress.

One run at a time per ledger: a lock file held for the run's life refuses an overlapping run.
No secret is ever written: targets are stored by name, URL, store and backup name only.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import anyio

from orchestrator.errors import InputError
from orchestrator.events import Event, EventKind
from orchestrator.model import TargetState, store_key
from orchestrator.redact import redact, redact_each

APP_DIR: Final = "arcgis-fleet-backup"
SCHEMA_VERSION: Final = 2  # raised with every change of the tables below (see _MIGRATIONS)
GATHER_S: Final = 0.05  # how long status changes may wait to share a commit (an intent never waits for it)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,               -- run | retry | demo
    parent_run_id TEXT NOT NULL,      -- the run a retry repeats ('' for none)
    inventory TEXT NOT NULL,          -- absolute path of the inventory file
    settings TEXT NOT NULL,           -- JSON of the run settings (there is no secret among them)
    started_at REAL NOT NULL,
    finished_at REAL,
    state TEXT NOT NULL,              -- running (or killed) | interrupted (Ctrl-C) | finished
    stopped_reason TEXT NOT NULL DEFAULT '',
    resumes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS targets (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    deployment TEXT NOT NULL,
    url TEXT NOT NULL,
    verify_tls INTEGER NOT NULL,
    tags TEXT NOT NULL,
    store TEXT NOT NULL,
    backup_name TEXT NOT NULL,
    retention_ms INTEGER,
    create_intended INTEGER NOT NULL,
    accepted_at REAL,
    default_store INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    job_id TEXT NOT NULL,
    server_status TEXT NOT NULL,
    error_class TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    polls INTEGER NOT NULL,
    submitted_at REAL,
    finished_at REAL,
    notes TEXT NOT NULL,
    ran_s REAL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_target ON steps (run_id, idx);
"""
# From each older schema to the next: a ledger keeps its history across upgrades of the tool.
_MIGRATIONS: Final = {
    1: "ALTER TABLE targets ADD COLUMN ran_s REAL",  # 2: how long each job ran, for the poll schedule
}
_TARGET_COLUMNS: Final = (
    "run_id, idx, deployment, url, verify_tls, tags, store, backup_name, retention_ms, create_intended, accepted_at, "
    "default_store, outcome, job_id, server_status, error_class, error, attempts, polls, submitted_at, "
    "finished_at, notes, ran_s"
)
_UPSERT_TARGET: Final = f"INSERT OR REPLACE INTO targets ({_TARGET_COLUMNS}) VALUES ({', '.join('?' * 23)})"
_INSERT_STEP: Final = "INSERT INTO steps (run_id, idx, at, kind, detail) VALUES (?, ?, ?, ?, ?)"
_STEP_EVENTS: Final = frozenset({EventKind.SUBMITTED, EventKind.FINISHED})


def _try_lock(handle: IO[str], kind: int, attempts: int = 5) -> bool:
    """flock without blocking, a few times over a moment: someone merely looking holds it only briefly."""
    for attempt in range(attempts):
        try:
            fcntl.flock(handle, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.05)
    return False


def default_ledger_path() -> Path:
    """`$XDG_STATE_HOME/arcgis-fleet-backup/ledger.sqlite3`, or under `~/.local/state`."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / APP_DIR / "ledger.sqlite3"


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    kind: str
    parent_run_id: str
    inventory: str
    settings: dict[str, Any]
    started_at: float
    finished_at: float | None
    state: str
    stopped_reason: str
    resumes: int
    outcomes: dict[str, int]


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One target as the ledger last saw it."""

    idx: int
    deployment: str
    url: str
    verify_tls: bool
    tags: tuple[str, ...]
    store: str
    backup_name: str
    retention_ms: int | None
    create_intended: bool
    accepted_at: float | None
    default_store: bool
    outcome: str
    job_id: str
    server_status: str
    error_class: str
    error: str
    attempts: int
    polls: int
    submitted_at: float | None
    finished_at: float | None
    notes: tuple[str, ...]
    ran_s: float | None = None


def target_row(run_id: str, target: TargetState) -> tuple[Any, ...]:
    """A target's state as one `targets` row. Pure; nothing secret is in a TargetState's plain fields."""
    return (
        run_id,
        target.index,
        target.deployment.name,
        target.deployment.url,
        int(target.deployment.verify_tls),
        json.dumps(list(target.deployment.tags)),
        target.store,
        target.backup_name,
        target.retention_ms,
        int(target.create_intended),
        target.accepted_at,
        int(target.default_store),
        target.outcome.value,
        target.job_id,
        redact(target.server_status),
        target.error_class,
        redact(target.error),
        target.attempts,
        target.polls,
        target.submitted_at,
        target.finished_at,
        json.dumps(redact_each(target.notes)),
        target.ran_s,
    )


class Ledger:
    """The ledger file. `open` for reading; `lock` around a run that writes it."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: Path) -> Ledger:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            connection.execute("PRAGMA journal_mode=WAL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            has_tables = connection.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
            while has_tables and version in _MIGRATIONS:
                with connection:
                    connection.execute("BEGIN IMMEDIATE")
                    connection.execute(_MIGRATIONS[version])
                    connection.execute(f"PRAGMA user_version = {version + 1}")
                version += 1
            if has_tables and version != SCHEMA_VERSION:
                connection.close()
                raise InputError(
                    [
                        f"ledger {path}: written by another version of this tool (schema {version}, this one "
                        f"reads {SCHEMA_VERSION}); move it aside to keep its history, or give --ledger a new path"
                    ]
                )
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as error:
            raise InputError([f"ledger {path}: cannot open it ({error}); choose another with --ledger PATH"]) from None
        return cls(path, connection)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Held for a run's life: a second run on the same ledger is refused, not interleaved."""
        handle = self._lock_path.open("a+")
        try:
            if not _try_lock(handle, fcntl.LOCK_EX):
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise InputError(
                    [
                        f"ledger {self.path}: another run is using it ({holder}); wait for it to finish, "
                        "or give this run its own --ledger PATH"
                    ]
                )
            handle.truncate(0)
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            handle.write(f"run {run_id}, pid {os.getpid()}, since {since}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # closing releases the lock

    def active_run(self) -> str | None:
        """The id of the run holding the ledger right now, or None. Looks without taking the run lock."""
        if not self._lock_path.exists():
            return None
        with self._lock_path.open("r") as handle:
            if _try_lock(handle, fcntl.LOCK_SH, attempts=1):  # a shared lock: a run starting now is not refused for it
                return None
            holder = handle.read().strip()
        return holder.removeprefix("run ").split(",")[0] if holder.startswith("run ") else "?"

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # -- writes outside the hot path (committed at once) --
    def begin_run(
        self,
        *,
        run_id: str,
        kind: str,
        parent_run_id: str,
        inventory: str,
        settings: dict[str, Any],
        started_at: float,
        targets: Sequence[TargetState],
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, kind, parent_run_id, inventory, settings, started_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?, 'running')",
                (run_id, kind, parent_run_id, inventory, json.dumps(settings), started_at),
            )
            db.executemany(_UPSERT_TARGET, [target_row(run_id, t) for t in targets])

    def resume_run(self, run_id: str, settings: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET state = 'running', finished_at = NULL, resumes = resumes + 1, settings = ? "
                "WHERE run_id = ?",
                (json.dumps(settings), run_id),
            )

    def end_run(
        self,
        run_id: str,
        finished_at: float,
        stopped_reason: str,
        targets: Sequence[TargetState],
        *,
        state: str = "finished",  # or "interrupted" (Ctrl-C): it can be resumed
    ) -> None:
        with self._transaction() as db:
            db.executemany(_UPSERT_TARGET, [target_row(run_id, t) for t in targets])
            db.execute(
                "UPDATE runs SET state = ?, finished_at = ?, stopped_reason = ? WHERE run_id = ?",
                (state, finished_at, stopped_reason, run_id),
            )

    def write(self, targets: Sequence[tuple[Any, ...]], steps: Sequence[tuple[Any, ...]], *, durable: bool) -> None:
        """One group commit of target rows and steps.

        `durable` (a batch holding an intent to create) syncs the WAL to the device before returning;
        otherwise the commit survives our process being killed but may be lost with the machine's power,
        which costs at most a status change: the next run's reconciliation finds the truth on the server.
        """
        self.stage(targets, steps, durable=durable)
        self.commit_staged()

    def stage(self, targets: Sequence[tuple[Any, ...]], steps: Sequence[tuple[Any, ...]], *, durable: bool) -> None:
        """Open a transaction holding these rows; `commit_staged` ends it (possibly from another thread).

        Rows are written where the GIL is held anyway: a worker thread would wait for it at every row,
        while the event loop is busy. The commit (the disk sync) is what is worth a thread.
        """
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(_UPSERT_TARGET, targets)
            self._db.executemany(_INSERT_STEP, steps)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def commit_staged(self) -> None:
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")  # never leave the connection inside a failed transaction
            raise

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reads --
    def runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._run_record(row) for row in rows]

    def run(self, run_id: str) -> RunRecord:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            known = ", ".join(r.run_id for r in self.runs(5)) or "none yet"
            raise InputError([f"ledger {self.path}: no run {run_id!r} (recent: {known}); see `orchestrator runs`"])
        return self._run_record(row)

    def last_unfinished(self) -> RunRecord:
        row = self._db.execute(
            "SELECT * FROM runs WHERE state != 'finished' ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise InputError([f"ledger {self.path}: no unfinished run to resume; see `orchestrator runs`"])
        return self._run_record(row)

    def measured_run_times(self, run_id: str) -> list[tuple[tuple[str, str], float]]:
        """(store_key, ran_s) of the run's succeeded targets whose running time was measured: read at every
        run's start, so only those columns, not whole target records."""
        rows = self._db.execute(
            "SELECT deployment, store, default_store, ran_s FROM targets "
            "WHERE run_id = ? AND outcome = 'succeeded' AND ran_s IS NOT NULL ORDER BY idx",
            (run_id,),
        ).fetchall()
        return [(store_key(deployment, store, bool(default)), ran_s) for deployment, store, default, ran_s in rows]

    def finished_runs(self, inventory: str, before: float, limit: int) -> list[RunRecord]:
        """Finished runs over the same inventory that started before `before`, newest first."""
        rows = self._db.execute(
            "SELECT * FROM runs WHERE inventory = ? AND state = 'finished' AND started_at < ? "
            "ORDER BY started_at DESC LIMIT ?",
            (inventory, before, limit),
        ).fetchall()
        return [self._run_record(row) for row in rows]

    def targets(self, run_id: str) -> list[TargetRecord]:
        rows = self._db.execute(
            f"SELECT {_TARGET_COLUMNS} FROM targets WHERE run_id = ? ORDER BY idx", (run_id,)
        ).fetchall()
        return [
            TargetRecord(
                idx=row[1],
                deployment=row[2],
                url=row[3],
                verify_tls=bool(row[4]),
                tags=tuple(json.loads(row[5])),
                store=row[6],
                backup_name=row[7],
                retention_ms=row[8],
                create_intended=bool(row[9]),
                accepted_at=row[10],
                default_store=bool(row[11]),
                outcome=row[12],
                job_id=row[13],
                server_status=row[14],
                error_class=row[15],
                error=row[16],
                attempts=row[17],
                polls=row[18],
                submitted_at=row[19],
                finished_at=row[20],
                notes=tuple(json.loads(row[21])),
                ran_s=row[22],
            )
            for row in rows
        ]

    def steps(self, run_id: str) -> list[tuple[int, float, str, str]]:
        return self._db.execute(
            "SELECT idx, at, kind, detail FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)
        ).fetchall()

    def _run_record(self, row: tuple[Any, ...]) -> RunRecord:
        run_id = row[0]
        outcomes = dict(
            self._db.execute(
                "SELECT outcome, count(*) FROM targets WHERE run_id = ? GROUP BY outcome", (run_id,)
            ).fetchall()
        )
        return RunRecord(
            run_id=run_id,
            kind=row[1],
            parent_run_id=row[2],
            inventory=row[3],
            settings=json.loads(row[4]),
            started_at=row[5],
            finished_at=row[6],
            state=row[7],
            stopped_reason=row[8],
            resumes=row[9],
            outcomes=outcomes,
        )


class LedgerWriter:
    """What a run writes while it goes: an observer of its events, plus the awaited intent to create.

    `run()` is the writer task: it commits whatever is queued, in one transaction per group, in a
    worker thread; whoever awaits an intent is released once the group holding it is committed.
    """

    def __init__(self, ledger: Ledger, run_id: str) -> None:
        self._ledger = ledger
        self._run_id = run_id
        self._targets: dict[int, tuple[Any, ...]] = {}  # latest row per target: older ones are moot
        self._steps: list[tuple[Any, ...]] = []
        self._waiters: list[anyio.Event] = []
        self._queued = anyio.Event()
        self._intent_queued = anyio.Event()
        self._last_status: dict[int, str] = {}
        self.commits = 0
        self.commit_seconds = 0.0  # time spent committing (syncing to disk), in a worker thread
        self.stage_seconds = 0.0  # event-loop time spent writing rows into the open transaction
        self.intent_wait_seconds = 0.0  # time creates waited for their intent to be on disk, summed
        self.queue_seconds = 0.0  # event-loop time spent queueing rows

    def on_event(self, event: Event) -> None:
        target = event.target
        if target is None:
            return
        if event.kind is EventKind.POLLED:
            if self._last_status.get(target.index) == target.server_status:
                return  # nothing new: a poll that changed nothing is not worth a write
            self._last_status[target.index] = target.server_status
            self._queue(target, "status", target.server_status)
        elif event.kind in _STEP_EVENTS:
            detail = target.job_id if event.kind is EventKind.SUBMITTED else target.outcome.value
            self._queue(target, event.kind.value, detail)

    async def intend_create(self, target: TargetState) -> None:
        """Record that `target` is about to be created; returns once that is on disk."""
        target.create_intended = True
        done = anyio.Event()
        self._waiters.append(done)
        self._queue(target, "create_intended", target.backup_name)
        self._intent_queued.set()
        started = time.perf_counter()
        await done.wait()
        self.intent_wait_seconds += time.perf_counter() - started

    def _queue(self, target: TargetState, kind: str, detail: str) -> None:
        started = time.perf_counter()
        self._targets[target.index] = target_row(self._run_id, target)
        self._steps.append((self._run_id, target.index, time.time(), kind, redact(detail)))
        self._queued.set()
        self.queue_seconds += time.perf_counter() - started

    async def run(self) -> None:
        try:
            while True:
                await self._queued.wait()
                if not self._waiters:  # nobody waits: let status changes gather for a moment, fewer commits
                    with anyio.move_on_after(GATHER_S):
                        await self._intent_queued.wait()
                await self._flush_in_thread()
        finally:
            self._flush_now()  # cancelled (the run ended or was aborted): what is queued still lands, synchronously

    async def _flush_in_thread(self) -> None:
        targets, steps, waiters = self._take()
        if targets or steps:
            with anyio.CancelScope(shield=True):  # a batch taken off the queue must land, cancelled or not
                started = time.perf_counter()
                self._ledger.stage(targets, steps, durable=bool(waiters))
                self.stage_seconds += time.perf_counter() - started
                await anyio.to_thread.run_sync(self._commit_staged)
        for waiter in waiters:
            waiter.set()

    def _flush_now(self) -> None:
        targets, steps, waiters = self._take()
        if targets or steps:
            self._ledger.stage(targets, steps, durable=True)
            self._commit_staged()
        for waiter in waiters:
            waiter.set()

    def _take(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[anyio.Event]]:
        targets, steps, waiters = list(self._targets.values()), self._steps, self._waiters
        self._targets, self._steps, self._waiters = {}, [], []
        self._queued, self._intent_queued = anyio.Event(), anyio.Event()
        return targets, steps, waiters

    def _commit_staged(self) -> None:
        started = time.perf_counter()
        self._ledger.commit_staged()
        self.commit_seconds += time.perf_counter() - started
        self.commits += 1
