"""The run ledger: every run, target and step, recorded as it happens in SQLite (WAL), crash-safe.

The one write that must be durable before the network sees anything is the intent to create: a
target's backup name and store are committed before its create request is sent, so a run killed at
any point can be resumed without creating a backup twice (`submit` reconciles an intent without a job
id with the server before creating again). What a run writes as it goes is `recorder.LedgerWriter`'s.

The `targets` table is the target record (`model.TargetState`) as columns: its schema, its rows and
how they are read back (by name) are all derived from the record's fields (`TARGET_COLUMNS`).
One run at a time per ledger: a lock file held for the run's life refuses an overlapping run.
No secret is ever written: targets are stored by name, URL, store and backup name only.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, Union, get_args, get_origin, get_type_hints

from orchestrator.errors import InputError
from orchestrator.files import UnsafePath, named_dir, open_private, private_file, private_if_present, same_file
from orchestrator.model import Deployment, Outcome, TargetState
from orchestrator.redact import redact, redact_each

APP_DIR: Final = "arcgis-fleet-backup"
RESOLVE_SHOWN: Final = 10  # the candidates an ambiguous run id prefix lists
SCHEMA_VERSION: Final = 5  # raised with every change of the tables (see ADDED_COLUMNS)
# The target columns each schema version added, by the version before: a ledger keeps its history across
# upgrades of the tool (its types and defaults come from the record, like every column's).
ADDED_COLUMNS: Final = {
    1: ("ran_s",),  # 2: how long each job ran, for the poll schedule
    2: ("version",),  # 3: the version a snapshot's backup must be of
    3: ("verified",),  # 4: whether it was found so
    4: ("facts_read_at",),  # 5: when the version and default store a run went by were read (`memory`)
}
_RUNS_SCHEMA: Final = """
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
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_target ON steps (run_id, idx);
"""
_INSERT_STEP: Final = "INSERT INTO steps (run_id, idx, at, kind, detail) VALUES (?, ?, ?, ?, ?)"
_RUN_FIELDS: Final = (
    "run_id", "kind", "parent_run_id", "inventory", "settings", "started_at", "finished_at", "state",
    "stopped_reason", "resumes",
)  # fmt: skip
_RUN_COLUMNS: Final = ", ".join(_RUN_FIELDS)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of `targets`: a field of the record (or of its deployment), its SQL type and codec."""

    name: str  # in the table
    field: str  # of TargetState, or of Deployment when `of_deployment`
    sql_type: str
    nullable: bool
    to_sql: Callable[[Any], Any]
    from_sql: Callable[[Any], Any]
    of_deployment: bool = False
    default: Any = None  # what rows written before the column existed hold (`_upgrade`)

    def value(self, target: TargetState) -> Any:
        value = getattr(target.deployment if self.of_deployment else target, self.field)
        return None if value is None else self.to_sql(value)


def _codec(annotation: Any) -> tuple[str, bool, Callable[[Any], Any], Callable[[Any], Any]]:
    """(SQL type, nullable, to SQL, from SQL) for a field's type. Pure."""
    args = get_args(annotation)
    nullable = get_origin(annotation) in (Union, types.UnionType) and type(None) in args
    kind = next(a for a in args if a is not type(None)) if nullable else annotation
    base = get_origin(kind) or kind
    if base is bool:
        return "INTEGER", nullable, int, bool
    if base in (int, float, str):
        return {int: "INTEGER", float: "REAL", str: "TEXT"}[base], nullable, _same, _same
    if isinstance(base, type) and issubclass(base, StrEnum):
        return "TEXT", nullable, _same, base
    if base in (list, tuple):
        return "TEXT", nullable, lambda items: json.dumps(list(items)), lambda text: base(json.loads(text))
    raise TypeError(f"no ledger column type for {annotation!r}")  # a new kind of field: teach _codec


def _same(value: Any) -> Any:
    return value


def _sql_literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no SQL default for {value!r}")  # a new kind of added column: teach _sql_literal


def _server_text(encode: Callable[[Any], Any], annotation: Any) -> Callable[[Any], Any]:
    """A server's words pass the redaction layer on their way in: never a secret on disk."""
    if get_origin(annotation) is list:
        return lambda items: encode(redact_each(items))
    return lambda text: encode(redact(text))


def _target_columns() -> tuple[Column, ...]:
    """The record's fields as columns, in field order; the deployment's own columns in its place."""
    hints, deployment_hints = get_type_hints(TargetState), get_type_hints(Deployment)
    columns = []
    for field in fields(TargetState):
        if field.name == "deployment":
            for own in fields(Deployment):
                if "column" in own.metadata:
                    sql, nullable, to_sql, from_sql = _codec(deployment_hints[own.name])
                    columns.append(Column(own.metadata["column"], own.name, sql, nullable, to_sql, from_sql, True))
            continue
        if not field.metadata.get("kept", True):
            continue
        sql, nullable, to_sql, from_sql = _codec(hints[field.name])
        if field.metadata.get("server_text"):
            to_sql = _server_text(to_sql, hints[field.name])
        default = None if field.default is MISSING or field.default is None else to_sql(field.default)
        name = field.metadata.get("column", field.name)
        columns.append(Column(name, field.name, sql, nullable, to_sql, from_sql, default=default))
    return tuple(columns)


TARGET_COLUMNS: Final = _target_columns()
_COLUMN_NAMES: Final = ", ".join(c.name for c in TARGET_COLUMNS)
_TARGETS_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS targets (run_id TEXT NOT NULL, "
    + "".join(f"{c.name} {c.sql_type}{'' if c.nullable else ' NOT NULL'}, " for c in TARGET_COLUMNS)
    + "PRIMARY KEY (run_id, idx))"
)
_UPSERT_TARGET: Final = (
    f"INSERT OR REPLACE INTO targets (run_id, {_COLUMN_NAMES}) VALUES ({', '.join('?' * (len(TARGET_COLUMNS) + 1))})"
)


def target_row(run_id: str, target: TargetState) -> tuple[Any, ...]:
    """A target as one `targets` row: its kept fields, server text redacted. Pure but for the redaction."""
    return (run_id, *(column.value(target) for column in TARGET_COLUMNS))


def target_from_row(row: Sequence[Any]) -> TargetState:
    """A target read back from the columns of `TARGET_COLUMNS`, in their order; its deployment as recorded."""
    own: dict[str, Any] = {}
    deployment: dict[str, Any] = {}
    for column, value in zip(TARGET_COLUMNS, row, strict=True):
        (deployment if column.of_deployment else own)[column.field] = None if value is None else column.from_sql(value)
    return TargetState(deployment=Deployment.recorded(**deployment), **own)


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


LEDGER_FILE: Final = "ledger.sqlite3"


def default_ledger_path(report_dir: Path) -> Path:
    """Beside the reports: a fleet's reports and its ledger on one durable volume, one lock per folder."""
    return report_dir / LEDGER_FILE


def former_default_ledger_path() -> Path:
    """Where versions before 0.2 kept the ledger: `$XDG_STATE_HOME/arcgis-fleet-backup/ledger.sqlite3`."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / APP_DIR / LEDGER_FILE


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
class PastRow:
    """What one earlier run says of one target, for `history`: newest runs first."""

    run_id: str
    deployment: str
    store: str
    default_store: bool
    outcome: str
    submitted_at: float | None
    finished_at: float | None
    ran_s: float | None
    run_started_at: float = 0.0  # when its run started: since when a target has been failing
    url: str = ""  # of its deployment then
    version: str = ""  # its deployment's version as the run went by
    facts_read_at: float | None = None  # when that version (and a default store) were read from the server


class Ledger:
    """The ledger file. `open` for reading; `lock` around a run that writes it."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """The ledger at `path`, made if missing. Its folder is made 0700 (less if the umask asks); the file is
        0600, never a link, and SQLite makes its -wal and -shm files with the file's own mode."""
        connection = None
        try:
            named_dir(path.parent)
            for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                private_if_present(companion)  # left by a run killed before this version: made 0600
            made = private_file(path)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            same_file(path, made)  # not swapped for a link between the check and SQLite's open
            connection.execute("PRAGMA journal_mode=WAL")
            _upgrade(connection, path)
            connection.executescript(_RUNS_SCHEMA + _TARGETS_SCHEMA + ";")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except UnsafePath as error:
            if connection is not None:
                connection.close()
            raise InputError([f"ledger {error.path}: {error.problem}; {error.fix} (--ledger PATH)"]) from None
        except (OSError, sqlite3.Error) as error:
            if connection is not None:
                connection.close()
            raise InputError([f"ledger {path}: cannot open it ({error}); choose another with --ledger PATH"]) from None
        return cls(path, connection)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Held for a run's life: a second run on the same ledger is refused, not interleaved. The lock file
        names the run: it is 0600 and never opened through a link (`files.open_private`)."""
        try:
            descriptor = open_private(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        except UnsafePath as error:
            raise InputError([f"ledger lock {error.path}: {error.problem}; {error.fix} (--ledger PATH)"]) from None
        except OSError as error:
            raise InputError(
                [f"ledger lock {self._lock_path}: cannot open it ({error.strerror}); choose another with --ledger PATH"]
            ) from None
        handle = os.fdopen(descriptor, "a+")
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
        try:  # never through a link, never blocking on a FIFO planted there
            fd = os.open(self._lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError:
            return "?"  # not a lock this tool made: say someone may hold it, rather than read through it
        with os.fdopen(fd, "r") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "?"
            if _try_lock(handle, fcntl.LOCK_SH, attempts=1):  # a shared lock: a run starting now is not refused for it
                return None
            holder = handle.read(200).strip()
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

    # -- group commits, for the writer of a run in progress (`recorder.LedgerWriter`) --
    def stage(self, targets: Sequence[tuple[Any, ...]], steps: Sequence[tuple[Any, ...]], *, durable: bool) -> None:
        """Open a transaction holding these rows; `commit_staged` ends it (possibly from another thread).

        `durable` (a batch holding an intent to create) syncs the WAL to the device at the commit;
        otherwise the commit survives our process being killed but may be lost with the machine's power,
        which costs at most a status change: the next run's reconciliation finds the truth on the server.
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
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reads --
    def runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC LIMIT ?", (limit,))
        return [self._run_record(row) for row in rows.fetchall()]

    def run(self, run_id: str) -> RunRecord:
        row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            known = ", ".join(r.run_id for r in self.runs(5)) or "none yet"
            raise InputError([f"ledger {self.path}: no run {run_id!r} (recent: {known}); see `orchestrator runs`"])
        return self._run_record(row)

    def resolve(self, wanted: str) -> str:
        """The run id `wanted` names: "latest" (the run started last, whatever its state), a run id, or an
        unambiguous start of one; `InputError` with the candidates when it names none or several."""
        if wanted == "latest":
            row = self._db.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
            if row is None:
                raise InputError([f"ledger {self.path}: no run yet, so no latest one"])
            return str(row[0])
        if not wanted.strip():
            raise InputError([f"ledger {self.path}: an empty run id; give one, a start of one, or `latest`"])
        if self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (wanted,)).fetchone() is not None:
            return wanted
        found = [
            str(run_id)
            for (run_id,) in self._db.execute(
                "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY started_at DESC LIMIT ?",
                (len(wanted), wanted, RESOLVE_SHOWN + 1),
            )
        ]
        if len(found) == 1:
            return found[0]
        if not found:
            known = ", ".join(r.run_id for r in self.runs(5)) or "none yet"
            raise InputError([f"ledger {self.path}: no run {wanted!r} (recent: {known}); see `orchestrator runs`"])
        shown = ", ".join(found[:RESOLVE_SHOWN]) + (", ..." if len(found) > RESOLVE_SHOWN else "")
        raise InputError([f"ledger {self.path}: {wanted!r} names several runs ({shown}); give more of the run id"])

    def last_unfinished(self) -> RunRecord:
        row = self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE state != 'finished' ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise InputError([f"ledger {self.path}: no unfinished run to resume; see `orchestrator runs`"])
        return self._run_record(row)

    def targets(self, run_id: str) -> list[TargetState]:
        """The run's targets as the ledger last saw them, in inventory order; deployments as recorded."""
        rows = self._db.execute(f"SELECT {_COLUMN_NAMES} FROM targets WHERE run_id = ? ORDER BY idx", (run_id,))
        return [target_from_row(row) for row in rows.fetchall()]

    def past(self, inventory: str, before: float, runs: int) -> Iterator[PastRow]:
        """Every target of the latest `runs` finished runs over `inventory` that started before `before`,
        newest run first: only the columns the history reads, in one query, streamed (30 runs of 10,000
        targets are never all in memory at once)."""
        rows = self._db.execute(
            "SELECT r.run_id, t.deployment, t.store, t.default_store, t.outcome, t.submitted_at, t.finished_at, "
            "t.ran_s, r.started_at, t.url, t.version, t.facts_read_at "
            "FROM (SELECT run_id, started_at FROM runs WHERE inventory = ? "
            "AND state = 'finished' AND started_at < ? ORDER BY started_at DESC LIMIT ?) AS r "
            "JOIN targets AS t ON t.run_id = r.run_id ORDER BY r.started_at DESC, t.idx",
            (inventory, before, runs),
        )
        for run_id, deployment, store, default, outcome, submitted, finished, ran_s, started, *went_by in rows:
            yield PastRow(run_id, deployment, store, bool(default), outcome, submitted, finished, ran_s, started,
                          *went_by)  # fmt: skip

    def last_successes(self, inventory: str) -> dict[tuple[str, str], float]:
        """When each target (`model.store_key`: a default store as "") of the runs over `inventory` last
        succeeded: the `finished_at` of its latest successful backup, over every run and kind (a retry's, a
        snapshot's, a run killed or interrupted since: the backup exists whatever became of its run). A target
        that never succeeded is absent. For the metrics' "age of the last good backup"; one query."""
        rows = self._db.execute(
            "SELECT t.deployment, CASE WHEN t.default_store THEN '' ELSE t.store END AS key, max(t.finished_at) "
            "FROM runs AS r JOIN targets AS t ON t.run_id = r.run_id "
            "WHERE r.inventory = ? AND t.outcome = ? AND t.finished_at IS NOT NULL GROUP BY t.deployment, key",
            (inventory, Outcome.SUCCEEDED.value),
        )
        return {(deployment, store): finished_at for deployment, store, finished_at in rows}

    def steps(self, run_id: str) -> list[tuple[int, float, str, str]]:
        return self._db.execute(
            "SELECT idx, at, kind, detail FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)
        ).fetchall()

    def _run_record(self, row: Sequence[Any]) -> RunRecord:
        values = dict(zip(_RUN_FIELDS, row, strict=True))
        outcomes = self._db.execute(
            "SELECT outcome, count(*) FROM targets WHERE run_id = ? GROUP BY outcome", (values["run_id"],)
        ).fetchall()
        return RunRecord(**{**values, "settings": json.loads(values["settings"])}, outcomes=dict(outcomes))


def _upgrade(connection: sqlite3.Connection, path: Path) -> None:
    """A ledger of an older schema gains the columns added since; one of a schema we do not know is refused."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if not connection.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'").fetchone()[0]:
        return  # a new ledger: the schema is created whole
    by_name = {column.name: column for column in TARGET_COLUMNS}
    while version in ADDED_COLUMNS:
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            for name in ADDED_COLUMNS[version]:
                column = by_name[name]
                # A column that may not be empty is added with the record's default, which old rows then hold.
                default = "" if column.nullable else f" NOT NULL DEFAULT {_sql_literal(column.default)}"
                connection.execute(f"ALTER TABLE targets ADD COLUMN {name} {column.sql_type}{default}")
            connection.execute(f"PRAGMA user_version = {version + 1}")
        version += 1
    if version != SCHEMA_VERSION:
        connection.close()
        raise InputError(
            [
                f"ledger {path}: written by another version of this tool (schema {version}, this one "
                f"reads {SCHEMA_VERSION}); move it aside to keep its history, or give --ledger a new path"
            ]
        )
